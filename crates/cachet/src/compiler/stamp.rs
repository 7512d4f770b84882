//! "Is this file unchanged?", answered one way everywhere: a [`FileStamp`] (device, inode,
//! size, mtime and ctime in nanoseconds), trusted only once the file is settled. A [`Memo`]
//! remembers an answer worked out from a file (a compiler's identity, a toolchain, a
//! linker's digest) under its stamp, worked out once however many requests ask at once.
//!
//! Settled: changed before the current tick of the clock that stamps files. Linux stamps
//! files from the kernel's coarse realtime clock (`CLOCK_REALTIME_COARSE`; one tick, a few
//! ms, is the timestamp resolution), so two changes within one tick may leave one stamp,
//! and a change made after a moment may carry a stamp of that moment's tick. A file whose
//! stamps have no sub-second part sits on a filesystem that keeps whole (FAT: two)
//! seconds: it is settled two seconds later.

use std::collections::HashMap;
use std::hash::Hash;
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;
#[cfg(test)]
use std::time::SystemTime;

use tokio::sync::OnceCell;

/// The resolution of whole-second timestamps (FAT keeps two seconds).
const COARSE_RESOLUTION: Duration = Duration::from_secs(2);

/// A moment on the clock that stamps files (see the module's doc), in ns since the epoch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct FileClock(i128);

impl FileClock {
    /// Now, as the next file change would be stamped.
    pub fn now() -> FileClock {
        let t = rustix::time::clock_gettime(rustix::time::ClockId::RealtimeCoarse);
        FileClock(t.tv_sec as i128 * 1_000_000_000 + t.tv_nsec as i128)
    }
}

#[cfg(test)]
impl From<SystemTime> for FileClock {
    fn from(at: SystemTime) -> FileClock {
        FileClock(
            at.duration_since(SystemTime::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos() as i128),
        )
    }
}

/// What identifies one version of a file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub struct FileStamp {
    dev: u64,
    ino: u64,
    /// Bytes.
    size: u64,
    /// Nanoseconds since the epoch.
    mtime_ns: i128,
    /// Nanoseconds since the epoch.
    ctime_ns: i128,
}

impl FileStamp {
    /// The stamp of a file's metadata (`stat`, following symlinks, gives the target's).
    pub fn of(meta: &std::fs::Metadata) -> FileStamp {
        FileStamp {
            dev: meta.dev(),
            ino: meta.ino(),
            size: meta.size(),
            mtime_ns: meta.mtime() as i128 * 1_000_000_000 + meta.mtime_nsec() as i128,
            ctime_ns: meta.ctime() as i128 * 1_000_000_000 + meta.ctime_nsec() as i128,
        }
    }

    /// The stamp of the file at `path`.
    pub fn read(path: &Path) -> io::Result<FileStamp> {
        Ok(FileStamp::of(&std::fs::metadata(path)?))
    }

    /// Whether the file was last modified before the tick of `at` (two seconds before, on
    /// a whole-second filesystem): a change after `at` then gets another stamp. A file
    /// changed in `at`'s tick or later may have changed after `at`, while it was read.
    pub fn settled_before(&self, at: FileClock) -> bool {
        if self.mtime_ns % 1_000_000_000 == 0 {
            self.mtime_ns + COARSE_RESOLUTION.as_nanos() as i128 <= at.0
        } else {
            self.mtime_ns < at.0
        }
    }

    /// Whether the file is settled now.
    pub fn settled(&self) -> bool {
        self.settled_before(FileClock::now())
    }
}

/// Answers remembered by a key that holds the stamps of the files they come from. Each is
/// worked out once, even when many requests ask at once; an answer from a file that is
/// not settled is not kept, and `valid` can retire one (an answer with a time to live).
pub struct Memo<K, V> {
    slots: Mutex<HashMap<K, Arc<OnceCell<V>>>>,
}

impl<K, V> Default for Memo<K, V> {
    fn default() -> Self {
        Memo {
            slots: Mutex::default(),
        }
    }
}

impl<K: Eq + Hash + Clone, V: Clone> Memo<K, V> {
    /// The answer for `key`, from `work` when there is none yet. `settled` says whether the
    /// files behind `key` were settled when stamped; `valid` whether a kept answer still holds.
    pub async fn get<F, Fut>(
        &self,
        key: &K,
        settled: bool,
        valid: impl Fn(&V) -> bool,
        work: F,
    ) -> io::Result<V>
    where
        F: Fn() -> Fut,
        Fut: Future<Output = io::Result<V>>,
    {
        if !settled {
            return work().await;
        }
        loop {
            let slot = self
                .slots
                .lock()
                .unwrap()
                .entry(key.clone())
                .or_default()
                .clone();
            let answer = slot.get_or_try_init(&work).await?;
            if valid(answer) {
                return Ok(answer.clone());
            }
            let mut slots = self.slots.lock().unwrap();
            if slots.get(key).is_some_and(|s| Arc::ptr_eq(s, &slot)) {
                slots.remove(key);
            }
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// Stamps `path` as modified `when` (for tests of what settled files may do).
    pub(crate) fn set_mtime(path: &Path, when: SystemTime) {
        std::fs::File::options()
            .write(true)
            .open(path)
            .unwrap()
            .set_modified(when)
            .unwrap();
    }

    #[test]
    fn a_file_changed_within_the_resolution_is_not_trusted() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("a.h");
        std::fs::write(&file, "one").unwrap();
        let now = SystemTime::now();
        let at = FileClock::from(now);
        // Changed at the moment, or after it: it may have changed after the moment.
        set_mtime(&file, now + Duration::from_nanos(1));
        assert!(!FileStamp::read(&file).unwrap().settled_before(at));
        set_mtime(&file, now);
        assert!(!FileStamp::read(&file).unwrap().settled_before(at));
        // Changed in an earlier tick: settled.
        set_mtime(
            &file,
            now - Duration::from_millis(100) + Duration::from_nanos(1),
        );
        assert!(FileStamp::read(&file).unwrap().settled_before(at));
        assert!(FileStamp::read(&file).unwrap().settled());
        // Whole-second stamps: a coarse filesystem, two seconds.
        let whole = SystemTime::UNIX_EPOCH
            + Duration::from_secs(
                now.duration_since(SystemTime::UNIX_EPOCH)
                    .unwrap()
                    .as_secs()
                    - 1,
            );
        set_mtime(&file, whole);
        assert!(
            !FileStamp::read(&file)
                .unwrap()
                .settled_before((whole + Duration::from_secs(1)).into())
        );
        assert!(
            FileStamp::read(&file)
                .unwrap()
                .settled_before((whole + Duration::from_secs(3)).into())
        );
    }

    #[test]
    fn every_part_of_the_stamp_counts() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("a.h");
        std::fs::write(&file, "one").unwrap();
        let old = SystemTime::now() - Duration::from_secs(10);
        set_mtime(&file, old);
        let first = FileStamp::read(&file).unwrap();
        // Same size, same mtime: the ctime still moves.
        std::thread::sleep(Duration::from_millis(20));
        std::fs::write(&file, "two").unwrap();
        set_mtime(&file, old);
        let second = FileStamp::read(&file).unwrap();
        assert_ne!(first, second);
        assert_eq!(first.size, second.size);
        assert_eq!(first.mtime_ns, second.mtime_ns);
        // Replaced by rename: another inode.
        let other = dir.path().join("b.h");
        std::fs::write(&other, "two").unwrap();
        set_mtime(&other, old);
        std::fs::rename(&other, &file).unwrap();
        assert_ne!(FileStamp::read(&file).unwrap().ino, second.ino);
    }

    #[tokio::test]
    async fn a_memo_works_once_keeps_only_settled_answers_and_retires_invalid_ones() {
        let memo: Memo<u32, u32> = Memo::default();
        let runs = std::sync::atomic::AtomicU32::new(0);
        let work = || async { Ok(runs.fetch_add(1, std::sync::atomic::Ordering::SeqCst) + 1) };
        assert_eq!(memo.get(&1, true, |_| true, work).await.unwrap(), 1);
        assert_eq!(memo.get(&1, true, |_| true, work).await.unwrap(), 1);
        // Not settled: worked out each time, never kept.
        assert_eq!(memo.get(&2, false, |_| true, work).await.unwrap(), 2);
        assert_eq!(memo.get(&2, false, |_| true, work).await.unwrap(), 3);
        // An answer that no longer holds is worked out again.
        assert_eq!(memo.get(&1, true, |v| *v != 1, work).await.unwrap(), 4);
    }
}
