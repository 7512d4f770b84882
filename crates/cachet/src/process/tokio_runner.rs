//! The real process runner, on tokio.

use std::io;
use std::os::unix::process::ExitStatusExt;

use async_trait::async_trait;
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::net::unix::pipe;
use tokio::sync::mpsc::UnboundedSender;
use tokio_util::sync::CancellationToken;

use super::child::reap_in_group;
use super::spawn::spawn;
use super::{Cancelled, Exit};
use super::{CommandSpec, OutputChunk, ProcessOutput, ProcessRunner};

/// Runs each child in a process group of its own, streams its output, and kills the group
/// if the run is abandoned.
#[derive(Debug, Default)]
pub struct TokioRunner;

/// Kills the child's process group if the run is abandoned midway (the future dropped).
struct GroupKiller {
    pgid: Option<i32>,
}

impl GroupKiller {
    fn kill(&mut self) {
        if let Some(pgid) = self.pgid.take() {
            // The compiler driver's own children (cc1, as) are in the group too. An error
            // means the group is gone already.
            if let Some(pgid) = rustix::process::Pid::from_raw(pgid) {
                let _ = rustix::process::kill_process_group(pgid, rustix::process::Signal::KILL);
            }
        }
    }
}

impl Drop for GroupKiller {
    fn drop(&mut self) {
        self.kill();
    }
}

async fn pump(
    mut source: impl AsyncRead + Unpin,
    stream: Option<UnboundedSender<OutputChunk>>,
    wrap: fn(Vec<u8>) -> OutputChunk,
) -> io::Result<Vec<u8>> {
    let mut all = Vec::new();
    let mut buf = vec![0u8; 64 << 10];
    loop {
        let n = source.read(&mut buf).await?;
        if n == 0 {
            return Ok(all);
        }
        all.extend_from_slice(&buf[..n]);
        if let Some(stream) = &stream {
            // A client that went away is noticed by the caller; keep collecting regardless.
            let _ = stream.send(wrap(buf[..n].to_vec()));
        }
    }
}

fn exit_of(status: std::process::ExitStatus) -> Exit {
    match (status.code(), status.signal()) {
        (Some(code), _) => Exit::Code(code),
        (None, Some(signal)) => Exit::Signal(signal),
        (None, None) => Exit::Code(1),
    }
}

#[async_trait]
impl ProcessRunner for TokioRunner {
    async fn run(
        &self,
        spec: CommandSpec,
        stream: Option<UnboundedSender<OutputChunk>>,
        cancel: CancellationToken,
    ) -> io::Result<ProcessOutput> {
        let child = spawn(&spec, super::fd_limit::started_with())?;
        let pid = child.pid;
        let mut killer = GroupKiller { pgid: Some(pid) };
        // Into its cgroup once it runs, on the thread that reaps it (see `reap_in_group`).
        let cgroup = spec.cgroup_procs.clone();
        let mut reaper = tokio::task::spawn_blocking(move || reap_in_group(pid, cgroup.as_deref()));
        if let Some(stream) = &stream {
            let _ = stream.send(OutputChunk::Started(pid as u32));
        }
        let stdout = pipe::Receiver::from_owned_fd(child.stdout)?;
        let stderr = pipe::Receiver::from_owned_fd(child.stderr)?;

        let finish = async {
            let (out, err, status) = tokio::join!(
                pump(stdout, stream.clone(), OutputChunk::Stdout),
                pump(stderr, stream.clone(), OutputChunk::Stderr),
                &mut reaper
            );
            let status = status.map_err(|e| io::Error::other(format!("reaping failed: {e}")))?;
            io::Result::Ok((out?, err?, status?))
        };
        tokio::select! {
            result = finish => {
                let (stdout, stderr, (status, max_rss)) = result?;
                // Exited and reaped: nothing of the group is ours to kill any more.
                killer.pgid = None;
                let exit = exit_of(std::process::ExitStatus::from_raw(status));
                Ok(ProcessOutput { exit, stdout, stderr, max_rss: Some(max_rss) })
            }
            _ = cancel.cancelled() => {
                killer.kill();
                let _ = reaper.await;
                Err(Cancelled::error("the client went away"))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, Instant};

    fn sh(script: &str) -> CommandSpec {
        let mut spec = CommandSpec::new("/bin/sh", "/");
        spec.args = vec!["-c".into(), script.into()];
        spec.env = vec![
            ("PATH".into(), "/usr/bin:/bin".into()),
            ("GREETING".into(), "hi".into()),
        ];
        spec
    }

    #[tokio::test]
    async fn runs_with_exact_env_cwd_and_streams_output() {
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let mut spec = sh("echo $GREETING; pwd; echo err >&2; exit 3");
        spec.cwd = "/tmp".into();
        let out = TokioRunner
            .run(spec, Some(tx), CancellationToken::new())
            .await
            .unwrap();
        assert_eq!(out.exit, Exit::Code(3));
        assert_eq!(out.stdout, b"hi\n/tmp\n");
        assert_eq!(out.stderr, b"err\n");
        let mut chunks = Vec::new();
        while let Ok(chunk) = rx.try_recv() {
            chunks.push(chunk);
        }
        assert!(chunks.contains(&OutputChunk::Stderr(b"err\n".to_vec())));
    }

    #[tokio::test]
    async fn reports_signals() {
        let out = TokioRunner
            .run(sh("kill -TERM $$"), None, CancellationToken::new())
            .await
            .unwrap();
        assert_eq!(out.exit, Exit::Signal(libc::SIGTERM));
    }

    #[tokio::test]
    async fn cancel_kills_the_whole_group() {
        let dir = tempfile::tempdir().unwrap();
        let pidfile = dir.path().join("grandchild");
        let script = format!("sleep 30 & echo $! > {}; wait", pidfile.display());
        let cancel = CancellationToken::new();
        let trigger = cancel.clone();
        let path = pidfile.clone();
        tokio::spawn(async move {
            while !path.exists() {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
            trigger.cancel();
        });
        let start = Instant::now();
        let err = TokioRunner
            .run(sh(&script), None, cancel)
            .await
            .unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::Interrupted);
        assert!(Cancelled::is(&err));
        assert!(start.elapsed() < Duration::from_secs(20));
        let pid: i32 = std::fs::read_to_string(&pidfile)
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        // The grandchild got SIGKILL with its group; give the kernel a moment to reap it.
        let mut gone = false;
        for _ in 0..100 {
            let state = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
            if state.is_empty() || state.contains(") Z ") {
                gone = true;
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        assert!(gone, "grandchild {pid} survived the cancel");
    }

    #[tokio::test]
    async fn sets_umask_and_keeps_listed_fds() {
        let dir = tempfile::tempdir().unwrap();
        let mut spec = sh("umask; touch f; ls -l /proc/self/fd/ > /dev/null");
        spec.cwd = dir.path().to_owned();
        spec.umask = Some(0o027);
        let out = TokioRunner
            .run(spec, None, CancellationToken::new())
            .await
            .unwrap();
        assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "0027");
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(dir.path().join("f"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o640);
    }
}
