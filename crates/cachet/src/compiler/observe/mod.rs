//! Observed inputs: what a compile's process tree read, looked for and did not find, and
//! which environment variables it read, as an `LD_PRELOAD` interposer records them.
//!
//! A compiler's dependency output is not the whole truth: `.incbin` and `.include` in the
//! assembler, a `.gch` used in place of a header, `__has_include` probes, a new header
//! that would shadow a system one, and environment variables a proc macro reads are all
//! missing from it. The interposer (`interposer.c`, built by `build.rs` and embedded in
//! the binary) sees every `open`, `stat`, `access` and `getenv` of every process of the
//! compile, whatever the compiler, so the key can cover what was really read.
//!
//! The interposer loads only into dynamically linked programs. Every `exec` it sees is
//! logged, and every program that loads it says so, so [`Observed::complete`] tells when
//! some program of the tree ran unobserved (a static compiler, a wrapper that clears
//! `LD_PRELOAD`); callers then fall back to conservative rules.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::ffi::{OsStr, OsString};
use std::io::{self, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use crate::process::CommandSpec;

#[cfg(test)]
mod tests;

/// The interposer, as built for this binary's target.
static SHARED_OBJECT: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/cachet-observe.so"));

/// The variable that names a compile's log file; the interposer records nothing without it.
const LOG_VAR: &str = "CACHET_OBSERVE_LOG";

/// Variables whose reads are not keyed here: the jobserver, temp-dir and display variables
/// cachet already handles, `PATH` (the programs it finds are keyed by content, see
/// [`Observed::programs`]) and our own.
const HANDLED_VARS: &[&str] = &[
    "MAKEFLAGS",
    "MFLAGS",
    "CARGO_MAKEFLAGS",
    "MAKELEVEL",
    "TMPDIR",
    "TMP",
    "TEMP",
    "TERM",
    "COLUMNS",
    "LINES",
    "DISPLAY",
    "PATH",
    "LD_PRELOAD",
    "LD_LIBRARY_PATH",
    LOG_VAR,
];

/// Paths whose reads say nothing about the compile's inputs.
const SYSTEM_PREFIXES: &[&[u8]] = &[b"/proc/", b"/sys/", b"/dev/"];

/// Why compiles cannot be observed on this machine.
#[derive(Debug, thiserror::Error)]
pub enum Unavailable {
    /// The interposer (or the self-check's log) could not be written.
    #[error("{0}: {1}")]
    Write(PathBuf, #[source] io::Error),
    /// The self-check's `/bin/sh` could not start.
    #[error("/bin/sh: {0}")]
    Shell(#[source] io::Error),
    /// A program under the interposer failed or printed something (its stderr).
    #[error("a program under the interposer failed: {0}")]
    CheckFailed(String),
    /// The dynamic loader ran the program without the interposer (a `noexec` mount...).
    #[error("the dynamic loader did not load the interposer")]
    NotLoaded,
}

/// Why one compile's observation does not cover its whole process tree.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Incomplete {
    /// The compiler itself logged nothing (static, or setuid).
    #[error("the compiler did not load the interposer")]
    NotLoaded,
    /// A program the compile ran logged nothing.
    #[error("{0} ran without the interposer")]
    RanWithout(String),
}

/// The interposer written out where compilers can load it.
#[derive(Debug)]
pub struct Interposer {
    path: PathBuf,
    /// Where compile logs are made (private to this user).
    log_dir: PathBuf,
}

impl Interposer {
    /// Writes the interposer into `dir` (the server's private runtime dir) and checks that
    /// a program really loads it from there (a `noexec` mount would make the dynamic
    /// loader print an error into every compile's stderr). `Err` says why observation is
    /// unavailable; the server then uses the conservative rules for every compile.
    pub fn install(dir: &Path) -> Result<Interposer, Unavailable> {
        let digest = blake3::hash(SHARED_OBJECT).to_hex();
        let path = dir.join(format!("observe-{}.so", &digest[..16]));
        if std::fs::read(&path).ok().as_deref() != Some(SHARED_OBJECT) {
            let mut temp = tempfile::Builder::new()
                .prefix(".observe-")
                .tempfile_in(dir)
                .map_err(|e| Unavailable::Write(dir.to_owned(), e))?;
            temp.write_all(SHARED_OBJECT)
                .and_then(|()| {
                    temp.as_file()
                        .set_permissions(std::fs::Permissions::from_mode(0o755))
                })
                .map_err(|e| Unavailable::Write(path.clone(), e))?;
            temp.persist(&path)
                .map_err(|e| Unavailable::Write(path.clone(), e.error))?;
        }
        let interposer = Interposer {
            path,
            log_dir: dir.to_owned(),
        };
        interposer.self_check()?;
        Ok(interposer)
    }

    /// Runs `/bin/sh -c :` under the interposer: it must exit 0, print nothing and log
    /// that it loaded.
    fn self_check(&self) -> Result<(), Unavailable> {
        let log = tempfile::Builder::new()
            .prefix("observe-check-")
            .tempfile_in(&self.log_dir)
            .map_err(|e| Unavailable::Write(self.log_dir.clone(), e))?;
        let out = std::process::Command::new("/bin/sh")
            .args(["-c", ":"])
            .env_clear()
            .env("LD_PRELOAD", &self.path)
            .env(LOG_VAR, log.path())
            .stdin(std::process::Stdio::null())
            .output()
            .map_err(Unavailable::Shell)?;
        let text = std::fs::read(log.path()).unwrap_or_default();
        if !out.status.success() || !out.stderr.is_empty() {
            return Err(Unavailable::CheckFailed(
                String::from_utf8_lossy(&out.stderr).trim().to_owned(),
            ));
        }
        if !text.starts_with(b"P ") {
            return Err(Unavailable::NotLoaded);
        }
        Ok(())
    }

    /// An interposer at `path` that is not written or checked: unit tests play the
    /// observed compiler themselves and write its log.
    #[cfg(test)]
    pub fn for_tests(path: &Path, log_dir: &Path) -> Interposer {
        Interposer {
            path: path.to_owned(),
            log_dir: log_dir.to_owned(),
        }
    }

    /// Starts observing one compile: a fresh log of its own, for [`Watch::apply`].
    pub fn watch(&self) -> io::Result<Watch> {
        let log = tempfile::Builder::new()
            .prefix("observe-")
            .suffix(".log")
            .tempfile_in(&self.log_dir)?;
        Ok(Watch {
            log,
            interposer: self.path.clone(),
        })
    }
}

/// One compile's log, removed when dropped.
#[derive(Debug)]
pub struct Watch {
    log: tempfile::NamedTempFile,
    interposer: PathBuf,
}

impl Watch {
    /// Puts the interposer first in the child's `LD_PRELOAD` (after it, whatever the
    /// user preloads) and names this watch's log.
    pub fn apply(&self, spec: &mut CommandSpec) {
        let preload = match spec.env_var("LD_PRELOAD") {
            Some(user) if !user.is_empty() => {
                let mut value = self.interposer.as_os_str().to_owned();
                value.push(":");
                value.push(user);
                value
            }
            _ => self.interposer.as_os_str().to_owned(),
        };
        spec.set_env("LD_PRELOAD", preload);
        spec.set_env(LOG_VAR, self.log.path());
    }

    /// Reads what the compile's processes recorded.
    pub fn finish(self) -> io::Result<Log> {
        let log = Log::parse(&std::fs::read(self.log.path())?);
        if log.malformed > 0 {
            tracing::debug!("observation log: {} malformed lines skipped", log.malformed);
        }
        Ok(log)
    }
}

/// The records of one compile, as the interposer wrote them (see `interposer.c` for the
/// format).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Log {
    /// Processes that loaded the interposer, with their parent.
    pub loaded: Vec<(u32, u32)>,
    /// Execs that went ahead: (pid, program as given to exec).
    pub execs: Vec<(u32, Vec<u8>)>,
    /// Opened for reading.
    pub read: BTreeSet<Vec<u8>>,
    /// Found by a stat, access or readlink (existence, not content, was asked).
    pub found: BTreeSet<Vec<u8>>,
    /// Opened for writing, created, renamed to, removed.
    pub written: BTreeSet<Vec<u8>>,
    /// Directories the compile made (its temp dirs).
    pub made_dirs: BTreeSet<Vec<u8>>,
    /// Looked up and not found.
    pub missing: BTreeSet<Vec<u8>>,
    /// Every value each variable was read with (None: unset).
    pub env: BTreeMap<Vec<u8>, BTreeSet<Option<Vec<u8>>>>,
    /// Lines that did not parse (a record cut short by a killed process).
    pub malformed: usize,
}

impl Log {
    /// Parses a log; a malformed line is counted, never fatal.
    pub fn parse(text: &[u8]) -> Log {
        let mut log = Log::default();
        for line in text.split(|&b| b == b'\n').filter(|l| !l.is_empty()) {
            if !log.record(line) {
                log.malformed += 1;
            }
        }
        log
    }

    fn record(&mut self, line: &[u8]) -> bool {
        let Some((&tag, rest)) = line.split_first() else {
            return false;
        };
        let Some(payload) = rest.strip_prefix(b" ") else {
            return false;
        };
        let pid = |text: &[u8]| std::str::from_utf8(text).ok()?.parse::<u32>().ok();
        match tag {
            b'P' => {
                let mut parts = payload.splitn(2, |&b| b == b' ');
                let (Some(me), Some(parent)) =
                    (parts.next().and_then(pid), parts.next().and_then(pid))
                else {
                    return false;
                };
                self.loaded.push((me, parent));
            }
            b'X' => {
                let Some(space) = payload.iter().position(|&b| b == b' ') else {
                    return false;
                };
                let Some(me) = pid(&payload[..space]) else {
                    return false;
                };
                let Some(program) = unescape(&payload[space + 1..]) else {
                    return false;
                };
                self.execs.push((me, program));
            }
            b'x' => {
                // The latest exec of that pid failed: nothing was loaded.
                let Some(me) = pid(payload) else {
                    return false;
                };
                let Some(at) = self.execs.iter().rposition(|(p, _)| *p == me) else {
                    return false;
                };
                self.execs.remove(at);
            }
            b'R' | b'S' | b'W' | b'K' | b'M' => {
                let Some(path) = unescape(payload) else {
                    return false;
                };
                if !path.starts_with(b"/") {
                    return false;
                }
                let set = match tag {
                    b'R' => &mut self.read,
                    b'S' => &mut self.found,
                    b'W' => &mut self.written,
                    b'K' => &mut self.made_dirs,
                    _ => &mut self.missing,
                };
                set.insert(path);
            }
            b'E' => {
                let Some(eq) = payload.iter().position(|&b| b == b'=') else {
                    return false;
                };
                let Some(value) = unescape(&payload[eq + 1..]) else {
                    return false;
                };
                self.env
                    .entry(payload[..eq].to_vec())
                    .or_default()
                    .insert(Some(value));
            }
            b'e' => {
                self.env.entry(payload.to_vec()).or_default().insert(None);
            }
            _ => return false,
        }
        true
    }

    /// `Err(why)` when a program of the tree ran without the interposer: an exec with no
    /// matching load, or no load by the top process (a child of `parent`).
    pub fn complete(&self, parent: u32) -> Result<(), Incomplete> {
        let Some(&(top, _)) = self.loaded.iter().find(|(_, p)| *p == parent) else {
            return Err(Incomplete::NotLoaded);
        };
        // Each exec that went ahead loads a new image, which logs again; the top process
        // logged once before any exec of its own.
        let loads = |pid: u32| {
            self.loaded.iter().filter(|(p, _)| *p == pid).count() - usize::from(pid == top)
        };
        let mut execs: HashMap<u32, usize> = HashMap::new();
        for (pid, program) in &self.execs {
            let seen = execs.entry(*pid).or_default();
            *seen += 1;
            if loads(*pid) < *seen {
                return Err(Incomplete::RanWithout(
                    String::from_utf8_lossy(program).into_owned(),
                ));
            }
        }
        Ok(())
    }

    /// What the compile read from outside itself: `outputs` and everything the compile
    /// wrote or created are left out, and so are variables set inside the process tree
    /// (a value the request's environment, `request_env`, does not have).
    ///
    /// A program exec'd by bare name (`execvp("as")`) is found on the request's `PATH`,
    /// as the exec found it. `PWD` matters only where it is another spelling of the cwd
    /// (gcc then records it in place of `getcwd`'s): it is keyed as [`CWD_MARK`] when it
    /// is the cwd itself and as [`ELSEWHERE_MARK`] when it names another directory (as
    /// under `make -C`), so checkouts that base dirs share do not split on it.
    pub fn inputs(
        &self,
        outputs: &[&Path],
        cwd: &Path,
        request_env: &[(OsString, OsString)],
    ) -> Observed {
        let own = |path: &[u8]| {
            self.written.contains(path)
                || outputs.iter().any(|o| o.as_os_str().as_bytes() == path)
                || self.made_dirs.iter().any(|dir| {
                    path.strip_prefix(dir.as_slice())
                        .is_some_and(|rest| rest.starts_with(b"/"))
                })
                || SYSTEM_PREFIXES.iter().any(|p| path.starts_with(p))
        };
        let outside = |set: &BTreeSet<Vec<u8>>| -> Vec<PathBuf> {
            set.iter()
                .filter(|p| !own(p))
                .map(|p| PathBuf::from(OsStr::from_bytes(p)))
                .filter(|p| !p.is_dir())
                .collect()
        };
        let files = outside(&self.read);
        let found = outside(&self.found.difference(&self.read).cloned().collect());
        let mut missing_dirs = HashMap::new();
        let mut absent: Vec<PathBuf> = self
            .missing
            .iter()
            .filter(|p| !own(p) && !self.read.contains(*p) && !self.found.contains(*p))
            .map(|p| highest_missing(Path::new(OsStr::from_bytes(p)), &mut missing_dirs))
            .collect();
        absent.sort();
        absent.dedup();
        let requested = |name: &[u8]| {
            request_env
                .iter()
                .rev()
                .find(|(k, _)| k.as_bytes() == name)
                .map(|(_, v)| v.as_bytes().to_vec())
        };
        let search = requested(b"PATH").unwrap_or_default();
        let mut programs: Vec<PathBuf> = self
            .execs
            .iter()
            .filter_map(|(_, program)| {
                let program = Path::new(OsStr::from_bytes(program));
                if program.is_absolute() {
                    return Some(program.to_owned());
                }
                std::env::split_paths(OsStr::from_bytes(&search))
                    .map(|dir| cwd.join(dir).join(program))
                    .find(|candidate| candidate.is_file())
            })
            .collect();
        programs.sort();
        programs.dedup();
        let env = self
            .env
            .iter()
            .filter(|(name, _)| !HANDLED_VARS.iter().any(|h| h.as_bytes() == name.as_slice()))
            .filter_map(|(name, seen)| {
                let requested = requested(name);
                // Read with the request's value (or unset as in the request): an input.
                // Only other values: set by a process of the tree itself.
                if !seen.contains(&requested) {
                    return None;
                }
                let value = match pwd_kind(requested.as_deref(), cwd) {
                    Some(mark) if name == b"PWD" => Some(mark.to_vec()),
                    _ => requested,
                };
                Some((name.clone(), value))
            })
            .collect();
        Observed {
            files,
            found,
            absent,
            programs,
            env,
        }
    }
}

/// A path as manifest variants hold it: relative when under `cwd` (so base dirs can share
/// it between checkouts), else absolute.
pub fn variant_path(path: &Path, cwd: &Path) -> Vec<u8> {
    match path.strip_prefix(cwd) {
        Ok(rel) if !rel.as_os_str().is_empty() => rel.as_os_str().as_bytes().to_vec(),
        _ => path.as_os_str().as_bytes().to_vec(),
    }
}

/// The value `PWD` is keyed with when it is the request's cwd (see [`Log::inputs`]).
pub const CWD_MARK: &[u8] = b"\0cwd";
/// The value `PWD` is keyed with when it names another directory than the cwd.
pub const ELSEWHERE_MARK: &[u8] = b"\0elsewhere";

/// [`CWD_MARK`] or [`ELSEWHERE_MARK`] for a `PWD` value, or None when it is another
/// spelling of the cwd (a symlinked path: keyed as it is).
fn pwd_kind(pwd: Option<&[u8]>, cwd: &Path) -> Option<&'static [u8]> {
    use std::os::unix::fs::MetadataExt;
    let pwd = pwd?;
    if pwd == cwd.as_os_str().as_bytes() {
        return Some(CWD_MARK);
    }
    let same = |a: &Path, b: &Path| match (std::fs::metadata(a), std::fs::metadata(b)) {
        (Ok(a), Ok(b)) => a.dev() == b.dev() && a.ino() == b.ino(),
        _ => false,
    };
    (!same(Path::new(OsStr::from_bytes(pwd)), cwd)).then_some(ELSEWHERE_MARK)
}

/// Whether a variable an earlier compile read, `name` with `value` (None: unset), has the
/// same value in this request's environment (for `PWD`'s marks: the same kind).
pub fn env_matches(
    name: &[u8],
    value: Option<&[u8]>,
    cwd: &Path,
    request_env: &[(OsString, OsString)],
) -> bool {
    let now = request_env
        .iter()
        .rev()
        .find(|(k, _)| k.as_bytes() == name)
        .map(|(_, v)| v.as_bytes());
    match value {
        Some(mark @ (CWD_MARK | ELSEWHERE_MARK)) => pwd_kind(now, cwd) == Some(mark),
        value => now == value,
    }
}

/// What a compile read from outside itself.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Observed {
    /// Files opened for reading (absolute paths; no directories), sorted.
    pub files: Vec<PathBuf>,
    /// Files only looked up, and found (the driver finding `cc1`, a `.gch` check that hit),
    /// not read: their content is keyed too, as a change there may change what runs.
    pub found: Vec<PathBuf>,
    /// Paths looked up and not found: a file appearing there may change the result.
    pub absent: Vec<PathBuf>,
    /// Programs the compile ran by path (cc1, as, ld): keyed by content, since which one
    /// runs is not in the key otherwise.
    pub programs: Vec<PathBuf>,
    /// Variables read, with the request's value (None: unset), by name.
    pub env: Vec<(Vec<u8>, Option<Vec<u8>>)>,
}

/// The highest ancestor of an absent `path` that is absent too (itself when its parent
/// exists): nothing can appear at `path` before that directory does, so one check stands
/// for every lookup under it (a header search tries each name in each include directory,
/// and many of those directories do not exist). `known` remembers directories looked at.
fn highest_missing(path: &Path, known: &mut HashMap<PathBuf, bool>) -> PathBuf {
    let mut top = path;
    while let Some(parent) = top.parent().filter(|p| p.as_os_str().len() > 1) {
        let exists = *known
            .entry(parent.to_owned())
            .or_insert_with(|| std::fs::symlink_metadata(parent).is_ok());
        if exists {
            break;
        }
        top = parent;
    }
    top.to_owned()
}

/// Undoes the interposer's escapes (`\\` and `\n`); None for a broken escape.
fn unescape(text: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(text.len());
    let mut bytes = text.iter();
    while let Some(&b) = bytes.next() {
        if b != b'\\' {
            out.push(b);
            continue;
        }
        match bytes.next()? {
            b'\\' => out.push(b'\\'),
            b'n' => out.push(b'\n'),
            _ => return None,
        }
    }
    Some(out)
}
