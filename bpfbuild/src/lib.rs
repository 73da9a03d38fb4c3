//! For build scripts: compiles one BPF program written in C with clang into `OUT_DIR`,
//! with a clear message when clang or the headers are missing.
#![forbid(unsafe_code)]

use std::env;
use std::path::PathBuf;
use std::process::Command;

/// Compiles `source` (relative to the crate) to `$OUT_DIR/<object>`; `what` names the
/// program in errors. Tells cargo to rebuild when the source or `CLANG` changes.
pub fn compile(source: &str, object: &str, what: &str) {
    println!("cargo:rerun-if-changed={source}");
    println!("cargo:rerun-if-env-changed=CLANG");
    let out = PathBuf::from(env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    let clang = env::var("CLANG").unwrap_or_else(|_| "clang".to_string());
    // <asm/types.h>, which <linux/bpf.h> includes, lives in the multiarch directory.
    let multiarch = match env::var("CARGO_CFG_TARGET_ARCH").as_deref() {
        Ok("aarch64") => "aarch64-linux-gnu",
        _ => "x86_64-linux-gnu",
    };
    let result = Command::new(&clang)
        .args(["-O2", "-g", "-target", "bpf", "-Wall", "-Werror"])
        .arg(format!("-I/usr/include/{multiarch}"))
        .args(["-c", source, "-o"])
        .arg(out.join(object))
        .status();
    match result {
        Ok(s) if s.success() => {}
        Ok(s) => panic!(
            "{clang} could not compile {source} ({s}); {what} needs the kernel and libbpf \
             headers: apt-get install clang libbpf-dev linux-libc-dev"
        ),
        Err(e) => panic!(
            "cannot run {clang} to compile {what}: {e}; apt-get install clang libbpf-dev \
             (or set CLANG)"
        ),
    }
}
