//! What the server hands a compiler family, and what it gets back.
//!
//! The server decodes the wire request once into an [`Invocation`] and wraps it in a
//! [`Job`]; a family reports progress as [`Event`]s and ends with one [`Outcome`]. Only the
//! server turns these into wire messages.

use std::ffi::{OsStr, OsString};
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;
use std::sync::Arc;

use tokio::sync::mpsc::UnboundedSender;
use tokio_util::sync::CancellationToken;

use super::basedir::BaseDirs;
use super::c::reasons::NotCacheable;
use super::colour;
use super::executor::Executor;
use super::rustc::reasons::Refusal;
use crate::process::{Cancelled, Exit};

/// One compiler invocation, as the build made it.
#[derive(Debug, Clone)]
pub struct Invocation {
    /// Absolute path of the real compiler.
    pub compiler: PathBuf,
    /// Its arguments, without the program name.
    pub args: Vec<OsString>,
    /// The working directory the build ran it in.
    pub cwd: PathBuf,
    /// The build's whole environment, in the order given (the last value of a name wins).
    pub env: Vec<(OsString, OsString)>,
    /// The build's umask: outputs get the modes the compiler would have given them.
    pub umask: u32,
    /// Whether the build's stderr is a terminal (the compiler's colour choice depends on it).
    pub stderr_is_tty: bool,
    /// The build's base dirs (see `basedir`).
    pub base_dirs: BaseDirs,
    /// `CACHET_RECACHE` was set: compile and overwrite, never hit.
    pub recache: bool,
}

impl Invocation {
    /// The value of `name` in the build's environment, as bytes.
    pub fn env_var(&self, name: &str) -> Option<&[u8]> {
        self.env
            .iter()
            .rev()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_bytes())
    }

    /// The working directory as bytes (keys hash paths as bytes).
    pub fn cwd_bytes(&self) -> &[u8] {
        self.cwd.as_os_str().as_bytes()
    }

    /// The compiler's file name (clang's driver mode comes from it).
    pub fn compiler_name(&self) -> &OsStr {
        self.compiler.file_name().unwrap_or_default()
    }
}

/// Progress of a compile, in the order it happened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// The compiler runs as this process group (the client kills it should the server die).
    Started {
        /// Process group id.
        pgid: u32,
    },
    /// Compiler output (live, or replayed from a hit).
    Stdout(Vec<u8>),
    /// Compiler diagnostics (live, or replayed from a hit).
    Stderr(Vec<u8>),
    /// Tokens of the build's jobserver the server holds for the compiler now.
    BuildTokens(usize),
}

/// One compile to serve: the invocation, where its compiler processes run (bound to the
/// build's jobserver), where its events go, and the token that fires when its client is gone.
pub struct Job {
    /// What the build asked for.
    pub invocation: Invocation,
    /// Runs the compile's compiler processes (see `executor`).
    pub executor: Arc<dyn Executor>,
    /// Where progress goes; the server forwards it to the client.
    pub events: UnboundedSender<Event>,
    /// Fires when the client is gone: stop, kill the compiler, answer nothing.
    pub cancel: CancellationToken,
    /// Set by a family that runs the compile with colour the client's terminal would not
    /// show: diagnostics then reach the client without it (see `colour`).
    pub strip_colour: std::sync::OnceLock<bool>,
}

impl Job {
    /// Sends a hit's (or a joined compile's) recorded output.
    pub(crate) fn replay_output(&self, stdout: &[u8], stderr: &[u8]) {
        if !stdout.is_empty() {
            let _ = self.events.send(Event::Stdout(stdout.to_vec()));
        }
        if !stderr.is_empty() {
            let stderr = match self.strips_colour() {
                true => colour::strip(stderr),
                false => stderr.to_vec(),
            };
            let _ = self.events.send(Event::Stderr(stderr));
        }
    }

    /// Whether diagnostics reach the client without colour.
    pub(crate) fn strips_colour(&self) -> bool {
        self.strip_colour.get().copied().unwrap_or(false)
    }
}

/// How a compile ended. Hits and misses exited 0 (only successful compiles are stored).
#[derive(Debug)]
pub enum Outcome {
    /// The outputs came from the cache, or from an identical compile that ran at the same time.
    Hit,
    /// The compiler ran and succeeded.
    Miss,
    /// The compiler ran and failed; nothing was stored.
    Failed(Exit),
    /// The server did not handle it: the client runs the compiler itself.
    Uncacheable(Uncacheable),
    /// Something went wrong in the server: the client runs the compiler itself.
    Error(io::Error),
    /// The client went away; nobody listens for an answer.
    Cancelled,
}

impl PartialEq for Outcome {
    fn eq(&self, other: &Outcome) -> bool {
        match (self, other) {
            (Outcome::Failed(a), Outcome::Failed(b)) => a == b,
            (Outcome::Uncacheable(a), Outcome::Uncacheable(b)) => a == b,
            (Outcome::Error(a), Outcome::Error(b)) => {
                a.kind() == b.kind() && a.to_string() == b.to_string()
            }
            _ => std::mem::discriminant(self) == std::mem::discriminant(other),
        }
    }
}

impl From<io::Result<Outcome>> for Outcome {
    /// A [`Cancelled`] compile was cancelled; any other error is the server's.
    fn from(result: io::Result<Outcome>) -> Outcome {
        match result {
            Ok(outcome) => outcome,
            Err(e) if Cancelled::is(&e) => Outcome::Cancelled,
            Err(e) => Outcome::Error(e),
        }
    }
}

/// Why a compile is handed back to the client. `Display` is the label stats count it under.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Uncacheable {
    /// Neither gcc, clang nor rustc, by probe.
    #[error("unsupported compiler")]
    UnsupportedCompiler,
    /// A gcc or clang compile we cannot cache (see `c::plan`).
    #[error("{0}")]
    C(#[from] NotCacheable),
    /// A rustc compile we cannot cache, with its crate types.
    #[error("{0}")]
    Rust(#[from] Refusal),
}
