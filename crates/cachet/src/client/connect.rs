//! Reaching the server: connect, or start it and then connect.

use std::io;
use std::os::fd::BorrowedFd;
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

use crate::config::Config;
use crate::daemon::spawn_detached;
use crate::paths::{FileLock, RuntimeDir};
use crate::protocol::frame::{read_frame, write_frame};
use crate::protocol::{self, PROTOCOL_VERSION, Request, Response};

/// How long a client waits for a server it started to answer.
const START_TIMEOUT: Duration = Duration::from_secs(10);

/// How long a client waits for a stopping server to let go of its lock: it answers the
/// shutdown request once its cache writes are done, then closes its connections (at most
/// 2 s) and exits.
pub(crate) const EXIT_TIMEOUT: Duration = Duration::from_secs(10);

/// The server answers the handshake at once; a server that does not is wedged.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Why the client could not use the server; each case ends in running the compiler
/// directly.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("runtime directory {0}: {1}")]
    RuntimeDir(String, io::Error),
    #[error("cannot reach the server: {0}")]
    Connect(io::Error),
    #[error("no server is running")]
    NotRunning,
    #[error("the server exited at start ({0}); see {1}")]
    StartFailed(String, String),
    #[error("the server did not start within {0:?}; see {1}")]
    StartTimeout(Duration, String),
    #[error("the server belongs to uid {0}, not to us")]
    ForeignServer(u32),
    #[error(
        "the server speaks protocol {0}, this client speaks {PROTOCOL_VERSION}; run `cachet --stop-server`"
    )]
    VersionMismatch(u32),
    #[error("the server closed the connection")]
    Closed,
    #[error("the server sent garbage: {0}")]
    Garbage(String),
    #[error("talking to the server failed: {0}")]
    Io(io::Error),
}

/// A handshaken connection to a server of ours.
pub(crate) struct Connection {
    stream: UnixStream,
}

/// Whether to start a server when none answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Start {
    IfNeeded,
    Never,
}

impl Connection {
    /// Connects and shakes hands; the handshake is sent together with `first`, so a hit
    /// costs one round trip.
    pub(crate) fn open(
        config: &Config,
        start: Start,
        first: &Request,
    ) -> Result<Connection, ClientError> {
        Connection::open_with_fds(config, start, first, &[])
    }

    /// [`open`](Self::open), with `fds` passed along with the first request.
    pub(crate) fn open_with_fds(
        config: &Config,
        start: Start,
        first: &Request,
        fds: &[BorrowedFd<'_>],
    ) -> Result<Connection, ClientError> {
        let runtime = RuntimeDir::prepare(&config.runtime_dir)
            .map_err(|e| ClientError::RuntimeDir(config.runtime_dir.display().to_string(), e))?;
        let stream = match try_connect(&runtime) {
            Ok(stream) => stream,
            Err(e) if start == Start::Never => {
                return Err(if is_absent(&e) {
                    ClientError::NotRunning
                } else {
                    ClientError::Connect(e)
                });
            }
            Err(_) => start_server(&runtime)?,
        };
        check_peer(&stream)?;
        let mut connection = Connection { stream };
        let mut hello = Vec::new();
        write_frame(&mut hello, &protocol::handshake(PROTOCOL_VERSION)).map_err(ClientError::Io)?;
        write_frame(&mut hello, &protocol::encode(first)).map_err(ClientError::Io)?;
        crate::protocol::fds::send_with_fds(&connection.stream, &hello, fds)
            .map_err(ClientError::Io)?;
        let _ = connection.stream.set_read_timeout(Some(HANDSHAKE_TIMEOUT));
        let reply = connection.read_raw()?;
        // A compile may wait long for a token and run long: no limit after the handshake.
        let _ = connection.stream.set_read_timeout(None);
        match protocol::parse_handshake(&reply) {
            Some(PROTOCOL_VERSION) => Ok(connection),
            Some(other) => Err(ClientError::VersionMismatch(other)),
            None => Err(ClientError::Garbage("no handshake".into())),
        }
    }

    fn read_raw(&mut self) -> Result<Vec<u8>, ClientError> {
        match read_frame(&mut self.stream) {
            Ok(Some(frame)) => Ok(frame),
            Ok(None) => Err(ClientError::Closed),
            Err(e) if e.kind() == io::ErrorKind::InvalidData => {
                Err(ClientError::Garbage(e.to_string()))
            }
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => Err(ClientError::Closed),
            Err(e) if e.kind() == io::ErrorKind::ConnectionReset => Err(ClientError::Closed),
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                Err(ClientError::Io(io::Error::new(
                    e.kind(),
                    "the server did not answer in time",
                )))
            }
            Err(e) => Err(ClientError::Io(e)),
        }
    }

    /// Sends one more request on this connection.
    pub(crate) fn send(&mut self, request: &Request) -> Result<(), ClientError> {
        write_frame(&mut self.stream, &protocol::encode(request)).map_err(ClientError::Io)
    }

    /// The server's next message.
    pub(crate) fn receive(&mut self) -> Result<Response, ClientError> {
        let frame = self.read_raw()?;
        protocol::decode(&frame).map_err(|e| ClientError::Garbage(e.to_string()))
    }
}

fn is_absent(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::NotFound | io::ErrorKind::ConnectionRefused
    )
}

fn try_connect(runtime: &RuntimeDir) -> io::Result<UnixStream> {
    let address = runtime.socket()?;
    UnixStream::connect(address.connect_path())
}

/// Starts a server under the start lock, so that racing clients start exactly one.
fn start_server(runtime: &RuntimeDir) -> Result<UnixStream, ClientError> {
    let lock_path = runtime.start_lock();
    let _lock = FileLock::acquire(&lock_path)
        .map_err(|e| ClientError::RuntimeDir(lock_path.display().to_string(), e))?;
    // Whoever held the lock before us may have started it already.
    if let Ok(stream) = try_connect(runtime) {
        return Ok(stream);
    }
    let exe = std::env::current_exe().map_err(ClientError::Connect)?;
    tracing::debug!("starting a server from {}", exe.display());
    let mut child = spawn_detached(&exe, &runtime.log_file()).map_err(ClientError::Connect)?;
    let started = Instant::now();
    let mut pause = Duration::from_millis(1);
    loop {
        match try_connect(runtime) {
            Ok(stream) => return Ok(stream),
            Err(e) if is_absent(&e) => {
                if let Ok(Some(status)) = child.try_wait() {
                    // One more look: a server that won a race may have just bound.
                    if let Ok(stream) = try_connect(runtime) {
                        return Ok(stream);
                    }
                    // Exit status 0 without a socket: another server holds the server
                    // lock and no longer listens (it is stopping). Once it has exited,
                    // start ours again, within the start limit.
                    let left = START_TIMEOUT.saturating_sub(started.elapsed());
                    if status.success() && !left.is_zero() && wait_until_no_server(runtime, left) {
                        tracing::debug!("a stopping server has exited; starting ours again");
                        child = spawn_detached(&exe, &runtime.log_file())
                            .map_err(ClientError::Connect)?;
                        continue;
                    }
                    // A server that exited at once for another reason (a bad runtime dir)
                    // will never answer: fall back now rather than at the timeout.
                    return Err(ClientError::StartFailed(
                        status.to_string(),
                        runtime.log_file().display().to_string(),
                    ));
                }
                if started.elapsed() >= START_TIMEOUT {
                    return Err(ClientError::StartTimeout(
                        START_TIMEOUT,
                        runtime.log_file().display().to_string(),
                    ));
                }
                std::thread::sleep(pause);
                pause = (pause * 2).min(Duration::from_millis(50));
            }
            Err(e) => return Err(ClientError::Connect(e)),
        }
    }
}

/// Waits, at most `limit`, until no server holds the server lock of `runtime` (a stopping
/// one has exited); true when none does. A lock file that cannot be opened counts as none.
/// The caller holds the start lock, so no server of ours starts and loses the lock to this
/// look meanwhile.
fn wait_until_no_server(runtime: &RuntimeDir, limit: Duration) -> bool {
    let started = Instant::now();
    let mut pause = Duration::from_millis(1);
    loop {
        match FileLock::try_acquire(&runtime.server_lock()) {
            Ok(Some(_)) | Err(_) => return true,
            Ok(None) if started.elapsed() >= limit => return false,
            Ok(None) => {
                std::thread::sleep(pause);
                pause = (pause * 2).min(Duration::from_millis(20));
            }
        }
    }
}

/// Waits until the server of `config`'s runtime dir, told to stop, has exited (it answers
/// before it has), at most [`EXIT_TIMEOUT`]: a server started next finds the lock free.
/// False when one still runs at the end. Errors: the runtime dir or its start lock.
pub(crate) fn wait_until_stopped(config: &Config) -> Result<bool, ClientError> {
    let runtime = RuntimeDir::prepare(&config.runtime_dir)
        .map_err(|e| ClientError::RuntimeDir(config.runtime_dir.display().to_string(), e))?;
    let lock_path = runtime.start_lock();
    let _lock = FileLock::acquire(&lock_path)
        .map_err(|e| ClientError::RuntimeDir(lock_path.display().to_string(), e))?;
    Ok(wait_until_no_server(&runtime, EXIT_TIMEOUT))
}

/// Refuses a server run by someone else, whatever the socket's permissions say.
fn check_peer(stream: &UnixStream) -> Result<(), ClientError> {
    let cred = rustix::net::sockopt::socket_peercred(stream)
        .map_err(|e| ClientError::Connect(e.into()))?;
    let (theirs, ours) = (cred.uid.as_raw(), rustix::process::getuid().as_raw());
    if theirs != ours {
        return Err(ClientError::ForeignServer(theirs));
    }
    Ok(())
}
