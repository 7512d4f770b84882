//! Fault injection for tests on machines that refuse the tmpfs or bind mount that would
//! make a real full or read-only cache directory: a [`Storage`] wrapper whose writes fail
//! with the error such a filesystem gives, and which passes everything else through.

use std::io;

use async_trait::async_trait;

use super::{CacheKey, Storage};

/// Which filesystem failure writes meet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Fault {
    /// `put` fails with ENOSPC, as on a full filesystem.
    DiskFull,
    /// `put` fails with EROFS, as on a read-only filesystem.
    ReadOnly,
}

impl Fault {
    /// The fault a test names (`disk-full`, `read-only`); `None` for anything else.
    pub(crate) fn from_name(name: &str) -> Option<Fault> {
        match name {
            "disk-full" => Some(Fault::DiskFull),
            "read-only" => Some(Fault::ReadOnly),
            _ => None,
        }
    }

    /// The OS error of this fault, so callers see the kind a real failure has.
    fn error(self) -> io::Error {
        io::Error::from_raw_os_error(match self {
            Fault::DiskFull => libc::ENOSPC,
            Fault::ReadOnly => libc::EROFS,
        })
    }
}

/// `inner` with every `put` failing as `fault` says, before it reaches the store; reads and
/// removals go through untouched.
pub(crate) struct FaultyStorage<S> {
    inner: S,
    fault: Fault,
}

impl<S: Storage> FaultyStorage<S> {
    /// Wraps `inner`.
    pub(crate) fn new(inner: S, fault: Fault) -> FaultyStorage<S> {
        FaultyStorage { inner, fault }
    }
}

#[async_trait]
impl<S: Storage> Storage for FaultyStorage<S> {
    async fn get(&self, key: &CacheKey) -> io::Result<Option<Vec<u8>>> {
        self.inner.get(key).await
    }

    async fn put(&self, _key: &CacheKey, _bytes: Vec<u8>) -> io::Result<()> {
        Err(self.fault.error())
    }

    async fn remove(&self, key: &CacheKey) -> io::Result<()> {
        self.inner.remove(key).await
    }
}

#[cfg(test)]
mod tests {
    use std::io::ErrorKind;
    use std::path::{Path, PathBuf};
    use std::sync::Arc;

    use super::*;
    use crate::cache::{DiskCache, DiskStorage};

    /// Every file under `root`, as (path, contents).
    fn snapshot(root: &Path) -> Vec<(PathBuf, Vec<u8>)> {
        let mut files = Vec::new();
        let mut stack = vec![root.to_owned()];
        while let Some(dir) = stack.pop() {
            for entry in std::fs::read_dir(&dir).unwrap().flatten() {
                let path = entry.path();
                if path.is_dir() {
                    stack.push(path);
                } else {
                    files.push((path.clone(), std::fs::read(&path).unwrap()));
                }
            }
        }
        files.sort();
        files
    }

    #[tokio::test]
    async fn faults_fail_put_and_leave_state_untouched() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("cache");
        let disk = Arc::new(DiskCache::new(root.clone(), 1 << 30));
        let (k, fresh) = (CacheKey([0x55; 32]), CacheKey([0x99; 32]));
        DiskStorage::new(disk.clone())
            .put(&k, b"original".to_vec())
            .await
            .unwrap();
        let before = snapshot(&root);
        let usage_before = disk.usage().unwrap();

        let full = FaultyStorage::new(DiskStorage::new(disk.clone()), Fault::DiskFull);
        let err = full.put(&k, b"replacement".to_vec()).await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::StorageFull);
        assert_eq!(err.raw_os_error(), Some(28));
        let err = full.put(&fresh, b"new".to_vec()).await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::StorageFull);

        let ro = FaultyStorage::new(DiskStorage::new(disk.clone()), Fault::ReadOnly);
        let err = ro.put(&k, b"replacement".to_vec()).await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::ReadOnlyFilesystem);
        assert_eq!(err.raw_os_error(), Some(30));
        assert!(ro.put(&fresh, b"x".to_vec()).await.is_err());

        // Nothing was written: not the entries, not the stats, no temp file, no shard.
        assert_eq!(snapshot(&root), before);
        assert!(!root.join("9").exists());
        assert_eq!(disk.usage().unwrap(), usage_before);
        // Reads still work through faulted handles.
        assert_eq!(
            full.get(&k).await.unwrap().as_deref(),
            Some(&b"original"[..])
        );
        assert_eq!(ro.get(&k).await.unwrap().as_deref(), Some(&b"original"[..]));
        assert!(full.get(&fresh).await.unwrap().is_none());
    }

    #[test]
    fn faults_are_named_as_the_tests_name_them() {
        assert_eq!(Fault::from_name("disk-full"), Some(Fault::DiskFull));
        assert_eq!(Fault::from_name("read-only"), Some(Fault::ReadOnly));
        assert_eq!(Fault::from_name(""), None);
    }
}
