//! Finding the calling build's jobserver in the environment, and refusing stale ones.
//!
//! make 4.3 hands fd numbers to children it did not mark recursive, and those numbers can
//! land on anything: a regular file, or one end of an unrelated pipe such as `make | tee`'s.
//! Reading from such a pipe would eat another program's bytes, so a pipe is trusted only
//! when both numbers are the read and the write end of one and the same pipe.

use std::ffi::OsString;
use std::os::fd::RawFd;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::PathBuf;

use crate::flags::{self, JobserverAuth};

/// Where the variables are looked for, in the order the `jobserver` crate uses.
pub const SEARCH_ORDER: [&str; 3] = ["CARGO_MAKEFLAGS", "MAKEFLAGS", "MFLAGS"];

/// A usable jobserver of the calling build.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Found {
    /// Both ends of one pipe, open in this process (the protocol's pipe style).
    Pipe {
        /// The fd open for reading (or read-write) on the pipe.
        read: RawFd,
        /// The fd open for writing (or read-write) on the same pipe.
        write: RawFd,
    },
    /// A fifo of ours (make 4.4+, ninja 1.13).
    Fifo(PathBuf),
}

/// Why there is none.
#[derive(Debug)]
pub enum NotFound {
    /// No variable names a jobserver.
    Absent,
    /// One does, but it cannot be trusted.
    Stale(Stale),
}

/// Why a jobserver named in the environment cannot be trusted. The text is one line for a
/// log or a report.
#[derive(Debug, thiserror::Error)]
pub enum Stale {
    /// The fd number names no open file (make 4.3 hands numbers to children it did not
    /// mark recursive, and they may be closed by then).
    #[error("fd {0} is not open")]
    NotOpen(RawFd),
    /// The fd is open but is not a pipe or fifo.
    #[error("fd {0} is not a pipe")]
    NotAPipe(RawFd),
    /// Both fds are pipes, but not the same one (say one end of `make | tee`'s).
    #[error("fds {read} and {write} are two different pipes")]
    DifferentPipes {
        /// The fd given for reading.
        read: RawFd,
        /// The fd given for writing.
        write: RawFd,
    },
    /// The fd given for reading is open write-only.
    #[error("fd {0} is not open for reading")]
    NotReadable(RawFd),
    /// The fd given for writing is open read-only.
    #[error("fd {0} is not open for writing")]
    NotWritable(RawFd),
    /// The fifo's path cannot be looked at (most often: it does not exist).
    #[error("{}: {source}", path.display())]
    FifoUnreachable {
        /// The path from `--jobserver-auth=fifo:PATH`.
        path: PathBuf,
        /// Why `lstat` failed.
        source: std::io::Error,
    },
    /// Something is at the path, but not a fifo.
    #[error("{} is not a fifo", path.display())]
    NotAFifo {
        /// The path from `--jobserver-auth=fifo:PATH`.
        path: PathBuf,
    },
    /// The fifo belongs to another user.
    #[error("{} belongs to uid {uid}, not to us", path.display())]
    ForeignFifo {
        /// The path from `--jobserver-auth=fifo:PATH`.
        path: PathBuf,
        /// The fifo's owner.
        uid: u32,
    },
}

/// Looks for the build's jobserver; `var` reads the environment.
pub fn find(var: impl Fn(&str) -> Option<OsString>) -> Result<Found, NotFound> {
    let auth = SEARCH_ORDER
        .iter()
        .filter_map(|name| var(name))
        .find_map(|value| flags::parse(&value.to_string_lossy()))
        .ok_or(NotFound::Absent)?;
    match auth {
        JobserverAuth::Pipe { read, write } => check_pipe(read, write)
            .map(|()| Found::Pipe { read, write })
            .map_err(NotFound::Stale),
        JobserverAuth::Fifo(path) => check_fifo(&path)
            .map(|()| Found::Fifo(path))
            .map_err(NotFound::Stale),
    }
}

// These two take bare fd numbers, not borrowed fds: whether the number is open at all is
// what they find out, so there is nothing yet to borrow.

fn access_mode(fd: RawFd) -> Result<libc::c_int, Stale> {
    // SAFETY: F_GETFL only reads the flags of whatever `fd` names, and fails with EBADF
    // if it names nothing; no memory is passed.
    let flags = unsafe { libc::fcntl(fd, libc::F_GETFL) };
    if flags < 0 {
        return Err(Stale::NotOpen(fd));
    }
    Ok(flags & libc::O_ACCMODE)
}

fn fstat(fd: RawFd) -> std::io::Result<libc::stat> {
    let mut st = std::mem::MaybeUninit::<libc::stat>::uninit();
    // SAFETY: fstat writes one `struct stat` into the buffer we pass, or fails with EBADF
    // if `fd` names nothing.
    if unsafe { libc::fstat(fd, st.as_mut_ptr()) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: fstat succeeded, so it filled the whole struct.
    Ok(unsafe { st.assume_init() })
}

/// R and W must be the read and the write end of one pipe (or fifo), open in this process.
/// The fds are bare numbers: nothing is read from or written to them.
pub fn check_pipe(read: RawFd, write: RawFd) -> Result<(), Stale> {
    let r = fstat(read).map_err(|_| Stale::NotOpen(read))?;
    let w = fstat(write).map_err(|_| Stale::NotOpen(write))?;
    for (fd, st) in [(read, &r), (write, &w)] {
        if st.st_mode & libc::S_IFMT != libc::S_IFIFO {
            return Err(Stale::NotAPipe(fd));
        }
    }
    if (r.st_dev, r.st_ino) != (w.st_dev, w.st_ino) {
        return Err(Stale::DifferentPipes { read, write });
    }
    if !matches!(access_mode(read)?, libc::O_RDONLY | libc::O_RDWR) {
        return Err(Stale::NotReadable(read));
    }
    if !matches!(access_mode(write)?, libc::O_WRONLY | libc::O_RDWR) {
        return Err(Stale::NotWritable(write));
    }
    Ok(())
}

/// A fifo jobserver must exist, be a fifo, and belong to us.
pub fn check_fifo(path: &std::path::Path) -> Result<(), Stale> {
    let meta = std::fs::symlink_metadata(path).map_err(|source| Stale::FifoUnreachable {
        path: path.to_owned(),
        source,
    })?;
    if !meta.file_type().is_fifo() {
        return Err(Stale::NotAFifo {
            path: path.to_owned(),
        });
    }
    let uid = rustix::process::getuid().as_raw();
    if meta.uid() != uid {
        return Err(Stale::ForeignFifo {
            path: path.to_owned(),
            uid: meta.uid(),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests;
