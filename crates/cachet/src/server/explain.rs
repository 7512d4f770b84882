//! `cachet explain`: the wire form of the compiler layer's explanations.

use std::ffi::OsString;
use std::os::unix::ffi::OsStringExt;
use std::path::PathBuf;
use std::sync::Arc;

use super::Server;
use crate::compiler::explain::Explanation;
use crate::protocol::{Bytes, Explained, Response};

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
