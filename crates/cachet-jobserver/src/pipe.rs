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

use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};

use rustix::fs::{Mode, OFlags};
use rustix::io::Errno;
use rustix::pipe::PipeFlags;
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
        let (read, write) = rustix::pipe::pipe_with(PipeFlags::CLOEXEC)?;

        // A fresh pipe holds 64 KiB, so this never blocks for <= 4096 tokens.
        let fill = vec![byte; tokens];
        let mut done = 0;
        while done < fill.len() {
            match rustix::io::write(&write, &fill[done..]) {
                Ok(n) => done += n,
                Err(Errno::INTR) => {}
                Err(e) => return Err(e.into()),
            }
        }

        Pipe::from_fds(read, write)
    }

    /// Wraps the two ends of an existing pipe (or of a fifo opened twice),
    /// adding a private non-blocking reader of it.
    pub(crate) fn from_fds(read: OwnedFd, write: OwnedFd) -> io::Result<Pipe> {
        let path = format!("/proc/self/fd/{}", read.as_raw_fd());
        let flags = OFlags::RDONLY | OFlags::NONBLOCK | OFlags::CLOEXEC;
        let private = rustix::io::retry_on_intr(|| rustix::fs::open(&path, flags, Mode::empty()))?;
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

    /// The read end, for calls that need a live descriptor.
    pub(crate) fn read_end(&self) -> BorrowedFd<'_> {
        self.read.as_fd()
    }

    /// The write end, for calls that need a live descriptor.
    pub(crate) fn write_end(&self) -> BorrowedFd<'_> {
        self.write.as_fd()
    }

    /// The pipe's inode, as `/proc/PID/fd/N` links name it (`pipe:[INODE]`).
    pub(crate) fn inode(&self) -> io::Result<u64> {
        Ok(rustix::fs::fstat(&self.read)?.st_ino)
    }

    /// Takes one byte if one is there right now.
    pub(crate) fn try_read_byte(&self) -> io::Result<Option<u8>> {
        match read_one(self.reader.get_ref().as_fd()) {
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
            match ready.try_io(|fd| read_one(fd.get_ref().as_fd())) {
                Ok(result) => return result,
                Err(_would_block) => continue,
            }
        }
    }

    /// Returns once a byte sits in the pipe, without taking it: at once if one is there
    /// now, else at the next write into it. Waits in tokio's reactor (epoll), at no cost.
    pub(crate) async fn filled(&self) -> io::Result<()> {
        loop {
            let mut ready = self.reader.readable().await?;
            if self.available()? > 0 {
                return Ok(());
            }
            // Empty: the readiness was stale (another reader took the byte).
            ready.clear_ready();
        }
    }

    /// Puts a byte back with a plain blocking write(2); safe from Drop and
    /// outside any runtime.
    pub(crate) fn write_byte(&self, byte: u8) -> io::Result<()> {
        loop {
            match rustix::io::write(&self.write, &[byte]) {
                Ok(1) => return Ok(()),
                Ok(_) => return Err(io::ErrorKind::WriteZero.into()),
                Err(Errno::INTR) => {}
                Err(e) => return Err(e.into()),
            }
        }
    }

    /// Bytes sitting in the pipe now (FIONREAD).
    pub(crate) fn available(&self) -> io::Result<usize> {
        Ok(rustix::io::ioctl_fionread(&self.read)? as usize)
    }
}

fn read_one(fd: BorrowedFd<'_>) -> io::Result<u8> {
    let mut byte = [0u8];
    loop {
        match rustix::io::read(fd, &mut byte) {
            Ok(1) => return Ok(byte[0]),
            // We hold a write end, so EOF means something is badly wrong.
            Ok(_) => return Err(io::ErrorKind::UnexpectedEof.into()),
            Err(Errno::INTR) => {}
            Err(e) => return Err(e.into()),
        }
    }
}

/// Clears FD_CLOEXEC so `fd` survives exec. Async-signal-safe (two fcntl
/// system calls, no allocation): meant for `pre_exec` in a forked child.
pub(crate) fn clear_cloexec(fd: BorrowedFd<'_>) -> io::Result<()> {
    let flags = rustix::io::fcntl_getfd(fd)?;
    if flags.contains(rustix::io::FdFlags::CLOEXEC) {
        rustix::io::fcntl_setfd(fd, flags - rustix::io::FdFlags::CLOEXEC)?;
    }
    Ok(())
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
        clear_cloexec(pipe.read_end()).unwrap();
        assert!(!cloexec(pipe.read_fd()));
        assert!(cloexec(pipe.write_fd()));
    }
}
