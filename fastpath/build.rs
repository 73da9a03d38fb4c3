//! Compiles the XDP steering program (`xdp/steer.c`) to BPF with clang.

fn main() {
    bpfbuild::compile("xdp/steer.c", "steer.o", "the XDP steering program");
}
