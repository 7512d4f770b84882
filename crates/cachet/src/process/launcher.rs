//! Runs compiler processes under the server's jobserver.

use std::io;
use std::sync::Arc;

use std::sync::atomic::{AtomicU32, Ordering};

use cachet_jobserver::{Jobserver, Proxy};
use tokio::sync::mpsc::{self, UnboundedSender};
use tokio_util::sync::CancellationToken;

use super::{Cancelled, CommandSpec, OutputChunk, ProcessOutput, ProcessRunner};
use crate::stats::{Stats, millis};

/// Variables through which make, cargo and rustc find a jobserver.
pub const JOBSERVER_VARS: [&str; 3] = cachet_jobserver::ENV_VARS;

#[derive(Clone)]
pub struct Launcher {
    runner: Arc<dyn ProcessRunner>,
    jobserver: Jobserver,
    stats: Arc<Stats>,
}

impl Launcher {
    pub fn new(runner: Arc<dyn ProcessRunner>, jobserver: Jobserver) -> Launcher {
        Launcher {
            runner,
            jobserver,
            stats: Arc::default(),
        }
    }

    /// Counts what the proxies do into `stats`.
    pub fn with_stats(mut self, stats: Arc<Stats>) -> Launcher {
        self.stats = stats;
        self
    }

    /// Runs one compiler process of a compile.
    ///
    /// The process runs under one token of the server's pool (and under the calling
    /// build's implicit token, which its client holds). Its extra parallelism comes from a
    /// private proxy pipe that is fed only with tokens held from every level at once: the
    /// build's pool (`build`, when the client passed one) and the server's. The server's
    /// token goes back once the child has exited, and the proxy takes back whatever the
    /// child still held, however it ended.
    pub async fn run_compiler(
        &self,
        mut spec: CommandSpec,
        stream: Option<UnboundedSender<OutputChunk>>,
        cancel: CancellationToken,
        build: Option<&Jobserver>,
    ) -> io::Result<ProcessOutput> {
        // A build that joined our own pool (through its fifo) already holds one of our
        // tokens for this job: take no second one, and count our pool once.
        let own_pool = build.is_some_and(|b| b.same_pool(&self.jobserver));
        let build = build.filter(|_| !own_pool);
        let build_id = if own_pool {
            "this server's pool (jobserver-env)".to_owned()
        } else {
            build.map_or_else(|| "no jobserver".to_owned(), Jobserver::id)
        };
        let token = if own_pool {
            None
        } else {
            tokio::select! {
                token = self.jobserver.acquire() => Some(token?),
                _ = cancel.cancelled() => {
                    return Err(Cancelled::error("while waiting for a jobserver token"));
                }
            }
        };
        let proxy = Proxy::new()?;
        let env = proxy.child_env(spec.env_var("MAKEFLAGS").map(|v| v.as_os_str()));
        give_jobserver(&mut spec, env, proxy.fds());
        let levels: Vec<Jobserver> = build
            .into_iter()
            .cloned()
            .chain([self.jobserver.clone()])
            .collect();

        // Learn the child's pid (for the proxy's demand check) from the runner's stream.
        let pid = Arc::new(AtomicU32::new(0));
        let (tx, mut rx) = mpsc::unbounded_channel();
        let seen = pid.clone();
        let forward = tokio::spawn(async move {
            while let Some(chunk) = rx.recv().await {
                if let OutputChunk::Started(p) = chunk {
                    seen.store(p, Ordering::SeqCst);
                }
                if let Some(stream) = &stream {
                    let _ = stream.send(chunk);
                }
            }
        });
        let child = || Some(pid.load(Ordering::SeqCst)).filter(|p| *p != 0);
        let run = self.runner.run(spec, Some(tx), cancel);
        let started = std::time::Instant::now();
        let (result, report) = proxy.serve(&levels, child, run).await;
        let _ = forward.await;
        // The runner returns only after the child is reaped, so the token is free now.
        let main_time = if token.is_some() {
            started.elapsed()
        } else {
            Default::default()
        };
        drop(token);
        self.stats.update(|c| {
            c.proxy_grants += report.grants;
            c.peak_extra_tokens = c.peak_extra_tokens.max(report.peak);
            c.proxy_reclaims += report.reclaims;
            c.tokens_recovered += report.recovered;
            c.idle_token_ms += millis(report.idle);
            *c.token_ms_by_build.entry(build_id).or_default() += millis(main_time + report.granted);
            // Bounded: a long-lived server sees many builds; keep the busiest.
            if c.token_ms_by_build.len() > 32 {
                let smallest = c
                    .token_ms_by_build
                    .iter()
                    .min_by_key(|(_, ms)| **ms)
                    .map(|(k, _)| k.clone());
                if let Some(key) = smallest {
                    c.token_ms_by_build.remove(&key);
                }
            }
        });
        result
    }

    /// Runs a cheap probe (such as `--version`): no token, and no jobserver at all.
    pub async fn run_probe(&self, mut spec: CommandSpec) -> io::Result<ProcessOutput> {
        for var in JOBSERVER_VARS {
            spec.remove_env(var);
        }
        spec.inherit_fds.clear();
        self.runner.run(spec, None, CancellationToken::new()).await
    }
}

/// Replaces whatever jobserver the client's environment named with `env` and `fds`.
fn give_jobserver(spec: &mut CommandSpec, env: Vec<(String, std::ffi::OsString)>, fds: [i32; 2]) {
    for var in JOBSERVER_VARS {
        spec.remove_env(var);
    }
    for (name, value) in env {
        spec.set_env(name, value);
    }
    spec.inherit_fds = fds.to_vec();
}

#[cfg(test)]
mod tests;
