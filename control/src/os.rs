//! Threads of the control plane's own (each with a single-threaded runtime), and the
//! calls into the C library it needs and no crate wraps: a thread's nice value, and
//! the allocator's settings.
#![allow(unsafe_code)] // setpriority(2), malloc_trim(3); see each SAFETY comment.

/// A call into the operating system that failed, with what it was for.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("setting the thread's nice value to {nice}: {source}")]
    Nice {
        nice: i32,
        #[source]
        source: std::io::Error,
    },
    #[error("starting the {name} thread: {source}")]
    Thread {
        name: String,
        #[source]
        source: std::io::Error,
    },
    #[error("reserving ports {range} for SNAT in {RESERVED_PORTS}: {source} (are we root?)")]
    ReservePorts {
        range: String,
        #[source]
        source: std::io::Error,
    },
}

/// Where Linux keeps the ports its stack never picks as ephemeral ones (per network
/// namespace; IPv6 sockets follow it too).
pub const RESERVED_PORTS: &str = "/proc/sys/net/ipv4/ip_local_reserved_ports";

/// Adds `lo-hi` to the ports the host's stack never picks for its own connections, so
/// that a reply to a flow SNATed to the node is never a reply to a local socket too.
/// What was reserved before stays reserved.
pub fn reserve_ports(lo: u16, hi: u16) -> Result<(), Error> {
    let range = format!("{lo}-{hi}");
    let err = |source| Error::ReservePorts {
        range: range.clone(),
        source,
    };
    let now = std::fs::read_to_string(RESERVED_PORTS).map_err(err)?;
    let now = now.trim();
    if now.split(',').any(|r| r.trim() == range) {
        return Ok(());
    }
    let next = if now.is_empty() {
        range.clone()
    } else {
        format!("{now},{range}")
    };
    std::fs::write(RESERVED_PORTS, next).map_err(err)
}

/// Sets the calling thread's nice value (Linux keeps one per thread). Errors are
/// reported, not fatal: the thread just runs at the default priority.
pub fn set_nice(nice: i32) -> Result<(), Error> {
    // SAFETY: gettid has no preconditions; setpriority with PRIO_PROCESS and a thread
    // id changes only that thread's nice value and touches no memory of ours.
    let r = unsafe {
        let tid = libc::gettid();
        libc::setpriority(libc::PRIO_PROCESS, tid as libc::id_t, nice)
    };
    if r == 0 {
        Ok(())
    } else {
        Err(Error::Nice {
            nice,
            source: std::io::Error::last_os_error(),
        })
    }
}

/// Gives the memory the allocator holds free back to the kernel (glibc keeps freed
/// chunks in its heaps; after a full table's worth of short-lived batches that is
/// tens of megabytes of resident memory nobody uses).
pub fn trim_heap() {
    // SAFETY: malloc_trim only returns free pages of the allocator's own heaps; it
    // is thread-safe (it takes each arena's lock) and touches no live allocation.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// Allocations of this size or more get their own mapping, returned to the kernel
/// when freed.
const MMAP_THRESHOLD: libc::c_int = 1 << 20;

/// Sets the allocator up for a process that builds large short-lived arrays (table
/// copies, batches): glibc raises its mmap threshold each time such an array is freed,
/// after which the next ones come from the heap and stay resident as fragments. A fixed
/// threshold keeps every large array in its own mapping.
pub fn tune_allocator() {
    // SAFETY: mallopt only sets an allocator parameter; called before the threads
    // start, and it is thread-safe anyway (it takes the main arena's lock).
    let ok = unsafe { libc::mallopt(libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD) };
    if ok != 1 {
        tracing::warn!("could not set the allocator's mmap threshold");
    }
}

/// Runs `task` to its end on a thread of its own named `name`, on a single-threaded
/// tokio runtime (timers and I/O enabled).
pub fn spawn_thread<F>(name: &str, task: F) -> Result<(), Error>
where
    F: std::future::Future<Output = ()> + Send + 'static,
{
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|source| Error::Thread {
            name: name.into(),
            source,
        })?;
    std::thread::Builder::new()
        .name(name.into())
        .spawn(move || runtime.block_on(task))
        .map_err(|source| Error::Thread {
            name: name.into(),
            source,
        })?;
    Ok(())
}
