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
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NotFound {
    /// No variable names a jobserver.
    Absent,
    /// One does, but it cannot be trusted; the text says why.
    Stale(String),
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

fn access_mode(fd: RawFd) -> Result<libc::c_int, String> {
    // SAFETY: F_GETFL only reads the flags of whatever `fd` names, and fails with EBADF
    // if it names nothing; no memory is passed.
    let flags = unsafe { libc::fcntl(fd, libc::F_GETFL) };
    if flags < 0 {
        return Err(format!("fd {fd} is not open"));
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

/// R and W must be the read and the write end of one pipe (or fifo).
pub fn check_pipe(read: RawFd, write: RawFd) -> Result<(), String> {
    let r = fstat(read).map_err(|_| format!("fd {read} is not open"))?;
    let w = fstat(write).map_err(|_| format!("fd {write} is not open"))?;
    for (fd, st) in [(read, &r), (write, &w)] {
        if st.st_mode & libc::S_IFMT != libc::S_IFIFO {
            return Err(format!("fd {fd} is not a pipe"));
        }
    }
    if (r.st_dev, r.st_ino) != (w.st_dev, w.st_ino) {
        return Err(format!("fds {read} and {write} are two different pipes"));
    }
    if !matches!(access_mode(read)?, libc::O_RDONLY | libc::O_RDWR) {
        return Err(format!("fd {read} is not open for reading"));
    }
    if !matches!(access_mode(write)?, libc::O_WRONLY | libc::O_RDWR) {
        return Err(format!("fd {write} is not open for writing"));
    }
    Ok(())
}

/// A fifo jobserver must exist, be a fifo, and belong to us.
pub fn check_fifo(path: &std::path::Path) -> Result<(), String> {
    let meta = std::fs::symlink_metadata(path).map_err(|e| format!("{}: {e}", path.display()))?;
    if !meta.file_type().is_fifo() {
        return Err(format!("{} is not a fifo", path.display()));
    }
    let uid = rustix::process::getuid().as_raw();
    if meta.uid() != uid {
        return Err(format!(
            "{} belongs to uid {}, not to us",
            path.display(),
            meta.uid()
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

    fn pipe() -> (OwnedFd, OwnedFd) {
        let mut fds = [0; 2];
        // SAFETY: pipe2 fills two ints.
        assert_eq!(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) }, 0);
        // SAFETY: fresh fds, owned here.
        unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) }
    }

    fn env(value: String) -> impl Fn(&str) -> Option<OsString> {
        move |name| (name == "MAKEFLAGS").then(|| value.clone().into())
    }

    #[test]
    fn a_real_pipe_is_found() {
        let (r, w) = pipe();
        let (r, w) = (r.as_raw_fd(), w.as_raw_fd());
        assert_eq!(
            find(env(format!(" -j4 --jobserver-auth={r},{w}"))),
            Ok(Found::Pipe { read: r, write: w })
        );
        assert_eq!(
            find(env(format!("-j --jobserver-fds={r},{w}"))),
            Ok(Found::Pipe { read: r, write: w })
        );
    }

    #[test]
    fn stale_settings_are_refused() {
        assert_eq!(find(|_| None), Err(NotFound::Absent));
        assert_eq!(find(env("-k".into())), Err(NotFound::Absent));
        let file = tempfile::tempfile().unwrap();
        let f = file.as_raw_fd();
        assert!(matches!(
            find(env(format!("--jobserver-auth={f},{f}"))),
            Err(NotFound::Stale(_))
        ));
        let (r1, _w1) = pipe();
        let (_r2, w2) = pipe();
        let why = find(env(format!(
            "--jobserver-auth={},{}",
            r1.as_raw_fd(),
            w2.as_raw_fd()
        )));
        assert!(
            matches!(&why, Err(NotFound::Stale(t)) if t.contains("different pipes")),
            "{why:?}"
        );
        // Swapped ends: the "read" end is write-only.
        let (r, w) = pipe();
        let why = find(env(format!(
            "--jobserver-auth={},{}",
            w.as_raw_fd(),
            r.as_raw_fd()
        )));
        assert!(matches!(why, Err(NotFound::Stale(_))), "{why:?}");
        assert!(matches!(
            find(env("--jobserver-auth=900,901".into())),
            Err(NotFound::Stale(_))
        ));
        assert!(matches!(
            find(env("--jobserver-auth=fifo:/nonexistent/fifo".into())),
            Err(NotFound::Stale(_))
        ));
    }

    #[test]
    fn a_fifo_of_ours_is_found() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("fifo");
        let c = std::ffi::CString::new(path.to_str().unwrap()).unwrap();
        // SAFETY: mkfifo reads a valid C string.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
        assert_eq!(
            find(env(format!("--jobserver-auth=fifo:{}", path.display()))),
            Ok(Found::Fifo(path.clone()))
        );
        let plain = dir.path().join("plain");
        std::fs::write(&plain, "").unwrap();
        assert!(matches!(
            find(env(format!("--jobserver-auth=fifo:{}", plain.display()))),
            Err(NotFound::Stale(_))
        ));
    }
}
