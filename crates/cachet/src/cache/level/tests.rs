//! The cache over several levels: read order, backfill, read-only levels, timeouts, the
//! circuit breaker and integrity, against stores whose behaviour each test sets.

use std::collections::HashMap;
use std::io;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;

use crate::cache::entry::{CacheEntry, ENTRY_FORMAT_VERSION, StoredFile};
use crate::cache::level::LevelOptions;
use crate::cache::{Cache, CacheKey, Storage};
use crate::stats::Stats;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Works,
    Fails,
    Hangs,
    TooLarge,
}

/// A store in memory that can be told to fail, hang or refuse large items.
struct Fake {
    items: Mutex<HashMap<CacheKey, Vec<u8>>>,
    mode: Mutex<Mode>,
    calls: AtomicU64,
}

impl Fake {
    fn new() -> Arc<Fake> {
        Arc::new(Fake {
            items: Mutex::new(HashMap::new()),
            mode: Mutex::new(Mode::Works),
            calls: AtomicU64::new(0),
        })
    }
    fn set(&self, mode: Mode) {
        *self.mode.lock().unwrap() = mode;
    }
    fn len(&self) -> usize {
        self.items.lock().unwrap().len()
    }
    fn has(&self, key: &CacheKey) -> bool {
        self.items.lock().unwrap().contains_key(key)
    }
    fn bytes(&self, key: &CacheKey) -> Option<Vec<u8>> {
        self.items.lock().unwrap().get(key).cloned()
    }
    fn plant(&self, key: CacheKey, bytes: Vec<u8>) {
        self.items.lock().unwrap().insert(key, bytes);
    }
    async fn behave(&self) -> io::Result<()> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        let mode = *self.mode.lock().unwrap();
        match mode {
            Mode::Works | Mode::TooLarge => Ok(()),
            Mode::Fails => Err(io::Error::other("connection refused")),
            Mode::Hangs => {
                tokio::time::sleep(Duration::from_secs(3600)).await;
                Ok(())
            }
        }
    }
}

#[async_trait]
impl Storage for Fake {
    async fn get(&self, key: &CacheKey) -> io::Result<Option<Vec<u8>>> {
        self.behave().await?;
        Ok(self.items.lock().unwrap().get(key).cloned())
    }
    async fn put(&self, key: &CacheKey, bytes: Vec<u8>) -> io::Result<()> {
        self.behave().await?;
        if *self.mode.lock().unwrap() == Mode::TooLarge {
            return Err(io::Error::new(
                io::ErrorKind::FileTooLarge,
                "over the item limit",
            ));
        }
        self.items.lock().unwrap().insert(*key, bytes);
        Ok(())
    }
    async fn remove(&self, key: &CacheKey) -> io::Result<()> {
        self.items.lock().unwrap().remove(key);
        Ok(())
    }
}

fn remote(name: &str, read_only: bool) -> LevelOptions {
    LevelOptions {
        name: name.into(),
        kind: "fake".into(),
        read_only,
        timeout: Some(Duration::from_millis(200)),
        breaker: Some((3, Duration::from_secs(30))),
        remove_corrupt: false,
        explain: false,
    }
}

fn entry(tag: u8) -> CacheEntry {
    CacheEntry {
        exit_code: 0,
        stdout: vec![],
        stderr: vec![],
        files: vec![StoredFile {
            role: "object".into(),
            executable: false,
            data: vec![tag; 64],
        }],
        meta: vec![],
    }
}

fn key(n: u8) -> CacheKey {
    CacheKey([n; 32])
}

struct Setup {
    cache: Cache,
    stats: Arc<Stats>,
    local: Arc<Fake>,
    shared: Arc<Fake>,
}

fn two_levels(shared_read_only: bool) -> Setup {
    let (local, shared, stats) = (Fake::new(), Fake::new(), Arc::new(Stats::default()));
    let cache = Cache::with_levels(
        vec![
            (local.clone() as Arc<dyn Storage>, LevelOptions::local()),
            (
                shared.clone() as Arc<dyn Storage>,
                remote("team", shared_read_only),
            ),
        ],
        stats.clone(),
    );
    Setup {
        cache,
        stats,
        local,
        shared,
    }
}

async fn drained(cache: &Cache) {
    assert_eq!(cache.pending().drain(Duration::from_secs(10)).await, 0);
}

#[tokio::test]
async fn writes_go_to_every_writable_level_and_reads_stop_at_the_first_hit() {
    let s = two_levels(false);
    s.cache.put_in_background(key(1), entry(1));
    drained(&s.cache).await;
    assert!(s.local.has(&key(1)) && s.shared.has(&key(1)));
    // Each level got the whole entry (the last one the bytes, the others copies).
    let written = s.local.bytes(&key(1)).unwrap();
    assert_eq!(CacheEntry::decode(&written).unwrap(), entry(1));
    assert_eq!(s.shared.bytes(&key(1)), Some(written));

    assert_eq!(s.cache.get(&key(1)).await, Some(entry(1)));
    let c = s.stats.counters();
    assert_eq!((c.levels[0].hits, c.levels[1].reads), (1, 0), "{c:?}");
    assert_eq!(c.levels[0].name, "local");
    assert_eq!(c.levels[1].name, "team");
    assert_eq!(c.levels[1].writes, 1);
    assert!(c.levels[1].bytes_written > 0);
}

#[tokio::test]
async fn a_hit_on_a_lower_level_backfills_the_faster_one() {
    let s = two_levels(false);
    s.shared.plant(key(2), entry(2).encode());
    assert_eq!(s.cache.get(&key(2)).await, Some(entry(2)));
    drained(&s.cache).await;
    assert!(s.local.has(&key(2)), "backfilled");
    let c = s.stats.counters();
    assert_eq!((c.levels[0].misses, c.levels[1].hits), (1, 1));
    assert_eq!((c.levels[0].writes, c.levels[0].backfills), (1, 1));
    assert_eq!(
        c.levels[1].writes, 0,
        "the level it came from is not written again"
    );
}

#[tokio::test]
async fn a_read_only_level_is_read_and_never_written() {
    let s = two_levels(true);
    s.cache.put_in_background(key(3), entry(3));
    drained(&s.cache).await;
    assert_eq!(s.shared.len(), 0);
    assert_eq!(s.shared.calls.load(Ordering::SeqCst), 0);

    s.shared.plant(key(4), entry(4).encode());
    assert_eq!(s.cache.get(&key(4)).await, Some(entry(4)));
    drained(&s.cache).await;
    assert!(
        s.local.has(&key(4)),
        "a read-only level still backfills the local disk"
    );
}

#[tokio::test]
async fn errors_and_timeouts_are_misses_and_the_breaker_opens() {
    let s = two_levels(false);
    s.shared.set(Mode::Fails);
    assert_eq!(s.cache.get(&key(5)).await, None);
    s.shared.set(Mode::Hangs);
    let started = std::time::Instant::now();
    assert_eq!(s.cache.get(&key(5)).await, None);
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "the timeout bounds the call"
    );
    s.cache.put_in_background(key(5), entry(5));
    drained(&s.cache).await;
    assert!(
        s.local.has(&key(5)),
        "the local write does not wait for the remote"
    );

    let c = s.stats.counters();
    assert_eq!(
        (c.levels[1].errors, c.levels[1].timeouts),
        (1, 2),
        "{:?}",
        c.levels[1]
    );
    assert_eq!(c.levels[1].breaker_opens, 1);

    // Open: the store is not called at all.
    let calls = s.shared.calls.load(Ordering::SeqCst);
    s.local.items.lock().unwrap().clear();
    assert_eq!(s.cache.get(&key(5)).await, None);
    assert_eq!(s.shared.calls.load(Ordering::SeqCst), calls);
    assert_eq!(s.stats.counters().levels[1].skipped_by_breaker, 1);
    assert!(
        s.cache.levels()[1]
            .breaker()
            .to_string()
            .starts_with("open")
    );
}

#[tokio::test]
async fn entries_that_fail_their_checks_are_counted_misses_and_never_restored() {
    let s = two_levels(false);
    let mut corrupt = entry(6).encode();
    let last = corrupt.len() - 1;
    corrupt[last] ^= 0xff;
    s.shared.plant(key(6), corrupt);
    let mut other_version = entry(7).encode();
    other_version[8..12].copy_from_slice(&(ENTRY_FORMAT_VERSION + 1).to_le_bytes());
    s.shared.plant(key(7), other_version);

    assert_eq!(s.cache.get(&key(6)).await, None);
    assert_eq!(s.cache.get(&key(7)).await, None);
    drained(&s.cache).await;
    assert!(
        !s.local.has(&key(6)) && !s.local.has(&key(7)),
        "nothing backfilled"
    );
    let c = s.stats.counters();
    assert_eq!(c.levels[1].corrupt, 2);
    assert_eq!(c.levels[1].hits, 0);
    assert_eq!(c.corrupt_entries, 2);
    assert!(
        s.shared.has(&key(6)),
        "a shared store's entry is left for the next write"
    );
}

#[tokio::test]
async fn a_corrupt_local_entry_falls_through_to_the_next_level_and_is_removed() {
    let s = two_levels(false);
    s.local.plant(key(8), b"CACHET\0\x01garbage".to_vec());
    s.shared.plant(key(8), entry(8).encode());
    assert_eq!(s.cache.get(&key(8)).await, Some(entry(8)));
    drained(&s.cache).await;
    assert_eq!(
        s.local.items.lock().unwrap().get(&key(8)),
        Some(&entry(8).encode()),
        "replaced by the backfill"
    );
}

#[tokio::test]
async fn too_large_for_a_store_is_a_counted_skip_not_an_error() {
    let s = two_levels(false);
    s.shared.set(Mode::TooLarge);
    for n in 10..15 {
        s.cache.put_in_background(key(n), entry(n));
    }
    drained(&s.cache).await;
    let c = s.stats.counters();
    assert_eq!(c.levels[1].skipped_too_large, 5);
    assert_eq!((c.levels[1].errors, c.levels[1].breaker_opens), (0, 0));
    assert_eq!(c.cache_write_errors, 0);
}

/// A store that answers, but with data that fails its own check (a chunk or blob hash).
struct BadData;

#[async_trait]
impl Storage for BadData {
    async fn get(&self, _key: &CacheKey) -> io::Result<Option<Vec<u8>>> {
        Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "blob hash mismatch",
        ))
    }
    async fn put(&self, _key: &CacheKey, _bytes: Vec<u8>) -> io::Result<()> {
        Ok(())
    }
    async fn remove(&self, _key: &CacheKey) -> io::Result<()> {
        Ok(())
    }
}

#[tokio::test]
async fn bad_data_from_a_store_is_corrupt_not_a_failure_that_opens_the_breaker() {
    let stats = Arc::new(Stats::default());
    let cache = Cache::with_levels(
        vec![(Arc::new(BadData) as Arc<dyn Storage>, remote("team", false))],
        stats.clone(),
    );
    for n in 0..5 {
        assert_eq!(cache.get(&key(n)).await, None);
    }
    let c = stats.counters();
    assert_eq!((c.levels[0].corrupt, c.levels[0].errors), (5, 0));
    assert_eq!(c.levels[0].breaker_opens, 0);
    assert_eq!(c.corrupt_entries, 5);
}

#[tokio::test]
async fn zeroing_keeps_the_level_names() {
    let s = two_levels(true);
    s.cache.put_in_background(key(1), entry(1));
    drained(&s.cache).await;
    s.stats.zero();
    let c = s.stats.counters();
    assert_eq!(c.levels.len(), 2);
    assert_eq!(
        (c.levels[1].name.as_str(), c.levels[1].read_only),
        ("team", true)
    );
    assert_eq!(c.levels[0].writes, 0);
}

#[tokio::test]
async fn an_entry_is_readable_while_its_writes_are_still_going_on() {
    let s = two_levels(false);
    // The remote takes its whole timeout to fail: the write stays pending meanwhile.
    s.shared.set(Mode::Hangs);
    s.cache.put_in_background(key(20), entry(20));
    assert_eq!(s.cache.get(&key(20)).await, Some(entry(20)));
    assert_eq!(s.stats.counters().hits_before_written, 1);

    // An update that reads first builds on the entry being written, not on nothing.
    let (seen_tx, seen_rx) = tokio::sync::oneshot::channel();
    s.cache
        .update(key(20), true, move |old| {
            let _ = seen_tx.send(old.clone());
            old
        })
        .await;
    assert_eq!(seen_rx.await.unwrap(), Some(entry(20)));

    drained(&s.cache).await;
    assert_eq!(s.cache.get(&key(20)).await, Some(entry(20)));
    let c = s.stats.counters();
    assert_eq!(
        c.hits_before_written, 1,
        "once written, it is read from the disk"
    );
    assert_eq!(c.levels[0].hits, 1);
}
