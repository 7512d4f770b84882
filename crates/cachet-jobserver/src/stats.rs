//! Counters behind [`JobserverStats`](crate::JobserverStats).

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::time::Duration;

/// A snapshot of how the pool is used.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct JobserverStats {
    /// Tokens in the pool.
    pub capacity: usize,
    /// Tokens held right now through `acquire`/`try_acquire` in this process.
    pub held: usize,
    /// Most tokens held at once since creation or `zero_stats`.
    pub peak_held: usize,
    /// Capacity minus bytes sitting in the pipe: includes tokens that
    /// children took from the pool themselves.
    pub pool_in_use: usize,
    /// Acquires that had to wait.
    pub waits: u64,
    /// Total time spent waiting in those acquires.
    pub wait_time: Duration,
}

/// Plain atomics: each number is exact, a snapshot needs no lock.
#[derive(Default)]
pub(crate) struct Counters {
    held: AtomicUsize,
    peak_held: AtomicUsize,
    waits: AtomicU64,
    wait_nanos: AtomicU64,
}

impl Counters {
    pub(crate) fn took(&self, waited: Option<Duration>) {
        let now = self.held.fetch_add(1, Relaxed) + 1;
        self.peak_held.fetch_max(now, Relaxed);
        if let Some(d) = waited {
            self.waits.fetch_add(1, Relaxed);
            let nanos = u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
            self.wait_nanos.fetch_add(nanos, Relaxed);
        }
    }

    pub(crate) fn gave_back(&self) {
        self.held.fetch_sub(1, Relaxed);
    }

    pub(crate) fn zero(&self) {
        self.peak_held.store(self.held.load(Relaxed), Relaxed);
        self.waits.store(0, Relaxed);
        self.wait_nanos.store(0, Relaxed);
    }

    pub(crate) fn snapshot(&self, capacity: usize, in_pipe: usize) -> JobserverStats {
        JobserverStats {
            capacity,
            held: self.held.load(Relaxed),
            peak_held: self.peak_held.load(Relaxed),
            pool_in_use: capacity.saturating_sub(in_pipe),
            waits: self.waits.load(Relaxed),
            wait_time: Duration::from_nanos(self.wait_nanos.load(Relaxed)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peak_and_zero() {
        let c = Counters::default();
        c.took(None);
        c.took(Some(Duration::from_millis(5)));
        c.gave_back();
        let s = c.snapshot(4, 3);
        assert_eq!((s.held, s.peak_held, s.pool_in_use, s.waits), (1, 2, 1, 1));
        assert_eq!(s.wait_time, Duration::from_millis(5));
        c.zero();
        let s = c.snapshot(4, 3);
        assert_eq!((s.held, s.peak_held, s.waits), (1, 1, 0));
        assert_eq!(s.wait_time, Duration::ZERO);
    }
}
