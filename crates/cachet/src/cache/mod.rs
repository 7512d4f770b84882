//! Where compile results are kept.
//!
//! [`Storage`] is the byte-level seam that every store implements: the local disk and the
//! shared stores in [`remote`]. A [`Level`] wraps one store with its timeout, circuit
//! breaker and counters. [`Cache`] sits above the levels: it reads down them, checks every
//! entry's integrity, backfills faster levels, and performs writes in the background so
//! that no client waits for a store.

pub mod breaker;
pub mod buffers;
pub mod disk;
pub mod entry;
pub mod fault;
pub mod level;
pub mod pending;
pub mod read_log;
pub mod remote;

use std::io;
use std::sync::Arc;

use async_trait::async_trait;
pub use disk::DiskCache;
pub use entry::{CacheEntry, StoredFile};
pub use pending::{PendingGuard, PendingWrites};
pub use read_log::{note_stored, with_read_log};

use crate::stats::{LevelCounters, Stats};
use level::{Level, LevelOptions, Read};

/// A blake3 digest of everything that can change a compile's output.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct CacheKey(pub [u8; 32]);

impl CacheKey {
    /// The key as 64 lowercase hex digits: its name in every store.
    pub fn to_hex(self) -> String {
        blake3::Hash::from(self.0).to_hex().to_string()
    }
}

impl From<blake3::Hash> for CacheKey {
    fn from(hash: blake3::Hash) -> CacheKey {
        CacheKey(*hash.as_bytes())
    }
}

/// One store of encoded entries.
#[async_trait]
pub trait Storage: Send + Sync {
    /// The bytes stored under `key`, or `None` if there are none.
    async fn get(&self, key: &CacheKey) -> io::Result<Option<Vec<u8>>>;
    /// Stores `bytes` under `key`, replacing what was there.
    async fn put(&self, key: &CacheKey, bytes: Vec<u8>) -> io::Result<()>;
    /// Deletes what is stored under `key`; no error if nothing was.
    async fn remove(&self, key: &CacheKey) -> io::Result<()>;
    /// Why this store takes no more writes, once it has found out (a REAPI server that
    /// refuses ActionCache updates): its level is read-only from then on.
    fn refuses_writes(&self) -> Option<String> {
        None
    }
    /// What a content-addressed store uploaded so far, in all; None for other stores.
    fn transfer(&self) -> Option<Transfer> {
        None
    }
    /// Asks the store now whether it takes writes (for `--show-config`): a line to show
    /// when it says it does not, or did not answer. Only a REAPI server can say so up
    /// front; others answer None without a call.
    async fn ask_refuses_writes(&self) -> Option<String> {
        None
    }
}

/// Totals of a content-addressed store's uploads since the server started.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Transfer {
    /// Blobs sent.
    pub blobs_uploaded: u64,
    /// Blobs the store already held, not sent.
    pub blobs_present: u64,
    /// Bytes of the blobs sent.
    pub bytes_uploaded: u64,
}

/// The local disk cache as a [`Storage`]: reads run inline (they are on every hit's path
/// and cheaper than a thread hop), writes on the background threads (see `background`),
/// removals on tokio's blocking pool.
pub struct DiskStorage {
    disk: Arc<DiskCache>,
}

impl DiskStorage {
    /// Serves `disk` through the [`Storage`] trait.
    pub fn new(disk: Arc<DiskCache>) -> DiskStorage {
        DiskStorage { disk }
    }
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> io::Result<T> + Send + 'static,
) -> io::Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| io::Error::other(format!("cache task failed: {e}")))?
}

#[async_trait]
impl Storage for DiskStorage {
    async fn get(&self, key: &CacheKey) -> io::Result<Option<Vec<u8>>> {
        // Inline: a read from the page cache is far cheaper than a hop to the blocking
        // pool, and reads are on every hit's path.
        self.disk.get(&key.to_hex())
    }

    async fn put(&self, key: &CacheKey, bytes: Vec<u8>) -> io::Result<()> {
        let (disk, key) = (self.disk.clone(), key.to_hex());
        // Creating and writing files costs the build's cores as much as compressing: it
        // waits for a gap in the build too (readers get the entry from memory meanwhile).
        crate::background::run(bytes.len() as u64, move || {
            let put = disk.put(&key, &bytes);
            buffers::give_back(bytes);
            put
        })
        .await?
    }

    async fn remove(&self, key: &CacheKey) -> io::Result<()> {
        let (disk, key) = (self.disk.clone(), key.to_hex());
        blocking(move || disk.remove(&key).map(drop)).await
    }
}

/// The levels in read order (the local disk first, when on) and the writes in flight.
#[derive(Clone)]
pub struct Cache {
    levels: Vec<Arc<Level>>,
    stats: Arc<Stats>,
    pending: PendingWrites,
    /// Entries whose writes are still going on, readable meanwhile: a build that starts
    /// the moment the last one ended must not miss what is being written.
    unwritten: Unwritten,
}

type Unwritten = Arc<std::sync::Mutex<std::collections::HashMap<CacheKey, Arc<CacheEntry>>>>;

fn unwritten_get(unwritten: &Unwritten, key: &CacheKey) -> Option<CacheEntry> {
    let map = unwritten.lock().unwrap_or_else(|e| e.into_inner());
    map.get(key).map(|entry| CacheEntry::clone(entry))
}

/// Makes `entry` readable until [`store`] has written it.
fn unwritten_insert(unwritten: &Unwritten, key: CacheKey, entry: CacheEntry) -> Arc<CacheEntry> {
    let entry = Arc::new(entry);
    let mut map = unwritten.lock().unwrap_or_else(|e| e.into_inner());
    map.insert(key, entry.clone());
    entry
}

impl Cache {
    /// A cache of one level, the local disk.
    #[cfg(test)]
    pub fn new(storage: Arc<dyn Storage>, stats: Arc<Stats>) -> Cache {
        Cache::with_levels(vec![(storage, LevelOptions::local())], stats)
    }

    /// A cache of these levels, read in this order.
    pub fn with_levels(levels: Vec<(Arc<dyn Storage>, LevelOptions)>, stats: Arc<Stats>) -> Cache {
        let levels: Vec<Arc<Level>> = levels
            .into_iter()
            .enumerate()
            .map(|(index, (storage, options))| Arc::new(Level::new(index, storage, options)))
            .collect();
        stats.update(|c| {
            c.levels = levels
                .iter()
                .map(|l| LevelCounters::named(&l.name, &l.kind, l.read_only))
                .collect()
        });
        Cache {
            levels,
            stats,
            pending: PendingWrites::default(),
            unwritten: Unwritten::default(),
        }
    }

    /// The levels, in read order.
    pub fn levels(&self) -> &[Arc<Level>] {
        &self.levels
    }

    /// The writes still going on, for stats and for shutdown to wait on.
    pub fn pending(&self) -> &PendingWrites {
        &self.pending
    }

    /// A verified entry, or None. Reads go down the levels; a hit below the first copies
    /// the entry into the faster writable levels in the background. An error or a corrupt
    /// entry on one level is counted and the next level is tried.
    pub async fn get(&self, key: &CacheKey) -> Option<CacheEntry> {
        if let Some(entry) = unwritten_get(&self.unwritten, key) {
            self.stats.update(|c| c.hits_before_written += 1);
            return Some(entry);
        }
        read_levels(&self.levels, &self.stats, &self.pending, key).await
    }

    /// Stores `entry` without making anyone wait; failures are logged and counted.
    pub fn put_in_background(&self, key: CacheKey, entry: CacheEntry) -> Arc<CacheEntry> {
        // Readable from now on, before the task that writes it has even started.
        let guard = self.pending.reserve(entry.data_size());
        let entry = unwritten_insert(&self.unwritten, key, entry);
        let (levels, stats, unwritten) = (
            self.levels.clone(),
            self.stats.clone(),
            self.unwritten.clone(),
        );
        let stored = entry.clone();
        tokio::spawn(async move {
            store(&levels, &stats, &unwritten, key, entry).await;
            drop(guard);
        });
        stored
    }

    /// Whether any level shares `explain` recipes (`explain = true`).
    pub fn shares_recipes(&self) -> bool {
        self.levels.iter().any(|l| l.explain)
    }

    /// A recipe object another machine stored, from the levels that share them.
    pub async fn get_shared_recipe(&self, key: &CacheKey) -> Option<CacheEntry> {
        let levels: Vec<Arc<Level>> = self.levels.iter().filter(|l| l.explain).cloned().collect();
        if levels.is_empty() {
            return None;
        }
        read_levels(&levels, &self.stats, &self.pending, key).await
    }

    /// Stores a recipe object on the writable levels that share them, in the background.
    pub fn put_shared_recipe_in_background(&self, key: CacheKey, recipe: CacheEntry) {
        let targets: Vec<Arc<Level>> = self
            .levels
            .iter()
            .filter(|l| l.explain && !l.read_only)
            .cloned()
            .collect();
        if targets.is_empty() {
            return;
        }
        let guard = self.pending.reserve(recipe.data_size());
        let stats = self.stats.clone();
        tokio::spawn(async move {
            let bytes = recipe.encode();
            let targets: Vec<&Arc<Level>> = targets.iter().collect();
            write_all(&targets, &key, bytes, false, &stats).await;
            drop(guard);
        });
    }

    /// Reads the entry at `key` (when `read_first`; an entry still being written is the
    /// one read), lets `change` decide what to store there, and returns once that is
    /// readable; its writes to every writable level go on in the background, counted as
    /// one pending write.
    pub async fn update(
        &self,
        key: CacheKey,
        read_first: bool,
        change: impl FnOnce(Option<CacheEntry>) -> Option<CacheEntry> + Send + 'static,
    ) {
        // Manifests are small: counted, never waited for.
        let guard = self.pending.reserve(0);
        let old = if !read_first {
            None
        } else if let Some(entry) = unwritten_get(&self.unwritten, &key) {
            // A write of this key is still going on: build on it, not on the older copy.
            Some(entry)
        } else {
            read_levels(&self.levels, &self.stats, &self.pending, &key).await
        };
        if let Some(entry) = change(old) {
            let entry = unwritten_insert(&self.unwritten, key, entry);
            let (levels, stats, unwritten) = (
                self.levels.clone(),
                self.stats.clone(),
                self.unwritten.clone(),
            );
            tokio::spawn(async move {
                store(&levels, &stats, &unwritten, key, entry).await;
                drop(guard);
            });
        }
    }
}

/// Encodes `entry` (already in `unwritten`) and writes it to every writable level, then
/// takes it out of `unwritten` unless a newer entry for the key has come meanwhile.
async fn store(
    levels: &[Arc<Level>],
    stats: &Arc<Stats>,
    unwritten: &Unwritten,
    key: CacheKey,
    entry: Arc<CacheEntry>,
) {
    let encoding = entry.clone();
    let size = entry.data_size();
    // Compressing is the heaviest part of a store: it waits for a gap in the build.
    match crate::background::run(size, move || encoding.encode()).await {
        Ok(bytes) => {
            let targets: Vec<_> = levels.iter().filter(|l| !l.read_only).collect();
            write_all(&targets, &key, bytes, false, stats).await;
        }
        Err(e) => {
            tracing::warn!("encoding cache entry {} failed: {e}", key.to_hex());
            stats.update(|c| c.cache_write_errors += 1);
        }
    }
    {
        let mut map = unwritten.lock().unwrap_or_else(|e| e.into_inner());
        if map.get(&key).is_some_and(|e| Arc::ptr_eq(e, &entry)) {
            map.remove(&key);
        }
    }
    // Written, and read by nobody else now: its buffers serve the next entries.
    if let Ok(entry) = Arc::try_unwrap(entry) {
        for file in entry.files {
            buffers::give_back(file.data);
        }
    }
}

/// Writes `bytes` to every level in `targets` at once: a slow remote does not hold up the
/// local disk.
async fn write_all(
    targets: &[&Arc<Level>],
    key: &CacheKey,
    mut bytes: Vec<u8>,
    backfill: bool,
    stats: &Arc<Stats>,
) {
    let mut writes = tokio::task::JoinSet::new();
    for (i, level) in targets.iter().enumerate() {
        // The last level takes the bytes; only the others need copies (an entry is MiBs).
        let bytes = if i + 1 < targets.len() {
            bytes.clone()
        } else {
            std::mem::take(&mut bytes)
        };
        let (level, stats, key) = ((*level).clone(), stats.clone(), *key);
        writes.spawn(async move { level.write(&key, bytes, backfill, &stats).await });
    }
    while writes.join_next().await.is_some() {}
}

async fn read_levels(
    levels: &[Arc<Level>],
    stats: &Arc<Stats>,
    pending: &PendingWrites,
    key: &CacheKey,
) -> Option<CacheEntry> {
    for (depth, level) in levels.iter().enumerate() {
        let Read::Found(bytes) = level.read(key, stats).await else {
            continue;
        };
        match CacheEntry::decode(&bytes) {
            Ok(entry) => {
                level.count_hit(stats);
                let size = bytes.len() as u64;
                read_log::note(|log| log.hit = Some((level.name.clone(), *key, size)));
                let faster: Vec<Arc<Level>> = levels[..depth]
                    .iter()
                    .filter(|l| !l.read_only)
                    .cloned()
                    .collect();
                if !faster.is_empty() {
                    let (guard, stats, key) =
                        (pending.reserve(bytes.len() as u64), stats.clone(), *key);
                    tokio::spawn(async move {
                        let targets: Vec<_> = faster.iter().collect();
                        write_all(&targets, &key, bytes, true, &stats).await;
                        drop(guard);
                    });
                }
                return Some(entry);
            }
            Err(e) => level.count_corrupt(key, stats, &e).await,
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn entry() -> CacheEntry {
        CacheEntry {
            exit_code: 0,
            stdout: vec![],
            stderr: b"warning".to_vec(),
            files: vec![StoredFile {
                role: "object".into(),
                executable: false,
                data: b"\x7fELF".to_vec(),
            }],
            meta: vec![],
        }
    }

    #[tokio::test]
    async fn put_then_get_and_corrupt_entries_are_removed() {
        let dir = tempfile::tempdir().unwrap();
        let disk = Arc::new(DiskCache::new(dir.path().to_owned(), 1 << 30));
        let stats = Arc::new(Stats::default());
        let cache = Cache::new(Arc::new(DiskStorage::new(disk.clone())), stats.clone());
        let key = CacheKey::from(blake3::hash(b"k"));
        assert!(cache.get(&key).await.is_none());
        cache.put_in_background(key, entry());
        assert_eq!(cache.pending().drain(Duration::from_secs(10)).await, 0);
        assert_eq!(cache.get(&key).await, Some(entry()));

        let path = disk.entry_path(&key.to_hex());
        let mut bytes = std::fs::read(&path).unwrap();
        let last = bytes.len() - 1;
        bytes[last] ^= 0xff;
        std::fs::write(&path, bytes).unwrap();
        assert!(cache.get(&key).await.is_none());
        assert_eq!(stats.counters().corrupt_entries, 1);
        assert!(!path.exists());
    }

    #[tokio::test]
    async fn write_errors_are_counted_not_raised() {
        let dir = tempfile::tempdir().unwrap();
        let disk = Arc::new(DiskCache::new(dir.path().to_owned(), 1 << 30));
        let faulty = fault::FaultyStorage::new(DiskStorage::new(disk), fault::Fault::DiskFull);
        let stats = Arc::new(Stats::default());
        let cache = Cache::new(Arc::new(faulty), stats.clone());
        cache.put_in_background(CacheKey([1; 32]), entry());
        assert_eq!(cache.pending().drain(Duration::from_secs(10)).await, 0);
        assert_eq!(stats.counters().cache_write_errors, 1);
    }

    /// A store whose writes wait until the test lets them through.
    struct Gate(tokio::sync::Semaphore);

    #[async_trait]
    impl Storage for Gate {
        async fn get(&self, _: &CacheKey) -> io::Result<Option<Vec<u8>>> {
            Ok(None)
        }
        async fn put(&self, _: &CacheKey, _: Vec<u8>) -> io::Result<()> {
            self.0.acquire().await.unwrap().forget();
            Ok(())
        }
        async fn remove(&self, _: &CacheKey) -> io::Result<()> {
            Ok(())
        }
    }

    #[tokio::test]
    async fn an_entry_counts_its_bytes_as_pending_until_every_level_has_it() {
        let gate = Arc::new(Gate(tokio::sync::Semaphore::new(0)));
        let cache = Cache::new(gate.clone(), Arc::new(Stats::default()));
        cache.put_in_background(CacheKey([1; 32]), entry());
        assert_eq!(cache.pending().count(), 1);
        assert_eq!(cache.pending().bytes(), entry().data_size());
        assert!(entry().data_size() > 0);
        gate.0.add_permits(1);
        assert_eq!(cache.pending().drain(Duration::from_secs(10)).await, 0);
        assert_eq!(cache.pending().bytes(), 0);
    }
}
