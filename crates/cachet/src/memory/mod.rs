//! The jobserver's second dimension: memory. A compile starts when its jobserver token is
//! free **and** the predicted peaks of what runs plus its own fit the budget, and while
//! the machine's live signals do not say memory is short.
//!
//! - [`slot`]: what a compile's peak is predicted by (crate name and codegen flags, or
//!   source path and flags) and its [`Kind`].
//! - [`history`]: peaks by slot, persisted in the cache dir; per-kind defaults.
//! - [`budget`]: `memory_limit` and the live signals (`MemAvailable`, the server's cgroup,
//!   pressure stall information).
//! - [`cgroup`]: per-compile groups that measure a compile's whole process tree and count
//!   the OOM killer's victims in it.
//! - [`queue`]: the admission rules, as pure bookkeeping.
//!
//! Rules: a compile waiting for memory holds no token (memory is admitted first); hits and
//! the preprocessor runs of the hit path never ask; when none of this server's compiles
//! runs, the next starts whatever the signals say; a compile killed by the OOM killer
//! runs once more alone, with its prediction raised (see `process::Launcher`).

pub mod budget;
pub mod cgroup;
pub mod history;
pub mod queue;
pub mod slot;

use std::collections::HashMap;
use std::ffi::CString;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::oneshot;

pub use budget::{Budget, LimitSetting, Signals};
use cgroup::{Group, Pool, Version};
use history::{Basis, History};
use queue::Queue;
pub use slot::{Kind, Slot};

use crate::stats::{MemorySnapshot, Stats, millis};

/// How often a compile held by the live signals looks again.
const RECHECK: Duration = Duration::from_millis(200);

/// How long one reading of the live signals serves.
const SIGNALS_FRESH: Duration = Duration::from_millis(100);

/// How often, at most, the history is written to disk.
const SAVE_EVERY: Duration = Duration::from_secs(10);

/// The file in the cache dir that keeps the history.
pub const HISTORY_FILE: &str = "memory-history.json";

/// What the server's memory admission is configured with.
#[derive(Debug, Clone, Default)]
pub struct Settings {
    /// `memory_limit`; None: the default share.
    pub limit: Option<LimitSetting>,
    /// `memory_default`: the prediction of an unknown slot (bytes), else learned per kind.
    pub default: Option<u64>,
    /// Where the history is kept (None: not kept).
    pub history: Option<PathBuf>,
    /// Whether per-compile cgroups are wanted (tests turn them off to check the fallback).
    pub cgroups: bool,
    /// Whether the machine's live signals (MemAvailable, the server's cgroup, pressure)
    /// and the bytes of the process's background queue count against the budget. Tests of
    /// the admission rules turn them off: other tests in the process queue background work,
    /// and a busy machine shows pressure, which made their waits vary.
    pub live: bool,
}

/// How peaks are measured.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Measure {
    /// A cgroup per compile: the whole process tree (from the moment it is moved in, just
    /// after it starts), or its largest process where that is more.
    Cgroup(Version),
    /// `wait4`'s `ru_maxrss`: the largest single process, a lower bound; the reason no
    /// cgroup could be had.
    MaxRss(String),
}

impl Measure {
    /// For people, as `--show-stats` says it.
    pub fn describe(&self) -> String {
        match self {
            Measure::Cgroup(Version::V1) => {
                "cgroup v1 per compile (the whole process tree's peak)".into()
            }
            Measure::Cgroup(Version::V2) => {
                "cgroup v2 per compile (the whole process tree's peak)".into()
            }
            Measure::MaxRss(why) => {
                format!("ru_maxrss (the largest single process: a lower bound; no cgroup: {why})")
            }
        }
    }
}

struct State {
    queue: Queue,
    wakers: HashMap<u64, oneshot::Sender<()>>,
    peak_predicted: u64,
    peak_measured: u64,
    running_groups: HashMap<u64, Arc<Group>>,
}

/// Memory admission for one server. Cheap to share (`Arc`).
pub struct Memory {
    budget: Budget,
    /// Kept free beyond a start when the live signals are read (bytes).
    reserve: u64,
    state: Mutex<State>,
    history: Mutex<History>,
    last_save: Mutex<Instant>,
    pool: Option<Pool>,
    measure: Measure,
    own_group: Option<(PathBuf, Version)>,
    signals: Mutex<Option<(Instant, Signals)>>,
    /// See [`Settings::live`].
    live: bool,
    stats: Arc<Stats>,
}

impl Memory {
    /// Sets up admission for this machine: reads RAM and the server's cgroup limit, makes
    /// the pool of per-compile groups where it can, and loads the history.
    pub fn new(settings: Settings, stats: Arc<Stats>) -> Arc<Memory> {
        let own_group = cgroup::own_group().ok();
        let ram = budget::meminfo().map_or(u64::MAX, |(total, _)| total);
        let limit = own_group
            .as_ref()
            .and_then(|(dir, version)| cgroup::hierarchy_limit(dir, *version));
        let budget = budget::budget(settings.limit, ram, limit);
        let (pool, measure) = if !settings.cgroups {
            (None, Measure::MaxRss("cgroups turned off".into()))
        } else {
            match Pool::for_this_process() {
                Ok(pool) => {
                    let version = pool.version();
                    (Some(pool), Measure::Cgroup(version))
                }
                Err(why) => (None, Measure::MaxRss(why)),
            }
        };
        tracing::info!(
            "memory budget {} ({}); measured by {}",
            budget::gib(budget.bytes),
            budget.source,
            measure.describe()
        );
        let reserve = (budget.bytes / 20).min(512 << 20);
        Arc::new(Memory {
            state: Mutex::new(State {
                queue: Queue::new(budget.bytes),
                wakers: HashMap::new(),
                peak_predicted: 0,
                peak_measured: 0,
                running_groups: HashMap::new(),
            }),
            budget,
            reserve,
            history: Mutex::new(History::load(settings.history, settings.default)),
            last_save: Mutex::new(Instant::now()),
            pool,
            measure,
            own_group,
            signals: Mutex::new(None),
            live: settings.live,
            stats,
        })
    }

    /// Makes per-compile groups until `count` are free, on a thread of its own (see
    /// [`Pool::prefill`]): a server about to run up to `count` compiles at once.
    pub fn prefill_groups(self: &Arc<Self>, count: usize) {
        if self.pool.is_none() {
            return;
        }
        let memory = self.clone();
        let spawned = std::thread::Builder::new()
            .name("cachet-cgroups".into())
            .spawn(move || {
                if let Some(Err(e)) = memory.pool.as_ref().map(|pool| pool.prefill(count)) {
                    tracing::debug!("making cgroups ahead failed: {e}");
                }
            });
        if let Err(e) = spawned {
            tracing::debug!("no thread to make cgroups ahead: {e}");
        }
    }

    /// Waits until `slot` may start and returns its admission. `alone`: only when nothing
    /// else of this server runs (a retry after an OOM kill). Cancel-safe: dropping the
    /// future gives the place back.
    pub async fn admit(self: &Arc<Self>, slot: &Slot, alone: bool) -> Permit {
        let (predicted, _) = self.history.lock().unwrap().predict(slot);
        let need = if alone {
            predicted.max(self.budget.bytes)
        } else {
            predicted
        };
        let (tx, mut rx) = oneshot::channel();
        let id = {
            let mut state = self.state.lock().unwrap();
            let id = state.queue.enqueue(need);
            state.wakers.insert(id, tx);
            id
        };
        let mut waiting = Waiting {
            memory: self,
            id,
            need,
            admitted: false,
        };
        let started = Instant::now();
        self.dispatch();
        let mut waited = Duration::ZERO;
        if rx.try_recv().is_err() {
            loop {
                tokio::select! {
                    _ = &mut rx => break,
                    _ = tokio::time::sleep(RECHECK) => self.dispatch(),
                }
            }
            waited = started.elapsed();
            self.stats.update(|c| {
                c.memory_waits += 1;
                c.memory_wait_ms += millis(waited);
            });
        }
        waiting.admitted = true;
        let group = self.pool.as_ref().and_then(|pool| {
            pool.take()
                .inspect_err(|e| tracing::warn!("no cgroup for a compile: {e}"))
                .ok()
        });
        let group = group.map(Arc::new);
        if let Some(group) = &group {
            self.state
                .lock()
                .unwrap()
                .running_groups
                .insert(id, group.clone());
        }
        Permit {
            memory: self.clone(),
            id,
            need,
            slot: slot.clone(),
            oom_base: oom_count(group.as_deref()),
            group,
            waited,
        }
    }

    /// Admits every waiter that may start now (and samples what the running use).
    fn dispatch(&self) {
        self.sample();
        let extra = match self.live {
            true => crate::background::queued_bytes(),
            false => 0,
        };
        let mut state = self.state.lock().unwrap();
        if state.queue.waiting() == 0 {
            return;
        }
        let mut held = false;
        let admitted = state.queue.dispatch(extra, |need| {
            let reason = self.signals().hold(need, self.reserve);
            held |= reason.is_some();
            reason.is_some()
        });
        if held {
            self.stats.update(|c| c.pressure_holds += 1);
        }
        state.peak_predicted = state.peak_predicted.max(state.queue.in_use());
        if !admitted.is_empty() {
            self.trace_memory(state.queue.in_use());
        }
        for id in admitted {
            if let Some(waker) = state.wakers.remove(&id) {
                let _ = waker.send(());
            }
        }
    }

    /// Whether the live signals say memory is short now (rustc's extra codegen tokens are
    /// then held back).
    pub fn short(&self) -> bool {
        self.signals().hold(0, self.reserve).is_some()
    }

    fn signals(&self) -> Signals {
        if !self.live {
            return Signals::default();
        }
        let mut cached = self.signals.lock().unwrap();
        if let Some((at, signals)) = *cached
            && at.elapsed() < SIGNALS_FRESH
        {
            return signals;
        }
        let group = self.own_group.as_ref().map(|(d, v)| (d.as_path(), *v));
        let signals = Signals::read(group);
        *cached = Some((Instant::now(), signals));
        signals
    }

    fn trace_memory(&self, predicted: u64) {
        let mib = (predicted >> 20) as i64;
        self.stats
            .trace
            .counter("memory predicted in use (MiB)", mib);
    }

    /// Samples what the running compiles' groups use now.
    fn sample(&self) -> u64 {
        let mut state = self.state.lock().unwrap();
        let now: u64 = state
            .running_groups
            .values()
            .filter_map(|g| g.usage())
            .sum();
        state.peak_measured = state.peak_measured.max(now);
        if !state.running_groups.is_empty() {
            self.stats
                .trace
                .counter("memory measured in use (MiB)", (now >> 20) as i64);
        }
        now
    }

    fn release(&self, id: u64, need: u64) -> Option<Arc<Group>> {
        let group = {
            let mut state = self.state.lock().unwrap();
            state.queue.release(need);
            self.trace_memory(state.queue.in_use());
            state.running_groups.remove(&id)
        };
        self.dispatch();
        group
    }

    /// Learns a measured peak and saves the history now and then.
    fn learn(&self, slot: &Slot, peak: Option<u64>, oom_killed: bool, need: u64) {
        let mut history = self.history.lock().unwrap();
        match (oom_killed, peak) {
            // Whatever it reached, it wanted more: plan for twice that, at least the budget's half.
            (true, peak) => history.raise(
                slot,
                peak.unwrap_or(need)
                    .max(need)
                    .saturating_mul(2)
                    .max(self.budget.bytes / 2),
            ),
            (false, Some(peak)) => history.record(slot, peak),
            (false, None) => {}
        }
        let mut last = self.last_save.lock().unwrap();
        if last.elapsed() >= SAVE_EVERY
            && let Some((path, bytes)) = history.take_unsaved()
        {
            *last = Instant::now();
            std::thread::spawn(move || {
                if let Err(e) = history::write(&path, &bytes) {
                    tracing::warn!("cannot save the memory history {}: {e}", path.display());
                }
            });
        }
    }

    /// At the server's end: writes the history and removes the pool's groups.
    pub fn shutdown(&self) {
        self.save();
        if let Some(pool) = &self.pool {
            pool.remove_free();
        }
    }

    /// Writes the history if anything changed.
    pub fn save(&self) {
        if let Some((path, bytes)) = self.history.lock().unwrap().take_unsaved()
            && let Err(e) = history::write(&path, &bytes)
        {
            tracing::warn!("cannot save the memory history {}: {e}", path.display());
        }
    }

    /// The figures for `--show-stats`.
    pub fn snapshot(&self) -> MemorySnapshot {
        let measured = self.sample();
        let history = self.history.lock().unwrap();
        let state = self.state.lock().unwrap();
        MemorySnapshot {
            budget_bytes: self.budget.bytes,
            budget_source: self.budget.source.clone(),
            measure: self.measure.describe(),
            predicted_in_use_bytes: state.queue.in_use(),
            peak_predicted_in_use_bytes: state.peak_predicted,
            measured_in_use_bytes: measured,
            peak_measured_in_use_bytes: state.peak_measured,
            waiting: state.queue.waiting() as u64,
            slots_known: history.len() as u64,
            kind_defaults: Kind::ALL
                .iter()
                .map(|k| {
                    let (bytes, basis) = history.kind_default(*k);
                    let basis = match basis {
                        Basis::Slot | Basis::Learned => "learned",
                        Basis::Configured => "memory_default",
                        Basis::BuiltIn => "built in",
                    };
                    (k.name().to_owned(), bytes, basis.to_owned())
                })
                .collect(),
            largest: history
                .largest(5)
                .into_iter()
                .map(|(k, label, bytes)| (k.name().to_owned(), label, bytes))
                .collect(),
        }
    }

    /// Resets the peaks (`--zero-stats`).
    pub fn zero_stats(&self) {
        let mut state = self.state.lock().unwrap();
        state.peak_predicted = state.queue.in_use();
        state.peak_measured = 0;
    }
}

/// A place in the queue, given back if the waiter goes away before it is admitted.
struct Waiting<'a> {
    memory: &'a Arc<Memory>,
    id: u64,
    need: u64,
    admitted: bool,
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        if self.admitted {
            return;
        }
        let was_waiting = {
            let mut state = self.memory.state.lock().unwrap();
            state.wakers.remove(&self.id);
            state.queue.cancel(self.id)
        };
        if !was_waiting {
            // Admitted just as it went away.
            self.memory.release(self.id, self.need);
        }
    }
}

/// The OOM kills counted so far: in the group, or (without one) on the whole host.
fn oom_count(group: Option<&Group>) -> Option<u64> {
    match group {
        Some(group) => group.oom_kills(),
        None => std::fs::read_to_string("/proc/vmstat")
            .ok()
            .and_then(|text| cgroup::field(&text, "oom_kill")),
    }
}

/// One admitted compile. Dropping it gives its memory back (and its group to the pool).
pub struct Permit {
    memory: Arc<Memory>,
    id: u64,
    need: u64,
    slot: Slot,
    group: Option<Arc<Group>>,
    oom_base: Option<u64>,
    waited: Duration,
}

/// Tells whether the OOM killer struck a compile since it started.
#[derive(Debug, Clone)]
pub struct OomWatch {
    group: Option<Arc<Group>>,
    base: Option<u64>,
}

impl OomWatch {
    /// Whether the count of OOM kills (the group's, else the host's) grew since the start.
    pub fn struck(&self) -> bool {
        match (self.base, oom_count(self.group.as_deref())) {
            (Some(before), Some(now)) => now > before,
            _ => false,
        }
    }
}

/// What a finished compile's admission learned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Measured {
    /// The peak (bytes): the larger of the group's and the largest process's, else the
    /// largest process's.
    pub peak: Option<u64>,
    /// Whether the OOM killer took a process of the compile (or, without a cgroup, any
    /// process on the host while it ran).
    pub oom_killed: bool,
}

impl Permit {
    /// The `cgroup.procs` file the compiler joins before exec, if it has a group.
    pub fn cgroup_procs(&self) -> Option<CString> {
        self.group.as_ref().map(|g| g.procs().clone())
    }

    /// The predicted peak it was admitted with (bytes).
    #[cfg(test)]
    pub fn need(&self) -> u64 {
        self.need
    }

    /// Whether the OOM killer has taken something of this compile since it started.
    pub fn oom_killed(&self) -> bool {
        self.oom_watch().struck()
    }

    /// How long it waited for memory.
    pub fn waited(&self) -> Duration {
        self.waited
    }

    /// A watch on this compile's OOM kills that can go where the permit cannot (a task
    /// forwarding the compile's output).
    pub fn oom_watch(&self) -> OomWatch {
        OomWatch {
            group: self.group.clone(),
            base: self.oom_base,
        }
    }

    /// Ends the compile's run: reads its peak (`max_rss` is `wait4`'s, bytes), learns it,
    /// and says whether the OOM killer struck. The admission itself ends on drop.
    pub fn finish(&self, max_rss: Option<u64>) -> Measured {
        self.memory.sample();
        // The group's peak misses what the compile allocated before it was moved in (see
        // `reap_in_group`); its largest process's covers that.
        let peak = match (self.group.as_ref().and_then(|g| g.peak()), max_rss) {
            (Some(group), Some(largest)) => Some(group.max(largest)),
            (group, largest) => group.or(largest),
        };
        let oom_killed = self.oom_killed();
        if oom_killed {
            self.memory.stats.update(|c| c.oom_kills += 1);
        }
        self.memory.learn(&self.slot, peak, oom_killed, self.need);
        Measured { peak, oom_killed }
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        let mine = self.group.take();
        drop(self.memory.release(self.id, self.need));
        if let Some(group) = mine
            // Ours alone now: the compile's processes are reaped.
            && let Ok(group) = Arc::try_unwrap(group)
        {
            // Writing the cgroup file is a syscall into the kernel's memcg: off the async
            // threads when on them.
            let memory = self.memory.clone();
            let give_back = move || {
                if let Some(pool) = &memory.pool {
                    pool.give_back(group);
                }
            };
            match tokio::runtime::Handle::try_current() {
                Ok(runtime) => drop(runtime.spawn_blocking(give_back)),
                Err(_) => give_back(),
            }
        }
    }
}

#[cfg(test)]
mod tests;
