//! The one seam through which the server spawns every child process.
//!
//! [`ProcessRunner`] runs a fully described [`CommandSpec`]. The real runner uses tokio
//! processes; the mock records every spec so tests can assert the exact program, arguments,
//! environment and working directory. [`Launcher`] adds the jobserver on top.

pub mod child;
pub mod cpu;
pub mod fd_limit;
mod launcher;
#[cfg(test)]
pub mod mock;
mod spawn;
mod tokio_runner;

use std::ffi::{CString, OsString};
use std::io;
use std::os::fd::RawFd;
use std::path::PathBuf;

use async_trait::async_trait;
use tokio::sync::mpsc::UnboundedSender;
use tokio_util::sync::CancellationToken;

use crate::memory::Slot;

#[cfg(test)]
pub use launcher::JOBSERVER_VARS;
pub use launcher::{COMPILER_OOM_SCORE_ADJ, Launcher};
pub use tokio_runner::TokioRunner;

/// Everything about a child process, so that nothing is inherited by accident.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommandSpec {
    pub program: PathBuf,
    pub args: Vec<OsString>,
    /// The child's complete environment (the server's own is not inherited).
    pub env: Vec<(OsString, OsString)>,
    pub cwd: PathBuf,
    /// Umask for the child, so its output files get the client's modes.
    pub umask: Option<u32>,
    /// Descriptors that stay open in the child under the same numbers (the jobserver pipe).
    pub inherit_fds: Vec<RawFd>,
    /// The compile's memory slot: set for a real compile, which then waits for memory
    /// admission; None for probes and the preprocessor runs of the hit path.
    pub memory: Option<Slot>,
    /// A cgroup's `cgroup.procs` that the child is moved into once it runs (set by the
    /// launcher; see [`child::reap_in_group`]).
    pub cgroup_procs: Option<CString>,
    /// The child's `oom_score_adj` (-1000..=1000), so the OOM killer takes a retryable
    /// compiler before the build tool or the server.
    pub oom_score_adj: Option<i32>,
}

impl CommandSpec {
    pub fn new(program: impl Into<PathBuf>, cwd: impl Into<PathBuf>) -> CommandSpec {
        CommandSpec {
            program: program.into(),
            args: Vec::new(),
            env: Vec::new(),
            cwd: cwd.into(),
            umask: None,
            inherit_fds: Vec::new(),
            memory: None,
            cgroup_procs: None,
            oom_score_adj: None,
        }
    }

    pub fn env_var(&self, name: &str) -> Option<&OsString> {
        self.env
            .iter()
            .rev()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v)
    }

    /// Sets `name`, replacing any earlier value.
    pub fn set_env(&mut self, name: impl Into<OsString>, value: impl Into<OsString>) {
        let name = name.into();
        self.env.retain(|(k, _)| *k != name);
        self.env.push((name, value.into()));
    }

    pub fn remove_env(&mut self, name: &str) {
        self.env.retain(|(k, _)| k != name);
    }
}

/// Variables every helper run keeps: what it takes to start the program at all.
const HELPER_BASE_VARS: &[&str] = &["PATH", "LD_LIBRARY_PATH"];

/// The environment of a helper run (an identity probe, `rustc -vV`, `-print-file-name`):
/// only what starts the program and the variables in `identity_vars`, which change its
/// answer and so belong in the key that answer is remembered under. Never the rest of the
/// request's environment: `DEPENDENCIES_OUTPUT` would make a probe write into the user's
/// tree, and anything else would make a remembered answer depend on one request.
pub fn helper_env(
    env: &[(OsString, OsString)],
    identity_vars: &[&str],
) -> Vec<(OsString, OsString)> {
    // Sorted by name, the last value of a name winning as in the child's environment.
    let kept: std::collections::BTreeMap<&OsString, &OsString> = env
        .iter()
        .filter(|(k, _)| {
            HELPER_BASE_VARS
                .iter()
                .chain(identity_vars)
                .any(|name| k == name)
        })
        .map(|(k, v)| (k, v))
        .collect();
    kept.into_iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

/// Output of a child, as it arrives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OutputChunk {
    /// The child is running as this process group.
    Started(u32),
    Stdout(Vec<u8>),
    Stderr(Vec<u8>),
    /// Tokens of the build's own jobserver the server holds now for the child's extra
    /// threads (sent as the number changes, 0 at the end): should the server die holding
    /// them, the client gives them back.
    BuildTokens(usize),
}

/// Why a run stopped early: its cancel token fired (the client went away). It travels as
/// the inner error of an `io::Error` of kind `Interrupted`; [`Cancelled::is`] tells it
/// from any other interruption.
#[derive(Debug, thiserror::Error)]
#[error("cancelled: {0}")]
pub struct Cancelled(pub &'static str);

impl Cancelled {
    /// The `io::Error` a cancelled run returns; `when` says what it was doing.
    pub fn error(when: &'static str) -> io::Error {
        io::Error::new(io::ErrorKind::Interrupted, Cancelled(when))
    }

    /// Whether `error` is a cancellation (and not some other interruption).
    pub fn is(error: &io::Error) -> bool {
        error.get_ref().is_some_and(|inner| inner.is::<Cancelled>())
    }
}

/// How a child process ended (the wire has its own form of this; the server converts).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    /// It exited with this status code.
    Code(i32),
    /// A signal (this number) killed it.
    Signal(i32),
}

impl Exit {
    /// Whether it exited with status 0.
    pub fn success(self) -> bool {
        self == Exit::Code(0)
    }
}

/// What a child printed and how it ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProcessOutput {
    pub exit: Exit,
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
    /// The peak resident set of the largest single process (`wait4`'s `ru_maxrss`, bytes),
    /// where the runner could read it.
    pub max_rss: Option<u64>,
}

#[async_trait]
pub trait ProcessRunner: Send + Sync {
    /// Runs `spec` to its end with stdin from /dev/null. Output chunks also go to `stream`
    /// as they arrive. When `cancel` fires, the child's whole process group is killed and
    /// reaped before this returns a [`Cancelled`] error.
    async fn run(
        &self,
        spec: CommandSpec,
        stream: Option<UnboundedSender<OutputChunk>>,
        cancel: CancellationToken,
    ) -> io::Result<ProcessOutput>;
}
