//! For unit tests: a job from a wire request (as the server makes it), and its run as the
//! client would see it (events, then the final message).

use std::sync::Arc;

use tokio::sync::mpsc::{self, UnboundedReceiver};
use tokio_util::sync::CancellationToken;

use super::{Event, Job, LocalExecutor, Outcome};
use crate::process::Launcher;
use crate::protocol::{CompileRequest, Response};
use crate::server::compile::{event_response, final_response, invocation};

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
