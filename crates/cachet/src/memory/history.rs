//! Peaks remembered by slot, persisted in the cache dir so that a new server starts
//! knowing; and per kind, what an unknown slot is predicted from.

use std::collections::{BTreeMap, HashMap};
use std::io;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::slot::{Kind, Slot};
use crate::paths::write_atomically;

/// Slots remembered; past this the least recently seen go.
pub const MAX_SLOTS: usize = 8192;

/// Bumped when the file's shape changes; another version is ignored (and rewritten).
const FORMAT: u32 = 1;

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Remembered {
    kind: Kind,
    label: String,
    /// The last measured peak (bytes), or a raised prediction after an OOM kill.
    peak: u64,
    /// When it was last seen, in updates since the history began.
    seen: u64,
}

/// A running mean of the peaks measured for one kind (bytes).
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize)]
struct KindMean {
    mean: u64,
    count: u64,
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct Saved {
    format: u32,
    tick: u64,
    slots: HashMap<u64, Remembered>,
    kinds: BTreeMap<Kind, KindMean>,
}

/// Where a prediction came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Basis {
    /// This slot's own last peak.
    Slot,
    /// The mean of what the server measured for the slot's kind.
    Learned,
    /// `memory_default` from the configuration.
    Configured,
    /// The kind's built-in default (nothing of the kind measured yet).
    BuiltIn,
}

/// The history of one server.
#[derive(Debug)]
pub struct History {
    saved: Saved,
    path: Option<PathBuf>,
    configured_default: Option<u64>,
    dirty: bool,
}

impl History {
    /// The history saved at `path` (none there, or unreadable: an empty one, with a warning
    /// for a damaged file, which the next save replaces).
    pub fn load(path: Option<PathBuf>, configured_default: Option<u64>) -> History {
        let saved = path
            .as_deref()
            .and_then(|p| match std::fs::read(p) {
                Ok(bytes) => match serde_json::from_slice::<Saved>(&bytes) {
                    Ok(saved) if saved.format == FORMAT => Some(saved),
                    Ok(_) => None,
                    Err(e) => {
                        tracing::warn!(
                            "memory history {} is damaged ({e}); starting anew",
                            p.display()
                        );
                        None
                    }
                },
                Err(_) => None,
            })
            .unwrap_or(Saved {
                format: FORMAT,
                ..Saved::default()
            });
        History {
            saved,
            path,
            configured_default,
            dirty: false,
        }
    }

    /// The predicted peak of `slot` (bytes) and what it rests on.
    pub fn predict(&self, slot: &Slot) -> (u64, Basis) {
        if let Some(known) = self.saved.slots.get(&slot.id) {
            return (known.peak, Basis::Slot);
        }
        self.kind_default(slot.kind)
    }

    /// What an unknown slot of `kind` is predicted to need, and on what basis.
    pub fn kind_default(&self, kind: Kind) -> (u64, Basis) {
        if let Some(bytes) = self.configured_default {
            return (bytes, Basis::Configured);
        }
        match self.saved.kinds.get(&kind) {
            Some(m) if m.count > 0 => (m.mean, Basis::Learned),
            _ => (kind.built_in_default(), Basis::BuiltIn),
        }
    }

    /// Remembers a measured peak of `slot` (bytes).
    pub fn record(&mut self, slot: &Slot, peak: u64) {
        let m = self.saved.kinds.entry(slot.kind).or_default();
        // A plain mean for the first 32, then each new peak weighs 1/32.
        m.count = (m.count + 1).min(32);
        let mean = m.mean as i128 + (peak as i128 - m.mean as i128) / m.count as i128;
        m.mean = mean.max(0) as u64;
        self.remember(slot, peak);
    }

    /// Raises the prediction of `slot` to at least `bytes` (after an OOM kill).
    pub fn raise(&mut self, slot: &Slot, bytes: u64) {
        let peak = self.predict(slot).0.max(bytes);
        self.remember(slot, peak);
    }

    fn remember(&mut self, slot: &Slot, peak: u64) {
        self.saved.tick += 1;
        self.saved.slots.insert(
            slot.id,
            Remembered {
                kind: slot.kind,
                label: slot.label.clone(),
                peak,
                seen: self.saved.tick,
            },
        );
        if self.saved.slots.len() > MAX_SLOTS {
            // Drop the oldest tenth at once, so this runs rarely.
            let mut seen: Vec<u64> = self.saved.slots.values().map(|r| r.seen).collect();
            seen.sort_unstable();
            let cut = seen[MAX_SLOTS / 10];
            self.saved.slots.retain(|_, r| r.seen > cut);
        }
        self.dirty = true;
    }

    /// The `n` slots with the largest peaks: (kind, label, bytes), largest first.
    pub fn largest(&self, n: usize) -> Vec<(Kind, String, u64)> {
        let mut all: Vec<_> = self
            .saved
            .slots
            .values()
            .map(|r| (r.kind, r.label.clone(), r.peak))
            .collect();
        all.sort_by(|a, b| b.2.cmp(&a.2).then_with(|| a.1.cmp(&b.1)));
        all.truncate(n);
        all
    }

    /// Slots remembered.
    pub fn len(&self) -> usize {
        self.saved.slots.len()
    }

    /// The bytes to write when something changed since the last save, and where.
    pub fn take_unsaved(&mut self) -> Option<(PathBuf, Vec<u8>)> {
        if !self.dirty {
            return None;
        }
        let path = self.path.clone()?;
        self.dirty = false;
        Some((path, serde_json::to_vec(&self.saved).ok()?))
    }
}

/// Writes a history file whole (see [`write_atomically`]).
pub fn write(path: &Path, bytes: &[u8]) -> io::Result<()> {
    write_atomically(path, bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn slot(kind: Kind, id: u64) -> Slot {
        Slot {
            kind,
            id,
            label: format!("s{id}"),
        }
    }

    #[test]
    fn predicts_from_the_slot_then_the_kind_then_the_built_in() {
        let mut h = History::load(None, None);
        assert_eq!(h.predict(&slot(Kind::Rlib, 1)), (512 << 20, Basis::BuiltIn));
        h.record(&slot(Kind::Rlib, 1), 100);
        h.record(&slot(Kind::Rlib, 2), 300);
        assert_eq!(h.predict(&slot(Kind::Rlib, 1)), (100, Basis::Slot));
        assert_eq!(h.predict(&slot(Kind::Rlib, 3)), (200, Basis::Learned));
        assert_eq!(h.predict(&slot(Kind::C, 3)).1, Basis::BuiltIn);
        let configured = History::load(None, Some(42));
        assert_eq!(
            configured.predict(&slot(Kind::C, 9)),
            (42, Basis::Configured)
        );
    }

    #[test]
    fn an_oom_kill_raises_the_prediction() {
        let mut h = History::load(None, None);
        h.record(&slot(Kind::C, 1), 100);
        h.raise(&slot(Kind::C, 1), 50);
        assert_eq!(h.predict(&slot(Kind::C, 1)).0, 100);
        h.raise(&slot(Kind::C, 1), 500);
        assert_eq!(h.predict(&slot(Kind::C, 1)).0, 500);
    }

    #[test]
    fn is_bounded_and_keeps_the_recent() {
        let mut h = History::load(None, None);
        for id in 0..(MAX_SLOTS as u64 + 10) {
            h.record(&slot(Kind::C, id), id);
        }
        assert!(h.len() <= MAX_SLOTS);
        assert_eq!(
            h.predict(&slot(Kind::C, MAX_SLOTS as u64 + 9)).1,
            Basis::Slot
        );
        assert_ne!(h.predict(&slot(Kind::C, 0)).1, Basis::Slot);
    }

    #[test]
    fn survives_a_restart_and_a_damaged_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("memory-history.json");
        let mut h = History::load(Some(path.clone()), None);
        h.record(&slot(Kind::Link, 7), 1234);
        let (to, bytes) = h.take_unsaved().unwrap();
        write(&to, &bytes).unwrap();
        assert!(h.take_unsaved().is_none(), "nothing new to save");
        let again = History::load(Some(path.clone()), None);
        assert_eq!(again.predict(&slot(Kind::Link, 7)), (1234, Basis::Slot));
        assert_eq!(again.largest(1), vec![(Kind::Link, "s7".to_owned(), 1234)]);
        std::fs::write(&path, b"{not json").unwrap();
        assert_eq!(History::load(Some(path), None).len(), 0);
    }
}
