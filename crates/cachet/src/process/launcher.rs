//! Runs compiler processes under the server's jobserver.

use std::io;
use std::sync::Arc;

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering};

use cachet_jobserver::{Jobserver, Proxy};
use tokio::sync::mpsc::{self, UnboundedSender};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;

use super::{Cancelled, CommandSpec, OutputChunk, ProcessOutput, ProcessRunner};
use crate::memory::{Measured, Memory, OomWatch, Permit, Slot};
use crate::stats::{Stats, millis};
use crate::trace;

/// Variables through which make, cargo and rustc find a jobserver.
pub const JOBSERVER_VARS: [&str; 3] = cachet_jobserver::ENV_VARS;

/// `oom_score_adj` of every compiler the server runs (and of every compile a client runs
/// under admission): the OOM killer's preferred victims are compiles, which are retried,
/// not the build tool or the server.
pub const COMPILER_OOM_SCORE_ADJ: i32 = 500;

/// The trace's track of compiler processes that hold a token.
pub const RUNNING_TRACK: &str = "compilers running";

#[derive(Clone)]
pub struct Launcher {
    runner: Arc<dyn ProcessRunner>,
    jobserver: Jobserver,
    stats: Arc<Stats>,
    memory: Option<Arc<Memory>>,
    /// Compiler processes running now (each under a token).
    running: Arc<Mutex<i64>>,
    /// Extra tokens granted now, per build's trace track.
    extra: Arc<Mutex<HashMap<String, i64>>>,
    /// The ids (`pipe:[INODE]`) of the proxies of the compilers running now.
    proxies: Arc<Mutex<HashSet<String>>>,
    /// With remote execution, the server's pool counts remote capacity too: this bounds
    /// what runs here (compilers, passed-through runs, uploads) to the machine's share.
    local: Option<Arc<Semaphore>>,
}

/// A running compiler's proxy, known to the launcher while it lives.
struct ProxyGuard {
    proxies: Arc<Mutex<HashSet<String>>>,
    id: String,
}

impl ProxyGuard {
    fn register(proxies: &Arc<Mutex<HashSet<String>>>, inode: u64) -> ProxyGuard {
        let id = format!("pipe:[{inode}]");
        proxies
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(id.clone());
        ProxyGuard {
            proxies: proxies.clone(),
            id,
        }
    }
}

impl Drop for ProxyGuard {
    fn drop(&mut self) {
        self.proxies
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&self.id);
    }
}

impl Launcher {
    pub fn new(runner: Arc<dyn ProcessRunner>, jobserver: Jobserver) -> Launcher {
        Launcher {
            runner,
            jobserver,
            stats: Arc::default(),
            memory: None,
            running: Arc::default(),
            extra: Arc::default(),
            proxies: Arc::default(),
            local: None,
        }
    }

    /// Runs at most `slots` things here at once, whatever the pool's size (which then
    /// counts remote capacity as well).
    pub fn with_local_limit(mut self, slots: usize) -> Launcher {
        self.local = Some(Arc::new(Semaphore::new(slots.max(1))));
        self
    }

    /// One of the machine's own slots, when the pool counts remote capacity (None
    /// otherwise: a pool token is the bound). Held by every local compile, passed-through
    /// run and upload. Errors: `cancel` fired.
    pub async fn local_slot(
        &self,
        cancel: &CancellationToken,
    ) -> io::Result<Option<OwnedSemaphorePermit>> {
        let Some(local) = &self.local else {
            return Ok(None);
        };
        tokio::select! {
            permit = local.clone().acquire_owned() => Ok(permit.ok()),
            _ = cancel.cancelled() => Err(Cancelled::error("while waiting for a local slot")),
        }
    }

    /// Admits real compiles by memory too.
    pub fn with_memory(mut self, memory: Arc<Memory>) -> Launcher {
        self.memory = Some(memory);
        self
    }

    /// Memory admission, when on.
    pub fn memory(&self) -> Option<&Arc<Memory>> {
        self.memory.as_ref()
    }

    /// Counts what the proxies do into `stats`.
    pub fn with_stats(mut self, stats: Arc<Stats>) -> Launcher {
        self.stats = stats;
        self
    }

    /// Runs one compiler process of a compile.
    ///
    /// A real compile (`spec.memory` set) first waits for memory admission (holding no
    /// token meanwhile), and runs in a cgroup of its own where one can be had. The process
    /// runs under one token of the server's pool (and under the calling build's implicit
    /// token, which its client holds). Its extra parallelism comes from a private proxy
    /// pipe that is fed only with tokens held from every level at once: the build's pool
    /// (`build`, when the client passed one) and the server's, and only while memory is
    /// not short. The server's token goes back once the child has exited, and the proxy
    /// takes back whatever the child still held, however it ended.
    ///
    /// A compile the OOM killer struck (by its cgroup's count, not its exit status) that
    /// failed runs once more, alone, with its prediction raised; what the first attempt
    /// printed after the kill never reaches the client, and what it printed before is not
    /// printed twice. Only a second failure is returned.
    pub async fn run_compiler(
        &self,
        spec: CommandSpec,
        stream: Option<UnboundedSender<OutputChunk>>,
        cancel: CancellationToken,
        build: Option<&Jobserver>,
    ) -> io::Result<ProcessOutput> {
        let mut forwarded = Forwarded::default();
        // A compile started from inside one we run holds nothing of its own: its parent
        // holds the token and its memory (waiting for either could deadlock).
        let nested = build.is_some_and(|b| self.is_our_proxy(b));
        let (memory, slot) = match (&self.memory, &spec.memory) {
            (Some(memory), Some(slot)) if !nested => (memory.clone(), slot.clone()),
            _ => {
                let out = self
                    .run_once(spec, &stream, cancel, build, None, &mut forwarded)
                    .await?;
                forwarded.flush(&stream);
                return Ok(out);
            }
        };
        let permit = tokio::select! {
            permit = memory.admit(&slot, false) => permit,
            _ = cancel.cancelled() => return Err(Cancelled::error("while waiting for memory")),
        };
        let first = self
            .run_once(
                spec.clone(),
                &stream,
                cancel.clone(),
                build,
                Some(&permit),
                &mut forwarded,
            )
            .await?;
        let measured = permit.finish(first.max_rss);
        drop(permit);
        if !measured.oom_killed || first.exit.success() {
            forwarded.flush(&stream);
            return Ok(first);
        }
        tracing::warn!(
            "the OOM killer took a process of the compile of {}; running it once more, alone",
            slot.label
        );
        forwarded.retry();
        let permit = tokio::select! {
            permit = memory.admit(&slot, true) => permit,
            _ = cancel.cancelled() => return Err(Cancelled::error("while waiting to retry alone")),
        };
        let second = self
            .run_once(spec, &stream, cancel, build, Some(&permit), &mut forwarded)
            .await?;
        permit.finish(second.max_rss);
        forwarded.flush(&stream);
        self.stats.update(|c| {
            if second.exit.success() {
                c.oom_retries_succeeded += 1;
            } else {
                c.oom_retries_failed += 1;
            }
        });
        Ok(second)
    }

    /// Runs the process once under a token (and `permit`'s cgroup), forwarding its output
    /// through `forwarded`.
    async fn run_once(
        &self,
        mut spec: CommandSpec,
        stream: &Option<UnboundedSender<OutputChunk>>,
        cancel: CancellationToken,
        build: Option<&Jobserver>,
        permit: Option<&Permit>,
        forwarded: &mut Forwarded,
    ) -> io::Result<ProcessOutput> {
        // A build that joined our own pool (through its fifo) already holds one of our
        // tokens for this job: take no second one, and count our pool once.
        let nested = build.is_some_and(|b| self.is_our_proxy(b));
        let own_pool = nested || build.is_some_and(|b| b.same_pool(&self.jobserver));
        let build_id = self.build_id(build);
        let build = build.filter(|_| !own_pool);
        let asked_us = trace::now_us();
        // A compile nested in one of ours runs in its parent's slot.
        let _local = match nested {
            true => None,
            false => self.local_slot(&cancel).await?,
        };
        let token = self.server_token(own_pool, &cancel).await?;
        let name = spec.memory.as_ref().map_or_else(
            || spec.program.to_string_lossy().into_owned(),
            |slot| slot.label.clone(),
        );
        // The build's -j, for the trace's "extra tokens" track of this build.
        let build_jobs = spec
            .env_var("MAKEFLAGS")
            .and_then(|v| v.to_str())
            .and_then(cachet_jobserver::flags::jobs);
        let proxy = Proxy::new()?;
        let _registered = ProxyGuard::register(&self.proxies, proxy.inode());
        let env = proxy.child_env(spec.env_var("MAKEFLAGS").map(|v| v.as_os_str()));
        give_jobserver(&mut spec, env, proxy.fds());
        spec.oom_score_adj = Some(COMPILER_OOM_SCORE_ADJ);
        spec.cgroup_procs = permit.and_then(Permit::cgroup_procs);
        let levels: Vec<Jobserver> = build
            .into_iter()
            .cloned()
            .chain([self.jobserver.clone()])
            .collect();

        // Learn the child's pid (for the proxy's demand check) from the runner's stream.
        let pid = Arc::new(AtomicU32::new(0));
        let (tx, mut rx) = mpsc::unbounded_channel();
        let seen = pid.clone();
        let build_stream = stream.clone();
        let stream = stream.clone();
        let oom = permit.map(Permit::oom_watch);
        let mut gate = std::mem::take(forwarded);
        let forward = tokio::spawn(async move {
            while let Some(chunk) = rx.recv().await {
                if let OutputChunk::Started(p) = chunk {
                    seen.store(p, Ordering::SeqCst);
                }
                // Past an OOM kill, hold what comes: it may be the killed attempt's error.
                if !gate.holding && oom.as_ref().is_some_and(OomWatch::struck) {
                    gate.holding = true;
                }
                gate.pass(chunk, &stream);
            }
            gate
        });
        let child = || Some(pid.load(Ordering::SeqCst)).filter(|p| *p != 0);
        let run = self.runner.run(spec, Some(tx), cancel);
        let started = std::time::Instant::now();
        let start_us = self.count_running(1);
        let memory = self.memory.clone();
        let may_grant = || !memory.as_ref().is_some_and(|m| m.short());
        let extra_track = match build_jobs {
            Some(jobs) => format!("extra tokens, build {build_id} (-j{jobs})"),
            None => format!("extra tokens, build {build_id}"),
        };
        let last = AtomicUsize::new(0);
        // Each grant holds one token of every level: with a build's pool, one of its.
        let build_tokens_to = build_stream.filter(|_| levels.len() > 1);
        let granted = |n: usize| {
            let delta = n as i64 - last.swap(n, Ordering::SeqCst) as i64;
            self.extra_tokens(&extra_track, delta);
            if let Some(stream) = &build_tokens_to {
                let _ = stream.send(OutputChunk::BuildTokens(n));
            }
        };
        let (result, report) = proxy
            .serve_gated(&levels, child, may_grant, granted, run)
            .await;
        let end_us = self.count_running(-1);
        self.stats.trace.record(trace::Event::Run {
            start_us,
            end_us,
            name,
            build: build_id.clone(),
            token_wait_us: start_us.saturating_sub(asked_us),
            memory_wait_us: permit.map_or(0, |p| p.waited().as_micros() as u64),
        });
        if let Ok(gate) = forward.await {
            *forwarded = gate;
        }
        // The runner returns only after the child is reaped, so the token is free now.
        let main_time = if token.is_some() {
            started.elapsed()
        } else {
            Default::default()
        };
        drop(token);
        self.stats.update(|c| {
            c.proxy_grants += report.grants;
            c.peak_extra_tokens = c.peak_extra_tokens.max(report.peak);
            c.proxy_reclaims += report.reclaims;
            c.proxy_looks += report.looks;
            c.proxy_refills += report.refills;
            c.tokens_recovered += report.recovered;
            c.idle_token_ms += millis(report.idle);
            *c.token_ms_by_build.entry(build_id).or_default() += millis(main_time + report.granted);
            // Bounded: a long-lived server sees many builds; keep the busiest.
            if c.token_ms_by_build.len() > 32 {
                let smallest = c
                    .token_ms_by_build
                    .iter()
                    .min_by_key(|(_, ms)| **ms)
                    .map(|(k, _)| k.clone());
                if let Some(key) = smallest {
                    c.token_ms_by_build.remove(&key);
                }
            }
        });
        result
    }

    /// Admits a compile that the client runs itself (a link, an uncacheable call): memory
    /// for `slot` (only when nothing else runs, if `alone`), then a token of the server's
    /// pool unless the build joined it. Ends when dropped. Errors: `cancel` fired, or the
    /// pool failed.
    pub async fn admit(
        &self,
        slot: &Slot,
        alone: bool,
        build: Option<&Jobserver>,
        cancel: &CancellationToken,
    ) -> io::Result<Admission> {
        let nested = build.is_some_and(|b| self.is_our_proxy(b));
        let permit = match &self.memory {
            Some(memory) if !nested => tokio::select! {
                permit = memory.admit(slot, alone) => Some(permit),
                _ = cancel.cancelled() => return Err(Cancelled::error("while waiting for memory")),
            },
            _ => None,
        };
        let own_pool = nested || build.is_some_and(|b| b.same_pool(&self.jobserver));
        let asked_us = trace::now_us();
        let local = match nested {
            true => None,
            false => self.local_slot(cancel).await?,
        };
        let token = self.server_token(own_pool, cancel).await?;
        let start_us = self.count_running(1);
        Ok(Admission {
            run: Some(trace::Event::Run {
                start_us,
                end_us: 0,
                name: slot.label.clone(),
                build: self.build_id(build),
                token_wait_us: start_us.saturating_sub(asked_us),
                memory_wait_us: permit.as_ref().map_or(0, |p| p.waited().as_micros() as u64),
            }),
            launcher: self.clone(),
            permit,
            _token: token,
            _local: local,
        })
    }

    /// A compiler process starts (`1`) or ends (`-1`): the count and its trace track move
    /// at one instant, returned (µs), which is also the process's slice's start or end, so
    /// that the track and the slices agree exactly.
    fn count_running(&self, delta: i64) -> u64 {
        let mut running = self.running.lock().unwrap_or_else(|e| e.into_inner());
        *running += delta;
        let at_us = trace::now_us();
        self.stats.trace.record(trace::Event::Counter {
            at_us,
            track: RUNNING_TRACK.into(),
            value: *running,
        });
        at_us
    }

    /// One compiler's extra tokens moved by `delta`: the build's track in the trace (the
    /// sum over its compilers) moves with it.
    fn extra_tokens(&self, track: &str, delta: i64) {
        let mut extra = self.extra.lock().unwrap_or_else(|e| e.into_inner());
        let now = extra.entry(track.to_owned()).or_default();
        *now += delta;
        self.stats.trace.counter(track, *now);
    }

    /// Whether `build` is the proxy of a compiler we run: the request comes from inside it.
    fn is_our_proxy(&self, build: &Jobserver) -> bool {
        self.proxies
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .contains(&build.id())
    }

    /// How stats and the trace name a build: by its jobserver (`pipe:[INODE]`,
    /// `fifo:PATH`), "this server's pool (jobserver-env)", or "no jobserver".
    pub fn build_id(&self, build: Option<&Jobserver>) -> String {
        match build {
            Some(b) if b.same_pool(&self.jobserver) => "this server's pool (jobserver-env)".into(),
            Some(b) => b.id(),
            None => "no jobserver".into(),
        }
    }

    /// The server's timeline.
    pub fn trace(&self) -> &crate::trace::Trace {
        &self.stats.trace
    }

    /// A token of the server's pool, unless the build joined that pool (`own_pool`: its
    /// client already holds one of ours for this job).
    async fn server_token(
        &self,
        own_pool: bool,
        cancel: &CancellationToken,
    ) -> io::Result<Option<cachet_jobserver::Token>> {
        if own_pool {
            return Ok(None);
        }
        tokio::select! {
            token = self.jobserver.acquire() => Ok(Some(token?)),
            _ = cancel.cancelled() => Err(Cancelled::error("while waiting for a jobserver token")),
        }
    }

    /// Runs a cheap probe (such as `--version`): no token, and no jobserver at all.
    pub async fn run_probe(&self, mut spec: CommandSpec) -> io::Result<ProcessOutput> {
        for var in JOBSERVER_VARS {
            spec.remove_env(var);
        }
        spec.inherit_fds.clear();
        self.runner.run(spec, None, CancellationToken::new()).await
    }
}

/// A compile the client runs itself, admitted: its memory and its token of the server's
/// pool, both given back on drop.
pub struct Admission {
    permit: Option<Permit>,
    _token: Option<cachet_jobserver::Token>,
    _local: Option<OwnedSemaphorePermit>,
    /// Its slice in the trace, finished on drop.
    run: Option<trace::Event>,
    launcher: Launcher,
}

impl Drop for Admission {
    fn drop(&mut self) {
        if let Some(mut run) = self.run.take() {
            if let trace::Event::Run { end_us, .. } = &mut run {
                *end_us = self.launcher.count_running(-1);
            }
            self.launcher.stats.trace.record(run);
        }
    }
}

impl Admission {
    /// The `cgroup.procs` file the compiler joins before exec, if it has a group.
    pub fn cgroup_procs(&self) -> Option<std::ffi::CString> {
        self.permit.as_ref().and_then(Permit::cgroup_procs)
    }

    /// Learns the run's peak (`max_rss` from the client's `wait4`, bytes) and says whether
    /// the OOM killer struck it.
    pub fn finish(&self, max_rss: Option<u64>) -> Measured {
        match &self.permit {
            Some(permit) => permit.finish(max_rss),
            None => Measured {
                peak: max_rss,
                oom_killed: false,
            },
        }
    }
}

/// A compile's output on its way to the client: what reached it (so that a retry does not
/// print it twice) and what is held back (printed after an OOM kill).
#[derive(Default)]
struct Forwarded {
    /// What reached the client, per stream (stdout, stderr).
    sent: [Vec<u8>; 2],
    /// In a retry: how much of `sent` the retry has repeated so far, per stream; None
    /// once it printed something new (from then on everything passes).
    repeated: [Option<usize>; 2],
    /// Set once an OOM kill was seen: everything after is held.
    holding: bool,
    held: Vec<OutputChunk>,
}

impl Forwarded {
    /// Starts a retry: nothing is held any more, and its repetition of what the client
    /// already has is swallowed. What the failed attempt held is dropped.
    fn retry(&mut self) {
        self.holding = false;
        self.held.clear();
        self.repeated = [Some(0), Some(0)];
    }

    /// Sends what was held (the attempt is the last one).
    fn flush(&mut self, stream: &Option<UnboundedSender<OutputChunk>>) {
        self.holding = false;
        for chunk in std::mem::take(&mut self.held) {
            self.pass(chunk, stream);
        }
    }

    fn pass(&mut self, chunk: OutputChunk, stream: &Option<UnboundedSender<OutputChunk>>) {
        let (index, bytes) = match &chunk {
            OutputChunk::Started(_) | OutputChunk::BuildTokens(_) => {
                if let Some(stream) = stream {
                    let _ = stream.send(chunk);
                }
                return;
            }
            OutputChunk::Stdout(b) => (0, b),
            OutputChunk::Stderr(b) => (1, b),
        };
        if self.holding {
            self.held.push(chunk);
            return;
        }
        let mut new = &bytes[..];
        if let Some(done) = self.repeated[index] {
            let before = &self.sent[index][done..];
            let same = before.iter().zip(new).take_while(|(a, b)| a == b).count();
            if same == new.len() && same < before.len() {
                self.repeated[index] = Some(done + same);
                return;
            }
            // It goes past what was sent, or differs: the rest is new.
            self.repeated[index] = None;
            new = &new[same..];
        }
        if new.is_empty() {
            return;
        }
        self.sent[index].extend_from_slice(new);
        if let Some(stream) = stream {
            let _ = stream.send(match index {
                0 => OutputChunk::Stdout(new.to_vec()),
                _ => OutputChunk::Stderr(new.to_vec()),
            });
        }
    }
}

/// Replaces whatever jobserver the client's environment named with `env` and `fds`.
fn give_jobserver(spec: &mut CommandSpec, env: Vec<(String, std::ffi::OsString)>, fds: [i32; 2]) {
    for var in JOBSERVER_VARS {
        spec.remove_env(var);
    }
    for (name, value) in env {
        spec.set_env(name, value);
    }
    spec.inherit_fds = fds.to_vec();
}

#[cfg(test)]
mod tests;
