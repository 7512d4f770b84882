//! Cache writes handed off and not finished yet: counted for `cachet --flush` and
//! shutdown, and bounded in bytes, so that a store slower than the build (a remote on a
//! thin link, a disk that stalls) slows the build down instead of filling the server's
//! memory with entries waiting to be written.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tokio::sync::Notify;

/// Bytes of entries waiting to be written past which a compile that has a new entry waits
/// before its client hears back (back-pressure). The overshoot is at most one entry per
/// compile finishing at the same moment, and those are bounded by the jobserver tokens.
pub const PENDING_BYTES_LIMIT: u64 = 256 << 20;

/// The writes still going on, shared by clones.
#[derive(Debug, Clone)]
pub struct PendingWrites {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    count: AtomicU64,
    bytes: AtomicU64,
    limit: u64,
    changed: Notify,
}

impl Default for PendingWrites {
    fn default() -> PendingWrites {
        PendingWrites::with_limit(PENDING_BYTES_LIMIT)
    }
}

impl PendingWrites {
    /// No writes yet; [`reserve_when_room`](Self::reserve_when_room) waits past `limit`
    /// bytes.
    pub fn with_limit(limit: u64) -> PendingWrites {
        PendingWrites {
            inner: Arc::new(Inner {
                count: AtomicU64::new(0),
                bytes: AtomicU64::new(0),
                limit,
                changed: Notify::new(),
            }),
        }
    }

    /// Writes handed off and not finished yet.
    pub fn count(&self) -> u64 {
        self.inner.count.load(Ordering::SeqCst)
    }

    /// Bytes of the entries those writes hold in memory.
    pub fn bytes(&self) -> u64 {
        self.inner.bytes.load(Ordering::SeqCst)
    }

    /// Counts a write of `bytes` that is about to be handed off, until the guard is
    /// dropped: taken before a client hears back, so nobody sees "no pending writes" in
    /// between. Never waits (backfills and manifests: small, or already in memory).
    pub fn reserve(&self, bytes: u64) -> PendingGuard {
        self.inner.count.fetch_add(1, Ordering::SeqCst);
        self.inner.bytes.fetch_add(bytes, Ordering::SeqCst);
        PendingGuard {
            pending: self.clone(),
            bytes,
        }
    }

    /// Like [`reserve`](Self::reserve), but first waits while the writes pending hold
    /// more than the limit with these `bytes` added; one entry larger than the limit
    /// still goes when nothing else is pending. Returns how long it waited, if it did.
    pub async fn reserve_when_room(&self, bytes: u64) -> (PendingGuard, Option<Duration>) {
        let mut waited_since: Option<Instant> = None;
        loop {
            let changed = self.inner.changed.notified();
            let now = self.bytes();
            if now == 0 || now.saturating_add(bytes) <= self.inner.limit {
                let waited = waited_since.map(|since| since.elapsed());
                return (self.reserve(bytes), waited);
            }
            waited_since.get_or_insert_with(Instant::now);
            changed.await;
        }
    }

    fn finish(&self, bytes: u64) {
        self.inner.bytes.fetch_sub(bytes, Ordering::SeqCst);
        self.inner.count.fetch_sub(1, Ordering::SeqCst);
        self.inner.changed.notify_waiters();
    }

    /// Waits until every write is done, or `limit` has passed; returns how many are left.
    pub async fn drain(&self, limit: Duration) -> u64 {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            let changed = self.inner.changed.notified();
            let left = self.count();
            if left == 0 {
                return 0;
            }
            if tokio::time::timeout_at(deadline, changed).await.is_err() {
                return self.count();
            }
        }
    }
}

/// One pending write, counted until dropped (see [`PendingWrites::reserve`]).
pub struct PendingGuard {
    pending: PendingWrites,
    bytes: u64,
}

impl Drop for PendingGuard {
    fn drop(&mut self) {
        self.pending.finish(self.bytes);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn past_the_limit_a_new_write_waits_until_an_older_one_is_done() {
        let pending = PendingWrites::with_limit(100);
        let first = pending.reserve(80);
        assert_eq!((pending.count(), pending.bytes()), (1, 80));
        let (small, waited) = pending.reserve_when_room(20).await;
        assert_eq!(waited, None, "80 + 20 fits a limit of 100");
        let waiter = {
            let pending = pending.clone();
            tokio::spawn(async move { pending.reserve_when_room(30).await })
        };
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!waiter.is_finished(), "130 of 100 must wait");
        drop(small);
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!waiter.is_finished(), "110 of 100 must still wait");
        drop(first);
        let (third, waited) = waiter.await.unwrap();
        assert!(waited.is_some());
        assert_eq!((pending.count(), pending.bytes()), (1, 30));
        drop(third);
        assert_eq!((pending.count(), pending.bytes()), (0, 0));
        assert_eq!(pending.drain(Duration::from_secs(1)).await, 0);
    }

    #[tokio::test]
    async fn an_entry_larger_than_the_limit_goes_alone() {
        let pending = PendingWrites::with_limit(100);
        let (big, waited) = pending.reserve_when_room(1000).await;
        assert_eq!(waited, None);
        let waiter = {
            let pending = pending.clone();
            tokio::spawn(async move { pending.reserve_when_room(1).await })
        };
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!waiter.is_finished());
        drop(big);
        drop(waiter.await.unwrap());
        assert_eq!(pending.bytes(), 0);
    }
}
