//! The server's runtime directory: its socket, its locks and its log.

use std::fs::{DirBuilder, File};
use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use rustix::fs::FlockOperation;

use crate::protocol::PROTOCOL_VERSION;

/// The socket's file name inside the runtime directory.
pub fn socket_name() -> String {
    format!("server-v{PROTOCOL_VERSION}.sock")
}

/// `sun_path` holds 108 bytes including the terminating NUL.
const MAX_SOCKET_PATH: usize = 107;

/// A checked, private (mode 0700, ours) runtime directory.
#[derive(Debug)]
pub(crate) struct RuntimeDir {
    dir: PathBuf,
}

impl RuntimeDir {
    /// Creates the directory if needed and checks that only we can use it.
    pub(crate) fn prepare(dir: &Path) -> io::Result<RuntimeDir> {
        DirBuilder::new().recursive(true).mode(0o700).create(dir)?;
        let meta = std::fs::metadata(dir)?;
        let uid = rustix::process::getuid().as_raw();
        if meta.uid() != uid {
            return Err(io::Error::new(
                io::ErrorKind::PermissionDenied,
                format!(
                    "runtime directory {} belongs to uid {}, not to us (uid {uid})",
                    dir.display(),
                    meta.uid()
                ),
            ));
        }
        if meta.mode() & 0o077 != 0 {
            // Ours but too open (for example made by hand): tighten it rather than refuse.
            std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))?;
        }
        Ok(RuntimeDir {
            dir: dir.to_owned(),
        })
    }

    /// The directory itself.
    pub(crate) fn path(&self) -> &Path {
        &self.dir
    }

    /// The socket's address, shortened through `/proc/self/fd` when the real path is too long.
    /// Named after the protocol version, so that after an upgrade the new client starts a
    /// server of its own instead of falling back until the old one idles out.
    pub(crate) fn socket(&self) -> io::Result<SocketAddress> {
        SocketAddress::new(&self.dir.join(socket_name()))
    }

    /// Held by the running server for its whole life: one server per runtime directory
    /// and protocol version.
    pub(crate) fn server_lock(&self) -> PathBuf {
        self.dir.join(format!("server-v{PROTOCOL_VERSION}.lock"))
    }

    /// Held by a client while it starts a server, so racing clients start only one.
    pub(crate) fn start_lock(&self) -> PathBuf {
        self.dir.join("start.lock")
    }

    /// The content hashes a stopping server saved for the next one (see
    /// `compiler::file_hashes`); shared by servers of every protocol version.
    pub(crate) fn file_hashes(&self) -> PathBuf {
        self.dir.join("file-hashes")
    }

    /// The server's jobserver pool, as a fifo other tools can join by path.
    pub(crate) fn jobserver_fifo(&self) -> PathBuf {
        self.dir.join(format!("jobserver-v{PROTOCOL_VERSION}.fifo"))
    }

    /// Where the detached server writes its stdout and stderr.
    pub(crate) fn log_file(&self) -> PathBuf {
        self.dir.join("server.log")
    }
}

/// A socket path that fits in `sun_path`. For a long path it keeps the directory open and
/// names the socket through `/proc/self/fd/N/`, which Linux resolves for bind and connect.
#[derive(Debug)]
pub(crate) struct SocketAddress {
    real: PathBuf,
    short: PathBuf,
    _dir: Option<OwnedFd>,
}

impl SocketAddress {
    /// The address of the socket at `real`; fails only if a long path's directory cannot
    /// be opened.
    pub(crate) fn new(real: &Path) -> io::Result<SocketAddress> {
        if real.as_os_str().len() <= MAX_SOCKET_PATH {
            return Ok(SocketAddress {
                real: real.to_owned(),
                short: real.to_owned(),
                _dir: None,
            });
        }
        let parent = real.parent().unwrap_or(Path::new("/"));
        let name = real.file_name().unwrap_or_default();
        let dir: OwnedFd = File::open(parent)?.into();
        let short = PathBuf::from(format!("/proc/self/fd/{}", dir.as_raw_fd())).join(name);
        Ok(SocketAddress {
            real: real.to_owned(),
            short,
            _dir: Some(dir),
        })
    }

    /// The path to hand to bind/connect.
    pub(crate) fn connect_path(&self) -> &Path {
        &self.short
    }

    /// The socket's real location, for messages and cleanup.
    pub(crate) fn real_path(&self) -> &Path {
        &self.real
    }
}

/// An exclusive `flock` held until dropped.
#[derive(Debug)]
pub(crate) struct FileLock {
    _file: File,
}

impl FileLock {
    /// Waits for the lock.
    pub(crate) fn acquire(path: &Path) -> io::Result<FileLock> {
        let file = open_lock_file(path)?;
        flock(&file, FlockOperation::LockExclusive)?;
        Ok(FileLock { _file: file })
    }

    /// Takes the lock only if nobody holds it.
    pub(crate) fn try_acquire(path: &Path) -> io::Result<Option<FileLock>> {
        let file = open_lock_file(path)?;
        match flock(&file, FlockOperation::NonBlockingLockExclusive) {
            Ok(()) => Ok(Some(FileLock { _file: file })),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(None),
            Err(e) => Err(e),
        }
    }
}

fn open_lock_file(path: &Path) -> io::Result<File> {
    std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path)
}

/// `flock`, retried when a signal interrupts the wait.
fn flock(file: &File, op: FlockOperation) -> io::Result<()> {
    Ok(rustix::io::retry_on_intr(|| rustix::fs::flock(file, op))?)
}

/// Writes a file whole or not at all: into a temporary file beside it, renamed over it
/// (its directory is made if needed). Readers see the old content or the new, never part.
pub fn write_atomically(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir)?;
    let mut file = tempfile::NamedTempFile::new_in(dir)?;
    io::Write::write_all(&mut file, bytes)?;
    file.persist(path).map_err(|e| e.error)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runtime_dir_is_private() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("run");
        std::fs::create_dir(&dir).unwrap();
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
        let runtime = RuntimeDir::prepare(&dir).unwrap();
        let mode = std::fs::metadata(runtime.path()).unwrap().mode() & 0o777;
        assert_eq!(mode, 0o700);
    }

    #[test]
    fn long_socket_paths_are_shortened_and_still_bind() {
        let tmp = tempfile::tempdir().unwrap();
        let deep = tmp.path().join("d".repeat(60)).join("e".repeat(60));
        std::fs::create_dir_all(&deep).unwrap();
        let address = SocketAddress::new(&deep.join("server.sock")).unwrap();
        assert!(address.connect_path().as_os_str().len() <= MAX_SOCKET_PATH);
        let _listener = std::os::unix::net::UnixListener::bind(address.connect_path()).unwrap();
        assert!(deep.join("server.sock").exists());
        std::os::unix::net::UnixStream::connect(address.connect_path()).unwrap();
    }

    #[test]
    fn try_lock_sees_a_held_lock() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("lock");
        let held = FileLock::try_acquire(&path).unwrap();
        assert!(held.is_some());
        assert!(FileLock::try_acquire(&path).unwrap().is_none());
        drop(held);
        assert!(FileLock::try_acquire(&path).unwrap().is_some());
    }
}
