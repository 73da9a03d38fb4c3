//! The agent as a process: how it ends.

use std::process::Command;

const XROUTE: &str = env!("CARGO_BIN_EXE_xroute");

/// A thread that panics ends the process with status 70 and a message naming the
/// thread; without that policy the main thread would return 0 after its wait.
#[test]
fn a_panic_in_any_thread_ends_the_process_with_an_error() {
    let out = Command::new(XROUTE)
        .args(["probe", "thread-panic", "--wait", "20"])
        .output()
        .expect("run xroute");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(70), "{stderr}");
    assert!(
        stderr.contains("the probe's deliberate panic")
            && stderr.contains("thread xroute-probe panicked; stopping with status 70"),
        "{stderr}"
    );
}
