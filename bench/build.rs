//! Compiles the forwarding benchmark's BPF programs (`bpf/fwd.c`) with clang.

use std::env;
use std::path::PathBuf;
use std::process::Command;

fn main() {
    println!("cargo:rerun-if-changed=bpf/fwd.c");
    println!("cargo:rerun-if-env-changed=CLANG");
    let out = PathBuf::from(env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    let clang = env::var("CLANG").unwrap_or_else(|_| "clang".to_string());
    // <asm/types.h>, which <linux/bpf.h> includes, lives in the multiarch directory.
    let multiarch = match env::var("CARGO_CFG_TARGET_ARCH").as_deref() {
        Ok("aarch64") => "aarch64-linux-gnu",
        _ => "x86_64-linux-gnu",
    };
    let object = out.join("fwd.o");
    let result = Command::new(&clang)
        .args(["-O2", "-g", "-target", "bpf", "-Wall", "-Werror"])
        .arg(format!("-I/usr/include/{multiarch}"))
        .args(["-c", "bpf/fwd.c", "-o"])
        .arg(&object)
        .status();
    match result {
        Ok(s) if s.success() => {}
        Ok(s) => panic!(
            "{clang} could not compile bpf/fwd.c ({s}); it needs the kernel and libbpf \
             headers: apt-get install clang libbpf-dev linux-libc-dev"
        ),
        Err(e) => panic!(
            "cannot run {clang} to compile the benchmark's BPF programs: {e}; \
             apt-get install clang libbpf-dev (or set CLANG)"
        ),
    }
}
