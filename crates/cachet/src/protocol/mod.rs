//! What the client and the server say to each other.
//!
//! A connection starts with a handshake frame from each side (`b"CACHET"` and the protocol
//! version as u32 LE, a layout that never changes), so that a version mismatch is always
//! recognised. Every later frame is one postcard-encoded message. See `frame` for framing.

pub mod fds;
pub mod frame;

use std::ffi::OsString;
use std::os::unix::ffi::{OsStrExt, OsStringExt};

use serde::{Deserialize, Serialize};

use crate::stats::StatsSnapshot;

/// Bump on any change to the messages below.
pub const PROTOCOL_VERSION: u32 = 4;

const HANDSHAKE_MAGIC: &[u8; 6] = b"CACHET";

/// The first frame each side sends: `b"CACHET"` and `version` as u32 LE.
pub fn handshake(version: u32) -> Vec<u8> {
    let mut bytes = HANDSHAKE_MAGIC.to_vec();
    bytes.extend_from_slice(&version.to_le_bytes());
    bytes
}

/// The version in a handshake frame, or None when it is not one.
pub fn parse_handshake(bytes: &[u8]) -> Option<u32> {
    let rest = bytes.strip_prefix(HANDSHAKE_MAGIC.as_slice())?;
    Some(u32::from_le_bytes(rest.try_into().ok()?))
}

/// Raw bytes of an OS string: paths and args need not be UTF-8.
pub type Bytes = Vec<u8>;

/// An OS string's raw bytes, for the wire.
pub fn to_bytes(s: &std::ffi::OsStr) -> Bytes {
    s.as_bytes().to_vec()
}

/// Raw bytes from the wire as an OS string.
pub fn to_os(bytes: &[u8]) -> OsString {
    OsString::from_vec(bytes.to_vec())
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
/// What a client asks the server.
pub enum Request {
    /// Serve one compile; the answers are `CompilerStarted`, output, then `Finished` or
    /// `RunLocally`.
    Compile(CompileRequest),
    /// The statistics, as `Response::Stats`.
    Stats,
    /// Zero the statistics.
    ZeroStats,
    /// Stop accepting, finish running compiles and pending writes, then exit.
    Shutdown,
    /// Remove every entry of the local cache.
    ClearCache,
    /// Trim the local cache to its size limit.
    CleanupCache,
    /// Wait, with a bound, until every pending cache write (to every level) is done.
    Flush,
    /// Why compiles missed: of the given outputs (absolute paths), or the server's last
    /// `last` misses. The answer is `Explanations`.
    Explain {
        /// Output paths, absolute.
        paths: Vec<Bytes>,
        /// With no paths: how many of the last misses.
        last: u32,
    },
    /// Write the server's timeline to `output` (an absolute path) as a Chrome trace: the
    /// events of the last `since_secs` seconds (0: all kept since `--zero-stats`).
    Trace {
        /// Where to write it.
        output: Bytes,
        /// How far back, in seconds; 0 for everything kept.
        since_secs: u64,
    },
    /// Write the build report (one HTML page) to `output` (an absolute path), of the last
    /// `since_secs` seconds (0: all kept since `--zero-stats`).
    Report {
        /// Where to write it.
        output: Bytes,
        /// How far back, in seconds; 0 for everything kept.
        since_secs: u64,
    },
    /// After `RunLocally` with an admission: the compiler the client ran has ended. The
    /// answer is `Finished` (exit as it did) or `RunAgain` (the OOM killer struck it).
    LocalExit {
        /// How the compiler ended.
        exit: Exit,
        /// Its peak resident set (`wait4`'s `ru_maxrss`, bytes), if known.
        max_rss: Option<u64>,
    },
}

/// One miss, explained.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Explained {
    /// When it missed (seconds since the epoch).
    pub at: u64,
    /// `C`, `C++`, `Rust`…
    pub language: String,
    /// The explain slot, for people.
    pub slot: String,
    /// The causes, in plain words.
    pub causes: Vec<String>,
}

/// The server's admission of a compile the client runs itself; it lasts until the client
/// reports `LocalExit` or goes away.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Admission {
    /// A cgroup's `cgroup.procs` for the compiler to join before exec (it writes `0`).
    pub cgroup_procs: Option<Bytes>,
    /// The compiler's `oom_score_adj`.
    pub oom_score_adj: i32,
}

/// One compiler invocation, as the build tool made it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CompileRequest {
    /// Absolute path of the real compiler, already resolved by the client.
    pub compiler: Bytes,
    /// Its arguments, without the program name.
    pub args: Vec<Bytes>,
    /// The build's working directory.
    pub cwd: Bytes,
    /// The client's whole environment.
    pub env: Vec<(Bytes, Bytes)>,
    /// The client's umask (outputs get the modes the compiler would have given them).
    pub umask: u32,
    /// Whether the client's stderr is a terminal (the compiler's colour choice depends on it).
    pub stderr_is_tty: bool,
    /// The calling build's jobserver, when the client found a usable one.
    pub build_jobserver: Option<BuildJobserver>,
    /// Why the client ignored a jobserver its environment named (stale or foreign).
    pub stale_jobserver: Option<String>,
    /// The client's `base_dirs`: they belong to the build (each checkout sets its own), not
    /// to the server, which may serve several checkouts at once.
    pub base_dirs: Vec<Bytes>,
}

/// How the build's jobserver reaches the server.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum BuildJobserver {
    /// Its pipe's read and write ends ride with the request (SCM_RIGHTS), in that order.
    Pipe,
    /// A fifo, by path.
    Fifo(Bytes),
}

/// How a process ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Exit {
    /// It exited with this status code.
    Code(i32),
    /// This signal killed it.
    Signal(i32),
}

impl Exit {
    /// Whether it exited with status 0.
    pub fn success(self) -> bool {
        self == Exit::Code(0)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
/// What the server answers.
pub enum Response {
    /// The compiler runs as this process group. Should the server die, the client kills
    /// the group before compiling by itself, so that two compilers never write one output.
    CompilerStarted {
        /// Process group id.
        pgid: u32,
    },
    /// Tokens of the build's own jobserver the server holds now for the compiler's extra
    /// threads (sent as the number changes, 0 at the end). Should the server die, the
    /// client writes that many back into the build's jobserver, so that make finds every
    /// token at its exit.
    BuildTokens {
        /// Tokens held.
        held: u32,
    },
    /// Compiler output, in the order it was produced.
    Stdout(Vec<u8>),
    /// Compiler diagnostics, in the order they were produced.
    Stderr(Vec<u8>),
    /// The compile is over; output files are in place.
    Finished(Exit),
    /// The server will not cache this compile: the client runs the compiler itself. With
    /// an admission, as its child, reporting `LocalExit`; without, it may exec it.
    RunLocally {
        /// Why (the stats label).
        reason: String,
        /// The run's admission (memory and a token), when the server gave one.
        admission: Option<Admission>,
    },
    /// For `Explain`: each path asked about and its last miss (None: none known), or the
    /// last misses (the path is then the miss's first output).
    Explanations(Vec<(Bytes, Option<Explained>)>),
    /// The OOM killer struck the client's run: run it once more, under this admission.
    RunAgain(Admission),
    /// The statistics.
    Stats(Box<StatsSnapshot>),
    /// A management request is done; the text says what was done.
    Done {
        /// For the user.
        message: String,
    },
    /// The request could not be served; the text says why.
    Error(String),
}

/// A message as one frame's payload (postcard).
pub fn encode<T: Serialize>(message: &T) -> Vec<u8> {
    postcard::to_stdvec(message).expect("protocol messages always serialize")
}

/// A frame's payload as a message; an error for anything that is not one.
pub fn decode<'a, T: Deserialize<'a>>(bytes: &'a [u8]) -> Result<T, postcard::Error> {
    postcard::from_bytes(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn handshake_round_trip_and_rejects_garbage() {
        assert_eq!(parse_handshake(&handshake(7)), Some(7));
        assert_eq!(parse_handshake(b"CACHET\x01\x00"), None);
        assert_eq!(parse_handshake(b"GET / HTTP/1.1\r\n"), None);
    }

    #[test]
    fn messages_round_trip() {
        let request = Request::Compile(CompileRequest {
            compiler: b"/usr/bin/gcc".to_vec(),
            args: vec![b"-c".to_vec(), b"\xffodd.c".to_vec()],
            cwd: b"/src".to_vec(),
            env: vec![(b"PATH".to_vec(), b"/usr/bin".to_vec())],
            umask: 0o022,
            stderr_is_tty: false,
            build_jobserver: None,
            stale_jobserver: None,
            base_dirs: vec![b"/home/ci".to_vec()],
        });
        assert_eq!(decode::<Request>(&encode(&request)).unwrap(), request);
        let response = Response::Finished(Exit::Signal(9));
        assert_eq!(decode::<Response>(&encode(&response)).unwrap(), response);
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        for junk in [&b""[..], b"\xff\xff\xff\xff", b"\x00\x01", b"hello world"] {
            let _ = decode::<Request>(junk);
            let _ = decode::<Response>(junk);
        }
        assert!(decode::<Request>(b"\x63").is_err());
    }
}
