//! Content hashes of input files, remembered by the server between compiles.
//!
//! A hash is reused only while the file's stamp (see `stamp`) is unchanged, and only for
//! files that were settled when they were hashed, so an edit within the same tick is never
//! missed. Memory is
//! bounded: past `capacity` entries, the least recently used half is dropped.

use std::collections::HashMap;
use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use super::stamp::FileStamp;

struct Slot {
    stamp: FileStamp,
    hash: blake3::Hash,
    used: u64,
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct FileHashStats {
    pub lookups: u64,
    pub hits: u64,
    pub entries: u64,
}

pub struct FileHashes {
    capacity: usize,
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    slots: HashMap<PathBuf, Slot>,
    clock: u64,
    stats: FileHashStats,
}

impl Default for FileHashes {
    fn default() -> Self {
        FileHashes::new(100_000)
    }
}

impl FileHashes {
    pub fn new(capacity: usize) -> FileHashes {
        FileHashes {
            capacity: capacity.max(2),
            inner: Mutex::default(),
        }
    }

    /// The blake3 hash of `path`'s contents (blocking I/O: call from a blocking thread).
    pub fn hash(&self, path: &Path) -> io::Result<blake3::Hash> {
        let meta = std::fs::metadata(path)?;
        let stamp = FileStamp::of(&meta);
        {
            let mut inner = self.inner.lock().unwrap();
            inner.clock += 1;
            inner.stats.lookups += 1;
            let clock = inner.clock;
            if let Some(slot) = inner.slots.get_mut(path)
                && slot.stamp == stamp
            {
                slot.used = clock;
                let hash = slot.hash;
                inner.stats.hits += 1;
                return Ok(hash);
            }
        }
        let hash = hash_file(path)?;
        // Only a file that is settled, and did not change while we read it, is remembered.
        let after = FileStamp::read(path).ok();
        if stamp.settled() && after == Some(stamp) {
            let mut inner = self.inner.lock().unwrap();
            if inner.slots.len() >= self.capacity {
                evict_half(&mut inner.slots);
            }
            let used = inner.clock;
            inner
                .slots
                .insert(path.to_owned(), Slot { stamp, hash, used });
        }
        Ok(hash)
    }

    pub fn stats(&self) -> FileHashStats {
        let inner = self.inner.lock().unwrap();
        FileHashStats {
            entries: inner.slots.len() as u64,
            ..inner.stats
        }
    }
}

/// The blake3 hash of a file's contents, read in 256 KiB pieces (blocking I/O).
pub fn hash_file(path: &Path) -> io::Result<blake3::Hash> {
    let mut file = std::fs::File::open(path)?;
    let mut hasher = blake3::Hasher::new();
    let mut buf = vec![0u8; 256 << 10];
    loop {
        let n = file.read(&mut buf)?;
        if n == 0 {
            return Ok(hasher.finalize());
        }
        hasher.update(&buf[..n]);
    }
}

fn evict_half(slots: &mut HashMap<PathBuf, Slot>) {
    let mut ages: Vec<u64> = slots.values().map(|s| s.used).collect();
    ages.sort_unstable();
    let cutoff = ages[ages.len() / 2];
    slots.retain(|_, s| s.used > cutoff);
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, SystemTime};

    use super::*;
    use crate::compiler::stamp::tests::set_mtime;

    fn age(path: &Path, secs: u64) {
        set_mtime(path, SystemTime::now() - Duration::from_secs(secs));
    }

    #[test]
    fn reuses_only_unchanged_settled_files() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("a.rs");
        std::fs::write(&file, "one").unwrap();
        let hashes = FileHashes::new(10);
        // Fresh (stamped now, however slow this machine is): hashed each time.
        set_mtime(&file, SystemTime::now() + Duration::from_secs(60));
        assert_eq!(hashes.hash(&file).unwrap(), blake3::hash(b"one"));
        assert_eq!(hashes.hash(&file).unwrap(), blake3::hash(b"one"));
        assert_eq!(hashes.stats().hits, 0);
        age(&file, 10);
        hashes.hash(&file).unwrap();
        assert_eq!(hashes.hash(&file).unwrap(), blake3::hash(b"one"));
        assert_eq!(hashes.stats().hits, 1);

        // An edit in place with the same size and an old mtime still changes ctime.
        std::fs::write(&file, "two").unwrap();
        age(&file, 10);
        assert_eq!(hashes.hash(&file).unwrap(), blake3::hash(b"two"));

        // Replaced by rename: another inode.
        let other = dir.path().join("b.rs");
        std::fs::write(&other, "six").unwrap();
        age(&other, 10);
        std::fs::rename(&other, &file).unwrap();
        assert_eq!(hashes.hash(&file).unwrap(), blake3::hash(b"six"));
    }

    #[test]
    fn memory_is_bounded() {
        let dir = tempfile::tempdir().unwrap();
        let hashes = FileHashes::new(8);
        for i in 0..50 {
            let file = dir.path().join(format!("f{i}"));
            std::fs::write(&file, format!("{i}")).unwrap();
            age(&file, 10);
            hashes.hash(&file).unwrap();
        }
        assert!(hashes.stats().entries <= 8);
    }
}
