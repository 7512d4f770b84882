//! Runs compiler processes under the server's jobserver.

use std::io;
use std::sync::Arc;

use cachet_jobserver::Jobserver;
use tokio::sync::mpsc::UnboundedSender;
use tokio_util::sync::CancellationToken;

use super::{CommandSpec, OutputChunk, ProcessOutput, ProcessRunner};

/// Variables through which make, cargo and rustc find a jobserver.
pub const JOBSERVER_VARS: [&str; 3] = cachet_jobserver::ENV_VARS;

#[derive(Clone)]
pub struct Launcher {
    runner: Arc<dyn ProcessRunner>,
    jobserver: Jobserver,
}

impl Launcher {
    pub fn new(runner: Arc<dyn ProcessRunner>, jobserver: Jobserver) -> Launcher {
        Launcher { runner, jobserver }
    }

    pub fn jobserver(&self) -> &Jobserver {
        &self.jobserver
    }

    /// Runs one compiler process of a compile: waits for a token (giving up if `cancel`
    /// fires first), hands the child the server's jobserver in place of whatever the client
    /// carried, and gives the token back once the child has exited, however it ended.
    pub async fn run_compiler(
        &self,
        mut spec: CommandSpec,
        stream: Option<UnboundedSender<OutputChunk>>,
        cancel: CancellationToken,
    ) -> io::Result<ProcessOutput> {
        let token = tokio::select! {
            token = self.jobserver.acquire() => token?,
            _ = cancel.cancelled() => {
                return Err(io::Error::new(io::ErrorKind::Interrupted, "cancelled while waiting for a jobserver token"));
            }
        };
        self.give_jobserver(&mut spec);
        let result = self.runner.run(spec, stream, cancel).await;
        // The runner returns only after the child is reaped, so the token is free now.
        drop(token);
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

    fn give_jobserver(&self, spec: &mut CommandSpec) {
        let inherited = spec.env_var("MAKEFLAGS").cloned();
        for var in JOBSERVER_VARS {
            spec.remove_env(var);
        }
        for (name, value) in self.jobserver.child_env(inherited.as_deref()) {
            spec.set_env(name, value);
        }
        spec.inherit_fds = self.jobserver.fds().to_vec();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::process::mock::{MockRunner, output};

    #[tokio::test]
    async fn compiler_children_get_the_servers_jobserver_not_the_clients() {
        let mock = MockRunner::new(|_| Ok(output(0, b"", b"")));
        let jobserver = Jobserver::new(2).unwrap();
        let [r, w] = jobserver.fds();
        let launcher = Launcher::new(Arc::new(mock.clone()), jobserver.clone());
        let mut spec = CommandSpec::new("/usr/bin/gcc", "/src");
        spec.args = vec!["-c".into(), "a.c".into()];
        spec.env = vec![
            ("PATH".into(), "/usr/bin".into()),
            ("MAKEFLAGS".into(), " -k -j8 --jobserver-auth=3,4".into()),
            ("MFLAGS".into(), "-k -j8 --jobserver-auth=3,4".into()),
            (
                "CARGO_MAKEFLAGS".into(),
                "-j --jobserver-fds=5,6 --jobserver-auth=5,6".into(),
            ),
        ];
        launcher
            .run_compiler(spec, None, CancellationToken::new())
            .await
            .unwrap();
        let calls = mock.calls();
        assert_eq!(calls.len(), 1);
        let child = &calls[0];
        assert_eq!(child.program, std::path::Path::new("/usr/bin/gcc"));
        assert_eq!(child.args, ["-c", "a.c"]);
        assert_eq!(child.cwd, std::path::Path::new("/src"));
        assert_eq!(child.inherit_fds, vec![r, w]);
        let ours = format!("--jobserver-auth={r},{w}");
        for var in JOBSERVER_VARS {
            let value = child.env_var(var).unwrap().to_str().unwrap();
            assert!(value.contains(&ours), "{var}={value}");
            assert!(
                !value.contains("=3,4") && !value.contains("=5,6") && !value.contains("-j8"),
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
        spec.env = vec![("MAKEFLAGS".into(), "-j --jobserver-auth=3,4".into())];
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
            .run_compiler(CommandSpec::new("/bin/true", "/"), None, cancel)
            .await
            .unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::Interrupted);
        assert!(mock.calls().is_empty());
    }
}
