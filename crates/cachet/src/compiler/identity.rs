//! Which compiler a path is, found by probing rather than by its name, and remembered.

use std::collections::HashMap;
use std::io::{self, Read};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use tokio::sync::OnceCell;

use super::gcc::args::Family;
use crate::process::{CommandSpec, Launcher};

/// A compiler's identity: its family and a digest of everything that makes it this compiler.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    pub family: Family,
    /// `__VERSION__` as the compiler reports it.
    pub version: String,
    /// blake3 over the binary's bytes and the predefined macros (version, target, defaults).
    pub digest: [u8; 32],
}

/// The file as it is on disk now; a rebuilt or replaced compiler gets a new key.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct FileKey {
    path: PathBuf,
    dev: u64,
    ino: u64,
    size: u64,
    mtime_ns: i128,
    ctime_ns: i128,
}

impl FileKey {
    fn of(path: &Path) -> io::Result<FileKey> {
        let meta = std::fs::metadata(path)?;
        Ok(FileKey {
            path: path.to_owned(),
            dev: meta.dev(),
            ino: meta.ino(),
            size: meta.size(),
            mtime_ns: meta.mtime() as i128 * 1_000_000_000 + meta.mtime_nsec() as i128,
            ctime_ns: meta.ctime() as i128 * 1_000_000_000 + meta.ctime_nsec() as i128,
        })
    }
}

type Slot = Arc<OnceCell<Option<Identity>>>;

/// Identities by file, probed once even when many requests arrive together.
#[derive(Default)]
pub struct IdentityCache {
    slots: Mutex<HashMap<FileKey, Slot>>,
}

impl IdentityCache {
    /// `Ok(None)` means "not a compiler we cache" (the answer is remembered too).
    pub async fn identify(
        &self,
        launcher: &Launcher,
        compiler: &Path,
        env: &[(std::ffi::OsString, std::ffi::OsString)],
        cwd: &Path,
    ) -> io::Result<Option<Identity>> {
        let key = FileKey::of(compiler)?;
        let slot = self.slots.lock().unwrap().entry(key).or_default().clone();
        slot.get_or_try_init(|| probe(launcher, compiler, env, cwd))
            .await
            .cloned()
    }
}

async fn probe(
    launcher: &Launcher,
    compiler: &Path,
    env: &[(std::ffi::OsString, std::ffi::OsString)],
    cwd: &Path,
) -> io::Result<Option<Identity>> {
    let mut spec = CommandSpec::new(compiler, cwd);
    spec.args = ["-dM", "-E", "-x", "c", "/dev/null"]
        .map(Into::into)
        .to_vec();
    spec.env = env.to_vec();
    let out = launcher.run_probe(spec).await?;
    if !out.exit.success() {
        return Ok(None);
    }
    let macros = String::from_utf8_lossy(&out.stdout);
    let defined = |name: &str| {
        macros
            .lines()
            .any(|l| l.starts_with(&format!("#define {name} ")))
    };
    let family = if defined("__clang__") {
        Family::Clang
    } else if defined("__GNUC__") {
        Family::Gcc
    } else {
        return Ok(None);
    };
    let version = macros
        .lines()
        .find_map(|l| l.strip_prefix("#define __VERSION__ "))
        .unwrap_or("unknown")
        .trim_matches('"')
        .to_owned();

    let path = compiler.to_owned();
    let binary = tokio::task::spawn_blocking(move || hash_file(&path))
        .await
        .map_err(io::Error::other)??;
    let mut hasher = blake3::Hasher::new();
    hasher.update(b"cachet compiler identity v1\0");
    hasher.update(binary.as_bytes());
    // Sorted so that an order change in the compiler's output is no new identity.
    let mut lines: Vec<&str> = macros.lines().collect();
    lines.sort_unstable();
    for line in lines {
        hasher.update(line.as_bytes());
        hasher.update(b"\n");
    }
    Ok(Some(Identity {
        family,
        version,
        digest: *hasher.finalize().as_bytes(),
    }))
}

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
