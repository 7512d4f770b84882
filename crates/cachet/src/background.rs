//! Work the server does after a compile has answered: compressing entries and working out
//! what a compile read. It shares the build's cores, so it runs on threads of its own in
//! Linux's idle scheduling class (SCHED_IDLE, idle I/O class; nice 19 where those cannot be
//! set), where it fills the gaps a build leaves instead of delaying the build's compilers.
//! A lock such a thread holds waits for a gap too; what the foreground shares with it (the
//! file-hash memo, the allocator) is held for microseconds, so that is rare, but a gap can
//! be long: a SCHED_IDLE spinner beside a plain cold build of `bench/crate-graph` on 2
//! cores waited for a core 10 ms (median of waits over 2 ms), 315 ms (99th percentile) and
//! 923 ms at most; at nice 19, 11 ms, 272 ms and 285 ms.
//!
//! The queue is bounded in bytes (the entries waiting to be encoded): past
//! [`QUEUED_BYTES_LIMIT`], work runs at normal priority on tokio's blocking pool, so a
//! build that never leaves a gap does not pile its outputs up in memory. `cachet --flush`
//! waits for all of it, so timing a cold build with it gains nothing from the deferral.

use std::io;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};

use tokio::runtime::Runtime;

/// Threads that do the deferred work.
const THREADS: usize = 2;

/// Bytes of queued work past which new work runs at normal priority.
pub const QUEUED_BYTES_LIMIT: u64 = 256 << 20;

/// Bytes of work queued or running on the background threads.
static QUEUED: AtomicU64 = AtomicU64::new(0);

/// Bytes of work queued or running now: the server's pending writes, which memory
/// admission counts against its budget.
pub fn queued_bytes() -> u64 {
    QUEUED.load(Ordering::Relaxed)
}

/// The runtime whose blocking threads run at the lowest priority; None where it could not
/// start (the work then runs at normal priority).
fn runtime() -> Option<&'static Runtime> {
    static RUNTIME: OnceLock<Option<Runtime>> = OnceLock::new();
    RUNTIME
        .get_or_init(|| {
            tokio::runtime::Builder::new_multi_thread()
                .worker_threads(1)
                .max_blocking_threads(THREADS)
                .thread_name("cachet-background")
                .on_thread_start(lowest_priority)
                .build()
                .inspect_err(|e| tracing::warn!("no background threads: {e}"))
                .ok()
        })
        .as_ref()
}

/// Puts the calling thread (Linux: each thread has its own) in the idle scheduling class
/// (SCHED_IDLE, sched(7): it runs only on a core nothing else wants) and the idle I/O class
/// (ioprio_set(2)); nice 19 stays as the fallback where the class cannot be set. Nice 19
/// alone still took 1% of a core a compiler kept busy (two spinners pinned to one core for
/// 10 s: 10 ticks of 984); SCHED_IDLE took none.
fn lowest_priority() {
    // Failures leave the thread at a higher priority, never break the work.
    let _ = rustix::process::setpriority_process(None, 19);
    let param = libc::sched_param { sched_priority: 0 };
    // SAFETY: plain syscalls on the calling thread (pid 0) with a valid param.
    unsafe {
        libc::sched_setscheduler(0, libc::SCHED_IDLE, &param);
        libc::syscall(
            libc::SYS_ioprio_set,
            IOPRIO_WHO_PROCESS,
            0,
            IOPRIO_CLASS_IDLE << 13,
        );
    }
}

/// ioprio_set(2)'s `which` for one thread, and the idle class (linux/ioprio.h).
const IOPRIO_WHO_PROCESS: libc::c_int = 1;
const IOPRIO_CLASS_IDLE: libc::c_int = 3;

/// Runs `work` (about `bytes` of data to go through) on a background thread and returns
/// its result; at normal priority when the queue is past its limit. Errors: the work
/// panicked.
pub async fn run<T: Send + 'static>(
    bytes: u64,
    work: impl FnOnce() -> T + Send + 'static,
) -> io::Result<T> {
    let queued = QUEUED.fetch_add(bytes, Ordering::Relaxed);
    let result = match runtime() {
        Some(runtime) if within_limit(queued, bytes) => runtime.spawn_blocking(work).await,
        _ => tokio::task::spawn_blocking(work).await,
    };
    QUEUED.fetch_sub(bytes, Ordering::Relaxed);
    result.map_err(|e| io::Error::other(format!("background work failed: {e}")))
}

/// Whether `bytes` more work fits the queue that holds `queued` bytes. A single piece
/// larger than the limit still goes to the background when nothing else waits.
fn within_limit(queued: u64, bytes: u64) -> bool {
    queued == 0 || queued + bytes <= QUEUED_BYTES_LIMIT
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn work_runs_on_a_thread_at_the_lowest_priority() {
        let (name, nice) = run(10, || {
            let name = std::thread::current().name().map(str::to_owned);
            (name, rustix::process::getpriority_process(None).unwrap())
        })
        .await
        .unwrap();
        assert_eq!(name.as_deref(), Some("cachet-background"));
        assert_eq!(nice, 19);
        // SAFETY: plain syscalls about the calling thread.
        let (policy, ioprio) = run(10, || unsafe {
            (
                libc::sched_getscheduler(0),
                libc::syscall(libc::SYS_ioprio_get, IOPRIO_WHO_PROCESS, 0),
            )
        })
        .await
        .unwrap();
        assert_eq!(policy, libc::SCHED_IDLE);
        assert_eq!(ioprio >> 13, IOPRIO_CLASS_IDLE as libc::c_long);
    }

    #[test]
    fn past_the_limit_work_runs_at_normal_priority() {
        assert!(within_limit(0, 10));
        assert!(within_limit(0, QUEUED_BYTES_LIMIT * 2));
        assert!(within_limit(QUEUED_BYTES_LIMIT - 10, 10));
        assert!(!within_limit(QUEUED_BYTES_LIMIT - 10, 11));
        assert!(!within_limit(1, QUEUED_BYTES_LIMIT));
    }
}
