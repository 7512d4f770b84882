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
pub mod clippy;
mod key;
pub mod linker;
mod outputs;
mod pipeline;
pub mod plan;
pub mod reasons;
mod recipe;
mod rmeta;
pub mod toolchain;

use std::io;
use std::sync::Arc;

use toolchain::Toolchain;

use super::job::{Invocation, Job, Outcome};
use super::pipeline::Context;

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
        // Under clippy-driver, the toolchain is that of the rustc it wraps.
        let rustc = clippy::wrapped_rustc(invocation).unwrap_or(&invocation.compiler);
        self.toolchains
            .resolve(&context.launcher, rustc, &invocation.env, &invocation.cwd)
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
        let driver = match clippy::wrapped_rustc(&job.invocation) {
            Some(_) => Some(clippy::driver_key(&job.invocation, &context.hashes)?),
            None => None,
        };
        let outcome = pipeline::compile(
            &self.toolchains,
            &self.linkers,
            context,
            job,
            toolchain,
            driver,
        )
        .await;
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
