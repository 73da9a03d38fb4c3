//! Compiles the forwarding benchmark's BPF programs (`bpf/fwd.c`) with clang.

fn main() {
    bpfbuild::compile(
        "bpf/fwd.c",
        "fwd.o",
        "the forwarding benchmark's BPF programs",
    );
}
