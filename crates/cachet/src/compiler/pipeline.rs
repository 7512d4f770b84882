//! What every family's compile goes through, in one place: the shared [`Context`] (cache,
//! stats, file-hash memo, observation), leading an identical compile or following one
//! already running (`inflight`), streaming the compiler's output as events, publishing a
//! leader's result and replaying it to followers.

use std::ffi::OsString;
use std::io;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::colour::ColourStripper;
use super::file_hashes::FileHashes;
use super::inflight::{Follower, InFlight, Leader, Role, Shared};
use super::job::{Event, Invocation, Job, Outcome};
use super::observe;
use super::remote::Remote;
use crate::cache::{Cache, CacheEntry, CacheKey, PendingGuard, StoredFile};
use crate::compiler::explain::Explainer;
use crate::memory::Slot;
use crate::process::{Cancelled, CommandSpec, Exit, Launcher, OutputChunk, ProcessOutput};
use crate::stats::{Stats, millis};

/// What both families share: where entries go, what is counted, what is remembered about
/// files, which compiles are running, and how compiles are observed.
pub struct Context {
    /// Runs probes (`--version`, `-vV`): no token, no jobserver.
    pub launcher: Launcher,
    pub cache: Arc<Cache>,
    pub stats: Arc<Stats>,
    /// Content hashes of sources, headers and externs, remembered between compiles.
    pub hashes: Arc<FileHashes>,
    inflight: Arc<InFlight>,
    /// Observes compiles (see `observe`); None where the interposer cannot load.
    interposer: Option<Arc<observe::Interposer>>,
    /// A private directory where probes may write their input files (the server's runtime
    /// dir); None: probes that need one answer conservatively.
    pub probe_dir: Option<PathBuf>,
    /// Explains misses (see `explain`).
    pub explain: Arc<Explainer>,
    /// Remote execution of misses, when configured (see `remote`).
    pub remote: Option<Arc<Remote>>,
}

impl Context {
    /// A context whose compiles are not observed (see [`Context::with_interposer`]).
    pub fn new(launcher: Launcher, cache: Arc<Cache>, stats: Arc<Stats>) -> Context {
        Context {
            launcher,
            cache,
            stats,
            hashes: Arc::default(),
            inflight: Arc::default(),
            interposer: None,
            probe_dir: None,
            explain: Arc::new(Explainer::in_memory()),
            remote: None,
        }
    }

    /// Runs misses on `remote`'s workers where it can.
    pub fn with_remote(mut self, remote: Option<Remote>) -> Context {
        self.remote = remote.map(Arc::new);
        self
    }

    /// Lets probes write their input files in `dir`.
    pub fn with_probe_dir(mut self, dir: PathBuf) -> Context {
        self.probe_dir = Some(dir);
        self
    }

    /// Observes every compile with `interposer`.
    pub fn with_interposer(mut self, interposer: Option<observe::Interposer>) -> Context {
        self.interposer = interposer.map(Arc::new);
        self
    }

    /// Whether compiles are observed.
    pub fn observing(&self) -> bool {
        self.interposer.is_some()
    }

    /// A log for one compile, when compiles are observed.
    pub fn watch(&self) -> io::Result<Option<observe::Watch>> {
        self.interposer.as_ref().map(|i| i.watch()).transpose()
    }

    /// The child that runs `args` for this invocation: its compiler, cwd and environment.
    pub fn spec(&self, invocation: &Invocation, args: Vec<OsString>) -> CommandSpec {
        let mut spec = CommandSpec::new(&invocation.compiler, &invocation.cwd);
        spec.args = args;
        spec.env = invocation.env.clone();
        spec
    }

    /// Leads the compile of `key`, or follows an identical one already running and replays
    /// its result, writing the outputs with `restore`: `Err(outcome)` when replayed. A
    /// forced recompile (`CACHET_RECACHE`) never follows: it runs alone (`Ok(None)`).
    pub async fn lead_or_follow(
        &self,
        key: CacheKey,
        restore: impl FnOnce(&CacheEntry) -> io::Result<()> + Send + 'static,
        job: &Job,
    ) -> io::Result<Result<Option<Leader>, Outcome>> {
        // A forced recompile runs, even beside the same compile in flight (which may have
        // finished already and only be storing its entry).
        if job.invocation.recache {
            return Ok(Ok(None));
        }
        match self.inflight.join(key) {
            Role::Leader(leader) => Ok(Ok(Some(leader))),
            Role::Follower(follower) => {
                let shared = follow(follower, &job.cancel, &self.stats).await?;
                match self.replay(&shared, restore, job).await? {
                    Some(outcome) => Ok(Err(outcome)),
                    // The leader gave up: compile without it.
                    None => Ok(Ok(None)),
                }
            }
        }
    }

    /// Runs the compile as the leader of its key (or alone, when `leader` is None), under a
    /// cancellation that fires only when no client waits for it any more.
    pub async fn run_leading(
        &self,
        leader: Option<&mut Leader>,
        job: &Job,
        args: Vec<OsString>,
        watch: Option<&observe::Watch>,
    ) -> io::Result<ProcessOutput> {
        let (compile_cancel, watcher) = lead(leader, &job.cancel);
        let result = self.run_streaming(job, args, watch, &compile_cancel).await;
        watcher.abort();
        result
    }

    /// Runs the real compile through the job's executor with its output sent as events as
    /// it comes, observed by `watch` when given.
    pub async fn run_streaming(
        &self,
        job: &Job,
        args: Vec<OsString>,
        watch: Option<&observe::Watch>,
        cancel: &CancellationToken,
    ) -> io::Result<ProcessOutput> {
        let (tx, mut rx) = mpsc::unbounded_channel();
        let events = job.events.clone();
        let mut colour = job.strips_colour().then(ColourStripper::default);
        let forward = tokio::spawn(async move {
            while let Some(chunk) = rx.recv().await {
                let _ = events.send(match chunk {
                    OutputChunk::Started(pgid) => Event::Started { pgid },
                    OutputChunk::Stdout(bytes) => Event::Stdout(bytes),
                    OutputChunk::BuildTokens(held) => Event::BuildTokens(held),
                    OutputChunk::Stderr(bytes) => match colour.as_mut() {
                        Some(colour) => Event::Stderr(colour.strip(&bytes)),
                        None => Event::Stderr(bytes),
                    },
                });
            }
            if let Some(rest) = colour.as_mut().map(ColourStripper::finish)
                && !rest.is_empty()
            {
                let _ = events.send(Event::Stderr(rest));
            }
        });
        let mut spec = self.spec(&job.invocation, args);
        spec.umask = Some(job.invocation.umask);
        // The real compile waits for memory; the hit path's preprocessor runs do not.
        spec.memory = Some(Slot::of(&spec.program, &spec.cwd, &spec.args));
        if let Some(watch) = watch {
            watch.apply(&mut spec);
        }
        let result = job.executor.run(spec, Some(tx), cancel.clone()).await;
        // All output reaches the client before the verdict does.
        let _ = forward.await;
        result
    }

    /// A compile that failed: its followers get its output and exit code, nothing is stored.
    pub fn finish_failed(&self, leader: Option<Leader>, result: &ProcessOutput) -> Outcome {
        publish(leader, result, || None);
        self.stats.update(|c| c.compile_failures += 1);
        Outcome::Failed(result.exit)
    }

    /// Counts a hit that took since `started`.
    pub fn count_hit(&self, started: Instant) {
        let elapsed = millis(started.elapsed());
        self.stats.update(|c| {
            c.cache_hits += 1;
            c.hit_time_ms += elapsed;
        });
    }

    /// Counts a new entry of `bytes` as a pending write, first waiting while the pending
    /// writes hold more than their limit in memory (back-pressure: the client hears back
    /// only then, so a store slower than the build slows the build, never fills memory).
    /// Waits are counted in `write_waits` and `write_wait_ms`.
    pub async fn reserve_write(&self, bytes: u64) -> PendingGuard {
        let (guard, waited) = self.cache.pending().reserve_when_room(bytes).await;
        if let Some(waited) = waited {
            self.stats.update(|c| {
                c.write_waits += 1;
                c.write_wait_ms += millis(waited);
            });
        }
        guard
    }

    /// Counts a miss that took since `started`.
    pub fn count_miss(&self, started: Instant, recache: bool) {
        let elapsed = millis(started.elapsed());
        self.stats.update(|c| {
            c.cache_misses += 1;
            c.miss_time_ms += elapsed;
            if recache {
                c.forced_recaches += 1;
            }
        });
    }

    /// Gives a follower the leader's result, writing its outputs with `restore`; None when
    /// it must compile by itself (the leader gave up, or the outputs could not be written).
    async fn replay(
        &self,
        shared: &Arc<Shared>,
        restore: impl FnOnce(&CacheEntry) -> io::Result<()> + Send + 'static,
        job: &Job,
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
        job.replay_output(stdout, stderr);
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
            Outcome::Failed(*exit)
        }))
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
        _ = cancel.cancelled() => Err(Cancelled::error("the client went away")),
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

/// Hands a leader's result to the compiles that followed it; `entry` (the outputs, for a
/// successful compile) is made only when one did.
pub fn publish(
    leader: Option<Leader>,
    result: &ProcessOutput,
    entry: impl FnOnce() -> Option<CacheEntry>,
) {
    if let Some(leader) = leader {
        leader.publish(|| Shared::Finished {
            exit: result.exit,
            stdout: result.stdout.clone(),
            stderr: result.stderr.clone(),
            entry: entry(),
        });
    }
}

/// The entry a successful compile produces.
pub fn entry_from(result: &ProcessOutput, files: Vec<StoredFile>) -> CacheEntry {
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
