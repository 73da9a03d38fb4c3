#!/usr/bin/env bash
# Installs what xroute's builds and tests need on a Debian machine, and checks the Rust
# toolchain. Safe to run again: it installs only what is missing.
#   scripts/deps.sh          build and test dependencies
#   scripts/deps.sh fuzz     also cargo-fuzz
set -euo pipefail

# The build: the linker; clang, the kernel and libbpf headers for the XDP steering
# program; libelf-dev and m4 for xsk-rs's libxdp build. The lab and its tests:
# iproute2, ethtool, ping, iperf3, python3 (raw frames); the BGP peers the lab and
# the interop tests run: bird2 (the lab's fabric router), frr, gobgpd; the NAT
# benchmark's kube-proxy baseline: nftables, conntrack.
APT_PACKAGES=(gcc clang libelf-dev m4 libbpf-dev linux-libc-dev zlib1g-dev pkg-config
  iproute2 ethtool iputils-ping iperf3 python3 bird2 frr gobgpd nftables conntrack)
MIN_RUST=1.85

missing=()
for p in "${APT_PACKAGES[@]}"; do
  dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
done
if ((${#missing[@]})); then
  echo "deps: installing ${missing[*]}"
  apt-get update -q
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${missing[@]}"
fi

if ! command -v cargo >/dev/null 2>&1; then
  echo "deps: no cargo on PATH. xroute needs Rust $MIN_RUST or newer (rustup's stable);" >&2
  echo "      Debian's own rustc is too old for its dependencies." >&2
  exit 1
fi
have=$(rustc --version | awk '{print $2}')
if [ "$(printf '%s\n%s\n' "$MIN_RUST" "$have" | sort -V | head -1)" != "$MIN_RUST" ]; then
  echo "deps: rustc $have is older than the $MIN_RUST xroute needs" >&2
  exit 1
fi
for c in fmt clippy; do
  if ! cargo "$c" --version >/dev/null 2>&1; then
    if command -v rustup >/dev/null 2>&1; then
      rustup component add rustfmt clippy
    else
      echo "deps: cargo $c is missing and there is no rustup to add it" >&2
      exit 1
    fi
  fi
done

if [ "${1:-}" = fuzz ] && ! command -v cargo-fuzz >/dev/null 2>&1; then
  echo "deps: installing cargo-fuzz"
  cargo install cargo-fuzz --locked
fi
