//! The compiler layer: a short dispatcher over two families.
//!
//! The server hands over a [`Job`] (one decoded [`Invocation`], an executor bound to the
//! build's jobserver, an event sender, a cancel token). [`CompileService::compile`] asks
//! each family whether it knows the compiler (gcc and clang by probe in [`c`], rustc by
//! probe in [`rustc`]) and hands the job to that family, which ends with one [`Outcome`].
//!
//! Both families have the same parts (arguments, plan, key, pipeline) and share one of
//! each domain piece: [`manifest`] (base key → variants of hashed inputs → entry key),
//! [`depfile`] (make-style dependency files), [`stamp`] (is a file unchanged), [`observe`]
//! (what a compile read), [`basedir`], [`file_hashes`]; and one piece of machinery,
//! [`pipeline`] (lead or follow an identical compile, stream, publish, replay). Where a
//! miss runs is the job's [`executor`].

pub mod basedir;
pub mod c;
pub mod colour;
pub mod depfile;
pub mod executor;
pub mod file_hashes;
mod inflight;
pub mod job;
pub mod key;
pub mod manifest;
pub mod observe;
pub mod pipeline;
mod regular_files;
pub mod rustc;
pub mod stamp;

use std::io;
use std::sync::Arc;

pub use executor::LocalExecutor;
pub use job::{Event, Invocation, Job, Outcome, Uncacheable};

use crate::cache::Cache;
use crate::process::Launcher;
use crate::stats::Stats;
use c::CFamily;
use pipeline::Context;
use rustc::RustFamily;

/// Serves compile jobs: the two families and what they share.
pub struct CompileService {
    context: Context,
    c: CFamily,
    rust: RustFamily,
}

impl CompileService {
    /// `launcher` runs probes; a job's compiler processes run through its own executor.
    pub fn new(launcher: Launcher, cache: Arc<Cache>, stats: Arc<Stats>) -> CompileService {
        CompileService {
            context: Context::new(launcher, cache, stats),
            c: CFamily::default(),
            rust: RustFamily::default(),
        }
    }

    /// Observes every compile with `interposer` (see `observe`).
    pub fn with_interposer(mut self, interposer: Option<observe::Interposer>) -> CompileService {
        self.context = self.context.with_interposer(interposer);
        self
    }

    /// Lets probes write their input files in `dir` (the server's private runtime dir).
    pub fn with_probe_dir(mut self, dir: std::path::PathBuf) -> CompileService {
        self.context = self.context.with_probe_dir(dir);
        self
    }

    /// Serves one job. Its events go to `job.events` as they happen; the outcome says how
    /// it ended (the server sends the client's final message from it).
    pub async fn compile(&self, job: Job) -> Outcome {
        let stats = &self.context.stats;
        stats.update(|c| c.compile_requests += 1);
        let outcome = Outcome::from(self.dispatch(&job).await);
        match &outcome {
            Outcome::Uncacheable(reason) => {
                stats.update(|c| *c.uncacheable.entry(reason.to_string()).or_default() += 1)
            }
            Outcome::Error(e) => {
                tracing::warn!("compile failed in the server: {e}");
                stats.update(|c| *c.uncacheable.entry("server error".into()).or_default() += 1)
            }
            Outcome::Cancelled => stats.update(|c| c.cancelled += 1),
            Outcome::Hit | Outcome::Miss | Outcome::Failed(_) => {}
        }
        outcome
    }

    /// Hands the job to the family that knows its compiler.
    async fn dispatch(&self, job: &Job) -> io::Result<Outcome> {
        let invocation = &job.invocation;
        if let Some(identity) = self.c.identify(&self.context, invocation).await? {
            return self.c.compile(&self.context, job, identity).await;
        }
        // Not gcc or clang: perhaps rustc (its toolchain is probed, never guessed).
        if let Some(toolchain) = self.rust.identify(&self.context, invocation).await? {
            return self.rust.compile(&self.context, job, toolchain).await;
        }
        Ok(Outcome::Uncacheable(Uncacheable::UnsupportedCompiler))
    }

    /// How the server's file-hash memory is doing.
    pub fn file_hash_stats(&self) -> file_hashes::FileHashStats {
        self.context.hashes.stats()
    }
}

#[cfg(test)]
mod tests;
