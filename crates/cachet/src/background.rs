//! Work the server does after a compile has answered: compressing entries and working out
//! what a compile read. It shares the build's cores, so it runs on threads of its own at
//! the lowest CPU priority (nice 19: Linux gives a thread its own nice value), where it
//! fills the gaps a build leaves instead of delaying the build's compilers.
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

/// The runtime whose blocking threads run at nice 19; None where it could not start (the
/// work then runs at normal priority).
fn runtime() -> Option<&'static Runtime> {
    static RUNTIME: OnceLock<Option<Runtime>> = OnceLock::new();
    RUNTIME
        .get_or_init(|| {
            tokio::runtime::Builder::new_multi_thread()
                .worker_threads(1)
                .max_blocking_threads(THREADS)
                .thread_name("cachet-background")
                .on_thread_start(|| {
                    // The calling thread only (Linux); failure leaves it at normal priority.
                    let _ = rustix::process::setpriority_process(None, 19);
                })
                .build()
                .inspect_err(|e| tracing::warn!("no background threads: {e}"))
                .ok()
        })
        .as_ref()
}

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
