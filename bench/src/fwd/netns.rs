//! Namespaces for the forwarding benchmark: shell helpers, and running a closure on a
//! thread that has entered a namespace (`setns` changes only the calling thread's
//! network namespace, so the rest of the process stays where it was).

use anyhow::{anyhow, bail, Context, Result};
use std::os::fd::AsRawFd;
use std::process::{Command, Stdio};

/// Runs a command, failing with its stderr.
pub fn sh(args: &[&str]) -> Result<String> {
    let out = Command::new(args[0])
        .args(&args[1..])
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("running {}", args[0]))?;
    if !out.status.success() {
        bail!(
            "`{}` failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// `ip -n NS ARGS...`
pub fn ip(ns: &str, args: &str) -> Result<String> {
    let mut v = vec!["ip", "-n", ns];
    v.extend(args.split_whitespace());
    sh(&v)
}

/// `ip netns exec NS ARGS...`
pub fn exec(ns: &str, args: &[&str]) -> Result<String> {
    let mut v = vec!["ip", "netns", "exec", ns];
    v.extend_from_slice(args);
    sh(&v)
}

/// Moves the calling thread into network namespace `ns`.
pub fn enter(ns: &str) -> Result<()> {
    let path = format!("/run/netns/{ns}");
    let f = std::fs::File::open(&path).with_context(|| format!("opening {path}"))?;
    // SAFETY: setns only reads the descriptor, which `f` keeps open for the call.
    let r = unsafe { libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) };
    if r != 0 {
        return Err(anyhow!(std::io::Error::last_os_error())).context(format!("setns {ns}"));
    }
    Ok(())
}

/// Runs `f` on a new thread inside namespace `ns` and returns its result.
pub fn within<T: Send + 'static>(
    ns: &str,
    f: impl FnOnce() -> Result<T> + Send + 'static,
) -> Result<T> {
    let ns = ns.to_string();
    std::thread::spawn(move || {
        enter(&ns)?;
        f()
    })
    .join()
    .map_err(|_| anyhow!("a thread in {} panicked", "a namespace"))?
}

/// The kernel thread that runs `dev`'s NAPI poll once threaded NAPI is on.
pub fn napi_thread(ns: &str, dev: &str) -> Result<u32> {
    exec(
        ns,
        &[
            "sh",
            "-c",
            &format!("echo 1 > /sys/class/net/{dev}/threaded"),
        ],
    )?;
    // The thread is named napi/<dev>-<id> (truncated to 15 characters); the
    // benchmark's device names are unique on the machine while it runs.
    let want = format!("napi/{dev}-");
    let want = &want[..want.len().min(15)];
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(2);
    loop {
        for entry in std::fs::read_dir("/proc")? {
            let entry = entry?;
            let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
                continue;
            };
            let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
            if comm.trim().starts_with(want) {
                return Ok(pid);
            }
        }
        if std::time::Instant::now() > deadline {
            bail!("no NAPI thread for {dev} in {ns} (does it have NAPI: XDP or GRO on?)");
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

/// Pins a thread or process to one CPU.
pub fn pin(pid: u32, cpu: usize) -> Result<()> {
    sh(&["taskset", "-pc", &cpu.to_string(), &pid.to_string()]).map(drop)
}
