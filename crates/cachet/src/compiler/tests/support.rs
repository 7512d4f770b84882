//! For unit tests: a job from a wire request (as the server makes it), and its run as the
//! client would see it (events, then the final message).

use std::path::Path;
use std::sync::Arc;

use tokio::sync::mpsc::{self, UnboundedReceiver};
use tokio_util::sync::CancellationToken;

use super::{Event, Job, LocalExecutor, Outcome};
use crate::process::Launcher;
use crate::protocol::{CompileRequest, Response, to_bytes};
use crate::server::compile::{event_response, final_response, invocation};

/// A request as a client sends it: `compiler` run with `args` in `cwd` with exactly `env`,
/// umask 022, stderr not a terminal, no build jobserver, no base dirs.
pub fn request(compiler: &Path, cwd: &Path, args: &[&str], env: &[(&str, &str)]) -> CompileRequest {
    CompileRequest {
        compiler: to_bytes(compiler.as_os_str()),
        args: args.iter().map(|a| a.as_bytes().to_vec()).collect(),
        cwd: to_bytes(cwd.as_os_str()),
        env: env
            .iter()
            .map(|(k, v)| (k.as_bytes().to_vec(), v.as_bytes().to_vec()))
            .collect(),
        umask: 0o022,
        stderr_is_tty: false,
        build_jobserver: None,
        stale_jobserver: None,
        base_dirs: vec![],
    }
}

/// The job the server would make of `request`, run by `launcher` with no build jobserver.
pub fn job(launcher: &Launcher, request: CompileRequest) -> (Job, UnboundedReceiver<Event>) {
    let (events, rx) = mpsc::unbounded_channel();
    let job = Job {
        invocation: invocation(request),
        executor: Arc::new(LocalExecutor::new(launcher.clone(), None)),
        events,
        cancel: CancellationToken::new(),
        strip_colour: Default::default(),
    };
    (job, rx)
}

/// What the client receives for a job that ended with `outcome`.
pub fn responses(mut rx: UnboundedReceiver<Event>, outcome: &Outcome) -> Vec<Response> {
    let mut responses = Vec::new();
    while let Ok(event) = rx.try_recv() {
        responses.push(event_response(event));
    }
    responses.extend(final_response(outcome));
    responses
}
