//! The background server: one per runtime directory, on tokio.
//!
//! It owns the cache and the jobserver, serves clients on a Unix socket, refuses other
//! users, and exits after an idle timeout, never while a compile runs and only after its
//! pending cache writes are done.

pub(crate) mod compile;
mod connection;
mod explain;
mod listener;

use std::path::Path;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use cachet_jobserver::Jobserver;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;

use crate::cache::fault::{Fault, FaultyStorage};
use crate::cache::level::LevelOptions;
use crate::cache::{Cache, DiskCache, DiskStorage, Storage};
use crate::compiler::explain::{Explainer, Masker, local_key, random_key, team_key};
use crate::compiler::remote::Remote;
use crate::compiler::{CompileService, observe};
use crate::config::Config;
use crate::daemon::close_inherited_fds;
use crate::memory::{self, Memory};
use crate::paths::{FileLock, RuntimeDir};
use crate::process::cpu::CpuTimes;
use crate::process::{Launcher, TokioRunner, fd_limit};
use crate::stats::{CacheSnapshot, JobserverSnapshot, Stats, StatsSnapshot, millis};

/// How long shutdown waits for pending cache writes before it drops them.
pub(crate) const DRAIN_LIMIT: Duration = Duration::from_secs(30);

/// Hidden switch for fault tests on machines that refuse tmpfs and bind mounts.
const FAULT_VAR: &str = "CACHET_TEST_STORAGE_FAULT";

/// Set (not empty) in the server's environment, compiles get no cgroup and peaks are
/// measured by `ru_maxrss` (for tests of that fallback).
const NO_CGROUPS_VAR: &str = "CACHET_TEST_NO_CGROUPS";

/// How long a stopping server waits for connections that run no compile (a client that
/// neither sends nor goes away).
const IDLE_CONNECTION_LIMIT: Duration = Duration::from_secs(10);

/// The server's own `oom_score_adj`: the OOM killer takes compilers (500) first.
const SERVER_OOM_SCORE_ADJ: i32 = -500;

/// How long the server pauses accepting after accept(2) failed (out of fds or memory):
/// retrying at once would spin, and the clients wait in the backlog meanwhile.
const ACCEPT_PAUSE: Duration = Duration::from_millis(100);

/// Everything the server shares between its connections.
pub(crate) struct Server {
    config: Config,
    runtime: RuntimeDir,
    disk: Arc<DiskCache>,
    cache: Arc<Cache>,
    stats: Arc<Stats>,
    jobserver: Jobserver,
    compiles: CompileService,
    /// Runs each job's compiler processes, bound to its build's jobserver.
    launcher: Launcher,
    /// "on", or "off: <why>" (see docs/observation.md).
    observation: String,
    started: Instant,
    /// CPU times at the start or the last `--zero-stats`: `cachet -s` shows what was used since.
    cpu_zero: Mutex<CpuTimes>,
    running: AtomicU64,
    /// Open connections; a compile request may still be on its way in any of them.
    connections: AtomicU64,
    /// How many connections are served at once (see `listener`).
    connection_limit: usize,
    /// The open-file limit after raising it.
    fd_limit: u64,
    last_activity: Mutex<Instant>,
    shutdown: CancellationToken,
    /// Set once shutdown has drained: how many writes were dropped.
    stopped: tokio::sync::watch::Sender<Option<u64>>,
}

/// Counts a connection as open for as long as it lives, or until released, and holds
/// its place among the connections served at once until it is dropped.
pub(crate) struct ConnectionGuard {
    server: Option<Arc<Server>>,
    _place: OwnedSemaphorePermit,
}

impl ConnectionGuard {
    fn new(server: &Arc<Server>, place: OwnedSemaphorePermit) -> ConnectionGuard {
        server.connections.fetch_add(1, Ordering::SeqCst);
        server.touch();
        ConnectionGuard {
            server: Some(server.clone()),
            _place: place,
        }
    }

    /// For the connection that asked us to stop: shutdown must not wait for it.
    pub(crate) fn release(&mut self) {
        if let Some(server) = self.server.take() {
            server.connections.fetch_sub(1, Ordering::SeqCst);
            server.touch();
        }
    }
}

impl Drop for ConnectionGuard {
    fn drop(&mut self) {
        self.release();
    }
}

/// Marks a compile as running for as long as it lives.
pub(crate) struct RunningGuard<'a>(&'a Server);

impl Drop for RunningGuard<'_> {
    fn drop(&mut self) {
        self.0.running.fetch_sub(1, Ordering::SeqCst);
        self.0.touch();
    }
}

impl Server {
    fn touch(&self) {
        *self.last_activity.lock().unwrap() = Instant::now();
    }

    /// Counts a compile as running until the guard is dropped (the idle timer waits).
    pub(crate) fn compile_started(&self) -> RunningGuard<'_> {
        self.running.fetch_add(1, Ordering::SeqCst);
        self.touch();
        RunningGuard(self)
    }

    /// The counters, the cache's usage and the jobserver's state, for `--show-stats`.
    pub(crate) async fn snapshot(&self) -> StatsSnapshot {
        let disk = self.disk.clone();
        let usage = tokio::task::spawn_blocking(move || disk.usage()).await;
        let (usage, usage_error) = match usage {
            Ok(Ok(usage)) => (usage, None),
            Ok(Err(e)) => (Default::default(), Some(e.to_string())),
            Err(e) => (Default::default(), Some(e.to_string())),
        };
        let j = self.jobserver.stats();
        let hashes = self.compiles.file_hash_stats();
        let cpu = CpuTimes::now().since(*self.cpu_zero.lock().unwrap());
        StatsSnapshot {
            version: env!("CARGO_PKG_VERSION").into(),
            server_pid: std::process::id(),
            uptime_secs: self.started.elapsed().as_secs(),
            server_cpu_ms: cpu.own_ms,
            compilers_cpu_ms: cpu.children_ms,
            runtime_dir: self.runtime.path().display().to_string(),
            compiles_running: self.running.load(Ordering::SeqCst),
            observation: self.observation.clone(),
            pending_writes: self.cache.pending().count(),
            pending_write_bytes: self.cache.pending().bytes(),
            connections: self.connections.load(Ordering::SeqCst),
            connection_limit: self.connection_limit as u64,
            fd_limit: self.fd_limit,
            counters: {
                let mut counters = self.stats.counters();
                for (counters, level) in counters.levels.iter_mut().zip(self.cache.levels()) {
                    counters.breaker = level.breaker().to_string();
                }
                counters
            },
            cache: CacheSnapshot {
                file_hash_hits: hashes.hits,
                file_hash_lookups: hashes.lookups,
                file_hashes_remembered: hashes.entries,
                dir: self.config.cache_dir.display().to_string(),
                size_bytes: usage.bytes,
                entries: usage.entries,
                max_size_bytes: self.config.cache_size,
                usage_error,
            },
            memory: self
                .launcher
                .memory()
                .map(|m| m.snapshot())
                .unwrap_or_default(),
            jobserver: JobserverSnapshot {
                tokens: j.capacity as u64,
                tokens_held: j.held as u64,
                peak_tokens_held: j.peak_held as u64,
                pool_in_use: j.pool_in_use as u64,
                token_waits: j.waits,
                token_wait_time_ms: millis(j.wait_time),
                fifo: self.jobserver.fifo_path().map(|p| p.display().to_string()),
            },
        }
    }

    /// Resets the counters and the jobserver's peak and waits (`--zero-stats`).
    pub(crate) fn zero_stats(&self) {
        self.stats.zero();
        *self.cpu_zero.lock().unwrap() = CpuTimes::now();
        self.jobserver.zero_stats();
        if let Some(memory) = self.launcher.memory() {
            memory.zero_stats();
        }
    }

    /// Begins shutdown and waits until it has drained; returns the writes dropped.
    pub(crate) async fn stop(&self) -> u64 {
        let mut stopped = self.stopped.subscribe();
        self.shutdown.cancel();
        loop {
            if let Some(dropped) = *stopped.borrow_and_update() {
                return dropped;
            }
            if stopped.changed().await.is_err() {
                return 0;
            }
        }
    }

    fn busy(&self) -> bool {
        self.running.load(Ordering::SeqCst) > 0 || self.connections.load(Ordering::SeqCst) > 0
    }

    fn idle_for(&self) -> Option<Duration> {
        if self.busy() {
            return None;
        }
        Some(self.last_activity.lock().unwrap().elapsed())
    }
}

/// Makes the allocator give large buffers (compile outputs, entries: 128 KiB and up) back
/// to the kernel when they are freed. glibc's default threshold grows with the largest
/// buffer freed, after which outputs come from heap that is kept, and much of it stays
/// resident after the build: `malloc_trim` returns the free memory of the main arena but
/// not the top of the per-thread ones. Measured in a cold build of 80 crates: with glibc's
/// default, 55 000 page faults in the server instead of 130 000 (about a tenth of its CPU)
/// but 60-100 MB still resident once idle; with this threshold, 16 MB. (Compilers start
/// without a copy of the server, see `process::spawn`, so what it holds costs them nothing.)
/// While a build runs, `cache::buffers` keeps the large buffers for reuse instead.
fn return_freed_memory() {
    #[cfg(target_env = "gnu")]
    // SAFETY: mallopt only sets an allocator parameter; called before any thread starts.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 128 << 10);
    }
}

/// Runs the server in the foreground until it stops; returns the exit code.
pub(crate) fn run(config: Config) -> i32 {
    close_inherited_fds();
    return_freed_memory();
    let runtime = match RuntimeDir::prepare(&config.runtime_dir) {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!(
                "cachet server: runtime directory {}: {e}",
                config.runtime_dir.display()
            );
            return 1;
        }
    };
    let _lock = match FileLock::try_acquire(&runtime.server_lock()) {
        Ok(Some(lock)) => lock,
        Ok(None) => {
            tracing::info!(
                "another server already runs in {}",
                runtime.path().display()
            );
            return 0;
        }
        Err(e) => {
            eprintln!(
                "cachet server: cannot lock {}: {e}",
                runtime.server_lock().display()
            );
            return 1;
        }
    };
    let tokio = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("cachet server: cannot start the async runtime: {e}");
            return 1;
        }
    };
    match tokio.block_on(serve(config, runtime)) {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("cachet server: {e}");
            1
        }
    }
}

/// What explains misses: kept in `<cache_dir>/explain`, hiding values with the team's
/// `explain_key` or this machine's own key.
fn explainer(config: &Config) -> Explainer {
    let dir = config.cache_dir.join("explain");
    let team = config.explain_key.is_some();
    let key = match &config.explain_key {
        Some(text) => team_key(text),
        None => local_key(&dir)
            .or_else(|e| {
                tracing::warn!(
                    "no key in {}: {e}; explanations use one for this run",
                    dir.display()
                );
                random_key()
            })
            .unwrap_or_else(|_| blake3::hash(format!("{:?}", Instant::now()).as_bytes()).into()),
    };
    let explainer = Explainer::new(Some(dir), Masker::new(key));
    if team {
        explainer.with_team_key()
    } else {
        explainer
    }
}

/// The cache levels in read order: the local disk unless turned off (its writes failing
/// as `fault` says, for tests), then each remote. A remote that cannot be set up is left
/// out with a warning: it never stops the server.
fn levels(
    config: &Config,
    disk: &Arc<DiskCache>,
    fault: Option<Fault>,
) -> Vec<(Arc<dyn Storage>, LevelOptions)> {
    let mut levels: Vec<(Arc<dyn Storage>, LevelOptions)> = Vec::new();
    if config.local {
        let local = DiskStorage::new(disk.clone());
        let local: Arc<dyn Storage> = match fault {
            Some(fault) => Arc::new(FaultyStorage::new(local, fault)),
            None => Arc::new(local),
        };
        levels.push((local, LevelOptions::local()));
    }
    for remote in &config.remotes {
        match remote.build_store() {
            Ok(storage) => levels.push((storage, remote.level_options())),
            Err(e) => tracing::warn!(
                "remote cache {} ({}) left out: {e}",
                remote.name,
                remote.kind.name()
            ),
        }
    }
    levels
}

/// Which file a path names (device, inode): the socket this server bound, told from one
/// another server bound at the same path later.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct SocketFile(u64, u64);

impl SocketFile {
    /// The file at `path` now; None when there is none.
    fn of(path: &Path) -> Option<SocketFile> {
        use std::os::unix::fs::MetadataExt;
        std::fs::symlink_metadata(path)
            .ok()
            .map(|m| SocketFile(m.dev(), m.ino()))
    }
}

async fn serve(config: Config, runtime: RuntimeDir) -> std::io::Result<()> {
    let address = runtime.socket()?;
    // We hold the server lock, so a socket file left here belongs to a dead server.
    let _ = std::fs::remove_file(address.real_path());
    let listener = listener::bind(address.connect_path())?;
    let bound = SocketFile::of(address.real_path());
    let fd_limit = fd_limit::raise();

    let fault = std::env::var(FAULT_VAR)
        .ok()
        .and_then(|v| Fault::from_name(&v));
    let disk = Arc::new(DiskCache::new(config.cache_dir.clone(), config.cache_size));
    let stats = Arc::new(Stats::default());
    let cache = Arc::new(Cache::with_levels(
        levels(&config, &disk, fault),
        stats.clone(),
    ));
    // A fifo in the private runtime dir: `cachet jobserver-env` lets make 4.4 or ninja join it.
    // With remote execution the pool counts remote capacity too, so that make and ninja
    // joining it run wider; what runs here stays within the machine's own share.
    let remote_capacity = config
        .execution
        .as_ref()
        .map_or(0, |e| e.settings.max_in_flight);
    let jobserver =
        Jobserver::new_fifo(config.jobs() + remote_capacity, &runtime.jobserver_fifo())?;
    let memory = Memory::new(
        memory::Settings {
            limit: config.memory_limit,
            default: config.memory_default,
            history: Some(config.cache_dir.join(memory::HISTORY_FILE)),
            cgroups: std::env::var_os(NO_CGROUPS_VAR).is_none_or(|v| v.is_empty()),
            live: true,
        },
        stats.clone(),
    );
    // The first compiles of a build find their memory cgroups made (one per compile the
    // server's jobs let run at once).
    memory.prefill_groups(config.jobs());
    // Compilers are the OOM killer's preferred victims, the server its last choice (a
    // lower score needs CAP_SYS_RESOURCE; without it the server keeps its own).
    let _ = std::fs::write("/proc/self/oom_score_adj", SERVER_OOM_SCORE_ADJ.to_string());
    let mut launcher = Launcher::new(Arc::new(TokioRunner), jobserver.clone())
        .with_stats(stats.clone())
        .with_memory(memory.clone());
    if remote_capacity > 0 {
        launcher = launcher.with_local_limit(config.jobs());
    }
    let (interposer, observation) = if config.observe {
        match observe::Interposer::install(runtime.path()) {
            Ok(interposer) => (Some(interposer), "on".to_owned()),
            Err(why) => {
                tracing::warn!("compiles are not observed: {why}");
                (None, format!("off: {why}"))
            }
        }
    } else {
        (None, "off: observe = false".to_owned())
    };
    let remote = match &config.execution {
        Some(execution) => {
            stats.update(|c| c.execution = Some(c.execution.take().unwrap_or_default()));
            Some(Remote::new(execution)?)
        }
        None => None,
    };
    let connection_limit = listener::connection_limit(fd_limit, jobserver.capacity() as u64);
    let server = Arc::new(Server {
        compiles: CompileService::new(launcher.clone(), cache.clone(), stats.clone())
            .with_interposer(interposer)
            .with_remote(remote)
            .with_probe_dir(runtime.path().to_owned())
            .with_saved_file_hashes(&runtime.file_hashes())
            .with_explainer(Arc::new(explainer(&config))),
        launcher,
        observation,
        runtime,
        disk,
        cache,
        stats,
        jobserver,
        started: Instant::now(),
        cpu_zero: Mutex::new(CpuTimes::now()),
        running: AtomicU64::new(0),
        connections: AtomicU64::new(0),
        connection_limit,
        fd_limit,
        last_activity: Mutex::new(Instant::now()),
        shutdown: CancellationToken::new(),
        stopped: tokio::sync::watch::channel(None).0,
        config,
    });
    tracing::info!(
        "cachet server {} listening on {} with {} jobserver tokens, {} connections at once (fd limit {})",
        std::process::id(),
        address.real_path().display(),
        server.jobserver.capacity(),
        connection_limit,
        fd_limit,
    );

    let connections = tokio_util::task::TaskTracker::new();
    // A place is taken before accept: past the limit, clients wait in the backlog.
    let places = Arc::new(Semaphore::new(connection_limit));
    let mut place: Option<OwnedSemaphorePermit> = None;
    let mut tick = tokio::time::interval(Duration::from_millis(500));
    loop {
        tokio::select! {
            permit = places.clone().acquire_owned(), if place.is_none() => {
                place = permit.ok();
            }
            accepted = listener.accept(), if place.is_some() => match accepted {
                Ok((stream, _)) => {
                    let guard = ConnectionGuard::new(&server, place.take().expect("a place"));
                    let server = server.clone();
                    connections.spawn(async move { connection::handle(server, stream, guard).await });
                }
                Err(e) => {
                    // EMFILE, ENFILE, ENOMEM: the listener stays readable, so retrying
                    // at once would spin. The client waits in the backlog meanwhile.
                    tracing::warn!("accept failed: {e}; pausing {ACCEPT_PAUSE:?}");
                    server.stats.update(|c| c.accept_errors += 1);
                    tokio::time::sleep(ACCEPT_PAUSE).await;
                }
            },
            _ = server.shutdown.cancelled() => break,
            _ = tick.tick() => {
                crate::cache::buffers::trim(Instant::now());
                // Clients find us by the socket's path only: with it gone (removed by hand,
                // or by a process that took it for a stale one), every compile would fall
                // back to a direct one while we hold the lock that keeps a new server from
                // starting. Stop, so the next client starts one.
                if bound.is_some() && SocketFile::of(address.real_path()) != bound {
                    tracing::warn!(
                        "the socket {} was removed or replaced; stopping so that the next client starts a server",
                        address.real_path().display()
                    );
                    break;
                }
                let timeout = server.config.idle_timeout;
                if !timeout.is_zero() && server.idle_for().is_some_and(|idle| idle >= timeout) {
                    tracing::info!("idle for {timeout:?}; exiting");
                    break;
                }
            }
        }
    }

    // Stop taking work: no new client can reach us, and running compiles finish.
    drop(listener);
    // Only our own socket: a path that now names another server's is left to it.
    if bound.is_some() && SocketFile::of(address.real_path()) == bound {
        let _ = std::fs::remove_file(address.real_path());
    }
    // Never exit under a running compile, nor under a request still coming in; but a
    // connection with no compile running that stays open past IDLE_CONNECTION_LIMIT is
    // not waited for: the socket is gone already, and a server that waits forever holds
    // the lock that keeps the next one from starting.
    let mut quiet_since: Option<Instant> = None;
    while server.busy() {
        if server.running.load(Ordering::SeqCst) > 0 {
            quiet_since = None;
        } else if quiet_since.get_or_insert_with(Instant::now).elapsed() > IDLE_CONNECTION_LIMIT {
            tracing::warn!(
                "stopping with {} connections still open and no compile running",
                server.connections.load(Ordering::SeqCst)
            );
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let dropped = server.cache.pending().drain(DRAIN_LIMIT).await;
    if dropped > 0 {
        tracing::warn!("dropped {dropped} cache writes that did not finish in {DRAIN_LIMIT:?}");
    }
    // For the next server: it need not hash the toolchain and sources again.
    let hashes = server.runtime.file_hashes();
    if let Err(e) = server.compiles.save_file_hashes(&hashes) {
        tracing::warn!(
            "could not save the file hashes in {}: {e}",
            hashes.display()
        );
    }
    memory.shutdown();
    server.stopped.send_replace(Some(dropped));
    connections.close();
    let _ = tokio::time::timeout(Duration::from_secs(2), connections.wait()).await;
    Ok(())
}
