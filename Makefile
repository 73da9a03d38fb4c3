# xroute: the two commands of the README, and their parts.
#   make demo   the main job: the namespace lab (two nodes running xroute on the
#               static file source, their pods, a fabric and a client): up, real
#               traffic for flows F1, F2, F7, F8, the per-core counters, down
#   make test   the whole test suite, with format and lint checks and a short fuzz run
SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
FUZZ_SECONDS ?= 20
FUZZ_TARGETS := prefix_text table_text lpm_changes packet pipeline config annotations bgp_frame bgp_update

.PHONY: demo lab test deps deps-fuzz check unit fuzz bench-lpm bench-bgp clean

LAB := target/release/xroute lab --prefix xrdemo

demo: deps
	cargo build --release -p agent
	$(LAB) down >/dev/null 2>&1 || true
	$(LAB) up
	$(LAB) check || { $(LAB) status; $(LAB) down; exit 1; }
	$(LAB) status
	$(LAB) down

test: deps-fuzz check unit fuzz
	@awk '/^test result:/ { p += $$4; f += $$6 } END { printf "tests: %d passed, %d failed\n", p, f }' target/test.log

deps:
	@scripts/deps.sh

deps-fuzz:
	@scripts/deps.sh fuzz

check:
	cargo fmt --all -- --check
	cd fuzz && cargo fmt -- --check
	cargo clippy --workspace --all-targets -- -D warnings

unit:
	@mkdir -p target
	cargo test --workspace 2>&1 | tee target/test.log

# Each fuzz target for FUZZ_SECONDS, from the seeds in fuzz/seeds (cargo-fuzz needs
# nightly flags; RUSTC_BOOTSTRAP lets the stable toolchain take them).
fuzz:
	@for t in $(FUZZ_TARGETS); do \
	  mkdir -p fuzz/corpus/$$t; \
	  echo "fuzz: $$t for $(FUZZ_SECONDS) s"; \
	  (cd fuzz && RUSTC_BOOTSTRAP=1 cargo fuzz run $$t corpus/$$t seeds/$$t -- \
	      -max_total_time=$(FUZZ_SECONDS) -print_final_stats=0 2>&1 | tail -n 2) || exit 1; \
	  test -z "$$(ls fuzz/artifacts/$$t 2>/dev/null)" || { echo "fuzz: $$t found a crash in fuzz/artifacts/$$t"; exit 1; }; \
	done

bench-lpm: deps
	cargo run --release -p bench --bin xroute-bench -- lpm --scale 1050000 --scale6 200000

bench-bgp: deps
	cargo build --release -p agent -p bench
	target/release/xroute-bench bgp-ingest --rounds 3

clean:
	cargo clean
	rm -rf fuzz/target fuzz/corpus fuzz/artifacts
