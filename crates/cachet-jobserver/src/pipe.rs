//! The anonymous pipe that holds the tokens, and how we read it without
//! blocking a tokio worker.
//!
//! The pool's own two file descriptions stay blocking: children inherit them
//! and make, rustc and gcc expect blocking reads, and `O_NONBLOCK` lives on the
//! shared open file description, so setting it here would change it for them
//! too. Instead we open `/proc/self/fd/<read>`, which gives this process a
//! private, non-blocking description of the same pipe, and wait on that one
//! with tokio's reactor. (The `jobserver` crate can't do this: its `acquire`
//! blocks, and its helper thread is woken by a signal and is slow to stop.)

use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

use tokio::io::Interest;
use tokio::io::unix::AsyncFd;

pub(crate) struct Pipe {
    read: OwnedFd,
    write: OwnedFd,
    /// Private `O_NONBLOCK` description of the read end, for async reads.
    reader: AsyncFd<OwnedFd>,
}

impl Pipe {
    /// A CLOEXEC pipe holding `tokens` copies of `byte`.
    pub(crate) fn new(tokens: usize, byte: u8) -> io::Result<Pipe> {
        let mut fds = [-1; 2];
        // SAFETY: `fds` is a valid array of two ints for pipe2 to fill.
        cvt(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) })?;
        // SAFETY: pipe2 succeeded, so both fds are open and owned by nobody else.
        let (read, write) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };

        // A fresh pipe holds 64 KiB, so this never blocks for <= 4096 tokens.
        let fill = vec![byte; tokens];
        let mut done = 0;
        while done < fill.len() {
            let rest = &fill[done..];
            // SAFETY: writes from a live buffer of `rest.len()` bytes.
            let n = unsafe { libc::write(write.as_raw_fd(), rest.as_ptr().cast(), rest.len()) };
            match cvt(n) {
                Ok(n) => done += n as usize,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }

        Pipe::from_fds(read, write)
    }

    /// Wraps the two ends of an existing pipe (or of a fifo opened twice),
    /// adding a private non-blocking reader of it.
    pub(crate) fn from_fds(read: OwnedFd, write: OwnedFd) -> io::Result<Pipe> {
        let path = CString::new(format!("/proc/self/fd/{}", read.as_raw_fd()))
            .expect("no NUL in a formatted path");
        let private = loop {
            // SAFETY: `path` is a valid NUL-terminated string.
            let fd = unsafe {
                libc::open(
                    path.as_ptr(),
                    libc::O_RDONLY | libc::O_NONBLOCK | libc::O_CLOEXEC,
                )
            };
            match cvt(fd) {
                // SAFETY: open succeeded; we are the only owner.
                Ok(fd) => break unsafe { OwnedFd::from_raw_fd(fd) },
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        };
        // SAFETY: an OwnedFd stays open and keeps its number until dropped,
        // and we never hand it out.
        let reader = unsafe { AsyncFd::register_with_interest(private, Interest::READABLE)? };
        Ok(Pipe {
            read,
            write,
            reader,
        })
    }

    pub(crate) fn read_fd(&self) -> RawFd {
        self.read.as_raw_fd()
    }

    pub(crate) fn write_fd(&self) -> RawFd {
        self.write.as_raw_fd()
    }

    /// The pipe's inode, as `/proc/PID/fd/N` links name it (`pipe:[INODE]`).
    pub(crate) fn inode(&self) -> io::Result<u64> {
        Ok(fstat(self.read.as_raw_fd())?.st_ino)
    }

    /// Takes one byte if one is there right now.
    pub(crate) fn try_read_byte(&self) -> io::Result<Option<u8>> {
        match read_one(self.reader.get_ref().as_raw_fd()) {
            Ok(b) => Ok(Some(b)),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Waits for a byte without blocking the thread. Cancel-safe: the byte is
    /// only taken in the same poll that returns it.
    pub(crate) async fn read_byte(&self) -> io::Result<u8> {
        loop {
            let mut ready = self.reader.readable().await?;
            // Other processes read the same pipe, so readiness may be stale:
            // try_io clears it on EAGAIN and we wait again.
            match ready.try_io(|fd| read_one(fd.get_ref().as_raw_fd())) {
                Ok(result) => return result,
                Err(_would_block) => continue,
            }
        }
    }

    /// Puts a byte back with a plain blocking write(2); safe from Drop and
    /// outside any runtime.
    pub(crate) fn write_byte(&self, byte: u8) -> io::Result<()> {
        loop {
            // SAFETY: writes one byte from a live local.
            let n = unsafe { libc::write(self.write.as_raw_fd(), (&raw const byte).cast(), 1) };
            match cvt(n) {
                Ok(1) => return Ok(()),
                Ok(_) => return Err(io::ErrorKind::WriteZero.into()),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
    }

    /// Bytes sitting in the pipe now (FIONREAD).
    pub(crate) fn available(&self) -> io::Result<usize> {
        let mut n: libc::c_int = 0;
        // SAFETY: FIONREAD writes one int through the pointer.
        cvt(unsafe { libc::ioctl(self.read.as_raw_fd(), libc::FIONREAD, &mut n) })?;
        Ok(n.max(0) as usize)
    }
}

fn read_one(fd: RawFd) -> io::Result<u8> {
    let mut byte = 0u8;
    loop {
        // SAFETY: reads at most one byte into a live local.
        let n = unsafe { libc::read(fd, (&raw mut byte).cast(), 1) };
        match cvt(n) {
            Ok(1) => return Ok(byte),
            // We hold a write end, so EOF means something is badly wrong.
            Ok(_) => return Err(io::ErrorKind::UnexpectedEof.into()),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
}

/// Clears FD_CLOEXEC so `fd` survives exec. Async-signal-safe: meant for
/// `pre_exec` in a forked child.
pub(crate) fn clear_cloexec(fd: RawFd) -> io::Result<()> {
    // SAFETY: fcntl on an int fd has no memory effects.
    let flags = cvt(unsafe { libc::fcntl(fd, libc::F_GETFD) })?;
    if flags & libc::FD_CLOEXEC != 0 {
        // SAFETY: as above.
        cvt(unsafe { libc::fcntl(fd, libc::F_SETFD, flags & !libc::FD_CLOEXEC) })?;
    }
    Ok(())
}

pub(crate) fn fstat(fd: RawFd) -> io::Result<libc::stat> {
    // SAFETY: a zeroed stat is a valid out-buffer for fstat.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: fstat writes one stat.
    cvt(unsafe { libc::fstat(fd, &mut st) })?;
    Ok(st)
}

trait IsMinusOne: Copy {
    fn is_minus_one(self) -> bool;
}
impl IsMinusOne for libc::c_int {
    fn is_minus_one(self) -> bool {
        self == -1
    }
}
impl IsMinusOne for libc::ssize_t {
    fn is_minus_one(self) -> bool {
        self == -1
    }
}

fn cvt<T: IsMinusOne>(ret: T) -> io::Result<T> {
    if ret.is_minus_one() {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cloexec(fd: RawFd) -> bool {
        // SAFETY: F_GETFD only reads flags.
        unsafe { libc::fcntl(fd, libc::F_GETFD) & libc::FD_CLOEXEC != 0 }
    }

    fn nonblocking(fd: RawFd) -> bool {
        // SAFETY: F_GETFL only reads flags.
        unsafe { libc::fcntl(fd, libc::F_GETFL) & libc::O_NONBLOCK != 0 }
    }

    #[tokio::test]
    async fn shared_ends_stay_blocking_and_cloexec() {
        let pipe = Pipe::new(3, b'+').unwrap();
        assert!(cloexec(pipe.read_fd()) && cloexec(pipe.write_fd()));
        assert!(!nonblocking(pipe.read_fd()) && !nonblocking(pipe.write_fd()));
        let private = pipe.reader.get_ref().as_raw_fd();
        assert!(cloexec(private) && nonblocking(private));
        assert_eq!(pipe.available().unwrap(), 3);
    }

    #[tokio::test]
    async fn reads_and_writes_round_trip() {
        let pipe = Pipe::new(1, b'+').unwrap();
        assert_eq!(pipe.read_byte().await.unwrap(), b'+');
        assert_eq!(pipe.try_read_byte().unwrap(), None);
        pipe.write_byte(b'x').unwrap();
        assert_eq!(pipe.available().unwrap(), 1);
        assert_eq!(pipe.try_read_byte().unwrap(), Some(b'x'));
    }

    #[tokio::test]
    async fn clear_cloexec_clears_only_that_fd() {
        let pipe = Pipe::new(1, b'+').unwrap();
        clear_cloexec(pipe.read_fd()).unwrap();
        assert!(!cloexec(pipe.read_fd()));
        assert!(cloexec(pipe.write_fd()));
    }
}
