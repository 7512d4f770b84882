//! One level of the cache: a [`Storage`] with its name, its limits and its counters.
//!
//! Everything that can go wrong with a store stops here: a timeout, an error or an open
//! circuit breaker becomes "nothing found" or "not written", counted in the level's stats,
//! so that no store can fail or stall a build.

use std::io;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use super::breaker::{Breaker, BreakerView};
use super::{CacheKey, Storage};
use crate::stats::{LevelCounters, Stats};

/// What one read of a level gave.
#[derive(Debug)]
pub enum Read {
    Found(Vec<u8>),
    Missing,
    /// An error, a timeout, or a level skipped by its breaker (all counted).
    Failed,
}

pub struct Level {
    /// Position in the read order; the local disk, when on, is 0.
    pub index: usize,
    pub name: String,
    pub kind: String,
    pub read_only: bool,
    /// Whether `explain` recipes are shared through this level (`explain = true`).
    pub explain: bool,
    storage: Arc<dyn Storage>,
    /// None for the local disk, which is never slow enough to need one.
    timeout: Option<Duration>,
    breaker: Option<Breaker>,
    /// Whether a corrupt entry here is removed (the local disk's own files). A shared
    /// store's bad entry is left alone: the next store of that key replaces it.
    remove_corrupt: bool,
}

/// How a level is set up.
pub struct LevelOptions {
    pub name: String,
    pub kind: String,
    pub read_only: bool,
    pub timeout: Option<Duration>,
    /// Failures in a row and cooldown; None for no breaker.
    pub breaker: Option<(u32, Duration)>,
    pub remove_corrupt: bool,
    /// Share `explain` recipes through this level.
    pub explain: bool,
}

impl LevelOptions {
    /// The local disk: no timeout, no breaker, its own corrupt files removed.
    pub fn local() -> LevelOptions {
        LevelOptions {
            name: "local".into(),
            kind: "disk".into(),
            read_only: false,
            timeout: None,
            breaker: None,
            remove_corrupt: true,
            explain: false,
        }
    }
}

fn micros(d: Duration) -> u64 {
    d.as_micros().min(u64::MAX as u128) as u64
}

impl Level {
    pub fn new(index: usize, storage: Arc<dyn Storage>, options: LevelOptions) -> Level {
        Level {
            index,
            name: options.name,
            kind: options.kind,
            read_only: options.read_only,
            explain: options.explain,
            storage,
            timeout: options.timeout,
            breaker: options
                .breaker
                .map(|(n, cooldown)| Breaker::new(n, cooldown)),
            remove_corrupt: options.remove_corrupt,
        }
    }

    pub fn breaker(&self) -> BreakerView {
        self.breaker
            .as_ref()
            .map_or(BreakerView::Closed, Breaker::view)
    }

    fn count(&self, stats: &Stats, f: impl FnOnce(&mut LevelCounters)) {
        stats.update(|c| {
            if let Some(level) = c.levels.get_mut(self.index) {
                f(level)
            }
        });
    }

    /// Runs one call with the level's timeout; a timeout is an error of kind TimedOut.
    async fn limited<T>(&self, call: impl Future<Output = io::Result<T>>) -> io::Result<T> {
        match self.timeout {
            Some(limit) => tokio::time::timeout(limit, call).await.unwrap_or_else(|_| {
                Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!("no answer within {limit:?}"),
                ))
            }),
            None => call.await,
        }
    }

    /// Whether the breaker lets a call through; counts the skip when it does not.
    fn admitted(&self, stats: &Stats) -> bool {
        let allowed = self.breaker.as_ref().is_none_or(Breaker::allow);
        if !allowed {
            self.count(stats, |l| l.skipped_by_breaker += 1);
        }
        allowed
    }

    fn failed(&self, stats: &Stats, what: &str, key: &CacheKey, error: &io::Error) {
        let timed_out = error.kind() == io::ErrorKind::TimedOut;
        super::read_log::note(|log| {
            let (errors, timeouts) = log.failures.entry(self.name.clone()).or_default();
            if timed_out {
                *timeouts += 1;
            } else {
                *errors += 1;
            }
        });
        tracing::warn!(
            "cache level {} ({}): {what} of {} failed: {error}",
            self.name,
            self.kind,
            key.to_hex()
        );
        let opened = self.breaker.as_ref().is_some_and(Breaker::failed);
        if opened {
            tracing::warn!(
                "cache level {}: too many failures in a row, not calling it for a while",
                self.name
            );
        }
        self.count(stats, |l| {
            if timed_out {
                l.timeouts += 1;
            } else {
                l.errors += 1;
            }
            l.breaker_opens += u64::from(opened);
        });
    }

    fn succeeded(&self) {
        if let Some(breaker) = &self.breaker {
            breaker.succeeded();
        }
    }

    pub async fn read(&self, key: &CacheKey, stats: &Stats) -> Read {
        if !self.admitted(stats) {
            return Read::Failed;
        }
        let start = Instant::now();
        let result = self.limited(self.storage.get(key)).await;
        let elapsed = micros(start.elapsed());
        self.count(stats, |l| {
            l.reads += 1;
            l.read_time_us += elapsed;
        });
        match result {
            Ok(Some(bytes)) => {
                self.succeeded();
                let len = bytes.len() as u64;
                self.count(stats, |l| l.bytes_read += len);
                Read::Found(bytes)
            }
            Ok(None) => {
                self.succeeded();
                self.count(stats, |l| l.misses += 1);
                Read::Missing
            }
            // The store answered, with bad data (a chunk or blob that fails its hash): a
            // corrupt entry, not a failing store, so it does not count toward the breaker.
            Err(e) if e.kind() == io::ErrorKind::InvalidData => {
                self.succeeded();
                self.note_corrupt(key, stats, &e);
                Read::Failed
            }
            Err(e) => {
                stats.update(|c| c.cache_read_errors += 1);
                self.failed(stats, "read", key, &e);
                Read::Failed
            }
        }
    }

    /// An entry that was found here and verified.
    pub fn count_hit(&self, stats: &Stats) {
        self.count(stats, |l| l.hits += 1);
    }

    /// An entry here that failed a check: logged, and counted as a miss, never restored.
    fn note_corrupt(&self, key: &CacheKey, stats: &Stats, why: &(dyn std::fmt::Display + Sync)) {
        tracing::warn!(
            "cache level {}: entry {} is unusable ({why}); treating it as a miss",
            self.name,
            key.to_hex()
        );
        stats.update(|c| c.corrupt_entries += 1);
        self.count(stats, |l| {
            l.corrupt += 1;
            l.misses += 1;
        });
    }

    /// An entry read from here that failed to decode: counted as corrupt, and removed when
    /// it is this level's own file.
    pub async fn count_corrupt(
        &self,
        key: &CacheKey,
        stats: &Stats,
        why: &(dyn std::fmt::Display + Sync),
    ) {
        self.note_corrupt(key, stats, why);
        if self.remove_corrupt
            && let Err(e) = self.storage.remove(key).await
        {
            tracing::warn!("could not remove corrupt entry {}: {e}", key.to_hex());
        }
    }

    /// Why the level's store takes no writes any more (read-only from then on), once it has
    /// found out; None while it takes them.
    pub fn refuses_writes(&self) -> Option<String> {
        self.storage.refuses_writes()
    }

    /// Whether the store takes no more writes; its reason goes into the level's counters.
    fn refused(&self, stats: &Stats) -> bool {
        match self.refuses_writes() {
            Some(why) => {
                self.count(stats, |l| l.refuses_writes = why);
                true
            }
            None => false,
        }
    }

    /// Stores `bytes`; true when it was stored. `backfill` marks a copy from a slower level.
    pub async fn write(
        &self,
        key: &CacheKey,
        bytes: Vec<u8>,
        backfill: bool,
        stats: &Stats,
    ) -> bool {
        if self.refused(stats) || self.read_only || !self.admitted(stats) {
            return false;
        }
        let len = bytes.len() as u64;
        let start = Instant::now();
        let result = self.limited(self.storage.put(key, bytes)).await;
        let elapsed = micros(start.elapsed());
        match result {
            // The store found out with this write that it takes none.
            Ok(()) if self.refused(stats) => false,
            Ok(()) => {
                if let Some(t) = self.storage.transfer() {
                    // Totals, from writes that may finish out of order.
                    self.count(stats, |l| {
                        l.cas_blobs_uploaded = l.cas_blobs_uploaded.max(t.blobs_uploaded);
                        l.cas_blobs_present = l.cas_blobs_present.max(t.blobs_present);
                        l.cas_bytes_uploaded = l.cas_bytes_uploaded.max(t.bytes_uploaded);
                    });
                }
                self.succeeded();
                self.count(stats, |l| {
                    l.writes += 1;
                    l.backfills += u64::from(backfill);
                    l.bytes_written += len;
                    l.write_time_us += elapsed;
                });
                true
            }
            // Too big for this store (memcached's item limit, say): skipped, not an error.
            Err(e) if e.kind() == io::ErrorKind::FileTooLarge => {
                tracing::debug!(
                    "cache level {}: {} not stored: {e}",
                    self.name,
                    key.to_hex()
                );
                self.count(stats, |l| l.skipped_too_large += 1);
                false
            }
            Err(e) => {
                stats.update(|c| c.cache_write_errors += 1);
                self.failed(stats, "write", key, &e);
                false
            }
        }
    }
}

#[cfg(test)]
mod tests;
