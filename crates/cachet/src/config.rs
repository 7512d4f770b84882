//! Configuration: built-in defaults, then the TOML file, then `CACHET_*` environment variables.
//!
//! Every value remembers where it came from, so errors can name the key and the file (or the
//! variable), and `--show-config` can say why a value is what it is.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Serialize;

pub mod execution;
pub mod remotes;

pub use crate::units::{parse_duration, parse_size};

use crate::memory::LimitSetting;

pub use execution::ExecutionConfig;
pub use remotes::RemoteConfig;
#[cfg(test)]
pub use remotes::RemoteKind;

pub const DEFAULT_CACHE_SIZE: u64 = 10 << 30;
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(600);

/// Where a configuration value came from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub enum Origin {
    Default,
    File(PathBuf),
    Env(&'static str),
    /// A variable whose name is made at run time, such as `CACHET_S3_BUCKET`.
    EnvVar(String),
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Origin::Default => write!(f, "default"),
            Origin::File(path) => write!(f, "{}", path.display()),
            Origin::Env(var) => write!(f, "environment variable {var}"),
            Origin::EnvVar(var) => write!(f, "environment variable {var}"),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("config file {path} is not valid TOML: {message}")]
    Syntax { path: PathBuf, message: String },
    #[error("config file {path}: unknown key `{key}` (known keys: {known})")]
    UnknownKey {
        path: PathBuf,
        key: String,
        known: String,
    },
    #[error("bad value for `{key}` in {origin}: {message}")]
    BadValue {
        key: &'static str,
        origin: Origin,
        message: String,
    },
    #[error("bad remote cache setting in {origin}: {message}")]
    Remote { origin: Origin, message: String },
    #[error("bad remote execution setting in {origin}: {message}")]
    Execution { origin: Origin, message: String },
    #[error("cannot find a home for the cache: set CACHET_DIR or HOME")]
    NoHome,
}

/// The effective configuration of a client or a server.
#[derive(Debug, Clone)]
pub struct Config {
    /// Root of the local disk cache.
    pub cache_dir: PathBuf,
    /// Size limit of the local disk cache, in bytes.
    pub cache_size: u64,
    /// Tokens in the server's jobserver, when set; see [`Config::jobs`].
    pub jobs_setting: Option<usize>,
    /// The server exits after this long without requests; zero means never.
    pub idle_timeout: Duration,
    /// Directory of the server's socket, lock and log.
    pub runtime_dir: PathBuf,
    /// A `tracing` filter such as `debug` or `cachet=trace`.
    pub log: Option<String>,
    /// Whether the local disk cache is level 0 (it is unless turned off).
    pub local: bool,
    /// Whether the server observes compiles with its interposer (see
    /// docs/observation.md); off, direct mode is not used and conservative rules apply.
    pub observe: bool,
    /// Shared caches after the local disk, in the order they are read.
    pub remotes: Vec<RemoteConfig>,
    /// `[execution]`: where C and C++ misses may run remotely (None: locally only).
    pub execution: Option<ExecutionConfig>,
    /// Roots whose location does not matter to the cache key (see docs/config.md, "base
    /// dirs"): normalized absolute paths, none inside another, in the order given.
    pub base_dirs: Vec<PathBuf>,
    /// The config file that was read, if any.
    pub file: Option<PathBuf>,
    /// Where each key's value came from.
    pub origins: BTreeMap<&'static str, Origin>,
    /// `memory_limit`: the memory budget of the server's compiles (None: the default share).
    pub memory_limit: Option<LimitSetting>,
    /// `memory_default`: the predicted peak of a compile never seen (bytes; None: learned
    /// per kind).
    pub memory_default: Option<u64>,
    /// `explain_key`: a team's shared key that hides values in recipes (None: a key of
    /// this machine's own, and no recipes shared through remote levels).
    pub explain_key: Option<String>,
}

const KEYS: &[&str] = &[
    "cache_dir",
    "cache_size",
    "jobs",
    "idle_timeout",
    "runtime_dir",
    "log",
    "local",
    "observe",
    "base_dirs",
    "memory_limit",
    "memory_default",
    "explain_key",
];

/// One raw setting before it is checked: its text (or TOML value) and its origin.
enum Raw {
    Toml(toml::Value),
    Text(String),
}

impl Config {
    /// Tokens in the server's jobserver: the setting, or the number of available CPUs.
    pub fn jobs(&self) -> usize {
        self.jobs_setting
            .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
    }

    /// Loads the configuration of this process.
    pub fn load() -> Result<Config, ConfigError> {
        Config::load_with(|name| std::env::var_os(name))
    }

    /// Loads the configuration with `env` standing in for the process environment.
    pub fn load_with(env: impl Fn(&str) -> Option<OsString>) -> Result<Config, ConfigError> {
        Config::load_from(env, |path| std::fs::read_to_string(path))
    }

    /// Loads the configuration with `env` for the environment and `read` for reading the
    /// config file (the fuzzer hands it arbitrary text).
    pub(crate) fn load_from(
        env: impl Fn(&str) -> Option<OsString>,
        read: impl Fn(&Path) -> std::io::Result<String>,
    ) -> Result<Config, ConfigError> {
        let env_str = |name: &str| {
            env(name)
                .map(|v| v.to_string_lossy().into_owned())
                .filter(|v| !v.is_empty())
        };
        let home = env_str("HOME").map(PathBuf::from);

        let file = match env_str("CACHET_CONFIG") {
            Some(path) => Some((PathBuf::from(path), true)),
            None => env_str("XDG_CONFIG_HOME")
                .map(PathBuf::from)
                .or_else(|| home.as_ref().map(|h| h.join(".config")))
                .map(|dir| (dir.join("cachet").join("config.toml"), false)),
        };

        let mut raw: BTreeMap<&'static str, (Raw, Origin)> = BTreeMap::new();
        let mut file_used = None;
        let mut raw_remotes = Vec::new();
        let mut raw_execution = BTreeMap::new();
        if let Some((path, explicit)) = file {
            match read(&path) {
                Ok(text) => {
                    (raw_remotes, raw_execution) = read_file_values(&path, &text, &mut raw)?;
                    file_used = Some(path);
                }
                // A missing default file is normal; a missing file the user named is not.
                Err(e) if e.kind() == std::io::ErrorKind::NotFound && !explicit => {}
                Err(source) => return Err(ConfigError::Read { path, source }),
            }
        }

        for (key, var) in [
            ("cache_dir", "CACHET_DIR"),
            ("cache_size", "CACHET_CACHE_SIZE"),
            ("jobs", "CACHET_JOBS"),
            ("idle_timeout", "CACHET_IDLE_TIMEOUT"),
            ("runtime_dir", "CACHET_RUNTIME_DIR"),
            ("log", "CACHET_LOG"),
            ("local", "CACHET_LOCAL"),
            ("observe", "CACHET_OBSERVE"),
            ("memory_limit", "CACHET_MEMORY_LIMIT"),
            ("memory_default", "CACHET_MEMORY_DEFAULT"),
            ("explain_key", "CACHET_EXPLAIN_KEY"),
        ] {
            if let Some(value) = env_str(var) {
                raw.insert(key, (Raw::Text(value), Origin::Env(var)));
            }
        }
        // Set but empty means "no base dirs", overriding the file.
        if let Some(value) = env("CACHET_BASE_DIRS") {
            let value = value.to_string_lossy().into_owned();
            raw.insert(
                "base_dirs",
                (Raw::Text(value), Origin::Env("CACHET_BASE_DIRS")),
            );
        }

        let mut origins = BTreeMap::new();
        let mut take = |key: &'static str| {
            let entry = raw.remove(key);
            let origin = entry
                .as_ref()
                .map(|(_, o)| o.clone())
                .unwrap_or(Origin::Default);
            origins.insert(key, origin.clone());
            entry.map(|(value, _)| (value, origin))
        };

        let cache_dir = match take("cache_dir") {
            Some((value, origin)) => as_path("cache_dir", value, origin)?,
            None => env_str("XDG_CACHE_HOME")
                .map(PathBuf::from)
                .or_else(|| home.as_ref().map(|h| h.join(".cache")))
                .ok_or(ConfigError::NoHome)?
                .join("cachet"),
        };
        let cache_size = match take("cache_size") {
            Some((value, origin)) => as_size("cache_size", value, origin)?,
            None => DEFAULT_CACHE_SIZE,
        };
        // The default (the CPUs) is found only when asked: every compile's client loads the
        // configuration, and only the server needs it.
        let jobs_setting = match take("jobs") {
            Some((value, origin)) => Some(as_jobs(value, origin)?),
            None => None,
        };
        let idle_timeout = match take("idle_timeout") {
            Some((value, origin)) => as_duration("idle_timeout", value, origin)?,
            None => DEFAULT_IDLE_TIMEOUT,
        };
        let runtime_dir = match take("runtime_dir") {
            Some((value, origin)) => as_path("runtime_dir", value, origin)?,
            None => match env_str("XDG_RUNTIME_DIR") {
                Some(dir) if Path::new(&dir).is_dir() => PathBuf::from(dir).join("cachet"),
                _ => cache_dir.join("run"),
            },
        };
        let log = match take("log") {
            Some((Raw::Text(s), _)) => Some(s),
            Some((Raw::Toml(toml::Value::String(s)), _)) => Some(s),
            Some((_, origin)) => {
                return Err(ConfigError::BadValue {
                    key: "log",
                    origin,
                    message: "expected a string such as \"debug\"".into(),
                });
            }
            None => None,
        };

        let mut flag = |key: &'static str| -> Result<bool, ConfigError> {
            Ok(match take(key) {
                Some((Raw::Toml(toml::Value::Boolean(b)), _)) => b,
                Some((Raw::Text(s), origin)) => crate::units::parse_bool(&s)
                    .ok_or_else(|| bad(key, origin, format!("`{s}` is not true or false")))?,
                Some((_, origin)) => return Err(bad(key, origin, "expected true or false")),
                None => true,
            })
        };
        let local = flag("local")?;
        let observe = flag("observe")?;
        let remotes = remotes::finish(raw_remotes, &env_str)?;
        let execution = execution::finish(raw_execution, &env_str)?;
        let base_dirs = match take("base_dirs") {
            Some((value, origin)) => as_base_dirs(value, origin)?,
            None => Vec::new(),
        };

        let memory_limit = match take("memory_limit") {
            Some((value, origin)) => Some(as_memory_limit(value, origin)?),
            None => None,
        };
        let memory_default = match take("memory_default") {
            Some((value, origin)) => Some(as_size("memory_default", value, origin)?),
            None => None,
        };

        let explain_key = match take("explain_key") {
            Some((Raw::Text(s), _)) | Some((Raw::Toml(toml::Value::String(s)), _)) => Some(s),
            Some((_, origin)) => return Err(bad("explain_key", origin, "expected a string")),
            None => None,
        };

        Ok(Config {
            explain_key,
            memory_limit,
            memory_default,
            base_dirs,
            cache_dir,
            cache_size,
            jobs_setting,
            idle_timeout,
            runtime_dir,
            log,
            local,
            observe,
            remotes,
            execution,
            file: file_used,
            origins,
        })
    }
}

/// The `[[remote]]` tables of a file, and its `[execution]` settings.
type FileTables = (Vec<remotes::RawRemote>, BTreeMap<String, remotes::Setting>);

/// Reads the plain keys into `raw`, and returns the `[[remote]]` and `[execution]` tables.
fn read_file_values(
    path: &Path,
    text: &str,
    raw: &mut BTreeMap<&'static str, (Raw, Origin)>,
) -> Result<FileTables, ConfigError> {
    let mut found_remotes = Vec::new();
    let mut found_execution = BTreeMap::new();
    let table: toml::Table = text
        .parse()
        .map_err(|e: toml::de::Error| ConfigError::Syntax {
            path: path.to_owned(),
            message: e.message().to_owned(),
        })?;
    for (key, value) in table {
        if key == "remote" {
            found_remotes = remotes::from_file(value, &Origin::File(path.to_owned()))?;
            continue;
        }
        if key == "execution" {
            found_execution = execution::from_file(value, &Origin::File(path.to_owned()))?;
            continue;
        }
        let Some(&known) = KEYS.iter().find(|k| **k == key) else {
            return Err(ConfigError::UnknownKey {
                path: path.to_owned(),
                key,
                known: format!("{}, [[remote]], [execution]", KEYS.join(", ")),
            });
        };
        raw.insert(known, (Raw::Toml(value), Origin::File(path.to_owned())));
    }
    Ok((found_remotes, found_execution))
}

fn bad(key: &'static str, origin: Origin, message: impl Into<String>) -> ConfigError {
    ConfigError::BadValue {
        key,
        origin,
        message: message.into(),
    }
}

fn as_path(key: &'static str, value: Raw, origin: Origin) -> Result<PathBuf, ConfigError> {
    let text = match value {
        Raw::Text(s) | Raw::Toml(toml::Value::String(s)) => s,
        Raw::Toml(_) => return Err(bad(key, origin, "expected a path string")),
    };
    if text.is_empty() {
        return Err(bad(key, origin, "the path is empty"));
    }
    let path = PathBuf::from(text);
    if !path.is_absolute() {
        return Err(bad(key, origin, "the path must be absolute"));
    }
    Ok(path)
}

/// A list of absolute directories: a TOML array of strings, or colon-separated text.
fn as_base_dirs(value: Raw, origin: Origin) -> Result<Vec<PathBuf>, ConfigError> {
    const KEY: &str = "base_dirs";
    let items: Vec<String> = match value {
        Raw::Text(s) => s
            .split(':')
            .filter(|p| !p.is_empty())
            .map(str::to_owned)
            .collect(),
        Raw::Toml(toml::Value::Array(items)) => items
            .into_iter()
            .map(|v| match v {
                toml::Value::String(s) => Ok(s),
                other => Err(bad(
                    KEY,
                    origin.clone(),
                    format!("expected path strings, found {other}"),
                )),
            })
            .collect::<Result<_, _>>()?,
        Raw::Toml(_) => {
            return Err(bad(
                KEY,
                origin,
                "expected an array of absolute paths such as [\"/home/ci/work\"]",
            ));
        }
    };
    let mut dirs: Vec<PathBuf> = Vec::new();
    for item in items {
        let dir =
            normalize_base_dir(&item).map_err(|why| bad(KEY, origin.clone(), why.to_string()))?;
        // Nested base dirs would give one path two relative forms; the key must have one.
        if let Some(other) = dirs
            .iter()
            .find(|d| d.starts_with(&dir) || dir.starts_with(d))
        {
            return Err(bad(
                KEY,
                origin,
                format!(
                    "{} and {} overlap; base dirs must not contain one another",
                    other.display(),
                    dir.display()
                ),
            ));
        }
        dirs.push(dir);
    }
    Ok(dirs)
}

/// Why a base dir (as written) is refused.
#[derive(Debug, thiserror::Error)]
enum BadBaseDir {
    #[error("`{0}` is not an absolute path")]
    Relative(String),
    #[error("`{0}` contains `..`")]
    Parent(String),
    #[error("`/` cannot be a base dir (every path would lie under it)")]
    Root,
}

/// Absolute, no `..`, no `.` or doubled or trailing slashes; not `/` itself.
fn normalize_base_dir(text: &str) -> Result<PathBuf, BadBaseDir> {
    if !text.starts_with('/') {
        return Err(BadBaseDir::Relative(text.to_owned()));
    }
    let mut out = String::new();
    for part in text.split('/') {
        match part {
            "" | "." => {}
            ".." => return Err(BadBaseDir::Parent(text.to_owned())),
            part => {
                out.push('/');
                out.push_str(part);
            }
        }
    }
    if out.is_empty() {
        return Err(BadBaseDir::Root);
    }
    Ok(PathBuf::from(out))
}

fn as_jobs(value: Raw, origin: Origin) -> Result<usize, ConfigError> {
    let n = match value {
        Raw::Toml(toml::Value::Integer(n)) => n,
        Raw::Text(s) => s
            .trim()
            .parse::<i64>()
            .map_err(|_| bad("jobs", origin.clone(), format!("`{s}` is not a number")))?,
        Raw::Toml(_) => return Err(bad("jobs", origin, "expected a whole number")),
    };
    // The jobserver pipe holds one byte per token; keep far below the pipe's capacity.
    if !(1..=4096).contains(&n) {
        return Err(bad(
            "jobs",
            origin,
            format!("{n} is not between 1 and 4096"),
        ));
    }
    Ok(n as usize)
}

fn as_size(key: &'static str, value: Raw, origin: Origin) -> Result<u64, ConfigError> {
    match value {
        Raw::Toml(toml::Value::Integer(n)) if n > 0 => Ok(n as u64),
        Raw::Text(s) | Raw::Toml(toml::Value::String(s)) => {
            parse_size(&s).filter(|n| *n > 0).ok_or_else(|| {
                bad(
                    key,
                    origin,
                    format!("`{s}` is not a size such as 500M or 10G"),
                )
            })
        }
        Raw::Toml(_) => Err(bad(key, origin, "expected a positive size such as \"10G\"")),
    }
}

fn as_memory_limit(value: Raw, origin: Origin) -> Result<LimitSetting, ConfigError> {
    let text = match value {
        Raw::Toml(toml::Value::Integer(n)) if n > 0 => return Ok(LimitSetting::Bytes(n as u64)),
        Raw::Text(s) | Raw::Toml(toml::Value::String(s)) => s,
        Raw::Toml(_) => {
            return Err(bad(
                "memory_limit",
                origin,
                "expected a size such as \"12G\", a share such as \"80%\", or \"off\"",
            ));
        }
    };
    LimitSetting::parse(&text).ok_or_else(|| {
        bad(
            "memory_limit",
            origin,
            format!("`{text}` is not a size such as 12G, a share such as 80%, or off"),
        )
    })
}

fn as_duration(key: &'static str, value: Raw, origin: Origin) -> Result<Duration, ConfigError> {
    match value {
        Raw::Toml(toml::Value::Integer(n)) if n >= 0 => Ok(Duration::from_secs(n as u64)),
        Raw::Text(s) | Raw::Toml(toml::Value::String(s)) => parse_duration(&s).ok_or_else(|| {
            bad(
                key,
                origin,
                format!("`{s}` is not a duration such as 600, 90s or 10m"),
            )
        }),
        Raw::Toml(_) => Err(bad(
            key,
            origin,
            "expected seconds, or a string such as \"10m\"",
        )),
    }
}

#[cfg(test)]
mod tests;
