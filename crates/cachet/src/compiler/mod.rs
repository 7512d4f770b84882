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
pub mod explain;
pub mod file_hashes;
mod inflight;
pub mod job;
pub mod key;
pub mod loader;
pub mod manifest;
pub mod observe;
pub mod pipeline;
mod regular_files;
pub mod remote;
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

    /// Runs misses on `remote`'s workers where it can (see `remote`).
    pub fn with_remote(mut self, remote: Option<remote::Remote>) -> CompileService {
        self.context = self.context.with_remote(remote);
        self
    }

    /// Keeps explanations of misses with `explainer` (see `explain`).
    pub fn with_explainer(mut self, explainer: Arc<explain::Explainer>) -> CompileService {
        self.context.explain = explainer;
        self
    }

    /// What explains misses.
    pub fn explainer(&self) -> &Arc<explain::Explainer> {
        &self.context.explain
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
                stats.update(|c| *c.uncacheable.entry(reason.to_string()).or_default() += 1);
                self.explain_uncacheable(&job.invocation, reason);
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

    /// Keeps why a compile was not cacheable, under its `-o` output when it names one (a
    /// link): `cachet explain app` then says so. Others are kept in memory only.
    fn explain_uncacheable(&self, invocation: &Invocation, reason: &Uncacheable) {
        let output = invocation
            .args
            .iter()
            .position(|a| a == "-o")
            .and_then(|i| invocation.args.get(i + 1))
            .map(|o| invocation.cwd.join(o).to_string_lossy().into_owned());
        let language = match reason {
            Uncacheable::Rust(_) => "Rust",
            _ => "C",
        };
        // The command, for people (`rustc --version`, `gcc a.o b.o -o app`), its values
        // hidden as in recipes.
        let mut command = invocation.compiler_name().to_string_lossy().into_owned();
        for arg in &invocation.args {
            if command.len() > 100 {
                command.push_str(" …");
                break;
            }
            command.push(' ');
            command.push_str(&self.context.explain.masker().arg(&arg.to_string_lossy()));
        }
        let (explain, reason) = (self.context.explain.clone(), reason.to_string());
        let outputs: Vec<String> = output.into_iter().collect();
        if outputs.is_empty() {
            explain.record_uncacheable(language, &command, outputs, &reason);
        } else {
            // File work: off the request's path.
            tokio::task::spawn_blocking(move || {
                explain.record_uncacheable(language, &command, outputs, &reason)
            });
        }
    }

    /// Hands the job to the family that knows its compiler. Each family probes the binary
    /// for what it is, never trusting its name; the name only says which probe runs first.
    /// rustc answers the C probe (`-dM -E -x c /dev/null`) with an error, remembered for a
    /// minute only, so asking it first cost the first compile of every build (and one
    /// compile a minute after) a run of rustc.
    async fn dispatch(&self, job: &Job) -> io::Result<Outcome> {
        let invocation = &job.invocation;
        let rust_first = named_like_rustc(&invocation.compiler);
        if rust_first && let Some(toolchain) = self.rust.identify(&self.context, invocation).await?
        {
            return self.rust.compile(&self.context, job, toolchain).await;
        }
        if let Some(identity) = self.c.identify(&self.context, invocation).await? {
            return self.c.compile(&self.context, job, identity).await;
        }
        // Not gcc or clang: perhaps rustc (its toolchain is probed, never guessed).
        if !rust_first
            && let Some(toolchain) = self.rust.identify(&self.context, invocation).await?
        {
            return self.rust.compile(&self.context, job, toolchain).await;
        }
        Ok(Outcome::Uncacheable(Uncacheable::UnsupportedCompiler))
    }

    /// How the server's file-hash memory is doing.
    pub fn file_hash_stats(&self) -> file_hashes::FileHashStats {
        self.context.hashes.stats()
    }

    /// Starts from the file hashes a stopped server saved at `path` (see
    /// [`file_hashes::FileHashes::load`]).
    pub fn with_saved_file_hashes(mut self, path: &std::path::Path) -> CompileService {
        self.context.hashes = Arc::new(file_hashes::FileHashes::load(
            path,
            file_hashes::DEFAULT_CAPACITY,
        ));
        self
    }

    /// Saves the file hashes remembered so far at `path`, for the next server. Errors: the
    /// file could not be written.
    pub fn save_file_hashes(&self, path: &std::path::Path) -> std::io::Result<()> {
        self.context.hashes.save(path)
    }
}

/// Whether `compiler`'s file name is rustc's (`rustc`, `rustc-1.95`, a rustup proxy) or
/// clippy-driver's: the compilers whose rustc probe goes first (see `dispatch`).
fn named_like_rustc(compiler: &std::path::Path) -> bool {
    compiler
        .file_name()
        .and_then(|n| n.to_str())
        .is_some_and(|n| n.starts_with("rustc") || n.starts_with("clippy-driver"))
}

#[cfg(test)]
mod tests;
