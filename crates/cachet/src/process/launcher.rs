//! Runs compiler processes under the server's jobserver.

use std::io;
use std::sync::Arc;

use std::sync::atomic::{AtomicU32, Ordering};

use cachet_jobserver::{Jobserver, Proxy};
use tokio::sync::mpsc::{self, UnboundedSender};
use tokio_util::sync::CancellationToken;

use super::{CommandSpec, OutputChunk, ProcessOutput, ProcessRunner};
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

    pub fn jobserver(&self) -> &Jobserver {
        &self.jobserver
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
                    return Err(io::Error::new(io::ErrorKind::Interrupted, "cancelled while waiting for a jobserver token"));
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
mod tests {
    use super::*;
    use crate::process::mock::{MockRunner, output};

    #[tokio::test]
    async fn compiler_children_get_a_server_owned_proxy_not_the_clients_pool() {
        // While the child runs, its two fds must be the ends of one live pipe of ours.
        let live_pipe = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let seen = live_pipe.clone();
        let mock = MockRunner::new(move |spec| {
            let ok =
                cachet_jobserver::inherited::check_pipe(spec.inherit_fds[0], spec.inherit_fds[1])
                    .is_ok();
            seen.store(ok, Ordering::SeqCst);
            Ok(output(0, b"", b""))
        });
        let jobserver = Jobserver::new(2).unwrap();
        let launcher = Launcher::new(Arc::new(mock.clone()), jobserver.clone());
        let mut spec = CommandSpec::new("/usr/bin/gcc", "/src");
        spec.args = vec!["-c".into(), "a.c".into()];
        spec.env = vec![
            ("PATH".into(), "/usr/bin".into()),
            (
                "MAKEFLAGS".into(),
                " -k -j8 --jobserver-auth=993,994".into(),
            ),
            ("MFLAGS".into(), "-k -j8 --jobserver-auth=993,994".into()),
            (
                "CARGO_MAKEFLAGS".into(),
                "-j --jobserver-fds=995,996 --jobserver-auth=995,996".into(),
            ),
        ];
        launcher
            .run_compiler(spec, None, CancellationToken::new(), None)
            .await
            .unwrap();
        assert!(
            live_pipe.load(Ordering::SeqCst),
            "the child's jobserver fds were no pipe of ours"
        );
        let calls = mock.calls();
        assert_eq!(calls.len(), 1);
        let child = &calls[0];
        assert_eq!(child.program, std::path::Path::new("/usr/bin/gcc"));
        assert_eq!(child.args, ["-c", "a.c"]);
        assert_eq!(child.cwd, std::path::Path::new("/src"));
        let [r, w] = [child.inherit_fds[0], child.inherit_fds[1]];
        assert_eq!(child.inherit_fds.len(), 2);
        assert!(![993, 994, 995, 996].contains(&r) && ![993, 994, 995, 996].contains(&w));
        assert_ne!(
            child.inherit_fds,
            jobserver.fds().to_vec(),
            "the server's own pool stays private"
        );
        let ours = format!("--jobserver-auth={r},{w}");
        for var in JOBSERVER_VARS {
            let value = child.env_var(var).unwrap().to_str().unwrap();
            assert!(value.contains(&ours), "{var}={value}");
            assert!(
                !value.contains("=993,994")
                    && !value.contains("=995,996")
                    && !value.contains("-j8"),
                "{var}={value}"
            );
        }
        assert!(
            child
                .env_var("MAKEFLAGS")
                .unwrap()
                .to_str()
                .unwrap()
                .contains("-k")
        );
        assert_eq!(child.env_var("PATH").unwrap(), "/usr/bin");
        assert_eq!(
            child.env.len(),
            4,
            "no other variable is added: {:?}",
            child.env
        );
        // The token came back when the child finished.
        assert_eq!(jobserver.stats().held, 0);
    }

    #[tokio::test]
    async fn probes_take_no_token_and_get_no_jobserver() {
        let mock = MockRunner::new(|_| Ok(output(0, b"gcc 12", b"")));
        let jobserver = Jobserver::new(1).unwrap();
        let held = jobserver.acquire().await.unwrap();
        let launcher = Launcher::new(Arc::new(mock.clone()), jobserver.clone());
        let mut spec = CommandSpec::new("/usr/bin/gcc", "/");
        spec.env = vec![("MAKEFLAGS".into(), "-j --jobserver-auth=993,994".into())];
        // Would hang if the probe waited for the only token, which we hold.
        launcher.run_probe(spec).await.unwrap();
        assert!(mock.calls()[0].env.is_empty());
        assert!(mock.calls()[0].inherit_fds.is_empty());
        drop(held);
    }

    #[tokio::test]
    async fn cancel_while_waiting_for_a_token() {
        let mock = MockRunner::new(|_| Ok(output(0, b"", b"")));
        let jobserver = Jobserver::new(1).unwrap();
        let _held = jobserver.acquire().await.unwrap();
        let launcher = Launcher::new(Arc::new(mock.clone()), jobserver);
        let cancel = CancellationToken::new();
        cancel.cancel();
        let err = launcher
            .run_compiler(CommandSpec::new("/bin/true", "/"), None, cancel, None)
            .await
            .unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::Interrupted);
        assert!(mock.calls().is_empty());
    }
}
