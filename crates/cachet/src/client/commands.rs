//! The management commands: statistics, starting and stopping the server, cache upkeep.

use super::{ClientError, Connection, Start};
use crate::config::Config;
use crate::protocol::{Request, Response};

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

pub fn stop_server(config: &Config) -> Outcome {
    match ask(config, Start::Never, Request::Shutdown) {
        Err(ClientError::NotRunning) => Ok("no server was running".into()),
        other => done(other),
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
            if remote.read_only { ", read-only" } else { "" },
            remote.timeout,
            remote.breaker_failures,
            remote.breaker_cooldown,
            remote.origin
        ));
        for (key, value, origin) in remote.shown() {
            out.push_str(&format!("      {key:<18} = {value:<40} # {origin}\n"));
        }
        // Setting a store up touches no network; what fails here, the server leaves out.
        if let Err(e) = remote.build_store() {
            out.push_str(&format!(
                "      ! cannot be used, the server leaves it out: {e}\n"
            ));
        }
    }
    if !config.local && config.remotes.is_empty() {
        out.push_str("  (none: nothing is cached)\n");
    }
    Ok(out.trim_end().to_owned())
}
