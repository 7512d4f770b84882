//! rustc under cargo: every crate type, keyed without running rustc on a hit.
//!
//! The key has two levels, as ccache's direct mode does for C:
//! - the **base key** covers what is known before compiling: the toolchain (`rustc -vV`
//!   and the sysroot's libraries), the normalized arguments, the cwd, the content of every
//!   `--extern` artifact and named native library, the target spec, the cargo environment,
//!   and for linked crate types the linker's identity and what the link args name;
//! - under it, a **manifest** lists the source files (with content hashes) and the env vars
//!   that earlier compiles read, taken from the dep-info file the compile itself wrote. A
//!   request whose sources and env still match a variant gets that variant's entry.
//!
//! So a hit runs no rustc at all and a miss runs exactly one: the real compile, streamed to
//! cargo as it runs (pipelining sees the `.rmeta` notice early).
//!
//! Display flags (`--diagnostic-width`, `--color`, `diagnostic-rendered-ansi`) are not in
//! the key, so artifacts are shared across terminals. An entry remembers the display it was
//! rendered for; when it holds diagnostics and the display differs, the request is a miss
//! that recompiles and replaces the entry, so a hit never replays another rendering.

pub mod args;
mod key;
pub mod linker;
mod pipeline;
pub mod plan;
pub mod toolchain;

use std::io;
use std::path::PathBuf;
use std::sync::Arc;

use toolchain::Toolchain;

use super::job::{Invocation, Job, Outcome};
use super::pipeline::Context;
use super::regular_files::SpecialOutput;

/// The language rustc compiles, as stats name it.
pub const LANGUAGE: &str = "Rust";

/// Why a rustc compile is handed back to the client. `Display` is part of the stats label.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NotCacheable {
    /// The command line does something we do not cache.
    #[error("{0}")]
    Arguments(#[from] args::Unsupported),
    /// Without dep-info the sources are unknown.
    #[error("no --emit=dep-info")]
    NoDepInfo,
    /// Compiles are not observed, and a proc macro may read anything.
    #[error("a proc macro's inputs cannot be observed")]
    UnobservedProcMacro,
    /// Only Linux targets are known (output names, libraries).
    #[error("target {0} is not Linux")]
    NotLinux(String),
    /// The linker a linked crate type needs is not on PATH.
    #[error("linker {0} not found")]
    LinkerNotFound(String),
    /// A `-l KIND=` we do not know.
    #[error("native library kind {0}")]
    NativeLibKind(String),
    /// A native library that no search path has.
    #[error("native library {0} not found")]
    NativeLibNotFound(String),
    /// A link argument we cannot key.
    #[error("{0}")]
    LinkArg(#[from] linker::UnkeyedLinkArg),
    /// A file the base key needs could not be hashed (`label` says which).
    #[error("{label}: {}: {error}", path.display())]
    Input {
        label: String,
        path: PathBuf,
        error: io::ErrorKind,
    },
    /// An output path is a device, FIFO, symlink...
    #[error("{name}: {reason}")]
    Output { name: String, reason: SpecialOutput },
}

/// What the server keeps for rustc between requests: toolchains and linkers, by probe.
#[derive(Default)]
pub struct RustFamily {
    toolchains: toolchain::Toolchains,
    linkers: linker::Linkers,
}

impl RustFamily {
    /// The toolchain the compiler runs when it is rustc (or a rustup proxy of it).
    pub async fn identify(
        &self,
        context: &Context,
        invocation: &Invocation,
    ) -> io::Result<Option<Arc<Toolchain>>> {
        self.toolchains
            .resolve(
                &context.launcher,
                &invocation.compiler,
                &invocation.env,
                &invocation.cwd,
            )
            .await
    }

    /// Serves one rustc compile. Each outcome is logged with the crate's name, so a
    /// build's hits and misses can be traced.
    pub async fn compile(
        &self,
        context: &Context,
        job: &Job,
        toolchain: Arc<Toolchain>,
    ) -> io::Result<Outcome> {
        let outcome = pipeline::compile(self, context, job, toolchain).await;
        let args = &job.invocation.args;
        let crate_name = args
            .iter()
            .position(|a| a == "--crate-name")
            .and_then(|i| args.get(i + 1))
            .map_or_else(|| "?".into(), |n| n.to_string_lossy().into_owned());
        match &outcome {
            Ok(o) => tracing::info!("outcome rustc crate={crate_name} {o:?}"),
            Err(e) => tracing::info!("outcome rustc crate={crate_name} error {e}"),
        }
        outcome
    }
}

#[cfg(test)]
mod tests;
