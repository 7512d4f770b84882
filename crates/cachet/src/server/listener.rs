//! The server's socket and how many clients it serves at once.
//!
//! Connections are capped so that the server cannot run out of fds: past the cap it stops
//! accepting, and clients wait in the listen backlog (the kernel holds them; a client that
//! waits there past its handshake timeout, 10 s, compiles by itself). The cap follows the
//! open-file limit, which the server raises at start (`process::fd_limit`), less what its
//! running compilers need.

use std::io;
use std::path::Path;

use rustix::net::{AddressFamily, SocketAddrUnix, SocketFlags, SocketType};
use tokio::net::UnixListener;

/// The listen backlog asked for; the kernel caps it at `net.core.somaxconn` (4096 on
/// Linux 5.4 and later, 128 before).
pub const ACCEPT_BACKLOG: i32 = 4096;

/// Fds the server keeps for itself whatever the connections: its listener, log, jobserver
/// fifo, epoll and event fds, runtime threads, cache files being written.
pub const RESERVED_FDS: u64 = 64;

/// Fds one running compiler costs the server: its proxy jobserver pipe (2), its stdout
/// and stderr pipes (2), the spawn's own pipe and /dev/null (2), and the observation
/// channel (2). Running compilers are bounded by the jobserver tokens.
pub const FDS_PER_COMPILE: u64 = 8;

/// Fds one connection costs the server, whatever it waits for: the socket, a build's
/// jobserver pipe (2), and one file open at a time while it hashes, reads or restores.
pub const FDS_PER_CONNECTION: u64 = 4;

/// The most connections served at once, whatever the fd limit.
pub const MAX_CONNECTIONS: u64 = 4096;

/// How many connections fit an open-file limit of `fd_limit` with `tokens` compilers
/// running at once: at least one.
pub fn connection_limit(fd_limit: u64, tokens: u64) -> usize {
    let for_connections = fd_limit
        .saturating_sub(RESERVED_FDS)
        .saturating_sub(tokens.saturating_mul(FDS_PER_COMPILE));
    (for_connections / FDS_PER_CONNECTION).clamp(1, MAX_CONNECTIONS) as usize
}

/// A listening socket at `path` with [`ACCEPT_BACKLOG`] (tokio's own bind asks for 1024).
/// Errors: the socket cannot be made, bound or listened on.
pub fn bind(path: &Path) -> io::Result<UnixListener> {
    let socket = rustix::net::socket_with(
        AddressFamily::UNIX,
        SocketType::STREAM,
        SocketFlags::CLOEXEC | SocketFlags::NONBLOCK,
        None,
    )?;
    rustix::net::bind(&socket, &SocketAddrUnix::new(path)?)?;
    rustix::net::listen(&socket, ACCEPT_BACKLOG)?;
    UnixListener::from_std(std::os::unix::net::UnixListener::from(socket))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_connection_limit_follows_the_fd_limit_and_the_tokens() {
        assert_eq!(connection_limit(128, 2), 12);
        assert_eq!(connection_limit(1024, 8), 224);
        assert_eq!(connection_limit(1024, 40), 160);
        assert_eq!(connection_limit(1 << 16, 8), MAX_CONNECTIONS as usize);
        assert_eq!(
            connection_limit(u64::MAX, u64::MAX),
            1,
            "no room left: one at a time"
        );
        assert_eq!(connection_limit(u64::MAX, 8), MAX_CONNECTIONS as usize);
        assert_eq!(connection_limit(32, 2), 1, "a tiny limit still serves one");
    }

    #[tokio::test]
    async fn the_socket_accepts() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s");
        let listener = bind(&path).unwrap();
        let _client = std::os::unix::net::UnixStream::connect(&path).unwrap();
        listener.accept().await.unwrap();
    }
}
