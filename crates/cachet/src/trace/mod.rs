//! What the server did, as a timeline: each compile request (with its outcome), each
//! compiler process while it held a token, and counters (tokens, each build's extra
//! tokens, memory). A bounded ring, written out by `cachet trace --output FILE` in the
//! Chrome trace event format, which Perfetto (ui.perfetto.dev) and `chrome://tracing`
//! open. Format: "Trace Event Format", Google, the JSON object form with `traceEvents`.

pub mod report;

use std::collections::{BTreeMap, VecDeque};
use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

use serde::Serialize;
use serde_json::{Value, json};

/// Events kept; past this the oldest go.
pub const CAPACITY: usize = 200_000;

/// Microseconds since the epoch, now.
pub fn now_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}

/// One thing the server did or measured.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub enum Event {
    /// A compile request from its arrival to its answer.
    Request {
        start_us: u64,
        end_us: u64,
        /// The source or crate, for people.
        name: String,
        /// `hit`, `miss`, `failed`, `uncacheable: <reason>`, `cancelled`, `error`.
        outcome: String,
        /// The build's jobserver (`pipe:[INODE]`, `fifo:PATH`, `no jobserver`).
        build: String,
        /// The level that served a hit.
        level: Option<String>,
        /// The entry's key (the first 16 hex digits): the one hit, or the one stored.
        key: Option<String>,
        /// The entry's size (bytes): as read for a hit, as stored for a miss.
        bytes: u64,
    },
    /// A compiler process while it held one of the server's tokens.
    Run {
        start_us: u64,
        end_us: u64,
        name: String,
        build: String,
        /// Time it waited for its token, and for memory before that (µs).
        token_wait_us: u64,
        memory_wait_us: u64,
    },
    /// A counter's new value.
    Counter {
        at_us: u64,
        track: String,
        value: i64,
    },
}

impl Event {
    fn start(&self) -> u64 {
        match self {
            Event::Request { start_us, .. } | Event::Run { start_us, .. } => *start_us,
            Event::Counter { at_us, .. } => *at_us,
        }
    }
}

/// The ring of events.
#[derive(Debug, Default)]
pub struct Trace {
    events: Mutex<VecDeque<Event>>,
}

impl Trace {
    /// Keeps `event`.
    pub fn record(&self, event: Event) {
        let mut events = self.events.lock().unwrap_or_else(|e| e.into_inner());
        if events.len() >= CAPACITY {
            events.pop_front();
        }
        events.push_back(event);
    }

    /// Keeps a counter's new value.
    pub fn counter(&self, track: impl Into<String>, value: i64) {
        self.record(Event::Counter {
            at_us: now_us(),
            track: track.into(),
            value,
        });
    }

    /// Forgets everything (`--zero-stats`).
    pub fn clear(&self) {
        self.events
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clear();
    }

    /// The events that start at or after `since_us`, in order of start.
    pub fn events(&self, since_us: u64) -> Vec<Event> {
        let events = self.events.lock().unwrap_or_else(|e| e.into_inner());
        let mut out: Vec<Event> = events
            .iter()
            .filter(|e| e.start() >= since_us)
            .cloned()
            .collect();
        out.sort_by_key(Event::start);
        out
    }
}

/// Lanes for slices: each slice goes on the first lane free at its start, so that slices
/// never overlap within a lane.
#[derive(Debug, Default)]
pub struct Lanes {
    ends: Vec<u64>,
}

impl Lanes {
    /// The lane (0-based) of a slice from `start` to `end`.
    pub fn place(&mut self, start: u64, end: u64) -> usize {
        let i = match self.ends.iter().position(|e| *e <= start) {
            Some(i) => i,
            None => {
                self.ends.push(0);
                self.ends.len() - 1
            }
        };
        self.ends[i] = end;
        i
    }

    /// Lanes used.
    pub fn count(&self) -> usize {
        self.ends.len()
    }
}

/// The events as a Chrome trace (a JSON object with `traceEvents`). Each build is a
/// process; its requests and its compiler runs are threads ("lanes"), each slice on the
/// first lane free at its start, so that slices never overlap within a lane. Counters
/// are process-wide tracks; hits and misses per second are added from the requests.
pub fn chrome_json(events: &[Event]) -> Value {
    let origin = events.iter().map(Event::start).min().unwrap_or(0);
    let mut builds: BTreeMap<String, u64> = BTreeMap::new();
    let mut pid_of = |build: &str| {
        let next = builds.len() as u64 + 2;
        *builds.entry(build.to_owned()).or_insert(next)
    };
    // Per (pid, kind) its lanes.
    let mut lanes: BTreeMap<(u64, &'static str), Lanes> = BTreeMap::new();
    let mut lane = |pid: u64, kind: &'static str, start: u64, end: u64| {
        let i = lanes.entry((pid, kind)).or_default().place(start, end);
        let base = if kind == "request" { 1 } else { 10_001 };
        base + i as u64
    };
    let mut out = Vec::new();
    let mut per_second: BTreeMap<u64, (i64, i64)> = BTreeMap::new();
    for event in events {
        match event {
            Event::Request {
                start_us,
                end_us,
                name,
                outcome,
                build,
                level,
                key,
                bytes,
            } => {
                let pid = pid_of(build);
                let tid = lane(pid, "request", *start_us, *end_us);
                let second = (start_us - origin) / 1_000_000;
                let slot = per_second.entry(second).or_default();
                match outcome.as_str() {
                    "hit" => slot.0 += 1,
                    "miss" => slot.1 += 1,
                    _ => {}
                }
                out.push(json!({
                    "name": name, "cat": "request", "ph": "X",
                    "ts": start_us - origin, "dur": end_us.saturating_sub(*start_us).max(1),
                    "pid": pid, "tid": tid,
                    "args": {
                        "outcome": outcome, "build": build, "level": level, "key": key,
                        "bytes": bytes,
                    },
                }));
            }
            Event::Run {
                start_us,
                end_us,
                name,
                build,
                token_wait_us,
                memory_wait_us,
            } => {
                let pid = pid_of(build);
                let tid = lane(pid, "run", *start_us, *end_us);
                out.push(json!({
                    "name": name, "cat": "compiler", "ph": "X",
                    "ts": start_us - origin, "dur": end_us.saturating_sub(*start_us).max(1),
                    "pid": pid, "tid": tid,
                    "args": {
                        "build": build,
                        "token_wait_us": token_wait_us,
                        "memory_wait_us": memory_wait_us,
                    },
                }));
            }
            Event::Counter {
                at_us,
                track,
                value,
            } => out.push(json!({
                "name": track, "ph": "C", "ts": at_us - origin, "pid": 1,
                "args": { "value": value },
            })),
        }
    }
    for (second, (hits, misses)) in per_second {
        out.push(json!({
            "name": "hits and misses per second", "ph": "C", "ts": second * 1_000_000, "pid": 1,
            "args": { "hits": hits, "misses": misses },
        }));
    }
    out.push(
        json!({"name": "process_name", "ph": "M", "pid": 1, "args": {"name": "cachet server"}}),
    );
    for (build, pid) in &builds {
        out.push(json!({"name": "process_name", "ph": "M", "pid": pid, "args": {"name": format!("build {build}")}}));
    }
    for ((pid, kind), used) in &lanes {
        for i in 0..used.count() {
            let (base, label) = if *kind == "request" {
                (1, "requests")
            } else {
                (10_001, "compilers")
            };
            out.push(
                json!({"name": "thread_name", "ph": "M", "pid": pid, "tid": base + i as u64,
                "args": {"name": format!("{label} {}", i + 1)}}),
            );
        }
    }
    json!({ "traceEvents": out, "displayTimeUnit": "ms" })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(start: u64, end: u64) -> Event {
        Event::Run {
            start_us: start,
            end_us: end,
            name: "a.c".into(),
            build: "b".into(),
            token_wait_us: 0,
            memory_wait_us: 0,
        }
    }

    #[test]
    fn slices_never_overlap_within_a_lane_and_the_ring_is_bounded() {
        let trace = Trace::default();
        trace.record(run(100, 200));
        trace.record(run(150, 250));
        trace.record(run(200, 300));
        trace.record(Event::Request {
            start_us: 90,
            end_us: 310,
            name: "a.c".into(),
            outcome: "hit".into(),
            build: "b".into(),
            level: Some("local".into()),
            key: None,
            bytes: 10,
        });
        trace.counter("tokens", 2);
        let json = chrome_json(&trace.events(0));
        let slices: Vec<&Value> = json["traceEvents"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|e| e["ph"] == "X" && e["cat"] == "compiler")
            .collect();
        let tids: Vec<u64> = slices.iter().map(|s| s["tid"].as_u64().unwrap()).collect();
        // The third starts as the first ends: it reuses the first lane.
        assert_eq!(tids, [10_001, 10_002, 10_001]);
        assert_eq!(slices[0]["ts"], 10);
        assert!(trace.events(160).iter().all(|e| e.start() >= 160));
        trace.clear();
        assert!(trace.events(0).is_empty());
        for i in 0..(CAPACITY as u64 + 5) {
            trace.record(run(i, i + 1));
        }
        assert_eq!(trace.events(0).len(), CAPACITY);
    }
}
