//! One client connection: check who it is, shake hands, then serve its requests.

use std::sync::Arc;
use std::time::Duration;

use std::os::fd::{AsRawFd, OwnedFd};

use cachet_jobserver::Jobserver;
use tokio::io::{AsyncReadExt, Interest};
use tokio::net::UnixStream;

use super::{ConnectionGuard, Server};
use crate::protocol::frame::{read_frame_async, write_frame_async, write_message_async};
use crate::protocol::{self, BuildJobserver, PROTOCOL_VERSION, Request, Response, fds};

/// A client that connects and then says nothing is dropped after this long.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

pub async fn handle(server: Arc<Server>, stream: UnixStream, mut guard: ConnectionGuard) {
    let our_uid = rustix::process::getuid().as_raw();
    match stream.peer_cred() {
        Ok(cred) if cred.uid() == our_uid => {}
        Ok(cred) => {
            tracing::warn!(
                "refused a connection from uid {} (pid {:?})",
                cred.uid(),
                cred.pid()
            );
            server.stats.update(|c| c.connections_refused += 1);
            return;
        }
        Err(e) => {
            tracing::warn!("refused a connection whose peer is unknown: {e}");
            server.stats.update(|c| c.connections_refused += 1);
            return;
        }
    }
    // The first bytes may carry fds (the build's jobserver), so they are read with recvmsg.
    let first = tokio::time::timeout(HANDSHAKE_TIMEOUT, read_first(&stream)).await;
    let (initial, mut fds) = match first {
        Ok(Ok(first)) => first,
        _ => return,
    };
    let (read_half, mut writer) = stream.into_split();
    let mut reader = std::io::Cursor::new(initial).chain(read_half);

    let hello = tokio::time::timeout(HANDSHAKE_TIMEOUT, read_frame_async(&mut reader)).await;
    let version = match hello {
        Ok(Ok(Some(frame))) => protocol::parse_handshake(&frame),
        Ok(Ok(None)) => return,
        _ => None,
    };
    // Our version goes back either way, so an old or new client knows what it met.
    let _ = write_frame_async(&mut writer, &protocol::handshake(PROTOCOL_VERSION)).await;
    match version {
        Some(PROTOCOL_VERSION) => {}
        Some(other) => {
            tracing::info!("client speaks protocol {other}, we speak {PROTOCOL_VERSION}");
            return;
        }
        None => {
            tracing::warn!("connection did not start with a handshake");
            server.stats.update(|c| c.protocol_errors += 1);
            return;
        }
    }

    loop {
        let frame = match read_frame_async(&mut reader).await {
            Ok(Some(frame)) => frame,
            Ok(None) => return,
            Err(e) => {
                tracing::warn!("bad frame from client: {e}");
                server.stats.update(|c| c.protocol_errors += 1);
                let _ =
                    write_message_async(&mut writer, &Response::Error(format!("bad frame: {e}")))
                        .await;
                return;
            }
        };
        let request: Request = match protocol::decode(&frame) {
            Ok(request) => request,
            Err(e) => {
                tracing::warn!("malformed request: {e}");
                server.stats.update(|c| c.protocol_errors += 1);
                let _ = write_message_async(
                    &mut writer,
                    &Response::Error(format!("malformed request: {e}")),
                )
                .await;
                return;
            }
        };
        let response = match request {
            Request::Compile(compile) => {
                let build = join_build_jobserver(&server, &compile, std::mem::take(&mut fds));
                super::compile::serve(&server, compile, build, reader, writer).await;
                return;
            }
            Request::Stats => Response::Stats(Box::new(server.snapshot().await)),
            Request::ZeroStats => {
                server.zero_stats();
                Response::Done {
                    message: "statistics zeroed".into(),
                }
            }
            Request::Shutdown => {
                guard.release();
                let dropped = server.stop().await;
                Response::Done {
                    message: if dropped == 0 {
                        "server stopped".into()
                    } else {
                        format!("server stopped; {dropped} pending cache writes were dropped")
                    },
                }
            }
            Request::Flush => {
                let started = std::time::Instant::now();
                let left = server.cache.pending().drain(super::DRAIN_LIMIT).await;
                if left == 0 {
                    Response::Done {
                        message: format!(
                            "all cache writes are done ({:.1} s)",
                            started.elapsed().as_secs_f64()
                        ),
                    }
                } else {
                    Response::Error(format!(
                        "{left} cache writes were still pending after {:?}; they go on in the background",
                        super::DRAIN_LIMIT
                    ))
                }
            }
            Request::Explain { paths, last } => super::explain::answer(&server, paths, last).await,
            Request::Trace { output, since_secs } => {
                super::explain::write_timeline(&server, output, since_secs, false).await
            }
            Request::Report { output, since_secs } => {
                super::explain::write_timeline(&server, output, since_secs, true).await
            }
            Request::LocalExit { .. } => {
                server.stats.update(|c| c.protocol_errors += 1);
                Response::Error("LocalExit without an admitted compile".into())
            }
            Request::ClearCache => {
                let disk = server.disk.clone();
                match tokio::task::spawn_blocking(move || disk.clear()).await {
                    Ok(Ok(report)) => Response::Done {
                        message: format!(
                            "removed {} entries ({} bytes)",
                            report.removed_entries, report.removed_bytes
                        ),
                    },
                    Ok(Err(e)) => Response::Error(format!("clearing the cache failed: {e}")),
                    Err(e) => Response::Error(e.to_string()),
                }
            }
            Request::CleanupCache => {
                let disk = server.disk.clone();
                match tokio::task::spawn_blocking(move || disk.cleanup()).await {
                    Ok(Ok(report)) => Response::Done {
                        message: format!(
                            "trimmed to the size limit: removed {} entries ({} bytes)",
                            report.removed_entries, report.removed_bytes
                        ),
                    },
                    Ok(Err(e)) => Response::Error(format!("cleaning up the cache failed: {e}")),
                    Err(e) => Response::Error(e.to_string()),
                }
            }
        };
        server.touch();
        if write_message_async(&mut writer, &response).await.is_err() {
            return;
        }
    }
}

/// The first chunk a client sent, and the fds that came with it.
async fn read_first(stream: &UnixStream) -> std::io::Result<(Vec<u8>, Vec<OwnedFd>)> {
    let mut buf = vec![0u8; 64 << 10];
    loop {
        stream.readable().await?;
        match stream.try_io(Interest::READABLE, || {
            fds::recv_with_fds(stream.as_raw_fd(), &mut buf)
        }) {
            Ok((n, fds)) => {
                buf.truncate(n);
                return Ok((buf, fds));
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
            Err(e) => return Err(e),
        }
    }
}

/// The calling build's pool for this compile only: joined here, dropped (and its fds
/// closed) when the compile ends, so no build waits on us at its exit.
fn join_build_jobserver(
    server: &Server,
    request: &protocol::CompileRequest,
    fds: Vec<OwnedFd>,
) -> Option<Jobserver> {
    if let Some(why) = &request.stale_jobserver {
        tracing::debug!("client ignored a stale jobserver: {why}");
        server.stats.update(|c| c.stale_jobservers += 1);
    }
    let joined = match &request.build_jobserver {
        None => return None,
        Some(BuildJobserver::Pipe) => {
            let mut fds = fds.into_iter();
            match (fds.next(), fds.next()) {
                (Some(read), Some(write)) => Jobserver::join(read, write),
                _ => Err(std::io::Error::other("the pipe's fds did not arrive")),
            }
        }
        Some(BuildJobserver::Fifo(path)) => {
            let path = std::path::PathBuf::from(protocol::to_os(path));
            // Our own pool, exported by `cachet jobserver-env`: the make job holding a
            // token of it holds one of ours, so the compile needs no second one.
            if is_same_file(&path, server.jobserver.fifo_path()) {
                Ok(server.jobserver.clone())
            } else {
                Jobserver::join_fifo(&path)
            }
        }
    };
    match joined {
        Ok(pool) => {
            server.stats.update(|c| c.build_jobservers += 1);
            Some(pool)
        }
        Err(e) => {
            tracing::debug!("cannot use the build's jobserver: {e}");
            server.stats.update(|c| c.stale_jobservers += 1);
            None
        }
    }
}

fn is_same_file(path: &std::path::Path, other: Option<&std::path::Path>) -> bool {
    use std::os::unix::fs::MetadataExt;
    let id = |p: &std::path::Path| std::fs::metadata(p).ok().map(|m| (m.dev(), m.ino()));
    other.is_some_and(|other| id(path).is_some() && id(path) == id(other))
}
