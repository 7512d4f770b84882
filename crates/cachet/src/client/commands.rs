//! The management commands: statistics, starting and stopping the server, cache upkeep.

use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use super::{ClientError, Connection, Start};
use crate::config::Config;
use crate::protocol::{Explained, Request, Response};

/// What a management command tells the user; the caller prints it and picks the exit code.
pub type Outcome = Result<String, CommandError>;

/// Why a management command failed.
#[derive(Debug, thiserror::Error)]
pub enum CommandError {
    /// The server could not be reached or started, or the connection failed.
    #[error(transparent)]
    Client(#[from] ClientError),
    /// The server refused (its message).
    #[error("{0}")]
    Server(String),
    /// The server answered with something this command does not expect.
    #[error("unexpected answer from the server: {0:?}")]
    Unexpected(Box<Response>),
    /// The statistics could not be written as JSON.
    #[error("{0}")]
    Json(#[from] serde_json::Error),
    /// The server's pool has no fifo to join.
    #[error("the server's pool has no fifo")]
    NoFifo,
}

fn ask(config: &Config, start: Start, request: Request) -> Result<Response, ClientError> {
    let mut connection = Connection::open(config, start, &request)?;
    connection.receive()
}

fn done(result: Result<Response, ClientError>) -> Outcome {
    match result {
        Ok(Response::Done { message }) => Ok(message),
        Ok(Response::Error(message)) => Err(CommandError::Server(message)),
        Ok(other) => Err(CommandError::Unexpected(Box::new(other))),
        Err(e) => Err(e.into()),
    }
}

pub fn show_stats(config: &Config, json: bool) -> Outcome {
    match ask(config, Start::IfNeeded, Request::Stats) {
        Ok(Response::Stats(snapshot)) if json => Ok(serde_json::to_string_pretty(&snapshot)?),
        Ok(Response::Stats(snapshot)) => Ok(snapshot.to_text().trim_end().to_owned()),
        other => done(other),
    }
}

pub fn zero_stats(config: &Config) -> Outcome {
    done(ask(config, Start::IfNeeded, Request::ZeroStats))
}

pub fn start_server(config: &Config) -> Outcome {
    match ask(config, Start::IfNeeded, Request::Stats) {
        Ok(Response::Stats(snapshot)) => Ok(format!(
            "cachet server running (pid {}, runtime dir {})",
            snapshot.server_pid, snapshot.runtime_dir
        )),
        other => done(other),
    }
}

/// Stops the server and returns once it has exited (its answer comes before), so a
/// server started next does not find the old one still holding the runtime dir.
pub fn stop_server(config: &Config) -> Outcome {
    let stopped = match ask(config, Start::Never, Request::Shutdown) {
        Err(ClientError::NotRunning) => Ok("no server was running".into()),
        other => done(other),
    }?;
    match super::connect::wait_until_stopped(config)? {
        true => Ok(stopped),
        false => Err(CommandError::Server(format!(
            "{stopped}, but it had not exited after {:?}",
            super::connect::EXIT_TIMEOUT
        ))),
    }
}

pub fn flush(config: &Config) -> Outcome {
    match ask(config, Start::Never, Request::Flush) {
        Err(ClientError::NotRunning) => Ok("no server was running: nothing to flush".into()),
        other => done(other),
    }
}

pub fn clear(config: &Config) -> Outcome {
    done(ask(config, Start::IfNeeded, Request::ClearCache))
}

pub fn cleanup(config: &Config) -> Outcome {
    done(ask(config, Start::IfNeeded, Request::CleanupCache))
}

/// `cachet explain`'s arguments.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExplainArgs {
    /// Outputs to explain (as given).
    pub paths: Vec<PathBuf>,
    /// With no paths: how many of the last misses (default 10).
    pub last: u32,
    /// Print JSON.
    pub json: bool,
}

/// How `cachet explain` is used.
pub const EXPLAIN_USAGE: &str = "usage: cachet explain [PATH...] [--last N] [--json]
  Says why the compile of each output (object, rlib, binary, .rmeta) missed last time,
  or, with no PATH, why the server's last N misses (default 10) missed.";

impl ExplainArgs {
    /// Parses the words after `explain`; Err is the usage text, with what was wrong.
    pub fn parse(words: &[std::ffi::OsString]) -> Result<ExplainArgs, String> {
        let mut args = ExplainArgs {
            paths: Vec::new(),
            last: 10,
            json: false,
        };
        let mut words = words.iter();
        while let Some(word) = words.next() {
            let text = word.to_string_lossy();
            let number = |n: Option<&str>| {
                n.and_then(|n| n.parse::<u32>().ok()).ok_or_else(|| {
                    format!("cachet explain: --last wants a number\n{EXPLAIN_USAGE}")
                })
            };
            match text.as_ref() {
                "--json" => args.json = true,
                "--last" => args.last = number(words.next().map(|w| w.to_str().unwrap_or("")))?,
                "-h" | "--help" => return Err(EXPLAIN_USAGE.into()),
                _ if text.starts_with("--last=") => {
                    args.last = number(text.strip_prefix("--last="))?
                }
                _ if text.starts_with('-') => {
                    return Err(format!(
                        "cachet explain: unknown option {text}\n{EXPLAIN_USAGE}"
                    ));
                }
                _ => args.paths.push(PathBuf::from(word)),
            }
        }
        Ok(args)
    }
}

/// `cachet trace`'s arguments.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TraceArgs {
    /// Where to write the trace.
    pub output: PathBuf,
    /// Only the last this long (None: everything kept since `--zero-stats`).
    pub since: Option<std::time::Duration>,
}

/// How `cachet trace` and `cachet report` are used.
pub const TRACE_USAGE: &str = "usage: cachet trace --output FILE [--since DURATION]
       cachet report --output FILE.html [--since DURATION]
  trace writes the server's recent compiles, compiler runs and token and memory counters
  as a Chrome trace (open it in ui.perfetto.dev or chrome://tracing); report writes the
  same build as one self-contained HTML page. DURATION: 90s, 10m, 1h.";

impl TraceArgs {
    /// Parses the words after `trace`; Err is the usage text, with what was wrong.
    pub fn parse(words: &[std::ffi::OsString]) -> Result<TraceArgs, String> {
        let mut output = None;
        let mut since = None;
        let mut words = words.iter();
        let bad = |what: &str| format!("cachet: {what}\n{TRACE_USAGE}");
        while let Some(word) = words.next() {
            let text = word.to_string_lossy().into_owned();
            let (flag, inline) = match text.split_once('=') {
                Some((flag, value)) if flag.starts_with("--") => {
                    (flag.to_owned(), Some(value.to_owned()))
                }
                _ => (text.clone(), None),
            };
            let mut value = || {
                inline
                    .clone()
                    .or_else(|| words.next().map(|w| w.to_string_lossy().into_owned()))
                    .ok_or_else(|| bad(&format!("{flag} wants a value")))
            };
            match flag.as_str() {
                "--output" | "-o" => output = Some(PathBuf::from(value()?)),
                "--since" => {
                    let text = value()?;
                    since = Some(
                        crate::units::parse_duration(&text)
                            .ok_or_else(|| bad(&format!("`{text}` is not a duration")))?,
                    );
                }
                "-h" | "--help" => return Err(TRACE_USAGE.into()),
                _ => return Err(bad(&format!("unknown argument {text}"))),
            }
        }
        let output = output.ok_or_else(|| bad("--output is required"))?;
        Ok(TraceArgs { output, since })
    }
}

/// Writes the server's timeline: `cachet trace`, or with `report` `cachet report`.
pub fn trace(config: &Config, args: &TraceArgs, report: bool) -> Outcome {
    let output =
        std::env::current_dir().map_or_else(|_| args.output.clone(), |d| d.join(&args.output));
    let (output, since_secs) = (
        output.as_os_str().as_bytes().to_vec(),
        args.since.map_or(0, |d| d.as_secs().max(1)),
    );
    let request = if report {
        Request::Report { output, since_secs }
    } else {
        Request::Trace { output, since_secs }
    };
    done(ask(config, Start::IfNeeded, request))
}

/// The compiled file behind `path`: absolute, and for cargo's uplifted artifacts
/// (`target/debug/app`, a hard link) the `deps/app-<hash>` it links to.
fn compiled_file(path: &Path) -> PathBuf {
    let absolute = std::env::current_dir().map_or_else(|_| path.to_owned(), |d| d.join(path));
    let absolute = std::fs::canonicalize(&absolute).unwrap_or(absolute);
    if let Ok(meta) = std::fs::metadata(&absolute)
        && meta.nlink() > 1
        && let Some(deps) = absolute.parent().map(|p| p.join("deps"))
        && let Ok(entries) = std::fs::read_dir(&deps)
    {
        for entry in entries.flatten() {
            if let Ok(other) = entry.metadata()
                && other.ino() == meta.ino()
                && other.dev() == meta.dev()
            {
                return entry.path();
            }
        }
    }
    absolute
}

/// Why compiles missed: `cachet explain`.
pub fn explain(config: &Config, args: &ExplainArgs) -> Outcome {
    let paths: Vec<PathBuf> = args.paths.iter().map(|p| compiled_file(p)).collect();
    let request = Request::Explain {
        paths: paths
            .iter()
            .map(|p| p.as_os_str().as_bytes().to_vec())
            .collect(),
        last: args.last,
    };
    let found = match ask(config, Start::IfNeeded, request) {
        Ok(Response::Explanations(found)) => found,
        other => return done(other),
    };
    if args.json {
        let list: Vec<serde_json::Value> = found
            .iter()
            .map(|(path, e)| {
                serde_json::json!({
                    "output": String::from_utf8_lossy(path),
                    "explanation": e,
                })
            })
            .collect();
        return Ok(serde_json::to_string_pretty(&list)?);
    }
    if found.is_empty() {
        return Ok("no misses since the server started".into());
    }
    let now = crate::units::unix_now();
    let mut out = String::new();
    for (path, explained) in found {
        let path = String::from_utf8_lossy(&path);
        match explained {
            Some(Explained {
                at,
                language,
                slot,
                causes,
            }) => {
                let ago = crate::units::ago(now.saturating_sub(at));
                if path.is_empty() {
                    out.push_str(&format!("{language}: {slot}, missed {ago}:\n"));
                } else {
                    out.push_str(&format!("{path} ({language}: {slot}), missed {ago}:\n"));
                }
                for cause in causes {
                    out.push_str(&format!("  {cause}\n"));
                }
            }
            None => out.push_str(&format!(
                "{path}: no miss of it is known (its last compile was a hit, ran before \
                 explanations were kept, or did not go through cachet)\n"
            )),
        }
    }
    Ok(out.trim_end().to_owned())
}

/// Shell settings that let make 4.4+, ninja 1.13, cargo or any jobserver client join the
/// server's pool: `eval "$(cachet jobserver-env)"`.
pub fn jobserver_env(config: &Config) -> Outcome {
    match ask(config, Start::IfNeeded, Request::Stats) {
        Ok(Response::Stats(snapshot)) => {
            let fifo = snapshot.jobserver.fifo.ok_or(CommandError::NoFifo)?;
            // Single quotes keep a path with spaces whole; a quote in it is closed and escaped.
            let value = format!(" -j --jobserver-auth=fifo:{fifo}").replace('\'', "'\\''");
            Ok(format!(
                "MAKEFLAGS='{value}'\nCARGO_MAKEFLAGS='{value}'\nexport MAKEFLAGS CARGO_MAKEFLAGS"
            ))
        }
        other => done(other),
    }
}

/// Whether a store says up front that it takes no writes (a REAPI server's capabilities),
/// asked within `timeout`; stores that cannot say answer at once, without a call.
fn ask_refuses_writes(
    store: &dyn crate::cache::Storage,
    timeout: std::time::Duration,
) -> Option<String> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .ok()?;
    runtime.block_on(async {
        tokio::time::timeout(timeout, store.ask_refuses_writes())
            .await
            .unwrap_or_else(|_| Some(format!("the server did not answer within {timeout:?}")))
    })
}

/// The effective configuration and where each value came from.
pub fn show_config(config: &Config) -> Outcome {
    let origin = |key: &str| {
        config
            .origins
            .get(key)
            .map(|o| o.to_string())
            .unwrap_or_default()
    };
    let rows = [
        ("cache_dir", config.cache_dir.display().to_string()),
        ("cache_size", config.cache_size.to_string()),
        ("jobs", config.jobs().to_string()),
        (
            "idle_timeout",
            format!("{}s", config.idle_timeout.as_secs()),
        ),
        ("runtime_dir", config.runtime_dir.display().to_string()),
        (
            "memory_limit",
            match config.memory_limit {
                None => "(default: 80% of RAM or the cgroup limit)".into(),
                Some(crate::memory::LimitSetting::Off) => "off".into(),
                Some(crate::memory::LimitSetting::Share(s)) => format!("{}%", s * 100.0),
                Some(crate::memory::LimitSetting::Bytes(b)) => b.to_string(),
            },
        ),
        (
            "explain_key",
            match config.explain_key {
                Some(_) => "**** (recipes are shared through remotes with explain = true)".into(),
                None => "(none: this machine's own; recipes stay local)".into(),
            },
        ),
        (
            "memory_default",
            config
                .memory_default
                .map_or_else(|| "(learned per kind)".into(), |b| b.to_string()),
        ),
        ("log", config.log.clone().unwrap_or_else(|| "(off)".into())),
        (
            "base_dirs",
            if config.base_dirs.is_empty() {
                "(none)".into()
            } else {
                config
                    .base_dirs
                    .iter()
                    .map(|d| d.display().to_string())
                    .collect::<Vec<_>>()
                    .join(":")
            },
        ),
    ];
    let mut out = format!(
        "config file: {}\n",
        config
            .file
            .as_ref()
            .map_or("(none)".into(), |p| p.display().to_string())
    );
    for (key, value) in rows {
        out.push_str(&format!("{key:<13} = {value:<40} # {}\n", origin(key)));
    }
    for (key, value) in [("local", config.local), ("observe", config.observe)] {
        out.push_str(&format!("{key:<13} = {value:<40} # {}\n", origin(key)));
    }
    out.push_str("\ncache levels, in read order:\n");
    if config.local {
        out.push_str(&format!(
            "  0 local (disk at {})\n",
            config.cache_dir.display()
        ));
    }
    for (n, remote) in config.remotes.iter().enumerate() {
        let index = n + usize::from(config.local);
        out.push_str(&format!(
            "  {index} {} ({}{}), timeout {:?}, breaker after {} failures for {:?}  # declared in {}\n",
            remote.name,
            remote.kind.name(),
            match (remote.read_only, remote.explain) {
                (true, true) => ", read-only, shares explain recipes",
                (true, false) => ", read-only",
                (false, true) => ", shares explain recipes",
                (false, false) => "",
            },
            remote.timeout,
            remote.breaker_failures,
            remote.breaker_cooldown,
            remote.origin
        ));
        for (key, value, origin) in remote.shown() {
            out.push_str(&format!("      {key:<18} = {value:<40} # {origin}\n"));
        }
        if remote.explain && config.explain_key.is_none() {
            out.push_str(
                "      ! explain = true needs explain_key: no recipes are shared without it\n",
            );
        }
        // Setting a store up touches no network; what fails here, the server leaves out.
        match remote.build_store() {
            Err(e) => out.push_str(&format!(
                "      ! cannot be used, the server leaves it out: {e}\n"
            )),
            Ok(store) => {
                if let Some(line) = ask_refuses_writes(store.as_ref(), remote.timeout) {
                    out.push_str(&format!("      ! {line}\n"));
                }
            }
        }
    }
    if !config.local && config.remotes.is_empty() {
        out.push_str("  (none: nothing is cached)\n");
    }
    match &config.execution {
        None => out.push_str("\nRemote execution: off (no [execution] endpoint)\n"),
        Some(execution) => {
            let s = &execution.settings;
            out.push_str(&format!(
                "\nRemote execution of C and C++ misses: at most {} in flight, timeout {:?}, toolchain {}{}\n",
                s.max_in_flight,
                s.timeout,
                if execution.upload_toolchain { "uploaded" } else { "on the workers" },
                if execution.forbid_local { ", local compiles forbidden (test switch)" } else { "" },
            ));
            for (key, value, origin) in &execution.shown {
                out.push_str(&format!("      {key:<18} = {value:<40} # {origin}\n"));
            }
        }
    }
    Ok(out.trim_end().to_owned())
}
