//! Where the wire stops: a compile request becomes an [`Invocation`] and a [`Job`] for the
//! compiler layer, and the job's events and outcome become the client's responses. The
//! final message (`Finished` or `RunLocally`) is sent here, once, from the outcome.

use std::ffi::OsString;
use std::os::unix::ffi::OsStringExt;
use std::path::PathBuf;
use std::sync::Arc;

use cachet_jobserver::Jobserver;
use tokio::net::unix::OwnedWriteHalf;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::Server;
use crate::cache;
use crate::compiler::basedir::BaseDirs;
use crate::compiler::{Event, Invocation, Job, LocalExecutor, Outcome};
use crate::memory::Slot;
use crate::process;
use crate::protocol::frame::{read_frame_async, write_message_async};
use crate::protocol::{self, CompileRequest, Exit, Request, Response};
use crate::trace;

/// The variable that makes a compile overwrite its entry, never hit.
const RECACHE_VAR: &str = "CACHET_RECACHE";

/// Decodes a request once: paths, arguments and environment as OS strings, the build's
/// base dirs, and whether it asked for a recache.
pub(crate) fn invocation(request: CompileRequest) -> Invocation {
    let os = OsString::from_vec;
    let mut invocation = Invocation {
        compiler: PathBuf::from(os(request.compiler)),
        args: request.args.into_iter().map(os).collect(),
        cwd: PathBuf::from(os(request.cwd)),
        env: request
            .env
            .into_iter()
            .map(|(k, v)| (os(k), os(v)))
            .collect(),
        umask: request.umask,
        stderr_is_tty: request.stderr_is_tty,
        base_dirs: BaseDirs::new(request.base_dirs),
        recache: false,
    };
    invocation.recache = invocation
        .env_var(RECACHE_VAR)
        .is_some_and(|v| !v.is_empty() && v != b"0");
    invocation
}

/// The response that carries one event.
pub(crate) fn event_response(event: Event) -> Response {
    match event {
        Event::Started { pgid } => Response::CompilerStarted { pgid },
        Event::Stdout(bytes) => Response::Stdout(bytes),
        Event::Stderr(bytes) => Response::Stderr(bytes),
        Event::BuildTokens(held) => Response::BuildTokens {
            held: u32::try_from(held).unwrap_or(u32::MAX),
        },
    }
}

/// The client's final message for an outcome; None when nobody listens (cancelled).
pub(crate) fn final_response(outcome: &Outcome) -> Option<Response> {
    Some(match outcome {
        Outcome::Hit | Outcome::Miss => Response::Finished(Exit::Code(0)),
        Outcome::Failed(exit) => Response::Finished(wire_exit(*exit)),
        Outcome::Uncacheable(reason) => Response::RunLocally {
            reason: reason.to_string(),
            admission: None,
        },
        Outcome::Error(e) => Response::RunLocally {
            reason: format!("server error: {e}"),
            admission: None,
        },
        Outcome::Cancelled => return None,
    })
}

fn wire_exit(exit: process::Exit) -> Exit {
    match exit {
        process::Exit::Code(code) => Exit::Code(code),
        process::Exit::Signal(signal) => Exit::Signal(signal),
    }
}

/// Runs one compile while watching the socket: when the client goes away (killed, or
/// interrupted by the user), the compile is cancelled and its compiler killed. A compile
/// the server does not cache is run by the client under an admission (see [`run_locally`]).
pub(super) async fn serve(
    server: &Arc<Server>,
    request: CompileRequest,
    build: Option<Jobserver>,
    mut reader: impl tokio::io::AsyncRead + Unpin + Send + 'static,
    mut writer: OwnedWriteHalf,
) {
    let _running = server.compile_started();
    let start_us = trace::now_us();
    let cancel = CancellationToken::new();
    let (events, mut rx) = mpsc::unbounded_channel();
    let invocation = invocation(request);
    let slot = Slot::of(&invocation.compiler, &invocation.cwd, &invocation.args);
    let job = Job {
        invocation,
        executor: Arc::new(LocalExecutor::new(server.launcher.clone(), build.clone())),
        events,
        cancel: cancel.clone(),
        strip_colour: Default::default(),
    };

    // The client sends nothing while the server compiles; after an admitted `RunLocally`
    // it reports how its run ended. The end of the stream means it closed or died.
    let watch_cancel = cancel.clone();
    let (client_tx, mut client_rx) = mpsc::unbounded_channel();
    let watcher = tokio::spawn(async move {
        while let Ok(Some(frame)) = read_frame_async(&mut reader).await {
            match protocol::decode::<Request>(&frame) {
                Ok(request) => {
                    let _ = client_tx.send(request);
                }
                Err(_) => break,
            }
        }
        watch_cancel.cancel();
    });

    let compile = cache::with_read_log(server.compiles.compile(job));
    tokio::pin!(compile);
    let mut read_log = None;
    let mut outcome = None;
    let mut client_gone = false;
    loop {
        tokio::select! {
            (done, log) = &mut compile, if outcome.is_none() => {
                tracing::debug!("compile finished: {done:?}");
                outcome = Some(done);
                read_log = Some(log);
            }
            event = rx.recv() => match event {
                Some(event) => {
                    if !client_gone && write_message_async(&mut writer, &event_response(event)).await.is_err() {
                        client_gone = true;
                        cancel.cancel();
                    }
                }
                // The job (and every copy of its sender) is gone: all events are out.
                None => break,
            },
        }
    }
    let build_id = server.launcher.build_id(build.as_ref());
    let traced = outcome
        .as_ref()
        .map_or("cancelled".to_owned(), trace_outcome);
    match outcome.as_ref().and_then(final_response) {
        Some(Response::RunLocally { reason, .. }) if !client_gone => {
            let local = LocalRun {
                server,
                slot: &slot,
                build: build.as_ref(),
                cancel: &cancel,
            };
            local.run(reason, &mut writer, &mut client_rx).await;
        }
        Some(last) if !client_gone => {
            let _ = write_message_async(&mut writer, &last).await;
        }
        _ => {}
    }
    let log = read_log.unwrap_or_default();
    let (level, key, bytes) = match (&log.hit, &log.stored) {
        (Some((level, key, bytes)), _) => (Some(level.clone()), Some(key), *bytes),
        (None, Some((key, bytes))) => (None, Some(key), *bytes),
        (None, None) => (None, None, 0),
    };
    server.launcher.trace().record(trace::Event::Request {
        start_us,
        end_us: trace::now_us(),
        name: slot.label.clone(),
        outcome: traced,
        build: build_id,
        level,
        key: key.map(|k| k.to_hex()[..16].to_owned()),
        bytes,
    });
    watcher.abort();
}

/// An outcome as the trace names it.
fn trace_outcome(outcome: &Outcome) -> String {
    match outcome {
        Outcome::Hit => "hit".into(),
        Outcome::Miss => "miss".into(),
        Outcome::Failed(_) => "failed".into(),
        Outcome::Uncacheable(reason) => format!("uncacheable: {reason}"),
        Outcome::Error(_) => "error".into(),
        Outcome::Cancelled => "cancelled".into(),
    }
}

/// A compile the client runs itself, admitted like one the server runs (memory and a
/// token, no cache): links, and every call the server does not cache.
struct LocalRun<'a> {
    server: &'a Arc<Server>,
    slot: &'a Slot,
    build: Option<&'a Jobserver>,
    cancel: &'a CancellationToken,
}

impl LocalRun<'_> {
    /// Admits the run, tells the client to go ahead, and waits for its `LocalExit`; runs
    /// it once more, alone, if the OOM killer struck it. The admission ends with the run
    /// or when the client goes away.
    async fn run(
        &self,
        reason: String,
        writer: &mut OwnedWriteHalf,
        from_client: &mut mpsc::UnboundedReceiver<Request>,
    ) {
        let launcher = &self.server.launcher;
        let mut alone = false;
        loop {
            let Ok(admission) = launcher
                .admit(self.slot, alone, self.build, self.cancel)
                .await
            else {
                return;
            };
            let wire = protocol::Admission {
                cgroup_procs: admission.cgroup_procs().map(|path| path.into_bytes()),
                oom_score_adj: process::COMPILER_OOM_SCORE_ADJ,
            };
            let go = if alone {
                Response::RunAgain(wire)
            } else {
                Response::RunLocally {
                    reason: reason.clone(),
                    admission: Some(wire),
                }
            };
            if write_message_async(writer, &go).await.is_err() {
                return;
            }
            let (exit, max_rss) = match from_client.recv().await {
                Some(Request::LocalExit { exit, max_rss }) => (exit, max_rss),
                // Gone, or not following the protocol: the admission ends either way.
                _ => return,
            };
            let measured = admission.finish(max_rss);
            drop(admission);
            let stats = &self.server.stats;
            if alone {
                stats.update(|c| {
                    if exit.success() {
                        c.oom_retries_succeeded += 1;
                    } else {
                        c.oom_retries_failed += 1;
                    }
                });
            } else {
                stats.update(|c| c.local_runs_admitted += 1);
                if measured.oom_killed && !exit.success() {
                    tracing::warn!(
                        "the OOM killer took a process of {}; the client runs it once more, alone",
                        self.slot.label
                    );
                    alone = true;
                    continue;
                }
            }
            let _ = write_message_async(writer, &Response::Finished(exit)).await;
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::compiler::Uncacheable;

    fn request(env: &[(&str, &str)]) -> CompileRequest {
        CompileRequest {
            compiler: b"/usr/bin/gcc".to_vec(),
            args: vec![b"-c".to_vec(), b"\xffodd.c".to_vec()],
            cwd: b"/src/p".to_vec(),
            env: env
                .iter()
                .map(|(k, v)| (k.as_bytes().to_vec(), v.as_bytes().to_vec()))
                .collect(),
            umask: 0o027,
            stderr_is_tty: true,
            build_jobserver: None,
            stale_jobserver: None,
            base_dirs: vec![b"/src".to_vec(), b"relative".to_vec()],
        }
    }

    #[test]
    fn a_request_is_decoded_once_into_an_invocation() {
        let invocation = invocation(request(&[("CACHET_RECACHE", "0"), ("TERM", "xterm")]));
        assert_eq!(invocation.compiler, PathBuf::from("/usr/bin/gcc"));
        assert_eq!(invocation.compiler_name(), "gcc");
        assert_eq!(invocation.args[1].as_encoded_bytes(), b"\xffodd.c");
        assert_eq!(invocation.cwd_bytes(), b"/src/p");
        assert_eq!(invocation.env_var("TERM"), Some(&b"xterm"[..]));
        assert_eq!((invocation.umask, invocation.stderr_is_tty), (0o027, true));
        // The base dirs a client may send are checked: a relative one is dropped.
        assert_eq!(
            invocation.base_dirs.relativize(b"/src/p"),
            Some(b"<base 0>/p".to_vec())
        );
        assert!(!invocation.recache);
        // The last value of a name wins, as in the compiler's own environment.
        for (value, recache) in [("1", true), ("", false), ("0", false), ("yes", true)] {
            let env = [("CACHET_RECACHE", "1"), ("CACHET_RECACHE", value)];
            assert_eq!(invocation_of(&env).recache, recache, "{value:?}");
        }
    }

    fn invocation_of(env: &[(&str, &str)]) -> Invocation {
        invocation(request(env))
    }

    #[test]
    fn the_final_message_comes_from_the_outcome() {
        use crate::compiler::c::args::Unsupported;
        use crate::compiler::c::reasons::NotCacheable;
        assert_eq!(
            final_response(&Outcome::Hit),
            Some(Response::Finished(Exit::Code(0)))
        );
        assert_eq!(
            final_response(&Outcome::Miss),
            Some(Response::Finished(Exit::Code(0)))
        );
        assert_eq!(
            final_response(&Outcome::Failed(process::Exit::Signal(9))),
            Some(Response::Finished(Exit::Signal(9)))
        );
        assert_eq!(
            final_response(&Outcome::Uncacheable(Uncacheable::C(
                NotCacheable::Arguments(Unsupported::Refused("linking (no -c)"))
            ))),
            Some(Response::RunLocally {
                reason: "linking (no -c)".into(),
                admission: None
            })
        );
        assert_eq!(
            final_response(&Outcome::Error(std::io::Error::other("disk on fire"))),
            Some(Response::RunLocally {
                reason: "server error: disk on fire".into(),
                admission: None
            })
        );
        assert_eq!(final_response(&Outcome::Cancelled), None);
        assert_eq!(
            event_response(Event::Started { pgid: 7 }),
            Response::CompilerStarted { pgid: 7 }
        );
    }
}
