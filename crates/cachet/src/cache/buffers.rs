//! Large byte buffers kept for the next entries while a build runs.
//!
//! Storing a compile reads its outputs into buffers as large as they are and compresses
//! them into another. The server's allocator gives every buffer of 128 KiB and up a
//! mapping of its own, unmapped when freed (see `server::return_freed_memory`), so the
//! kernel faulted in and zeroed each page of each new buffer: in a cold build of
//! `bench/crate-graph` (310 MB of outputs), about 100 000 page faults, a tenth of the
//! server's CPU. Buffers given back here are handed out again, their pages still in
//! place, and let go once unused for [`IDLE`], so an idle server holds none of them.

use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// Buffers with less room than this (bytes) are not kept: the allocator's heap serves
/// them without new pages.
pub const MIN_KEPT: usize = 128 << 10;

/// Most room (bytes) kept at once; past it the buffers unused longest go first.
pub const LIMIT: usize = 64 << 20;

/// A buffer unused this long is let go (its pages go back to the kernel).
pub const IDLE: Duration = Duration::from_secs(2);

/// The server's buffers (see [`take`], [`give_back`], [`trim`]).
static SHARED: Pool = Pool::new(LIMIT);

/// An empty buffer with room for at least `len` bytes; see [`Pool::take`].
pub fn take(len: usize) -> Vec<u8> {
    SHARED.take(len)
}

/// Keeps `buffer` for a later [`take`]; see [`Pool::give_back`].
pub fn give_back(buffer: Vec<u8>) {
    SHARED.give_back(buffer);
}

/// Lets go of the buffers unused since `now - IDLE`; the server calls it twice a second.
pub fn trim(now: Instant) {
    SHARED.trim(now, IDLE);
}

/// Buffers given back, each with when it was.
pub struct Pool {
    limit: usize,
    kept: Mutex<Kept>,
}

struct Kept {
    /// Oldest first.
    buffers: Vec<(Vec<u8>, Instant)>,
    /// Their room in all (bytes).
    bytes: usize,
}

impl Kept {
    fn remove(&mut self, index: usize) -> Vec<u8> {
        let (buffer, _) = self.buffers.remove(index);
        self.bytes -= buffer.capacity();
        buffer
    }
}

impl Pool {
    /// An empty pool that keeps at most `limit` bytes of room.
    pub const fn new(limit: usize) -> Pool {
        Pool {
            limit,
            kept: Mutex::new(Kept {
                buffers: Vec::new(),
                bytes: 0,
            }),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Kept> {
        // The lists stay consistent whatever panicked while holding the lock.
        self.kept.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// An empty buffer with room for at least `len` bytes: the smallest kept one that is
    /// large enough; else the largest kept one, grown (glibc moves a mapping's pages with
    /// `mremap`, so only the new ones are faulted in); else a new one. Below [`MIN_KEPT`]
    /// always a new one.
    pub fn take(&self, len: usize) -> Vec<u8> {
        if len < MIN_KEPT {
            return Vec::with_capacity(len);
        }
        let found = {
            let mut kept = self.lock();
            let fits = kept
                .buffers
                .iter()
                .enumerate()
                .filter(|(_, (b, _))| b.capacity() >= len)
                .min_by_key(|(_, (b, _))| b.capacity())
                .map(|(i, _)| i);
            let largest = || {
                kept.buffers
                    .iter()
                    .enumerate()
                    .max_by_key(|(_, (b, _))| b.capacity())
                    .map(|(i, _)| i)
            };
            fits.or_else(largest).map(|index| kept.remove(index))
        };
        match found {
            Some(mut buffer) => {
                buffer.reserve_exact(len);
                buffer
            }
            None => Vec::with_capacity(len),
        }
    }

    /// Keeps `buffer`, emptied, for a later [`take`](Self::take), unless its room is
    /// below [`MIN_KEPT`] or above the limit; to stay within the limit, the buffers kept
    /// longest are let go.
    pub fn give_back(&self, mut buffer: Vec<u8>) {
        let room = buffer.capacity();
        if room < MIN_KEPT || room > self.limit {
            return;
        }
        buffer.clear();
        let mut dropped = Vec::new();
        {
            let mut kept = self.lock();
            while kept.bytes + room > self.limit {
                dropped.push(kept.remove(0));
            }
            kept.bytes += room;
            kept.buffers.push((buffer, Instant::now()));
        }
        // Unmapped outside the lock.
        drop(dropped);
    }

    /// Lets go of the buffers given back before `now - idle`.
    pub fn trim(&self, now: Instant, idle: Duration) {
        let dropped: Vec<Vec<u8>> = {
            let mut kept = self.lock();
            let stale = kept
                .buffers
                .iter()
                .take_while(|(_, since)| now.saturating_duration_since(*since) >= idle)
                .count();
            (0..stale).map(|_| kept.remove(0)).collect()
        };
        drop(dropped);
    }

    /// Buffers kept now, and their room (bytes).
    #[cfg(test)]
    fn kept(&self) -> (usize, usize) {
        let kept = self.lock();
        (kept.buffers.len(), kept.bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: usize = 1 << 20;

    #[test]
    fn a_buffer_given_back_is_taken_again_empty() {
        let pool = Pool::new(8 * MIB);
        let mut buffer = pool.take(MIB);
        buffer.extend_from_slice(&[7; 1000]);
        let at = buffer.as_ptr();
        pool.give_back(buffer);
        assert_eq!(pool.kept(), (1, MIB));
        let again = pool.take(MIB - 10);
        assert_eq!(again.as_ptr(), at, "the same allocation");
        assert!(again.is_empty() && again.capacity() >= MIB);
        assert_eq!(pool.kept(), (0, 0));
    }

    #[test]
    fn small_buffers_are_neither_kept_nor_taken_from_the_pool() {
        let pool = Pool::new(8 * MIB);
        pool.give_back(Vec::with_capacity(MIN_KEPT - 1));
        assert_eq!(pool.kept(), (0, 0));
        pool.give_back(Vec::with_capacity(MIB));
        let small = pool.take(1000);
        assert!(
            small.capacity() < MIB,
            "a small take leaves the large buffer kept"
        );
        assert_eq!(pool.kept(), (1, MIB));
    }

    #[test]
    fn the_smallest_buffer_that_fits_is_taken() {
        let pool = Pool::new(16 * MIB);
        let (large, fits) = (Vec::with_capacity(4 * MIB), Vec::with_capacity(MIB));
        let fits_at = fits.as_ptr();
        pool.give_back(large);
        pool.give_back(fits);
        let taken = pool.take(600 << 10);
        assert_eq!(taken.as_ptr(), fits_at);
        assert_eq!(pool.kept(), (1, 4 * MIB));
    }

    #[test]
    fn without_one_that_fits_the_largest_is_grown() {
        let pool = Pool::new(16 * MIB);
        pool.give_back(Vec::with_capacity(MIB));
        pool.give_back(Vec::with_capacity(2 * MIB));
        let taken = pool.take(3 * MIB);
        assert!(taken.capacity() >= 3 * MIB);
        assert_eq!(pool.kept(), (1, MIB), "the 2 MiB buffer was taken");
    }

    #[test]
    fn the_limit_lets_the_oldest_go_and_a_buffer_over_it_is_not_kept() {
        let pool = Pool::new(4 * MIB);
        let oldest = Vec::with_capacity(2 * MIB);
        pool.give_back(oldest);
        pool.give_back(Vec::with_capacity(MIB));
        pool.give_back(Vec::with_capacity(2 * MIB));
        assert_eq!(pool.kept(), (2, 3 * MIB), "the first 2 MiB went");
        pool.give_back(Vec::with_capacity(5 * MIB));
        assert_eq!(pool.kept(), (2, 3 * MIB));
    }

    #[test]
    fn trim_lets_go_of_buffers_unused_for_the_idle_time() {
        let pool = Pool::new(16 * MIB);
        pool.give_back(Vec::with_capacity(MIB));
        pool.give_back(Vec::with_capacity(2 * MIB));
        pool.trim(Instant::now(), Duration::from_secs(1));
        assert_eq!(pool.kept(), (2, 3 * MIB), "neither is a second old yet");
        pool.trim(
            Instant::now() + Duration::from_secs(1),
            Duration::from_secs(1),
        );
        assert_eq!(pool.kept(), (0, 0));
        // Oldest first: only those past the idle time go.
        pool.give_back(Vec::with_capacity(MIB));
        let between = Instant::now();
        std::thread::sleep(Duration::from_millis(20));
        pool.give_back(Vec::with_capacity(2 * MIB));
        pool.trim(between + Duration::from_secs(1), Duration::from_secs(1));
        assert_eq!(pool.kept(), (1, 2 * MIB));
    }
}
