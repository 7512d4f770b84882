//! Tokens of the build's jobserver that a server died holding.
//!
//! The server takes tokens from the build's own pool for a compiler's extra threads
//! (rustc's codegen units, gcc's LTO jobs) and tells the client how many it holds
//! (`Response::BuildTokens`). A server that is killed cannot give them back, and make
//! would exit short of tokens ("INTERNAL: Exiting with 3 jobserver tokens available;
//! should be 4!", found by `bench/chaos.sh` killing the server during a cargo build under
//! make). The client still has the build's pool, so it writes them back itself.

use std::io;
use std::os::fd::BorrowedFd;
use std::path::PathBuf;

use rustix::fs::{Mode, OFlags};

/// The byte GNU make writes for a token (make counts tokens, not their values).
const TOKEN: u8 = b'+';

/// Where the build's tokens go back to: the write end of its pipe, or its fifo.
pub(crate) enum BuildPool {
    Pipe(BorrowedFd<'static>),
    Fifo(PathBuf),
}

impl BuildPool {
    /// Writes `tokens` tokens into the pool. Errors: the pipe or fifo cannot be written.
    pub(crate) fn give_back(&self, tokens: u32) -> io::Result<()> {
        let bytes = vec![TOKEN; tokens as usize];
        match self {
            BuildPool::Pipe(write) => write_all(*write, &bytes),
            BuildPool::Fifo(path) => {
                // Non-blocking: the build holds the fifo open for reading while it runs.
                let fifo = rustix::fs::open(
                    path,
                    OFlags::WRONLY | OFlags::NONBLOCK | OFlags::CLOEXEC,
                    Mode::empty(),
                )?;
                write_all(std::os::fd::AsFd::as_fd(&fifo), &bytes)
            }
        }
    }
}

fn write_all(fd: BorrowedFd<'_>, mut bytes: &[u8]) -> io::Result<()> {
    while !bytes.is_empty() {
        match rustix::io::write(fd, bytes) {
            Ok(n) => bytes = &bytes[n..],
            Err(rustix::io::Errno::INTR) => continue,
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;
    use std::os::fd::AsFd;

    #[test]
    fn tokens_go_back_into_the_builds_pipe() {
        let (mut read, write) = std::io::pipe().unwrap();
        // SAFETY: `write` outlives the pool in this test.
        let fd = unsafe { BorrowedFd::borrow_raw(std::os::fd::AsRawFd::as_raw_fd(&write)) };
        BuildPool::Pipe(fd).give_back(3).unwrap();
        drop(write);
        let mut got = Vec::new();
        read.read_to_end(&mut got).unwrap();
        assert_eq!(got, b"+++");
    }

    #[test]
    fn tokens_go_back_into_the_builds_fifo() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("fifo");
        rustix::fs::mkfifoat(rustix::fs::CWD, &path, Mode::from_raw_mode(0o600)).unwrap();
        // The build's end, open for reading as make keeps it.
        let reader =
            rustix::fs::open(&path, OFlags::RDONLY | OFlags::NONBLOCK, Mode::empty()).unwrap();
        BuildPool::Fifo(path).give_back(2).unwrap();
        let mut got = [0u8; 8];
        let n = rustix::io::read(reader.as_fd(), &mut got).unwrap();
        assert_eq!(&got[..n], b"++");
    }
}
