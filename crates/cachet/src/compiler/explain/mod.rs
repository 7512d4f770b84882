//! Why a compile missed: each stored entry leaves its [`Recipe`] (the parts of its key)
//! under its explain slot, and each miss is compared with the recipe last stored for its
//! slot. The explanation is worked out as the miss is stored (off the request's path; a
//! hit does nothing here) and kept twice: in a ring of the server's recent misses
//! (`cachet explain --last N`), and on disk by output path (`cachet explain PATH`), so it
//! outlives the server.
//!
//! On disk, under `<cache_dir>/explain/`: `slots/<id>.json` (the slot's last stored recipe
//! and its last miss) and `outputs.log` (which slot wrote an output path, a line appended
//! per miss). Both bounded.

pub mod diff;
mod outputs_log;
pub mod recipe;

use std::collections::VecDeque;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use crate::paths::write_atomically;
use crate::units::{ago, unix_now};

use serde::{Deserialize, Serialize};

pub use recipe::{Input, Masker, Recipe};

use crate::cache::{Cache, CacheEntry, CacheKey};
use crate::compiler::key::KeyHasher;

/// Explains a miss whose recipe is `recipe` (see [`Explainer::record_miss`]): with a team
/// key and a level with `explain = true`, a slot never stored here is compared with the
/// recipe another machine shared, and a stored entry's recipe is shared in turn.
/// `failures` are the cache levels that failed while the request looked for its entry
/// (`redis: 3 timeouts`): the entry may be there, unreadable.
pub async fn miss(
    cache: Arc<Cache>,
    explain: Arc<Explainer>,
    recipe: Recipe,
    forced: bool,
    stored: bool,
    failures: Vec<String>,
) {
    let sharing = explain.shared_key && cache.shares_recipes();
    let key = Shared::key(&recipe.slot);
    let shared = if sharing && !forced {
        let (explainer, slot) = (explain.clone(), recipe.slot.clone());
        let known = tokio::task::spawn_blocking(move || explainer.has_stored(&slot))
            .await
            .unwrap_or(true);
        match known {
            true => None,
            false => cache
                .get_shared_recipe(&key)
                .await
                .as_ref()
                .and_then(Shared::from_entry),
        }
    } else {
        None
    };
    if sharing && stored {
        cache.put_shared_recipe_in_background(key, Shared::entry(&recipe));
    }
    // Files written for `cachet explain` later: they wait for a gap in the build.
    let _ = crate::background::run(0, move || {
        explain.record_miss(recipe, forced, stored, shared, &failures)
    })
    .await;
}

/// Misses the server keeps in memory for `--last`.
const RING: usize = 256;

/// Slots (and output paths) kept on disk; past this the oldest go.
const MAX_FILES: usize = 8192;

/// Which slot wrote each output path, under the explain dir (see [`outputs_log`]).
const OUTPUTS_LOG: &str = "outputs.log";

/// One miss explained.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Explanation {
    /// When it missed (seconds since the epoch).
    pub at: u64,
    /// `C`, `Rust`…
    pub language: String,
    /// The explain slot, for people.
    pub slot: String,
    /// Its outputs (absolute paths).
    pub outputs: Vec<String>,
    /// The causes, in plain words; at least one.
    pub causes: Vec<String>,
}

/// A recipe another machine stored for a slot, through a level with `explain = true`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Shared {
    /// The machine that stored it (its host name).
    pub host: String,
    /// When (seconds since the epoch).
    pub at: u64,
    pub recipe: Recipe,
}

/// The meta tag of a shared recipe object.
const SHARED_META: &str = "cachet explain recipe v1";

impl Shared {
    /// The key a slot's shared recipe is stored under.
    pub fn key(slot: &str) -> CacheKey {
        let mut h = KeyHasher::new(SHARED_META.as_bytes());
        h.field(slot.as_bytes());
        h.finish()
    }

    /// This machine's recipe, as an object for a shared level.
    pub fn entry(recipe: &Recipe) -> CacheEntry {
        let shared = Shared {
            host: host_name(),
            at: unix_now(),
            recipe: recipe.clone(),
        };
        CacheEntry {
            exit_code: 0,
            stdout: serde_json::to_vec(&shared).unwrap_or_default(),
            stderr: Vec::new(),
            files: Vec::new(),
            meta: vec![(SHARED_META.into(), Vec::new())],
        }
    }

    /// The recipe in a shared object; None for anything else.
    pub fn from_entry(entry: &CacheEntry) -> Option<Shared> {
        entry.meta(SHARED_META)?;
        serde_json::from_slice(&entry.stdout).ok()
    }
}

/// This machine's name.
fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_owned())
        .unwrap_or_else(|_| "another machine".into())
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct SlotFile {
    /// The recipe of the slot's last stored entry, and when it was stored.
    stored: Option<(u64, Recipe)>,
    /// The slot's last miss.
    last_miss: Option<Explanation>,
}

/// Explains misses for one server.
pub struct Explainer {
    dir: Option<PathBuf>,
    masker: Masker,
    /// The masker's key is the team's: recipes may be shared.
    shared_key: bool,
    recent: Mutex<VecDeque<Explanation>>,
    writes: AtomicU64,
}

/// `path` without `.` components and with `..` taken lexically, so that `/w/./a.o` and
/// `/w/a.o` are one output.
pub fn normal(path: &str) -> String {
    let mut parts: Vec<&str> = Vec::new();
    for part in path.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            part => parts.push(part),
        }
    }
    format!("/{}", parts.join("/"))
}

fn id(text: &str) -> String {
    blake3::hash(text.as_bytes()).to_hex()[..32].to_owned()
}

impl Explainer {
    /// Explains into `dir` (None: in memory only), hiding values with `masker`.
    pub fn new(dir: Option<PathBuf>, masker: Masker) -> Explainer {
        Explainer {
            dir,
            masker,
            shared_key: false,
            recent: Mutex::new(VecDeque::new()),
            writes: AtomicU64::new(0),
        }
    }

    /// Marks the masker's key as the team's shared one: recipes go to, and come from,
    /// levels with `explain = true`.
    pub fn with_team_key(mut self) -> Explainer {
        self.shared_key = true;
        self
    }

    /// Whether an entry was stored for `slot` here (blocking: reads a file).
    pub fn has_stored(&self, slot: &str) -> bool {
        self.read_slot(slot).stored.is_some()
    }

    /// One that keeps nothing on disk and hides values with a key of its own.
    pub fn in_memory() -> Explainer {
        Explainer::new(
            None,
            Masker::new(blake3::hash(b"cachet explain, in memory").into()),
        )
    }

    /// The masker every recipe is made with.
    pub fn masker(&self) -> &Masker {
        &self.masker
    }

    fn slot_path(&self, slot: &str) -> Option<PathBuf> {
        Some(
            self.dir
                .as_ref()?
                .join("slots")
                .join(format!("{}.json", id(slot))),
        )
    }

    fn outputs_log(&self) -> Option<PathBuf> {
        Some(self.dir.as_ref()?.join(OUTPUTS_LOG))
    }

    fn read_slot(&self, slot: &str) -> SlotFile {
        self.slot_path(slot)
            .and_then(|p| std::fs::read(p).ok())
            .and_then(|bytes| serde_json::from_slice(&bytes).ok())
            .unwrap_or_default()
    }

    /// A miss whose recipe is `now`: compared with the recipe last stored for its slot.
    /// `forced`: `CACHET_RECACHE` asked for it; `stored`: its entry was stored (its recipe
    /// becomes the slot's). Blocking file work: call it off the async threads.
    /// `shared` is the slot's recipe from another machine, used when this one has none.
    /// `failures`: cache levels that failed during the lookup, named first.
    pub fn record_miss(
        &self,
        mut now: Recipe,
        forced: bool,
        stored: bool,
        shared: Option<Shared>,
        failures: &[String],
    ) {
        now.outputs = now.outputs.iter().map(|o| normal(o)).collect();
        let mut file = self.read_slot(&now.slot);
        let causes = match (&file.stored, forced, shared) {
            (_, true, _) => vec!["recompiled as asked (CACHET_RECACHE)".to_owned()],
            (None, false, Some(shared)) => {
                let mut causes = vec![format!(
                    "first compile of this output here; compared with what {} stored {}:",
                    shared.host,
                    ago(unix_now().saturating_sub(shared.at))
                )];
                let differ = diff::causes(&shared.recipe, &now);
                if differ.is_empty() {
                    causes.push("the same recipe: its entry is gone from the shared cache".into());
                }
                causes.extend(differ);
                causes
            }
            (None, false, None) => vec!["first compile of this output".to_owned()],
            (Some((at, before)), false, _) => {
                let causes = diff::causes(before, &now);
                if causes.is_empty() {
                    vec![format!(
                        "entry was evicted (the same recipe was stored {})",
                        ago(now_secs_since(*at))
                    )]
                } else {
                    causes
                }
            }
        };
        // A level that failed may hold the entry: that comes first, and an unchanged
        // recipe is then no sign of eviction.
        let causes = match failures {
            [] => causes,
            failures => {
                let mut all = vec![format!("remote level errors ({})", failures.join("; "))];
                all.extend(
                    causes
                        .into_iter()
                        .filter(|c| !c.starts_with("entry was evicted")),
                );
                all
            }
        };
        let explanation = Explanation {
            at: unix_now(),
            language: now.language.clone(),
            slot: now.slot.clone(),
            outputs: now.outputs.clone(),
            causes,
        };
        if stored {
            file.stored = Some((unix_now(), now));
        }
        file.last_miss = Some(explanation.clone());
        self.keep(explanation, Some(&file));
    }

    /// A compile that was not cacheable, with the outputs it names (if any).
    /// `command` names the call for people (`rustc --version`).
    pub fn record_uncacheable(
        &self,
        language: &str,
        command: &str,
        outputs: Vec<String>,
        reason: &str,
    ) {
        let outputs: Vec<String> = outputs.iter().map(|o| normal(o)).collect();
        let slot = command.to_owned();
        let explanation = Explanation {
            at: unix_now(),
            language: language.to_owned(),
            slot: slot.clone(),
            outputs,
            causes: vec![format!("uncacheable: {reason}")],
        };
        let mut file = self.read_slot(&slot);
        file.last_miss = Some(explanation.clone());
        self.keep(explanation, Some(&file));
    }

    fn keep(&self, explanation: Explanation, file: Option<&SlotFile>) {
        {
            let mut recent = self.recent.lock().unwrap();
            recent.push_back(explanation.clone());
            if recent.len() > RING {
                recent.pop_front();
            }
        }
        let (Some(file), Some(slot_path)) = (file, self.slot_path(&explanation.slot)) else {
            return;
        };
        let result = (|| -> io::Result<()> {
            write_atomically(&slot_path, &serde_json::to_vec(file)?)?;
            let (Some(log), false) = (self.outputs_log(), explanation.outputs.is_empty()) else {
                return Ok(());
            };
            outputs_log::append(&log, &explanation.outputs, &explanation.slot)
        })();
        if let Err(e) = result {
            tracing::debug!("cannot keep an explanation: {e}");
        }
        if self.writes.fetch_add(1, Ordering::Relaxed) % 256 == 255
            && let Some(dir) = &self.dir
        {
            prune(&dir.join("slots"));
            if let Err(e) = outputs_log::compact(&dir.join(OUTPUTS_LOG), MAX_FILES) {
                tracing::debug!("cannot compact the explain outputs log: {e}");
            }
        }
    }

    /// The last `n` misses of this server, oldest first.
    pub fn last(&self, n: usize) -> Vec<Explanation> {
        let recent = self.recent.lock().unwrap();
        recent
            .iter()
            .skip(recent.len().saturating_sub(n))
            .cloned()
            .collect()
    }

    /// The last miss of the compile that wrote `output` (an absolute path), if one is known.
    pub fn for_output(&self, output: &Path) -> Option<Explanation> {
        let output = normal(&output.to_string_lossy());
        if let Some(found) = self
            .recent
            .lock()
            .unwrap()
            .iter()
            .rev()
            .find(|e| e.outputs.contains(&output))
        {
            return Some(found.clone());
        }
        let slot = outputs_log::find(&self.outputs_log()?, &output)?;
        self.read_slot(&slot).last_miss
    }
}

fn now_secs_since(at: u64) -> u64 {
    unix_now().saturating_sub(at)
}

/// Keeps the newest [`MAX_FILES`] files of `dir`.
fn prune(dir: &Path) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    let mut files: Vec<(SystemTime, PathBuf)> = entries
        .flatten()
        .filter_map(|e| Some((e.metadata().ok()?.modified().ok()?, e.path())))
        .collect();
    if files.len() <= MAX_FILES {
        return;
    }
    files.sort();
    for (_, path) in &files[..files.len() - MAX_FILES] {
        let _ = std::fs::remove_file(path);
    }
}

/// 32 bytes from the kernel's random source.
pub fn random_key() -> io::Result<[u8; 32]> {
    let mut key = [0u8; 32];
    let mut filled = 0;
    while filled < key.len() {
        filled +=
            rustix::rand::getrandom(&mut key[filled..], rustix::rand::GetRandomFlags::empty())?;
    }
    Ok(key)
}

/// The key of a team's shared `explain_key` (any text; the same text gives the same key).
pub fn team_key(text: &str) -> [u8; 32] {
    blake3::derive_key("cachet explain key v1", text.as_bytes())
}

/// The key that hides values in this machine's recipes: `<dir>/key`, 32 random bytes made
/// on first use (mode 0600). A team's shared key comes from the configuration instead.
pub fn local_key(dir: &Path) -> io::Result<[u8; 32]> {
    let path = dir.join("key");
    if let Ok(bytes) = std::fs::read(&path)
        && let Ok(key) = <[u8; 32]>::try_from(bytes.as_slice())
    {
        return Ok(key);
    }
    let key = random_key()?;
    std::fs::create_dir_all(dir)?;
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&path)?;
    io::Write::write_all(&mut file, &key)?;
    Ok(key)
}

#[cfg(test)]
mod tests;
