//! Local content-addressed disk cache, safe to share between processes.
//!
//! Layout: `<root>/<k0>/<key>`, where `k0` is the first hex char of the key
//! (16 shards). Each shard keeps `<root>/<k0>/stats` (total bytes and entry
//! count) and `<root>/<k0>/lock`; every change to the shard's entries and
//! stats happens under an exclusive `flock` on that lock file, so cache-wide
//! usage is the sum of 16 small files and several servers can use one
//! directory.
//!
//! No directories below the shards: a fresh cache made one for nearly every
//! entry it stored (4096 of them), and each `mkdir` allocates an inode, which
//! was 3% of the server's CPU in a cold build. Entries of the earlier layout,
//! `<root>/<k0>/<k1k2>/<key>`, are still found, counted and evicted; a `get`
//! moves the one it finds into the shard, and a cleanup removes the leaf
//! directories it empties.
//!
//! LRU is approximate, like ccache: `get` bumps the entry's mtime, and a
//! shard that outgrows `max_size / 16` after a `put` is trimmed (oldest mtime
//! first) to 90% of that.

use std::fs::{self, File, OpenOptions};
use std::io::{self, ErrorKind, Read, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

const SHARDS: usize = 16;
const HEX: &[u8; 16] = b"0123456789abcdef";
const STATS_FILE: &str = "stats";
const LOCK_FILE: &str = "lock";
const TMP_PREFIX: &str = ".cachet-tmp-";
/// Temp files younger than this may belong to an in-flight `put` elsewhere.
const STALE_TMP_AGE: Duration = Duration::from_secs(3600);

/// Size of the cache (or of one shard).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Usage {
    /// Bytes of the stored (encoded) entries.
    pub bytes: u64,
    /// Number of entries.
    pub entries: u64,
}

/// What a cleanup or clear removed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CleanupReport {
    /// Entries deleted.
    pub removed_entries: u64,
    /// Their bytes.
    pub removed_bytes: u64,
}

impl std::ops::AddAssign for CleanupReport {
    fn add_assign(&mut self, rhs: Self) {
        self.removed_entries += rhs.removed_entries;
        self.removed_bytes += rhs.removed_bytes;
    }
}

/// Content-addressed store of encoded cache entries under one directory.
///
/// All methods do blocking filesystem I/O; run them off the async runtime.
#[derive(Debug, Clone)]
pub struct DiskCache {
    root: PathBuf,
    max_size: u64,
}

impl DiskCache {
    /// Does no I/O; directories are created by the first `put`.
    ///
    /// Each of the 16 shards may hold `max_size / 16` bytes.
    pub fn new(root: PathBuf, max_size: u64) -> Self {
        DiskCache { root, max_size }
    }

    /// The cache's directory.
    #[cfg(test)]
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The size limit, in bytes, for the whole cache.
    #[cfg(test)]
    pub fn max_size(&self) -> u64 {
        self.max_size
    }

    /// Where the entry for `key` lives (whether or not it exists).
    #[cfg(test)]
    ///
    /// Panics on an invalid key: a path must never be built from one.
    pub fn entry_path(&self, key: &str) -> PathBuf {
        check_key(key).expect("DiskCache::entry_path: invalid key");
        self.path_for(key)
    }

    /// Returns the stored bytes, or `None` if absent, and marks the entry as
    /// recently used.
    pub fn get(&self, key: &str) -> io::Result<Option<Vec<u8>>> {
        check_key(key)?;
        let mut path = self.path_for(key);
        let mut file = match File::open(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == ErrorKind::NotFound => {
                path = self.legacy_path_for(key);
                match File::open(&path) {
                    Ok(f) => {
                        // Read through the open file whatever becomes of the move.
                        if let Err(e) = self.move_legacy(key) {
                            tracing::debug!(path = %path.display(), error = %e, "could not move a cache entry of the earlier layout");
                        }
                        f
                    }
                    Err(e) if e.kind() == ErrorKind::NotFound => return Ok(None),
                    Err(e) => return Err(e),
                }
            }
            Err(e) => return Err(e),
        };
        let mut data = Vec::with_capacity(file.metadata().map(|m| m.len()).unwrap_or(0) as usize);
        file.read_to_end(&mut data)?;
        // A failed bump only degrades LRU order; the hit is still good.
        if let Err(e) = file.set_modified(SystemTime::now()) {
            tracing::debug!(path = %path.display(), error = %e, "could not bump cache entry mtime");
        }
        Ok(Some(data))
    }

    /// Atomically stores `bytes` under `key`, replacing any existing entry,
    /// then trims the shard if it went over its share of `max_size`.
    pub fn put(&self, key: &str, bytes: &[u8]) -> io::Result<()> {
        check_key(key)?;
        let shard = shard_index(key);
        let final_path = self.path_for(key);
        let shard_dir = self.shard_dir(shard);
        // Dropping the temp file on any early return deletes it, so a failed
        // put leaves nothing behind.
        let temp = || {
            tempfile::Builder::new()
                .prefix(TMP_PREFIX)
                .tempfile_in(&shard_dir)
        };
        let mut tmp = match temp() {
            Err(e) if e.kind() == ErrorKind::NotFound => {
                fs::create_dir_all(&shard_dir)?;
                temp()?
            }
            made => made?,
        };
        tmp.write_all(bytes)?;
        let new_len = bytes.len() as u64;

        let usage = {
            let _lock = self.lock_shard(shard)?;
            let mut usage = self.load_stats_locked(shard)?;
            // The old size must be read under the lock, or a concurrent put of
            // the same key could be accounted twice.
            let old_len = match fs::symlink_metadata(&final_path) {
                Ok(m) => Some(m.len()),
                Err(e) if e.kind() == ErrorKind::NotFound => None,
                Err(e) => return Err(e),
            };
            tmp.persist(&final_path).map_err(|e| e.error)?;
            match old_len {
                Some(old) => usage.bytes = usage.bytes.saturating_sub(old) + new_len,
                None => {
                    usage.bytes += new_len;
                    usage.entries += 1;
                }
            }
            // The same key in the earlier layout is replaced too, or it would be counted
            // twice.
            // A failure only leaves it counted, as it still is on disk.
            let _ = remove_counted(&self.legacy_path_for(key), &mut usage);
            self.store_stats_locked(shard, usage);
            usage
        };

        if usage.bytes > self.shard_limit() {
            let report = self.clean_shard(shard, false)?;
            tracing::debug!(
                shard,
                removed_entries = report.removed_entries,
                removed_bytes = report.removed_bytes,
                "evicted cache entries"
            );
        }
        Ok(())
    }

    /// Deletes the entry; `Ok(false)` if it did not exist.
    pub fn remove(&self, key: &str) -> io::Result<bool> {
        check_key(key)?;
        let shard = shard_index(key);
        if !self.shard_dir(shard).exists() {
            return Ok(false);
        }
        let _lock = self.lock_shard(shard)?;
        let mut usage = self.load_stats_locked(shard)?;
        let mut removed = false;
        for path in [self.path_for(key), self.legacy_path_for(key)] {
            removed |= remove_counted(&path, &mut usage)?;
        }
        if removed {
            self.store_stats_locked(shard, usage);
        }
        Ok(removed)
    }

    /// Total size of the cache, from the per-shard stats files. Only a shard
    /// with a missing or corrupt stats file is walked.
    pub fn usage(&self) -> io::Result<Usage> {
        let mut total = Usage::default();
        for shard in 0..SHARDS {
            let u = self.shard_usage(shard)?;
            total.bytes += u.bytes;
            total.entries += u.entries;
        }
        Ok(total)
    }

    /// Trims every shard over its limit to 90% of it, deletes stale temp
    /// files and recounts every shard's stats exactly.
    pub fn cleanup(&self) -> io::Result<CleanupReport> {
        let mut report = CleanupReport::default();
        for shard in 0..SHARDS {
            if self.shard_dir(shard).exists() {
                report += self.clean_shard(shard, false)?;
            }
        }
        Ok(report)
    }

    /// Removes every entry and resets the stats; the root stays.
    pub fn clear(&self) -> io::Result<CleanupReport> {
        let mut report = CleanupReport::default();
        for shard in 0..SHARDS {
            if self.shard_dir(shard).exists() {
                report += self.clean_shard(shard, true)?;
            }
        }
        Ok(report)
    }

    fn shard_limit(&self) -> u64 {
        self.max_size / SHARDS as u64
    }

    fn shard_dir(&self, shard: usize) -> PathBuf {
        self.root.join(shard_name(shard))
    }

    /// Only call with a key that passed `check_key`.
    fn path_for(&self, key: &str) -> PathBuf {
        self.root.join(&key[..1]).join(key)
    }

    /// Where the earlier layout kept the entry for `key` (see the module doc).
    fn legacy_path_for(&self, key: &str) -> PathBuf {
        self.root.join(&key[..1]).join(&key[1..3]).join(key)
    }

    /// Moves an entry of the earlier layout to where `path_for` looks, under the shard
    /// lock: if an entry is there already, the older one is removed and uncounted.
    fn move_legacy(&self, key: &str) -> io::Result<()> {
        let shard = shard_index(key);
        let (legacy, path) = (self.legacy_path_for(key), self.path_for(key));
        let _lock = self.lock_shard(shard)?;
        match fs::symlink_metadata(&legacy) {
            Ok(_) => {}
            Err(e) if e.kind() == ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(e),
        }
        if fs::symlink_metadata(&path).is_err() {
            return fs::rename(&legacy, &path);
        }
        let mut usage = self.load_stats_locked(shard)?;
        if remove_counted(&legacy, &mut usage)? {
            self.store_stats_locked(shard, usage);
        }
        Ok(())
    }

    fn lock_shard(&self, shard: usize) -> io::Result<ShardLock> {
        let dir = self.shard_dir(shard);
        fs::create_dir_all(&dir)?;
        ShardLock::acquire(&dir.join(LOCK_FILE))
    }

    fn shard_usage(&self, shard: usize) -> io::Result<Usage> {
        let dir = self.shard_dir(shard);
        // Stats are rewritten in place under the lock: an unlocked read may see a torn
        // write, which its checksum refuses, and then reads again under the lock.
        match read_stats(&dir.join(STATS_FILE)) {
            Some(u) => Ok(u),
            None if !dir.exists() => Ok(Usage::default()),
            None => {
                let _lock = self.lock_shard(shard)?;
                self.load_stats_locked(shard)
            }
        }
    }

    /// Reads the shard's stats, recounting the shard if they are missing or
    /// corrupt. Caller holds the shard lock.
    fn load_stats_locked(&self, shard: usize) -> io::Result<Usage> {
        let dir = self.shard_dir(shard);
        if let Some(u) = read_stats(&dir.join(STATS_FILE)) {
            return Ok(u);
        }
        let listing = list_shard(&dir)?;
        let usage = listing.usage();
        if usage != Usage::default() {
            tracing::warn!(shard = %dir.display(), ?usage, "recounted cache shard with missing or corrupt stats");
        }
        self.store_stats_locked(shard, usage);
        Ok(usage)
    }

    /// Writes stats in place, with a checksum (see [`stats_text`]). Caller holds the shard
    /// lock. On failure the stats file is removed so the next reader recounts instead of
    /// trusting a stale value.
    ///
    /// In place, not a temp file renamed over it: every put writes the stats, and a new
    /// inode per put was a measurable share of the server's CPU in a cold build (ext4
    /// inode allocation).
    fn store_stats_locked(&self, shard: usize, usage: Usage) {
        use std::os::unix::fs::FileExt;
        let path = self.shard_dir(shard).join(STATS_FILE);
        let text = stats_text(usage);
        let result = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .and_then(|file| {
                file.write_all_at(text.as_bytes(), 0)?;
                file.set_len(text.len() as u64)
            });
        if let Err(e) = result {
            tracing::warn!(path = %path.display(), error = %e, "could not write cache shard stats");
            let _ = fs::remove_file(&path);
        }
    }

    /// Lists one shard under its lock, deletes stale temp files, then either
    /// removes everything (`clear_all`) or, if over the limit, the oldest
    /// entries until under 90% of it; finally rewrites exact stats.
    fn clean_shard(&self, shard: usize, clear_all: bool) -> io::Result<CleanupReport> {
        let dir = self.shard_dir(shard);
        let _lock = self.lock_shard(shard)?;
        let mut listing = list_shard(&dir)?;
        for tmp in &listing.stale_tmp {
            if let Err(e) = fs::remove_file(tmp)
                && e.kind() != ErrorKind::NotFound
            {
                tracing::warn!(path = %tmp.display(), error = %e, "could not delete stale temp file");
            }
        }

        let limit = self.shard_limit();
        let mut total = listing.usage().bytes;
        let target = if clear_all {
            0
        } else if total > limit {
            (limit as u128 * 9 / 10) as u64
        } else {
            u64::MAX
        };

        let mut report = CleanupReport::default();
        // Oldest first; ties broken by path so the order is deterministic.
        listing
            .entries
            .sort_by(|a, b| a.mtime.cmp(&b.mtime).then_with(|| a.path.cmp(&b.path)));
        let mut kept = Vec::with_capacity(listing.entries.len());
        for entry in listing.entries {
            if !clear_all && total <= target {
                kept.push(entry);
                continue;
            }
            match fs::remove_file(&entry.path) {
                Ok(()) => {
                    total -= entry.len;
                    report.removed_entries += 1;
                    report.removed_bytes += entry.len;
                }
                // Gone already: nobody else deletes without the lock, but be
                // tolerant of a manual rm.
                Err(e) if e.kind() == ErrorKind::NotFound => total -= entry.len,
                Err(e) => {
                    // Keep it counted so stats stay exact, and carry on.
                    tracing::warn!(path = %entry.path.display(), error = %e, "could not evict cache entry");
                    kept.push(entry);
                }
            }
        }
        // Fails, harmlessly, for a leaf directory that still holds something.
        for leaf in &listing.legacy_dirs {
            let _ = fs::remove_dir(leaf);
        }
        let usage = Usage {
            bytes: kept.iter().map(|e| e.len).sum(),
            entries: kept.len() as u64,
        };
        self.store_stats_locked(shard, usage);
        Ok(report)
    }
}

/// Removes the entry file at `path` and takes it out of `usage`; `Ok(false)` if there was
/// none. Caller holds the shard lock.
fn remove_counted(path: &Path, usage: &mut Usage) -> io::Result<bool> {
    let len = match fs::symlink_metadata(path) {
        Ok(m) => m.len(),
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(false),
        Err(e) => return Err(e),
    };
    match fs::remove_file(path) {
        Ok(()) => {}
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(false),
        Err(e) => return Err(e),
    }
    usage.bytes = usage.bytes.saturating_sub(len);
    usage.entries = usage.entries.saturating_sub(1);
    Ok(true)
}

/// Exclusive `flock` on a shard's lock file, released when dropped (closing
/// the descriptor releases it, also if the process dies).
struct ShardLock {
    _file: File,
}

impl ShardLock {
    fn acquire(path: &Path) -> io::Result<ShardLock> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)?;
        rustix::io::retry_on_intr(|| {
            rustix::fs::flock(&file, rustix::fs::FlockOperation::LockExclusive)
        })?;
        Ok(ShardLock { _file: file })
    }
}

struct ListedEntry {
    path: PathBuf,
    len: u64,
    mtime: SystemTime,
}

#[derive(Default)]
struct ShardListing {
    entries: Vec<ListedEntry>,
    stale_tmp: Vec<PathBuf>,
    /// Leaf directories of the earlier layout (see the module doc).
    legacy_dirs: Vec<PathBuf>,
}

impl ShardListing {
    fn usage(&self) -> Usage {
        Usage {
            bytes: self.entries.iter().map(|e| e.len).sum(),
            entries: self.entries.len() as u64,
        }
    }
}

/// Walks one shard: its files, and the leaf directories of the earlier layout. Files named
/// like keys are entries; temp files older than an hour are reported as stale; anything
/// else (including young temp files, the stats and the lock) is ignored.
fn list_shard(dir: &Path) -> io::Result<ShardListing> {
    let mut listing = ShardListing::default();
    let top = match fs::read_dir(dir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(listing),
        Err(e) => return Err(e),
    };
    let now = SystemTime::now();
    let mut leaves = Vec::new();
    for file in top {
        let file = file?;
        let is_leaf_dir = file
            .file_name()
            .to_str()
            .is_some_and(|n| n.len() == 2 && n.bytes().all(is_lower_hex))
            && file.file_type()?.is_dir();
        if is_leaf_dir {
            leaves.push(file.path());
        } else {
            list_file(file, now, &mut listing)?;
        }
    }
    for leaf in leaves {
        let files = match fs::read_dir(&leaf) {
            Ok(rd) => rd,
            Err(e) if e.kind() == ErrorKind::NotFound => continue,
            Err(e) => return Err(e),
        };
        for file in files {
            list_file(file?, now, &mut listing)?;
        }
        listing.legacy_dirs.push(leaf);
    }
    Ok(listing)
}

/// Adds `file` to `listing` if it is an entry or a stale temp file.
fn list_file(file: fs::DirEntry, now: SystemTime, listing: &mut ShardListing) -> io::Result<()> {
    let name = file.file_name();
    let Some(name) = name.to_str() else {
        return Ok(());
    };
    let is_entry = check_key(name).is_ok();
    let is_tmp = name.starts_with(TMP_PREFIX);
    if !is_entry && !is_tmp {
        return Ok(());
    }
    let meta = match file.metadata() {
        Ok(m) => m,
        // Renamed or deleted between readdir and stat.
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    };
    if !meta.is_file() {
        return Ok(());
    }
    let mtime = meta.modified().unwrap_or(SystemTime::UNIX_EPOCH);
    if is_entry {
        listing.entries.push(ListedEntry {
            path: file.path(),
            len: meta.len(),
            mtime,
        });
    } else if now
        .duration_since(mtime)
        .is_ok_and(|age| age > STALE_TMP_AGE)
    {
        listing.stale_tmp.push(file.path());
    }
    Ok(())
}

/// A shard's stats file: `cachet-stats-v2 BYTES ENTRIES CHECK\n`, the numbers zero-padded
/// to 20 digits so that every rewrite has the same length, `CHECK` the first 8 bytes of
/// the blake3 of `BYTES ENTRIES` in hex. A torn or damaged file fails the check.
fn stats_text(usage: Usage) -> String {
    let numbers = format!("{:020} {:020}", usage.bytes, usage.entries);
    let check = &blake3::hash(numbers.as_bytes()).to_hex()[..16];
    format!("cachet-stats-v2 {numbers} {check}\n")
}

/// Reads a stats file written by [`stats_text`], or by an older cachet (`cachet-stats-v1
/// BYTES ENTRIES`, replaced by rename, so never torn). `None` if missing, torn or
/// malformed, which callers treat as "recount this shard".
fn read_stats(path: &Path) -> Option<Usage> {
    let text = fs::read_to_string(path).ok()?;
    let fields: Vec<&str> = text.strip_suffix('\n')?.split(' ').collect();
    let usage = |bytes: &str, entries: &str| {
        Some(Usage {
            bytes: bytes.parse().ok()?,
            entries: entries.parse().ok()?,
        })
    };
    match fields.as_slice() {
        ["cachet-stats-v1", bytes, entries] => usage(bytes, entries),
        ["cachet-stats-v2", bytes, entries, _] => {
            let read = usage(bytes, entries)?;
            (stats_text(read) == text).then_some(read)
        }
        _ => None,
    }
}

fn is_lower_hex(b: u8) -> bool {
    b.is_ascii_digit() || (b'a'..=b'f').contains(&b)
}

/// Keys become path components, so only exactly 64 lowercase hex chars pass.
fn check_key(key: &str) -> io::Result<()> {
    if key.len() == 64 && key.bytes().all(is_lower_hex) {
        Ok(())
    } else {
        Err(io::Error::new(
            ErrorKind::InvalidInput,
            format!("invalid cache key {key:?}: expected 64 lowercase hex characters"),
        ))
    }
}

fn shard_index(key: &str) -> usize {
    HEX.iter()
        .position(|&c| c == key.as_bytes()[0])
        .expect("validated key")
}

fn shard_name(shard: usize) -> &'static str {
    const NAMES: [&str; SHARDS] = [
        "0", "1", "2", "3", "4", "5", "6", "7", "8", "9", "a", "b", "c", "d", "e", "f",
    ];
    NAMES[shard]
}

#[cfg(test)]
mod tests;
