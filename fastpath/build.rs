//! Compiles the XDP steering program (`xdp/steer.c`) to BPF with clang.

use std::env;
use std::path::PathBuf;
use std::process::Command;

fn main() {
    println!("cargo:rerun-if-changed=xdp/steer.c");
    println!("cargo:rerun-if-env-changed=CLANG");
    let out = PathBuf::from(env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    let clang = env::var("CLANG").unwrap_or_else(|_| "clang".to_string());
    // <asm/types.h>, which <linux/bpf.h> includes, lives in the multiarch directory.
    let multiarch = match env::var("CARGO_CFG_TARGET_ARCH").as_deref() {
        Ok("aarch64") => "aarch64-linux-gnu",
        _ => "x86_64-linux-gnu",
    };
    let object = out.join("steer.o");
    let result = Command::new(&clang)
        .args(["-O2", "-g", "-target", "bpf", "-Wall", "-Werror"])
        .arg(format!("-I/usr/include/{multiarch}"))
        .args(["-c", "xdp/steer.c", "-o"])
        .arg(&object)
        .status();
    match result {
        Ok(s) if s.success() => {}
        Ok(s) => panic!(
            "{clang} could not compile xdp/steer.c ({s}); it needs the kernel and libbpf \
             headers: apt-get install clang libbpf-dev linux-libc-dev"
        ),
        Err(e) => panic!(
            "cannot run {clang} to compile the XDP steering program: {e}; \
             apt-get install clang libbpf-dev (or set CLANG)"
        ),
    }
}
