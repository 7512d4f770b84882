//! Content hashes of input files, remembered by the server between compiles.
//!
//! A hash is reused only while the file's stamp (see `stamp`) is unchanged, and only for
//! files that were settled when they were hashed, so an edit within the same tick is never
//! missed. Memory is
//! bounded: past `capacity` entries, the least recently used half is dropped.
//!
//! A stopping server saves them in its runtime dir ([`FileHashes::save`]) and the next one
//! starts from them ([`FileHashes::load`]), as ccache's inode cache does: a sysroot alone
//! is about 500 MB to hash again (0.2 CPU-s here) each time a server starts. The stamp
//! holds the device and inode numbers, which name a file on this machine only; the runtime
//! dir is this machine's.

use std::collections::HashMap;
use std::ffi::OsString;
use std::io::{self, Read};
use std::os::unix::ffi::OsStringExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use serde::{Deserialize, Serialize};

use super::stamp::FileStamp;

/// What a saved file of hashes starts with: the format's name and version.
const SAVED_MAGIC: &[u8; 16] = b"cachet-hashes-1\n";

/// The largest saved file read back (bytes): 100,000 entries of long paths fit well within.
const SAVED_LIMIT: u64 = 64 << 20;

/// One remembered hash as saved: the path's bytes, the stamp it holds for, the hash.
#[derive(Serialize, Deserialize)]
struct Saved {
    path: Vec<u8>,
    stamp: FileStamp,
    hash: [u8; 32],
    time_macros: Option<TimeMacroNames>,
}

struct Slot {
    stamp: FileStamp,
    hash: blake3::Hash,
    /// Which time macros the text names, once it was scanned for them.
    time_macros: Option<TimeMacroNames>,
    used: u64,
}

/// Which of the predefined time macros a file's text names. Direct mode must not store a
/// compile whose source or header names one (ccache's rule), so every file a C miss read
/// is looked at; the answer is remembered with the file's hash, by the same stamp.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct TimeMacroNames {
    /// `__DATE__` or `__TIME__`.
    pub date_or_time: bool,
    /// `__TIMESTAMP__` (the file's mtime).
    pub timestamp: bool,
}

impl TimeMacroNames {
    /// The names in `text`. Hops from underscore to underscore: most text has few.
    pub fn of(text: &[u8]) -> TimeMacroNames {
        let mut names = TimeMacroNames::default();
        for at in memchr::memchr_iter(b'_', text) {
            let rest = &text[at..];
            names.date_or_time |= rest.starts_with(b"__DATE__") || rest.starts_with(b"__TIME__");
            names.timestamp |= rest.starts_with(b"__TIMESTAMP__");
            if names.date_or_time && names.timestamp {
                break;
            }
        }
        names
    }
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

/// How many files' hashes a server remembers.
pub const DEFAULT_CAPACITY: usize = 100_000;

impl Default for FileHashes {
    fn default() -> Self {
        FileHashes::new(DEFAULT_CAPACITY)
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
        if let Some((hash, _)) = self.remembered(path, stamp, false) {
            return Ok(hash);
        }
        let hash = hash_file(path)?;
        self.remember(path, stamp, hash, None);
        Ok(hash)
    }

    /// The blake3 hash of `path`'s contents and the time macros its text names, from one
    /// read of the whole file (blocking I/O).
    pub fn hash_and_time_macros(&self, path: &Path) -> io::Result<(blake3::Hash, TimeMacroNames)> {
        let meta = std::fs::metadata(path)?;
        let stamp = FileStamp::of(&meta);
        if let Some((hash, Some(names))) = self.remembered(path, stamp, true) {
            return Ok((hash, names));
        }
        let text = std::fs::read(path)?;
        let (hash, names) = (blake3::hash(&text), TimeMacroNames::of(&text));
        self.remember(path, stamp, hash, Some(names));
        Ok((hash, names))
    }

    /// Remembers `hash()` as the content of `path` at `stamp`, for a caller that read the
    /// whole file anyway (a compile's output, which a later compile may take as an input).
    /// `hash` runs only when nothing is remembered for that stamp yet; the result is kept
    /// on the same terms as a hash worked out here.
    pub fn seed(&self, path: &Path, stamp: FileStamp, hash: impl FnOnce() -> blake3::Hash) {
        let known = {
            let inner = self.inner.lock().unwrap();
            inner
                .slots
                .get(path)
                .is_some_and(|slot| slot.stamp == stamp)
        };
        if !known {
            self.remember(path, stamp, hash(), None);
        }
    }

    /// What is remembered of `path` at `stamp`; with `scanned`, only a slot that has the
    /// time macros counts (as a hit).
    fn remembered(
        &self,
        path: &Path,
        stamp: FileStamp,
        scanned: bool,
    ) -> Option<(blake3::Hash, Option<TimeMacroNames>)> {
        let mut inner = self.inner.lock().unwrap();
        inner.clock += 1;
        inner.stats.lookups += 1;
        let clock = inner.clock;
        let slot = inner.slots.get_mut(path)?;
        if slot.stamp != stamp || (scanned && slot.time_macros.is_none()) {
            return None;
        }
        slot.used = clock;
        let found = (slot.hash, slot.time_macros);
        inner.stats.hits += 1;
        Some(found)
    }

    /// Remembers what was worked out from `path` as it was at `stamp`, if the file is
    /// settled and did not change while it was read.
    fn remember(
        &self,
        path: &Path,
        stamp: FileStamp,
        hash: blake3::Hash,
        time_macros: Option<TimeMacroNames>,
    ) {
        let after = FileStamp::read(path).ok();
        if !stamp.settled() || after != Some(stamp) {
            return;
        }
        let mut inner = self.inner.lock().unwrap();
        if inner.slots.len() >= self.capacity {
            evict_half(&mut inner.slots);
        }
        let used = inner.clock;
        let slot = Slot {
            stamp,
            hash,
            time_macros,
            used,
        };
        inner.slots.insert(path.to_owned(), slot);
    }

    /// A memo of `capacity` entries that starts with the hashes saved at `path` by
    /// [`FileHashes::save`]. A missing file starts it empty; so does one that is damaged,
    /// too large or of another format, with a warning (a memo loses nothing by starting
    /// empty: each file is hashed again when asked for).
    pub fn load(path: &Path, capacity: usize) -> FileHashes {
        let hashes = FileHashes::new(capacity);
        match read_saved(path) {
            Ok(Some(saved)) => {
                let mut inner = hashes.inner.lock().unwrap();
                // Saved least recently used first: the order gives back their ages.
                for (at, one) in saved
                    .into_iter()
                    .rev()
                    .take(hashes.capacity)
                    .rev()
                    .enumerate()
                {
                    let slot = Slot {
                        stamp: one.stamp,
                        hash: blake3::Hash::from(one.hash),
                        time_macros: one.time_macros,
                        used: at as u64 + 1,
                    };
                    inner
                        .slots
                        .insert(PathBuf::from(OsString::from_vec(one.path)), slot);
                }
                inner.clock = inner.slots.len() as u64;
            }
            Ok(None) => {}
            Err(e) => tracing::warn!(
                "not using the file hashes saved in {}: {e}; hashing files afresh",
                path.display()
            ),
        }
        hashes
    }

    /// Writes every remembered hash to `path` (whole or not at all), least recently used
    /// first, for [`FileHashes::load`]. Errors: the file could not be written.
    pub fn save(&self, path: &Path) -> io::Result<()> {
        let mut saved: Vec<(u64, Saved)> = {
            let inner = self.inner.lock().unwrap();
            inner
                .slots
                .iter()
                .map(|(path, slot)| {
                    let one = Saved {
                        path: path.as_os_str().as_encoded_bytes().to_vec(),
                        stamp: slot.stamp,
                        hash: *slot.hash.as_bytes(),
                        time_macros: slot.time_macros,
                    };
                    (slot.used, one)
                })
                .collect()
        };
        saved.sort_by_key(|(used, _)| *used);
        let saved: Vec<Saved> = saved.into_iter().map(|(_, one)| one).collect();
        let payload = postcard::to_stdvec(&saved).map_err(io::Error::other)?;
        let mut bytes = Vec::with_capacity(SAVED_MAGIC.len() + 32 + payload.len());
        bytes.extend_from_slice(SAVED_MAGIC);
        bytes.extend_from_slice(blake3::hash(&payload).as_bytes());
        bytes.extend_from_slice(&payload);
        crate::paths::write_atomically(path, &bytes)
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

/// The entries saved at `path`; None when there is no such file. Errors: unreadable,
/// too large, another format, or damaged (its checksum does not match).
fn read_saved(path: &Path) -> io::Result<Option<Vec<Saved>>> {
    let file = match std::fs::File::open(path) {
        Ok(file) => file,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    let mut bytes = Vec::new();
    file.take(SAVED_LIMIT + 1).read_to_end(&mut bytes)?;
    let invalid = |why: &str| io::Error::new(io::ErrorKind::InvalidData, why.to_owned());
    if bytes.len() as u64 > SAVED_LIMIT {
        return Err(invalid("larger than 64 MiB"));
    }
    let Some(rest) = bytes.strip_prefix(SAVED_MAGIC.as_slice()) else {
        return Err(invalid("not a file of hashes of this version"));
    };
    if rest.len() < 32 {
        return Err(invalid("truncated"));
    }
    let (sum, payload) = rest.split_at(32);
    if blake3::hash(payload).as_bytes() != sum {
        return Err(invalid("its checksum does not match"));
    }
    let saved = postcard::from_bytes(payload).map_err(|e| invalid(&e.to_string()))?;
    Ok(Some(saved))
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

    /// Writes `text` to `path`, stamped ten seconds ago: a settled file.
    fn write_settled(path: &Path, text: impl AsRef<[u8]>) {
        std::fs::write(path, text).unwrap();
        age(path, 10);
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
        write_settled(&file, "two");
        assert_eq!(hashes.hash(&file).unwrap(), blake3::hash(b"two"));

        // Replaced by rename: another inode.
        let other = dir.path().join("b.rs");
        write_settled(&other, "six");
        std::fs::rename(&other, &file).unwrap();
        assert_eq!(hashes.hash(&file).unwrap(), blake3::hash(b"six"));
    }

    #[test]
    fn saved_hashes_serve_a_new_memo_while_their_files_are_unchanged() {
        let dir = tempfile::tempdir().unwrap();
        let (kept, edited) = (dir.path().join("kept.rs"), dir.path().join("edited.rs"));
        write_settled(&kept, "kept");
        write_settled(&edited, "before");
        let first = FileHashes::new(10);
        first.hash(&kept).unwrap();
        first.hash(&edited).unwrap();
        let saved = dir.path().join("run/file-hashes");
        first.save(&saved).unwrap();

        write_settled(&edited, "after!");
        let next = FileHashes::load(&saved, 10);
        assert_eq!(next.stats().entries, 2);
        assert_eq!(next.hash(&kept).unwrap(), blake3::hash(b"kept"));
        assert_eq!(
            next.stats().hits,
            1,
            "the unchanged file came from the saved hashes"
        );
        assert_eq!(next.hash(&edited).unwrap(), blake3::hash(b"after!"));
        assert_eq!(next.stats().hits, 1, "the edited file was hashed again");
    }

    #[test]
    fn a_memo_keeps_the_most_recently_used_of_more_saved_hashes_than_it_holds() {
        let dir = tempfile::tempdir().unwrap();
        let files: Vec<PathBuf> = (0..6).map(|i| dir.path().join(format!("f{i}"))).collect();
        let big = FileHashes::new(10);
        for (i, file) in files.iter().enumerate() {
            write_settled(file, format!("{i}"));
            big.hash(file).unwrap();
        }
        let saved = dir.path().join("file-hashes");
        big.save(&saved).unwrap();
        let small = FileHashes::load(&saved, 3);
        assert_eq!(small.stats().entries, 3);
        for file in &files[3..] {
            small.hash(file).unwrap();
        }
        assert_eq!(small.stats().hits, 3, "the three used last were kept");
    }

    #[test]
    fn a_missing_damaged_or_foreign_file_of_hashes_starts_an_empty_memo() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("a.rs");
        write_settled(&file, "a");
        let full = FileHashes::new(10);
        full.hash(&file).unwrap();
        let saved = dir.path().join("file-hashes");
        full.save(&saved).unwrap();
        let good = std::fs::read(&saved).unwrap();
        assert_eq!(FileHashes::load(&saved, 10).stats().entries, 1);

        let mut flipped = good.clone();
        *flipped.last_mut().unwrap() ^= 1;
        let mut foreign = good.clone();
        foreign[14] = b'9';
        let damaged = [
            flipped,
            good[..good.len() - 1].to_vec(),
            good[..20].to_vec(),
            foreign,
            Vec::new(),
            vec![0xff; 4096],
        ];
        for bytes in damaged {
            std::fs::write(&saved, &bytes).unwrap();
            let memo = FileHashes::load(&saved, 10);
            assert_eq!(memo.stats().entries, 0, "{bytes:?}");
            assert_eq!(memo.hash(&file).unwrap(), blake3::hash(b"a"));
        }
        assert_eq!(
            FileHashes::load(&dir.path().join("none"), 10)
                .stats()
                .entries,
            0
        );
    }

    #[test]
    fn the_time_macros_a_text_names_are_remembered_with_its_hash() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("t.h");
        write_settled(&file, "#define BUILT __DATE__");
        let hashes = FileHashes::new(10);
        // Hashed alone first: the scan is still to do, and fills the same slot.
        hashes.hash(&file).unwrap();
        let (hash, names) = hashes.hash_and_time_macros(&file).unwrap();
        assert_eq!(hash, blake3::hash(b"#define BUILT __DATE__"));
        let dated = TimeMacroNames {
            date_or_time: true,
            timestamp: false,
        };
        assert_eq!(names, dated);
        assert_eq!(hashes.stats().hits, 0);
        assert_eq!(hashes.hash_and_time_macros(&file).unwrap().1, dated);
        assert_eq!(hashes.hash(&file).unwrap(), hash);
        assert_eq!(hashes.stats().hits, 2);

        // Kept across a save, and an edit is scanned again.
        let saved = dir.path().join("file-hashes");
        hashes.save(&saved).unwrap();
        let next = FileHashes::load(&saved, 10);
        assert_eq!(next.hash_and_time_macros(&file).unwrap().1, dated);
        assert_eq!(next.stats().hits, 1);
        write_settled(&file, "const char *s = __TIMESTAMP__;");
        let names = next.hash_and_time_macros(&file).unwrap().1;
        assert_eq!((names.date_or_time, names.timestamp), (false, true));
    }

    #[test]
    fn time_macro_names_are_found_anywhere_in_a_text() {
        let of = |text: &[u8]| {
            let names = TimeMacroNames::of(text);
            (names.date_or_time, names.timestamp)
        };
        assert_eq!(of(b"__TIME__"), (true, false));
        assert_eq!(of(b"x __TIMESTAMP__ y __DATE__"), (true, true));
        assert_eq!(
            of(b"int __x_DATE; _TIME__ __DATE_ __TIMESTAMP_"),
            (false, false)
        );
        assert_eq!(of(b""), (false, false));
        let mut long = vec![b'_'; 1 << 20];
        long.extend_from_slice(b"_TIMESTAMP__");
        assert_eq!(of(&long), (false, true));
    }

    #[test]
    fn a_seeded_hash_serves_lookups_while_its_file_is_unchanged() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("libdep.rlib");
        write_settled(&file, "rlib");
        let hashes = FileHashes::new(10);
        let stamp = FileStamp::read(&file).unwrap();
        hashes.seed(&file, stamp, || blake3::hash(b"rlib"));
        assert_eq!(hashes.hash(&file).unwrap(), blake3::hash(b"rlib"));
        assert_eq!(hashes.stats().hits, 1);
        // Known already: not worked out again.
        hashes.seed(&file, stamp, || unreachable!("the hash is known"));
        // A seed for a stamp the file no longer has is not kept.
        write_settled(&file, "new!");
        hashes.seed(&file, stamp, || blake3::hash(b"rlib"));
        assert_eq!(hashes.hash(&file).unwrap(), blake3::hash(b"new!"));
        // Nor one for a file changed this instant (an edit in the same tick could follow).
        let fresh = dir.path().join("fresh.rlib");
        std::fs::write(&fresh, "fresh").unwrap();
        set_mtime(&fresh, SystemTime::now() + Duration::from_secs(60));
        let stamp = FileStamp::read(&fresh).unwrap();
        hashes.seed(&fresh, stamp, || blake3::hash(b"fresh"));
        assert_eq!(hashes.stats().entries, 1);
    }

    #[test]
    fn memory_is_bounded() {
        let dir = tempfile::tempdir().unwrap();
        let hashes = FileHashes::new(8);
        for i in 0..50 {
            let file = dir.path().join(format!("f{i}"));
            write_settled(&file, format!("{i}"));
            hashes.hash(&file).unwrap();
        }
        assert!(hashes.stats().entries <= 8);
    }
}
