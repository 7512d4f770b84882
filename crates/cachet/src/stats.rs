//! Server counters, and the snapshot that `--show-stats` prints as text or JSON.
//!
//! The names here are the names in the output and in docs/stats.md.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Mutex;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Everything the server counts since it started or was last zeroed.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counters {
    /// Compile requests received (every outcome).
    pub compile_requests: u64,
    /// Compiles served from the cache, or from an identical compile that ran at the same time.
    pub cache_hits: u64,
    /// Hits found in direct mode: no preprocessor ran.
    pub direct_hits: u64,
    /// Compiles that ran and succeeded.
    pub cache_misses: u64,
    /// Misses forced by CACHET_RECACHE=1 (also counted as misses).
    pub forced_recaches: u64,
    /// Passed back to the client to run itself, by reason.
    pub uncacheable: BTreeMap<String, u64>,
    /// Misses whose inputs the interposer observed whole (see docs/observation.md).
    pub observed_compiles: u64,
    /// Misses some program of which ran unobserved (or observation is off): conservative
    /// rules applied.
    pub unobserved_compiles: u64,
    /// Successful compiles whose result was not stored (a file changed while it was
    /// read, `.incbin` seen without observation, a `.gch` beside a header), by reason.
    pub not_stored: BTreeMap<String, u64>,
    /// Compiles that exited non-zero (never cached).
    pub compile_failures: u64,
    /// Compiles abandoned because the client went away; their compiler was killed.
    pub cancelled: u64,
    /// Cache reads that failed (an unreadable store, not a miss).
    pub cache_read_errors: u64,
    /// Cache writes that failed, and outputs that could not be read for storing.
    pub cache_write_errors: u64,
    /// Entries that failed their checksum, did not decode or have another format version:
    /// counted misses, never restored (the local disk also removes its own).
    pub corrupt_entries: u64,
    /// Hits on entries whose writes were still going on, served from the server's memory.
    pub hits_before_written: u64,
    /// Compiles that joined an identical one already running instead of running again.
    pub dedup_joins: u64,
    /// Connections from another user, refused.
    pub connections_refused: u64,
    /// Compiles that ran under their build's own jobserver (pipe or fifo).
    pub build_jobservers: u64,
    /// Jobserver settings that were stale or unusable, and ignored.
    pub stale_jobservers: u64,
    /// Tokens granted into compilers' private proxy pipes.
    pub proxy_grants: u64,
    /// The most extra tokens one compiler held at once (each from its build's pool and ours).
    pub peak_extra_tokens: u64,
    /// Tokens taken back from proxies while compilers ran (returned or not wanted).
    pub proxy_reclaims: u64,
    /// Tokens compilers still held when they exited (killed, say), recovered for every pool.
    pub tokens_recovered: u64,
    /// Token-milliseconds that granted tokens sat unread in proxy pipes.
    pub idle_token_ms: u64,
    /// Times a proxy looked at its compiler's threads in `/proc` for one waiting on its
    /// pipe (see docs/jobserver.md, "Demand").
    #[serde(default)]
    pub proxy_looks: u64,
    /// Times a token written back into a pool that had none woke a proxy waiting for one at
    /// once (see docs/jobserver.md, "Demand").
    #[serde(default)]
    pub proxy_refills: u64,
    /// Token-milliseconds of the server's pool used by each build (by its jobserver:
    /// `pipe:[INODE]`, `fifo:PATH`, or "no jobserver"), main processes and extra threads.
    pub token_ms_by_build: BTreeMap<String, u64>,
    /// Malformed, truncated or oversized frames, and handshake failures.
    pub protocol_errors: u64,
    /// Compiles whose new entry waited for pending cache writes to drain below their
    /// limit before the client heard back (see `cache::pending`).
    #[serde(default)]
    pub write_waits: u64,
    /// Their time waiting, in ms.
    #[serde(default)]
    pub write_wait_ms: u64,
    /// Connections the server could not accept (out of fds or memory); it paused and
    /// retried, and the client waited in the listen backlog.
    #[serde(default)]
    pub accept_errors: u64,
    /// Compiles (and client-run compiles) that waited for memory before they started.
    #[serde(default)]
    pub memory_waits: u64,
    /// Their time waiting for memory, in ms.
    #[serde(default)]
    pub memory_wait_ms: u64,
    /// Times the live signals (MemAvailable, the cgroup, pressure) held a start whose
    /// prediction fitted the budget.
    #[serde(default)]
    pub pressure_holds: u64,
    /// Compiles in which the OOM killer took a process (by the compile's cgroup; without
    /// one, any OOM kill on the host while a failed compile ran).
    #[serde(default)]
    pub oom_kills: u64,
    /// Compiles run once more, alone, after an OOM kill, that then succeeded.
    #[serde(default)]
    pub oom_retries_succeeded: u64,
    /// Those that failed again: the second failure reached the build.
    #[serde(default)]
    pub oom_retries_failed: u64,
    /// Compiles the client ran itself (links, uncacheable calls) under an admission.
    #[serde(default)]
    pub local_runs_admitted: u64,
    /// Time of all hits, from request to answer, in ms.
    pub hit_time_ms: u64,
    /// Time of all misses, from request to answer, in ms.
    pub miss_time_ms: u64,
    /// The same outcomes by language ("C", "C++", "Rust", …).
    pub languages: BTreeMap<String, LanguageCounters>,
    /// Each cache level in read order: the local disk (when on), then the remotes.
    pub levels: Vec<LevelCounters>,
    /// Remote execution (`[execution]`), when configured.
    #[serde(default)]
    pub execution: Option<ExecutionCounters>,
}

/// What remote execution did (docs/remote-execution.md).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExecutionCounters {
    /// Misses whose compile ran on a worker and succeeded.
    pub remote_compiles: u64,
    /// Of them, results the service had already (the same action ran before).
    pub remote_cached: u64,
    /// Misses compiled locally because their slot had not compiled here before (what a
    /// compile reads is known from its slot's last local compile).
    pub first_compiles_local: u64,
    /// Misses that tried remotely and then compiled locally, by reason.
    pub fallbacks: BTreeMap<String, u64>,
    /// Toolchains uploaded (a driver, its programs and libraries: each once).
    pub toolchain_uploads: u64,
    /// Summed over remote compiles (ms): uploading inputs, waiting in the service's queue,
    /// the worker running the command, and the whole from request to outputs written.
    pub upload_ms: u64,
    pub queue_ms: u64,
    pub run_ms: u64,
    pub total_ms: u64,
    /// Bytes sent (inputs and toolchains the service lacked) and fetched (outputs, logs).
    pub bytes_uploaded: u64,
    pub bytes_downloaded: u64,
}

impl ExecutionCounters {
    /// Every fallback, whatever its reason.
    pub fn fallbacks_total(&self) -> u64 {
        self.fallbacks.values().sum()
    }
}

/// What one cache level did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LevelCounters {
    /// The level's name (`local`, or the remote's `name`).
    pub name: String,
    /// "disk", "s3", "redis", …
    pub kind: String,
    /// Whether the level is only read, never written.
    pub read_only: bool,
    /// Verified entries served from this level.
    pub hits: u64,
    /// Reads that found nothing, or found an entry that failed its checks.
    pub misses: u64,
    /// Calls that reached the store.
    pub reads: u64,
    /// Writes that reached the store.
    pub writes: u64,
    /// Of the writes, copies of an entry found on a slower level.
    pub backfills: u64,
    /// Failed calls, timeouts not included.
    pub errors: u64,
    /// Calls that ran over the level's timeout.
    pub timeouts: u64,
    /// Entries that failed the checksum, or have another format version: never restored.
    pub corrupt: u64,
    /// Entries too large for this store (memcached's item limit), not written.
    pub skipped_too_large: u64,
    /// Calls not made because the circuit breaker was open.
    pub skipped_by_breaker: u64,
    /// Times the circuit breaker opened.
    pub breaker_opens: u64,
    /// Bytes read from the store.
    pub bytes_read: u64,
    /// Bytes written to the store.
    pub bytes_written: u64,
    /// Total time of reads and of successful writes, for the means.
    pub read_time_us: u64,
    /// Total time of successful writes, in µs (see `read_time_us`).
    pub write_time_us: u64,
    /// The breaker now: "closed", "open (Ns left)" or "probing"; set in snapshots.
    pub breaker: String,
    /// A content-addressed store's (REAPI's CAS) blobs this server uploaded.
    #[serde(default)]
    pub cas_blobs_uploaded: u64,
    /// Blobs of its writes the CAS already held (another entry's, or another machine's):
    /// not sent again.
    #[serde(default)]
    pub cas_blobs_present: u64,
    /// Bytes of the blobs uploaded.
    #[serde(default)]
    pub cas_bytes_uploaded: u64,
    /// Why the store takes no writes any more, once it found out (a REAPI server that
    /// refuses ActionCache updates); empty while it takes them.
    #[serde(default)]
    pub refuses_writes: String,
}

impl LevelCounters {
    /// Zeroed counters for a level.
    pub fn named(name: &str, kind: &str, read_only: bool) -> LevelCounters {
        LevelCounters {
            name: name.into(),
            kind: kind.into(),
            read_only,
            ..LevelCounters::default()
        }
    }
}

/// What one language's compiles came to.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LanguageCounters {
    /// Hits.
    pub hits: u64,
    /// Misses.
    pub misses: u64,
    /// Compiles passed back to the client.
    pub uncacheable: u64,
    /// Compiles that failed.
    pub failures: u64,
}

impl Counters {
    /// All compiles passed back to the client, whatever the reason.
    pub fn uncacheable_total(&self) -> u64 {
        self.uncacheable.values().sum()
    }
}

/// The server's counters, shared by its tasks, and its timeline (`cachet trace`).
#[derive(Debug, Default)]
pub struct Stats {
    counters: Mutex<Counters>,
    /// What the server did, as a timeline; cleared with the counters.
    pub trace: crate::trace::Trace,
}

impl Stats {
    /// Changes the counters under their lock.
    pub fn update(&self, f: impl FnOnce(&mut Counters)) {
        f(&mut self.counters.lock().unwrap_or_else(|e| e.into_inner()));
    }

    /// A copy of the counters now.
    pub fn counters(&self) -> Counters {
        self.counters
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Zeroes every counter (the levels keep their names) and clears the timeline.
    pub fn zero(&self) {
        self.trace.clear();
        let mut counters = self.counters.lock().unwrap_or_else(|e| e.into_inner());
        let levels = counters
            .levels
            .iter()
            .map(|l| LevelCounters::named(&l.name, &l.kind, l.read_only))
            .collect();
        *counters = Counters {
            levels,
            ..Counters::default()
        };
    }
}

/// A duration in whole milliseconds (saturating).
pub fn millis(d: Duration) -> u64 {
    d.as_millis().min(u64::MAX as u128) as u64
}

/// The jobserver part of a snapshot.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobserverSnapshot {
    /// N: tokens in the server's pool.
    pub tokens: u64,
    /// Tokens the server holds right now, one per running compiler process.
    pub tokens_held: u64,
    /// The most tokens the server held at once.
    pub peak_tokens_held: u64,
    /// Tokens out of the pipe right now, including compilers' extra threads.
    pub pool_in_use: u64,
    /// Compiler processes that waited for a token of the server's pool.
    pub token_waits: u64,
    /// Their total wait, in ms.
    pub token_wait_time_ms: u64,
    /// The pool's fifo, for tools that join it by path (`cachet jobserver-env`).
    pub fifo: Option<String>,
}

/// The local cache part of a snapshot.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CacheSnapshot {
    /// Content hashes of input files served from the server's memory, and all lookups.
    pub file_hash_hits: u64,
    /// All lookups of content hashes (see `file_hash_hits`).
    pub file_hash_lookups: u64,
    /// Content hashes the server remembers now.
    pub file_hashes_remembered: u64,
    /// The local cache's directory.
    pub dir: String,
    /// Its size, in bytes.
    pub size_bytes: u64,
    /// Its entries.
    pub entries: u64,
    /// Its size limit, in bytes.
    pub max_size_bytes: u64,
    /// Set when the cache's size could not be read.
    pub usage_error: Option<String>,
}

/// What `--show-stats` shows: the server, its counters, its cache and its jobserver.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatsSnapshot {
    /// The server's version.
    pub version: String,
    /// The server's process id.
    pub server_pid: u32,
    /// Seconds since the server started.
    pub uptime_secs: u64,
    /// CPU time (user + system, ms) of the server itself since it started or the last
    /// `--zero-stats`: what it costs the machine beside its compilers.
    #[serde(default)]
    pub server_cpu_ms: u64,
    /// CPU time (user + system, ms) of the processes the server ran and reaped in that
    /// time (compilers, probes), with their own children; not what clients ran themselves.
    #[serde(default)]
    pub compilers_cpu_ms: u64,
    /// The server's runtime directory.
    pub runtime_dir: String,
    /// Compiles running now.
    pub compiles_running: u64,
    /// Cache writes not done yet.
    pub pending_writes: u64,
    /// Bytes of the entries those writes hold in memory.
    #[serde(default)]
    pub pending_write_bytes: u64,
    /// Client connections open now.
    #[serde(default)]
    pub connections: u64,
    /// How many connections the server serves at once; more wait in the listen backlog.
    #[serde(default)]
    pub connection_limit: u64,
    /// The server's open-file limit (`RLIMIT_NOFILE`, soft), after raising it.
    #[serde(default)]
    pub fd_limit: u64,
    /// Whether compiles are observed: "on", or "off: <why>".
    #[serde(default)]
    pub observation: String,
    /// The counters since the start or the last `--zero-stats`.
    pub counters: Counters,
    /// The local cache.
    pub cache: CacheSnapshot,
    /// The jobserver.
    pub jobserver: JobserverSnapshot,
    /// Memory admission.
    #[serde(default)]
    pub memory: MemorySnapshot,
}

/// The memory part of a snapshot; its counters are in [`Counters`].
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemorySnapshot {
    /// The budget (bytes; `u64::MAX` when admission is off).
    pub budget_bytes: u64,
    /// Where the budget came from.
    pub budget_source: String,
    /// How peaks are measured.
    pub measure: String,
    /// Predicted peaks of the compiles running now (bytes).
    pub predicted_in_use_bytes: u64,
    /// The most predicted at once (bytes).
    pub peak_predicted_in_use_bytes: u64,
    /// What the running compiles' groups use now (bytes; 0 without cgroups).
    pub measured_in_use_bytes: u64,
    /// The most the running compiles' groups used at once, sampled at every start, end
    /// and `--show-stats`, and every 200 ms while compiles wait for memory.
    pub peak_measured_in_use_bytes: u64,
    /// Compiles waiting for memory now.
    pub waiting: u64,
    /// Slots in the history.
    pub slots_known: u64,
    /// The prediction for an unknown slot of each kind: (kind, bytes, basis).
    pub kind_defaults: Vec<(String, u64, String)>,
    /// The slots with the largest peaks: (kind, label, bytes).
    pub largest: Vec<(String, String, u64)>,
}

fn percent(part: u64, whole: u64) -> String {
    if whole == 0 {
        "-".into()
    } else {
        format!("{:.1} %", part as f64 * 100.0 / whole as f64)
    }
}

fn average_ms(total: u64, count: u64) -> String {
    if count == 0 {
        "-".into()
    } else {
        format!("{:.1} ms", total as f64 / count as f64)
    }
}

/// Bytes for people: `512 B`, `1.5 KiB`, `250.0 MiB`.
pub fn human_bytes(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

/// What the jobserver figures mean, in plain words, under the table.
const JOBSERVER_LEGEND: &str = "
How the jobserver figures read:
  The server's N tokens bound every compile that reaches it, across all builds. Each
  compiler process holds one while it runs (\"Tokens held now\"; restoring a hit holds none). Its extra
  threads (rustc codegen, gcc -flto=jobserver) each get one more through a private pipe,
  and only while the server also holds one of the build's own tokens, so a build's -j is
  never exceeded (\"Extra tokens granted\", \"taken back\"). Tokens a killed compiler
  still held come back to every pool (\"recovered\"). \"Token waits\" count compilers that
  queued for the server's pool; \"Token time, build\" shows how builds shared it.
";

/// What the memory figures mean, in plain words.
const MEMORY_LEGEND: &str = "
How the memory figures read:
  A compile starts when a token is free and the predicted peaks of what runs plus its own
  fit the budget (\"Memory budget\"). A prediction is the slot's last measured peak (the
  same crate or source file with the same flags), else the mean for its kind. While
  MemAvailable, the cgroup's headroom or memory pressure say memory is short, new starts
  wait (\"Pressure holds\"); hits never wait, and when nothing runs the next compile starts
  anyway, so one larger than the budget runs alone. A compile whose process the OOM
  killer took runs once more, alone, and only a second failure reaches the build.
";

impl StatsSnapshot {
    /// "2.480 s, 4.28% of its compilers' 57.941 s": the server's CPU time, and that as a
    /// share of what the compilers it ran used meanwhile.
    fn server_cpu(&self) -> String {
        let seconds = |ms: u64| format!("{:.3} s", ms as f64 / 1000.0);
        match self.compilers_cpu_ms {
            0 => format!("{}, no compiler run yet", seconds(self.server_cpu_ms)),
            compilers => format!(
                "{}, {:.2}% of its compilers' {}",
                seconds(self.server_cpu_ms),
                100.0 * self.server_cpu_ms as f64 / compilers as f64,
                seconds(compilers)
            ),
        }
    }

    /// The human-readable table of `cachet --show-stats`.
    pub fn to_text(&self) -> String {
        let c = &self.counters;
        let j = &self.jobserver;
        let cacheable = c.cache_hits + c.cache_misses;
        let mut rows: Vec<(String, String)> = vec![
            ("Compile requests".into(), c.compile_requests.to_string()),
            ("Cache hits".into(), c.cache_hits.to_string()),
            ("  of them in direct mode".into(), c.direct_hits.to_string()),
            ("Cache misses".into(), c.cache_misses.to_string()),
            ("Hit rate".into(), percent(c.cache_hits, cacheable)),
            ("Forced recaches".into(), c.forced_recaches.to_string()),
            (
                "Uncacheable calls".into(),
                c.uncacheable_total().to_string(),
            ),
            ("Compile failures".into(), c.compile_failures.to_string()),
            ("Misses observed".into(), c.observed_compiles.to_string()),
            (
                "  not observed whole".into(),
                c.unobserved_compiles.to_string(),
            ),
            (
                "Results not stored".into(),
                c.not_stored.values().sum::<u64>().to_string(),
            ),
            (
                "Identical compiles joined".into(),
                c.dedup_joins.to_string(),
            ),
            ("Cancelled compiles".into(), c.cancelled.to_string()),
            ("Cache read errors".into(), c.cache_read_errors.to_string()),
            (
                "Cache write errors".into(),
                c.cache_write_errors.to_string(),
            ),
            (
                "Hits on entries still being written".into(),
                c.hits_before_written.to_string(),
            ),
            (
                "Corrupt entries (never restored)".into(),
                c.corrupt_entries.to_string(),
            ),
            (
                "Connections refused".into(),
                c.connections_refused.to_string(),
            ),
            ("Protocol errors".into(), c.protocol_errors.to_string()),
            (
                "Compiles that waited for cache writes".into(),
                format!("{} ({} ms)", c.write_waits, c.write_wait_ms),
            ),
            (
                "Connections not accepted".into(),
                c.accept_errors.to_string(),
            ),
            (
                "Compiles under their build's jobserver".into(),
                c.build_jobservers.to_string(),
            ),
            (
                "Stale jobserver settings ignored".into(),
                c.stale_jobservers.to_string(),
            ),
            (
                "Extra tokens granted to compilers".into(),
                c.proxy_grants.to_string(),
            ),
            (
                "Extra tokens taken back".into(),
                c.proxy_reclaims.to_string(),
            ),
            (
                "Peak extra tokens of one compiler".into(),
                c.peak_extra_tokens.to_string(),
            ),
            (
                "Looks for compilers waiting on tokens".into(),
                c.proxy_looks.to_string(),
            ),
            (
                "Returned tokens that woke a proxy".into(),
                c.proxy_refills.to_string(),
            ),
            (
                "Tokens recovered from dead compilers".into(),
                c.tokens_recovered.to_string(),
            ),
            (
                "Granted tokens idle".into(),
                format!("{:.3} token-s", c.idle_token_ms as f64 / 1000.0),
            ),
            (
                "Average hit time".into(),
                average_ms(c.hit_time_ms, c.cache_hits),
            ),
            (
                "Average miss time".into(),
                average_ms(c.miss_time_ms, c.cache_misses),
            ),
            ("Compiles running".into(), self.compiles_running.to_string()),
            ("Observation".into(), self.observation.clone()),
            (
                "Pending cache writes".into(),
                format!(
                    "{} ({})",
                    self.pending_writes,
                    human_bytes(self.pending_write_bytes)
                ),
            ),
            (
                "Connections".into(),
                format!(
                    "{} (limit {}, fd limit {})",
                    self.connections, self.connection_limit, self.fd_limit
                ),
            ),
            ("Cache location".into(), self.cache.dir.clone()),
            (
                "Cache size".into(),
                match &self.cache.usage_error {
                    Some(e) => format!("unknown ({e})"),
                    None => human_bytes(self.cache.size_bytes),
                },
            ),
            ("Cache entries".into(), self.cache.entries.to_string()),
            (
                "File hashes from memory".into(),
                format!(
                    "{} of {} ({}), {} remembered",
                    self.cache.file_hash_hits,
                    self.cache.file_hash_lookups,
                    percent(self.cache.file_hash_hits, self.cache.file_hash_lookups),
                    self.cache.file_hashes_remembered
                ),
            ),
            (
                "Max cache size".into(),
                human_bytes(self.cache.max_size_bytes),
            ),
            ("Jobserver tokens (N)".into(), j.tokens.to_string()),
            ("Tokens held now".into(), j.tokens_held.to_string()),
            ("Peak tokens held".into(), j.peak_tokens_held.to_string()),
            ("Pool in use now".into(), j.pool_in_use.to_string()),
            ("Token waits".into(), j.token_waits.to_string()),
            (
                "Token wait time".into(),
                format!("{:.3} s", j.token_wait_time_ms as f64 / 1000.0),
            ),
            (
                "Memory budget".into(),
                match self.memory.budget_bytes {
                    u64::MAX => self.memory.budget_source.clone(),
                    bytes => format!("{} ({})", human_bytes(bytes), self.memory.budget_source),
                },
            ),
            ("Memory measured by".into(), self.memory.measure.clone()),
            (
                "Memory predicted in use now/peak".into(),
                format!(
                    "{} / {}",
                    human_bytes(self.memory.predicted_in_use_bytes),
                    human_bytes(self.memory.peak_predicted_in_use_bytes)
                ),
            ),
            (
                "Memory measured in use now/peak".into(),
                format!(
                    "{} / {}",
                    human_bytes(self.memory.measured_in_use_bytes),
                    human_bytes(self.memory.peak_measured_in_use_bytes)
                ),
            ),
            (
                "Compiles that waited for memory".into(),
                format!(
                    "{} ({:.3} s in all), {} waiting now",
                    c.memory_waits,
                    c.memory_wait_ms as f64 / 1000.0,
                    self.memory.waiting
                ),
            ),
            ("Pressure holds".into(), c.pressure_holds.to_string()),
            ("OOM kills seen".into(), c.oom_kills.to_string()),
            (
                "  retried alone: succeeded/failed".into(),
                format!("{}/{}", c.oom_retries_succeeded, c.oom_retries_failed),
            ),
            (
                "Client-run compiles admitted".into(),
                c.local_runs_admitted.to_string(),
            ),
            ("Server CPU time".into(), self.server_cpu()),
            ("Server pid".into(), self.server_pid.to_string()),
            ("Server uptime".into(), format!("{} s", self.uptime_secs)),
            ("Runtime dir".into(), self.runtime_dir.clone()),
            ("Version".into(), self.version.clone()),
        ];
        // One row per reason under each total that has them.
        for (total, by_reason) in [
            ("Uncacheable calls", &c.uncacheable),
            ("Results not stored", &c.not_stored),
        ] {
            let after = rows
                .iter()
                .position(|(k, _)| k == total)
                .map_or(rows.len(), |i| i + 1);
            let reasons = by_reason
                .iter()
                .map(|(reason, count)| (format!("  {reason}"), count.to_string()));
            rows.splice(after..after, reasons);
        }
        let total: u64 = c.token_ms_by_build.values().sum();
        for (build, ms) in &c.token_ms_by_build {
            rows.push((
                format!("Token time, build {build}"),
                format!(
                    "{:.3} token-s ({})",
                    *ms as f64 / 1000.0,
                    percent(*ms, total)
                ),
            ));
        }
        for (language, l) in &c.languages {
            rows.push((
                format!("{language} hits/misses/uncacheable/failed"),
                format!("{}/{}/{}/{}", l.hits, l.misses, l.uncacheable, l.failures),
            ));
        }
        for (kind, bytes, basis) in &self.memory.kind_defaults {
            rows.push((
                format!("Memory of an unknown {kind} compile"),
                format!("{} ({basis})", human_bytes(*bytes)),
            ));
        }
        for (kind, label, bytes) in &self.memory.largest {
            rows.push((
                format!("Largest peak: {label} ({kind})"),
                human_bytes(*bytes),
            ));
        }
        if let Some(e) = &c.execution {
            rows.extend(execution_rows(e));
        }
        let width = rows.iter().map(|(k, _)| k.len()).max().unwrap_or(0);
        let mut out = String::new();
        for (key, value) in rows {
            let _ = writeln!(out, "{key:<width$}  {value}");
        }
        out.push_str(&levels_table(&c.levels));
        out.push_str(JOBSERVER_LEGEND);
        out.push_str(MEMORY_LEGEND);
        out
    }
}

/// The rows of remote execution.
fn execution_rows(e: &ExecutionCounters) -> Vec<(String, String)> {
    let mean = |ms: u64| average_ms(ms, e.remote_compiles);
    let mut rows = vec![
        (
            "Remote compiles".into(),
            format!(
                "{} ({} from the service's cache)",
                e.remote_compiles, e.remote_cached
            ),
        ),
        (
            "  first compiles of a slot, local".into(),
            e.first_compiles_local.to_string(),
        ),
        (
            "  fell back to local".into(),
            e.fallbacks_total().to_string(),
        ),
    ];
    rows.extend(
        e.fallbacks
            .iter()
            .map(|(reason, n)| (format!("    {reason}"), n.to_string())),
    );
    rows.extend([
        (
            "  toolchains uploaded".into(),
            e.toolchain_uploads.to_string(),
        ),
        (
            "  mean upload/queue/run/total".into(),
            format!(
                "{} / {} / {} / {}",
                mean(e.upload_ms),
                mean(e.queue_ms),
                mean(e.run_ms),
                mean(e.total_ms)
            ),
        ),
        (
            "  bytes up/down".into(),
            format!(
                "{} / {}",
                human_bytes(e.bytes_uploaded),
                human_bytes(e.bytes_downloaded)
            ),
        ),
    ]);
    rows
}

/// One row per cache level, in read order.
fn levels_table(levels: &[LevelCounters]) -> String {
    if levels.is_empty() {
        return "\nCache levels: none (the local disk is off and no remote is set)\n".into();
    }
    let mut out = String::from("\nCache levels, in read order:\n");
    let _ = writeln!(
        out,
        "  {:<12} {:<9} {:>6} {:>6} {:>6} {:>6} {:>6} {:>8} {:>7} {:>10} {:>10} {:>9} {:>9}  breaker",
        "level",
        "kind",
        "hits",
        "misses",
        "reads",
        "writes",
        "errors",
        "timeouts",
        "corrupt",
        "read",
        "written",
        "mean rd",
        "mean wr"
    );
    for l in levels {
        let mean = |total_us: u64, n: u64| {
            if n == 0 {
                "-".to_owned()
            } else {
                format!("{:.2} ms", total_us as f64 / n as f64 / 1000.0)
            }
        };
        let kind = if l.read_only {
            format!("{} ro", l.kind)
        } else {
            l.kind.clone()
        };
        let _ = writeln!(
            out,
            "  {:<12} {:<9} {:>6} {:>6} {:>6} {:>6} {:>6} {:>8} {:>7} {:>10} {:>10} {:>9} {:>9}  {}",
            l.name,
            kind,
            l.hits,
            l.misses,
            l.reads,
            l.writes,
            l.errors,
            l.timeouts,
            l.corrupt,
            human_bytes(l.bytes_read),
            human_bytes(l.bytes_written),
            mean(l.read_time_us, l.reads),
            mean(l.write_time_us, l.writes),
            if l.breaker.is_empty() {
                "closed"
            } else {
                &l.breaker
            },
        );
        let mut notes = Vec::new();
        if l.backfills > 0 {
            notes.push(format!("{} writes were backfills", l.backfills));
        }
        if l.skipped_by_breaker > 0 || l.breaker_opens > 0 {
            notes.push(format!(
                "breaker opened {} times, {} calls skipped",
                l.breaker_opens, l.skipped_by_breaker
            ));
        }
        if l.skipped_too_large > 0 {
            notes.push(format!(
                "{} entries too large to store",
                l.skipped_too_large
            ));
        }
        if l.cas_blobs_uploaded + l.cas_blobs_present > 0 {
            notes.push(format!(
                "CAS: {} blobs uploaded ({}), {} already there",
                l.cas_blobs_uploaded,
                human_bytes(l.cas_bytes_uploaded),
                l.cas_blobs_present
            ));
        }
        if !l.refuses_writes.is_empty() {
            notes.push(format!("read-only now: {}", l.refuses_writes));
        }
        if !notes.is_empty() {
            let _ = writeln!(out, "  {:<12} ({})", "", notes.join("; "));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_lists_reasons_under_results_not_stored() {
        let mut snapshot = StatsSnapshot::default();
        snapshot
            .counters
            .not_stored
            .insert("too new to trust".into(), 2);
        let text = snapshot.to_text();
        let lines: Vec<&str> = text.lines().collect();
        let at = lines
            .iter()
            .position(|l| l.starts_with("Results not stored"))
            .unwrap();
        assert!(lines[at].ends_with(" 2"), "{text}");
        assert!(
            lines[at + 1].trim_start().starts_with("too new to trust"),
            "{text}"
        );
    }

    #[test]
    fn text_lists_reasons_under_uncacheable() {
        let mut snapshot = StatsSnapshot::default();
        snapshot.counters.cache_hits = 3;
        snapshot.counters.cache_misses = 1;
        snapshot
            .counters
            .uncacheable
            .insert("linking (no -c)".into(), 2);
        snapshot.counters.uncacheable.insert("-E".into(), 1);
        let text = snapshot.to_text();
        let lines: Vec<&str> = text.lines().collect();
        let at = lines
            .iter()
            .position(|l| l.starts_with("Uncacheable calls"))
            .unwrap();
        assert!(lines[at].ends_with(" 3"), "{text}");
        assert!(lines[at + 1].trim_start().starts_with("-E"), "{text}");
        assert!(
            lines[at + 2].trim_start().starts_with("linking (no -c)"),
            "{text}"
        );
        assert!(text.contains("75.0 %"), "{text}");
    }

    #[test]
    fn text_gives_the_servers_cpu_and_its_share_of_its_compilers() {
        let mut snapshot = StatsSnapshot {
            server_cpu_ms: 2480,
            compilers_cpu_ms: 57941,
            ..Default::default()
        };
        let row = |text: &str| {
            text.lines()
                .find(|l| l.starts_with("Server CPU time"))
                .map(|l| l["Server CPU time".len()..].trim().to_owned())
                .unwrap()
        };
        assert_eq!(
            row(&snapshot.to_text()),
            "2.480 s, 4.28% of its compilers' 57.941 s"
        );
        snapshot.compilers_cpu_ms = 0;
        assert_eq!(row(&snapshot.to_text()), "2.480 s, no compiler run yet");
    }

    #[test]
    fn json_round_trip() {
        let mut snapshot = StatsSnapshot::default();
        snapshot.jobserver.tokens = 4;
        let json = serde_json::to_string(&snapshot).unwrap();
        assert_eq!(
            serde_json::from_str::<StatsSnapshot>(&json).unwrap(),
            snapshot
        );
    }
}
