//! The path of one compile request through the server: identify the compiler, plan the
//! compile, compute the key, then restore a hit or run the compiler and store the result.

pub mod basedir;
pub mod file_hashes;
pub mod gcc;
pub mod identity;
mod inflight;
pub mod key;
pub mod observe;
mod outputs;
mod regular_files;
pub mod rustc;

use std::io;
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use cachet_jobserver::Jobserver;
use tokio::sync::mpsc::{self, UnboundedSender};
use tokio_util::sync::CancellationToken;

use crate::cache::{Cache, CacheEntry, CacheKey};
use crate::process::{CommandSpec, Launcher, OutputChunk, ProcessOutput};
use crate::protocol::{CompileRequest, Exit, Response};
use crate::stats::{Stats, millis};
use gcc::{direct, manifest};
use identity::{Identity, IdentityCache};
use inflight::{Follower, InFlight, Leader, Role, Shared};

/// Outputs smaller than this are restored on the runtime thread itself.
const INLINE_WRITE_LIMIT: usize = 1 << 20;

pub struct CompileService {
    launcher: Launcher,
    cache: Arc<Cache>,
    stats: Arc<Stats>,
    identities: IdentityCache,
    rust: rustc::RustState,
    /// Content hashes of sources, headers and externs, remembered between compiles.
    hashes: Arc<file_hashes::FileHashes>,
    inflight: Arc<InFlight>,
    /// Observes compiles (see `observe`); None where the interposer cannot load.
    interposer: Option<Arc<observe::Interposer>>,
}

/// The keys a C miss is stored under: the variant's entry and the manifest hang off
/// `parent` (direct mode's base key, or preprocessor mode's key).
struct Keys {
    parent: CacheKey,
    manifest: CacheKey,
    maps: basedir::Maps,
    direct: bool,
}

/// How a compile request ended, for the caller's bookkeeping.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Hit,
    Miss,
    Failed,
    Local(String),
    Cancelled,
}

impl CompileService {
    pub fn new(launcher: Launcher, cache: Arc<Cache>, stats: Arc<Stats>) -> CompileService {
        CompileService {
            launcher,
            cache,
            stats,
            identities: IdentityCache::default(),
            rust: rustc::RustState::default(),
            hashes: Arc::default(),
            inflight: Arc::default(),
            interposer: None,
        }
    }

    /// Observes every compile with `interposer` (see `observe`).
    pub fn with_interposer(mut self, interposer: Option<observe::Interposer>) -> CompileService {
        self.interposer = interposer.map(Arc::new);
        self
    }

    /// Whether compiles are observed.
    pub fn observing(&self) -> bool {
        self.interposer.is_some()
    }

    /// A log for one compile, when compiles are observed.
    fn watch(&self) -> io::Result<Option<observe::Watch>> {
        self.interposer.as_ref().map(|i| i.watch()).transpose()
    }

    /// Serves one request. Every response goes to `out`; the last one is `Finished` or
    /// `RunLocally`, unless `cancel` fired (the client is gone and nobody listens).
    pub async fn compile(
        &self,
        request: CompileRequest,
        build: Option<Jobserver>,
        out: UnboundedSender<Response>,
        cancel: CancellationToken,
    ) -> Outcome {
        self.stats.update(|c| c.compile_requests += 1);
        let outcome = match self
            .try_compile(&request, build.as_ref(), &out, &cancel)
            .await
        {
            Ok(outcome) => outcome,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => Outcome::Cancelled,
            Err(e) => Outcome::Local(format!("server error: {e}")),
        };
        match &outcome {
            Outcome::Local(reason) => {
                let key = if reason.starts_with("server error") {
                    "server error".to_owned()
                } else {
                    reason.clone()
                };
                self.stats
                    .update(|c| *c.uncacheable.entry(key).or_default() += 1);
                let _ = out.send(Response::RunLocally {
                    reason: reason.clone(),
                });
            }
            Outcome::Cancelled => self.stats.update(|c| c.cancelled += 1),
            _ => {}
        }
        outcome
    }

    async fn try_compile(
        &self,
        request: &CompileRequest,
        build: Option<&Jobserver>,
        out: &UnboundedSender<Response>,
        cancel: &CancellationToken,
    ) -> io::Result<Outcome> {
        let started = Instant::now();
        let compiler = request.compiler_path();
        let cwd = request.cwd_path();
        let env = request.env_os();
        let Some(identity) = self
            .identities
            .identify(&self.launcher, &compiler, &env)
            .await?
        else {
            // Not gcc or clang: perhaps rustc (its toolchain is probed, never guessed).
            if let Some(toolchain) = self
                .rust
                .toolchains
                .resolve(&self.launcher, &compiler, &env, &cwd)
                .await?
            {
                return self
                    .compile_rust(request, toolchain, build, out, cancel)
                    .await;
            }
            return Ok(Outcome::Local("unsupported compiler".into()));
        };
        tracing::debug!(target: "cachet::timing", "server: compiler identified after {:?}", started.elapsed());
        let plan = match gcc::plan(&identity, request) {
            Ok(plan) => plan,
            Err(reason) => return Ok(Outcome::Local(reason)),
        };
        let identity = self
            .identities
            .with_native(
                &self.launcher,
                &compiler,
                &env,
                identity,
                &plan.args.expanded,
            )
            .await?;
        let recache = request
            .env_var("CACHET_RECACHE")
            .is_some_and(|v| !v.is_empty() && v != b"0");

        // Direct mode: no preprocessor on a hit, nor on a miss (see gcc/direct.rs).
        if direct::applies(&plan, request, self.observing()) {
            // Inline, like the other small file work on the hit path: a hop to the blocking
            // pool costs more than a stat (and the hash is usually remembered).
            let source = self.hashes.hash(&cwd.join(&plan.args.input))?;
            let (base, maps) = direct::base_key(&identity, &plan, request, source.as_bytes());
            let manifest_key = manifest::manifest_key(&base);
            let manifest = self.manifest(&manifest_key).await;
            tracing::debug!(target: "cachet::timing", "server: direct key and manifest after {:?}", started.elapsed());
            if !manifest.no_direct {
                if !recache
                    && let Some(entry) = self.lookup(&manifest, &base, &maps, request).await?
                    && self
                        .restore_hit(&entry, &plan, request, out, started)
                        .await?
                {
                    self.stats.update(|c| c.direct_hits += 1);
                    tracing::debug!(target: "cachet::timing", "server: direct hit restored after {:?}", started.elapsed());
                    return Ok(Outcome::Hit);
                }
                return self
                    .compile_observed(
                        request,
                        &plan,
                        Keys {
                            parent: base,
                            manifest: manifest_key,
                            maps,
                            direct: true,
                        },
                        None,
                        build,
                        out,
                        cancel,
                        recache,
                    )
                    .await;
            }
        }

        let source = match &plan.preprocess_args {
            Some(args) => {
                let pre = self
                    .launcher
                    .run_compiler(
                        self.spec(request, args.clone()),
                        None,
                        cancel.clone(),
                        build,
                    )
                    .await?;
                if !pre.exit.success() {
                    // The real compile reports the error as the user would see it.
                    return self.run_uncached(request, &plan, build, out, cancel).await;
                }
                pre.stdout
            }
            None => {
                let input = cwd.join(&plan.args.input);
                tokio::fs::read(&input).await?
            }
        };
        let key = gcc::key(&identity, &plan, request, &source);
        let manifest_key = manifest::manifest_key(&key);
        if !recache {
            let manifest = self.manifest(&manifest_key).await;
            let maps = basedir::Maps::default();
            if let Some(entry) = self.lookup(&manifest, &key, &maps, request).await?
                && self
                    .restore_hit(&entry, &plan, request, out, started)
                    .await?
            {
                return Ok(Outcome::Hit);
            }
        }
        self.compile_observed(
            request,
            &plan,
            Keys {
                parent: key,
                manifest: manifest_key,
                maps: basedir::Maps::default(),
                direct: false,
            },
            Some(source),
            build,
            out,
            cancel,
            recache,
        )
        .await
    }

    /// Writes a hit's outputs and replays it; false when they could not be written (for
    /// example, the output directory is gone: the compiler will say so).
    async fn restore_hit(
        &self,
        entry: &CacheEntry,
        plan: &gcc::Plan,
        request: &CompileRequest,
        out: &UnboundedSender<Response>,
        started: Instant,
    ) -> io::Result<bool> {
        tracing::debug!(target: "cachet::timing", "server: entry read after {:?}", started.elapsed());
        // Small outputs are written inline; big ones on the blocking pool.
        let size: usize = entry.files.iter().map(|f| f.data.len()).sum();
        let restored = if size < INLINE_WRITE_LIMIT {
            outputs::restore(entry, plan, request.umask)
        } else {
            let (entry, plan, umask) = (entry.clone(), plan.clone(), request.umask);
            tokio::task::spawn_blocking(move || outputs::restore(&entry, &plan, umask))
                .await
                .map_err(io::Error::other)?
        };
        if let Err(e) = restored {
            tracing::debug!("restoring a hit failed: {e}");
            return Ok(false);
        }
        send_output(out, &entry.stdout, &entry.stderr);
        let _ = out.send(Response::Finished(Exit::Code(entry.exit_code)));
        let elapsed = millis(started.elapsed());
        self.stats.update(|c| {
            c.cache_hits += 1;
            c.hit_time_ms += elapsed;
        });
        Ok(true)
    }

    async fn manifest(&self, key: &CacheKey) -> manifest::Manifest {
        self.cache
            .get(key)
            .await
            .and_then(|e| e.files.into_iter().find(|f| f.role == "manifest"))
            .and_then(|f| postcard::from_bytes(&f.data).ok())
            .unwrap_or_default()
    }

    /// The entry of the first variant whose inputs are all as they were.
    async fn lookup(
        &self,
        manifest: &manifest::Manifest,
        parent: &CacheKey,
        maps: &basedir::Maps,
        request: &CompileRequest,
    ) -> io::Result<Option<CacheEntry>> {
        let cwd = request.cwd_path();
        for variant in &manifest.variants {
            if manifest::matches(variant, &cwd, &request.env, &self.hashes)
                && let Some(entry) = self
                    .cache
                    .get(&manifest::entry_key(parent, variant, maps))
                    .await
            {
                return Ok(Some(entry));
            }
        }
        Ok(None)
    }

    /// A miss in either mode: one observed compile, whose inputs become a manifest variant
    /// under `keys.parent`. `preprocessed` is preprocessor mode's text (for the fallback
    /// rules when the compile cannot be observed whole).
    #[allow(clippy::too_many_arguments)]
    async fn compile_observed(
        &self,
        request: &CompileRequest,
        plan: &gcc::Plan,
        keys: Keys,
        preprocessed: Option<Vec<u8>>,
        build: Option<&Jobserver>,
        out: &UnboundedSender<Response>,
        cancel: &CancellationToken,
        recache: bool,
    ) -> io::Result<Outcome> {
        let started = Instant::now();
        let restore = {
            let (plan, umask) = (plan.clone(), request.umask);
            move |entry: &CacheEntry| outputs::restore(entry, &plan, umask)
        };
        // Base dirs make one direct key serve several checkouts; only one checkout's
        // compile may be followed.
        let inflight = basedir::BaseDirs::of(request).inflight_key(&keys.parent, request);
        let mut leader = match self.lead_or_follow(inflight, restore, out, cancel).await? {
            Ok(leader) => leader,
            Err(replayed) => return Ok(replayed),
        };
        let watch = self.watch()?;
        let compile_start = std::time::SystemTime::now();
        let result = self
            .run_leading(
                leader.as_mut(),
                request,
                plan.compile_args.clone(),
                watch.as_ref(),
                build,
                out,
                cancel,
            )
            .await?;
        if !result.exit.success() {
            return Ok(self.finish_failed(leader, &result, out));
        }
        // Read the outputs before the client hears back: once it has, the build may move
        // or delete them.
        let entry = outputs::collect(plan, &result).await;
        publish(leader, &result, entry.as_ref().ok().cloned());
        let storing = self.cache.pending().reserve();
        let _ = out.send(Response::Finished(result.exit));
        self.count_miss(started, recache);
        let entry = match entry {
            Ok(entry) => entry,
            Err(e) => {
                tracing::warn!("could not read the outputs of a compile: {e}");
                self.stats.update(|c| c.cache_write_errors += 1);
                return Ok(Outcome::Miss);
            }
        };
        // What the compile read is worked out and stored off the request's future: the
        // client has its answer, and the build's jobserver (held by that future) goes back
        // to the build now rather than after hashing every input.
        let verdict = {
            let (plan, cwd, hashes) = (plan.clone(), request.cwd_path(), self.hashes.clone());
            let env = request.env.clone();
            let stats = self.stats.clone();
            tokio::task::spawn_blocking(move || {
                let log = watch.map(observe::Watch::finish).transpose();
                let outputs: Vec<&Path> = std::iter::once(plan.object.as_path())
                    .chain(plan.depfile.as_deref())
                    .collect();
                let observed = match log {
                    Ok(Some(log)) => match log.complete(std::process::id()) {
                        Ok(()) => Ok(log.inputs(&outputs, &cwd, &env)),
                        Err(why) => Err(why),
                    },
                    Ok(None) => Err("compiles are not observed".into()),
                    Err(e) => Err(format!("the observation log: {e}")),
                };
                stats.update(|c| match &observed {
                    Ok(_) => c.observed_compiles += 1,
                    Err(_) => c.unobserved_compiles += 1,
                });
                match (observed, &preprocessed) {
                    (Ok(observed), _) => manifest::variant_from_observed(
                        &observed,
                        &cwd,
                        &hashes,
                        compile_start,
                        keys.direct,
                    ),
                    (Err(why), None) => manifest::Verdict::PreprocessorMode(why),
                    (Err(_), Some(text)) => manifest::fallback_variant(text, &cwd),
                }
            })
        };
        let (cache, stats) = (self.cache.clone(), self.stats.clone());
        tokio::spawn(async move {
            let _storing = storing;
            match verdict.await {
                Ok(verdict) => store_variant(&cache, &stats, keys, entry, verdict),
                Err(e) => tracing::warn!("working out what a compile read failed: {e}"),
            }
        });
        Ok(Outcome::Miss)
    }

    async fn run_uncached(
        &self,
        request: &CompileRequest,
        plan: &gcc::Plan,
        build: Option<&Jobserver>,
        out: &UnboundedSender<Response>,
        cancel: &CancellationToken,
    ) -> io::Result<Outcome> {
        let result = self
            .run_streaming(request, plan.compile_args.clone(), None, build, out, cancel)
            .await?;
        let _ = out.send(Response::Finished(result.exit));
        if result.exit.success() {
            // The preprocessor failed but the compile did not: odd, but the build goes on.
            self.stats.update(|c| {
                *c.uncacheable
                    .entry("preprocessor failed".into())
                    .or_default() += 1
            });
            Ok(Outcome::Miss)
        } else {
            self.stats.update(|c| c.compile_failures += 1);
            Ok(Outcome::Failed)
        }
    }

    /// Runs the real compile with its output streamed to the client as it comes, observed
    /// by `watch` when given.
    async fn run_streaming(
        &self,
        request: &CompileRequest,
        args: Vec<std::ffi::OsString>,
        watch: Option<&observe::Watch>,
        build: Option<&Jobserver>,
        out: &UnboundedSender<Response>,
        cancel: &CancellationToken,
    ) -> io::Result<ProcessOutput> {
        let (tx, mut rx) = mpsc::unbounded_channel();
        let forward_to = out.clone();
        let forward = tokio::spawn(async move {
            while let Some(chunk) = rx.recv().await {
                let message = match chunk {
                    OutputChunk::Started(pgid) => Response::CompilerStarted { pgid },
                    OutputChunk::Stdout(bytes) => Response::Stdout(bytes),
                    OutputChunk::Stderr(bytes) => Response::Stderr(bytes),
                };
                let _ = forward_to.send(message);
            }
        });
        let mut spec = self.spec(request, args);
        spec.umask = Some(request.umask);
        if let Some(watch) = watch {
            watch.apply(&mut spec);
        }
        let result = self
            .launcher
            .run_compiler(spec, Some(tx), cancel.clone(), build)
            .await;
        // All output reaches the client before the verdict does.
        let _ = forward.await;
        result
    }

    fn spec(&self, request: &CompileRequest, args: Vec<std::ffi::OsString>) -> CommandSpec {
        let mut spec = CommandSpec::new(request.compiler_path(), request.cwd_path());
        spec.args = args;
        spec.env = request.env_os();
        spec
    }

    /// How the server's file-hash memory is doing.
    pub fn file_hash_stats(&self) -> file_hashes::FileHashStats {
        self.hashes.stats()
    }

    /// For tests and stats: the identity the service found for `compiler`.
    pub async fn identity(&self, compiler: &Path) -> io::Result<Option<Identity>> {
        self.identities
            .identify(&self.launcher, compiler, &[])
            .await
    }
}

/// Waits for the leader of an identical compile, unless our own client goes first.
async fn follow(
    follower: Follower,
    cancel: &CancellationToken,
    stats: &Stats,
) -> io::Result<Arc<Shared>> {
    stats.update(|c| c.dedup_joins += 1);
    tokio::select! {
        shared = follower.result() => Ok(shared),
        _ = cancel.cancelled() => Err(io::Error::new(io::ErrorKind::Interrupted, "the client went away")),
    }
}

/// The cancellation a leader's compile runs under (it fires only when nobody waits any
/// more), and a task that withdraws the leader's own client when that client goes away.
fn lead(
    leader: Option<&mut Leader>,
    cancel: &CancellationToken,
) -> (CancellationToken, tokio::task::JoinHandle<()>) {
    let Some(leader) = leader else {
        return (cancel.clone(), tokio::spawn(async {}));
    };
    let participant = leader.take_participant();
    let client = cancel.clone();
    let watcher = tokio::spawn(async move {
        client.cancelled().await;
        drop(participant);
    });
    (leader.cancel_token(), watcher)
}

fn publish(leader: Option<Leader>, result: &ProcessOutput, entry: Option<CacheEntry>) {
    if let Some(leader) = leader {
        leader.publish(Shared::Finished {
            exit: result.exit,
            stdout: result.stdout.clone(),
            stderr: result.stderr.clone(),
            entry,
        });
    }
}

impl CompileService {
    /// Leads the compile of `key`, or follows an identical one already running and replays
    /// its result, writing the outputs with `restore`: `Err(outcome)` when replayed.
    async fn lead_or_follow(
        &self,
        key: CacheKey,
        restore: impl FnOnce(&CacheEntry) -> io::Result<()> + Send + 'static,
        out: &UnboundedSender<Response>,
        cancel: &CancellationToken,
    ) -> io::Result<Result<Option<Leader>, Outcome>> {
        match self.inflight.join(key) {
            Role::Leader(leader) => Ok(Ok(Some(leader))),
            Role::Follower(follower) => {
                let shared = follow(follower, cancel, &self.stats).await?;
                match self.replay(&shared, restore, out).await? {
                    Some(outcome) => Ok(Err(outcome)),
                    // The leader gave up: compile without it.
                    None => Ok(Ok(None)),
                }
            }
        }
    }

    /// Runs the compile as the leader of its key (or alone, when `leader` is None), under a
    /// cancellation that fires only when no client waits for it any more.
    #[allow(clippy::too_many_arguments)]
    async fn run_leading(
        &self,
        leader: Option<&mut Leader>,
        request: &CompileRequest,
        args: Vec<std::ffi::OsString>,
        watch: Option<&observe::Watch>,
        build: Option<&Jobserver>,
        out: &UnboundedSender<Response>,
        cancel: &CancellationToken,
    ) -> io::Result<ProcessOutput> {
        let (compile_cancel, watcher) = lead(leader, cancel);
        let result = self
            .run_streaming(request, args, watch, build, out, &compile_cancel)
            .await;
        watcher.abort();
        result
    }

    fn count_miss(&self, started: Instant, recache: bool) {
        let elapsed = millis(started.elapsed());
        self.stats.update(|c| {
            c.cache_misses += 1;
            c.miss_time_ms += elapsed;
            if recache {
                c.forced_recaches += 1;
            }
        });
    }

    /// A compile that failed: its followers and its client get its output and exit code,
    /// and nothing is stored.
    fn finish_failed(
        &self,
        leader: Option<Leader>,
        result: &ProcessOutput,
        out: &UnboundedSender<Response>,
    ) -> Outcome {
        publish(leader, result, None);
        let _ = out.send(Response::Finished(result.exit));
        self.stats.update(|c| c.compile_failures += 1);
        Outcome::Failed
    }

    /// Gives a follower the leader's result, writing its outputs with `restore`; None when
    /// it must compile by itself (the leader gave up, or the outputs could not be written).
    async fn replay(
        &self,
        shared: &Arc<Shared>,
        restore: impl FnOnce(&CacheEntry) -> io::Result<()> + Send + 'static,
        out: &UnboundedSender<Response>,
    ) -> io::Result<Option<Outcome>> {
        let Shared::Finished {
            exit,
            stdout,
            stderr,
            entry,
        } = &**shared
        else {
            return Ok(None);
        };
        if let Some(entry) = entry.clone() {
            let restored = tokio::task::spawn_blocking(move || restore(&entry))
                .await
                .map_err(io::Error::other)?;
            if let Err(e) = restored {
                tracing::debug!("restoring a joined compile's outputs failed: {e}");
                return Ok(None);
            }
        }
        send_output(out, stdout, stderr);
        let _ = out.send(Response::Finished(*exit));
        let success = exit.success();
        self.stats.update(|c| {
            if success {
                c.cache_hits += 1;
            } else {
                c.compile_failures += 1;
            }
        });
        Ok(Some(if success {
            Outcome::Hit
        } else {
            Outcome::Failed
        }))
    }
}

/// Stores `entry` under the variant of `verdict`, and records the variant (or that the
/// source needs preprocessor mode) in the manifest.
fn store_variant(
    cache: &Cache,
    stats: &Stats,
    keys: Keys,
    entry: CacheEntry,
    verdict: manifest::Verdict,
) {
    let variant = match verdict {
        manifest::Verdict::Store(variant) => Some(variant),
        manifest::Verdict::PreprocessorMode(why) if keys.direct => {
            tracing::debug!("preprocessor mode from now on: {why}");
            None
        }
        manifest::Verdict::PreprocessorMode(why) | manifest::Verdict::Skip(why) => {
            tracing::debug!("not stored: {why}");
            let reason = not_stored_reason(&why);
            stats.update(|c| *c.not_stored.entry(reason).or_default() += 1);
            return;
        }
    };
    if let Some(variant) = &variant {
        cache.put_in_background(
            manifest::entry_key(&keys.parent, variant, &keys.maps),
            entry,
        );
    }
    cache.update_in_background(keys.manifest, true, move |old| {
        let mut manifest: manifest::Manifest = old
            .and_then(|e| e.files.into_iter().find(|f| f.role == "manifest"))
            .and_then(|f| postcard::from_bytes(&f.data).ok())
            .unwrap_or_default();
        match variant {
            Some(variant) => manifest.add(variant),
            None => manifest.no_direct = true,
        }
        Some(CacheEntry {
            exit_code: 0,
            stdout: vec![],
            stderr: vec![],
            files: vec![crate::cache::StoredFile {
                role: "manifest".into(),
                executable: false,
                data: postcard::to_stdvec(&manifest).ok()?,
            }],
            meta: vec![],
        })
    });
}

/// A reason as stats group it: without the path that makes each one unique.
fn not_stored_reason(why: &str) -> String {
    for kind in [
        "too new to trust",
        "is gone",
        "precompiled header",
        "assembler",
    ] {
        if why.contains(kind) {
            return kind.to_owned();
        }
    }
    why.to_owned()
}

fn send_output(out: &UnboundedSender<Response>, stdout: &[u8], stderr: &[u8]) {
    if !stdout.is_empty() {
        let _ = out.send(Response::Stdout(stdout.to_vec()));
    }
    if !stderr.is_empty() {
        let _ = out.send(Response::Stderr(stderr.to_vec()));
    }
}

/// The entry a successful compile produces.
pub fn entry_from(result: &ProcessOutput, files: Vec<crate::cache::StoredFile>) -> CacheEntry {
    CacheEntry {
        exit_code: match result.exit {
            Exit::Code(code) => code,
            Exit::Signal(_) => 1,
        },
        stdout: result.stdout.clone(),
        stderr: result.stderr.clone(),
        files,
        meta: Vec::new(),
    }
}

#[cfg(test)]
mod tests;
