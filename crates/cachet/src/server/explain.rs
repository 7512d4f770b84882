//! `cachet explain` and `cachet trace`: what the server tells about past compiles.

use std::ffi::OsString;
use std::os::unix::ffi::OsStringExt;
use std::path::PathBuf;
use std::sync::Arc;

use super::Server;
use crate::compiler::explain::Explanation;
use crate::protocol::{Bytes, Explained, Response};
use crate::trace::report::Miss;

fn wire(e: Explanation) -> Explained {
    Explained {
        at: e.at,
        language: e.language,
        slot: e.slot,
        causes: e.causes,
    }
}

/// The explanations of `paths`, or of the last `last` misses when no path is given.
pub(super) async fn answer(server: &Arc<Server>, paths: Vec<Bytes>, last: u32) -> Response {
    let explain = server.compiles.explainer().clone();
    let found = tokio::task::spawn_blocking(move || {
        if paths.is_empty() {
            return explain
                .last(last as usize)
                .into_iter()
                .map(|e| {
                    let first = e.outputs.first().cloned().unwrap_or_default();
                    (first.into_bytes(), Some(wire(e)))
                })
                .collect();
        }
        paths
            .into_iter()
            .map(|path| {
                let found = explain.for_output(&PathBuf::from(OsString::from_vec(path.clone())));
                (path, found.map(wire))
            })
            .collect()
    })
    .await;
    match found {
        Ok(found) => Response::Explanations(found),
        Err(e) => Response::Error(format!("explaining failed: {e}")),
    }
}

/// Writes the timeline of the last `since_secs` seconds (0: all kept) to `output`: as a
/// Chrome trace, or (`report`) as the HTML build report with the misses explained.
pub(super) async fn write_timeline(
    server: &Arc<Server>,
    output: Bytes,
    since_secs: u64,
    report: bool,
) -> Response {
    let since_us = match since_secs {
        0 => 0,
        secs => crate::trace::now_us().saturating_sub(secs * 1_000_000),
    };
    let events = server.launcher.trace().events(since_us);
    let misses: Vec<Miss> = server
        .compiles
        .explainer()
        .last(usize::MAX)
        .into_iter()
        .filter(|e| e.at * 1_000_000 >= since_us)
        .map(|e| Miss {
            slot: e.slot,
            causes: e.causes,
        })
        .collect();
    let path = PathBuf::from(OsString::from_vec(output));
    let count = events.len();
    let written = tokio::task::spawn_blocking(move || {
        let bytes = if report {
            crate::trace::report::html(&events, &misses).into_bytes()
        } else {
            let json = crate::trace::chrome_json(&events);
            serde_json::to_vec(&json).map_err(std::io::Error::other)?
        };
        crate::paths::write_atomically(&path, &bytes).map(|()| path)
    })
    .await;
    let open_with = if report {
        "open it in a browser"
    } else {
        "open it in ui.perfetto.dev or chrome://tracing"
    };
    match written {
        Ok(Ok(path)) => Response::Done {
            message: format!("wrote {count} events to {} ({open_with})", path.display()),
        },
        Ok(Err(e)) => Response::Error(format!(
            "cannot write {}: {e}",
            if report { "the report" } else { "the trace" }
        )),
        Err(e) => Response::Error(format!("writing failed: {e}")),
    }
}
