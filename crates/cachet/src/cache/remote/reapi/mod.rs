//! `type = "reapi"`: entries in a Remote Execution API server's ActionCache and CAS
//! (BuildBuddy, EngFlow, Buildbarn, NativeLink, BuildGrid), over gRPC.
//!
//! An entry is an `ActionResult` in the ActionCache under the digest of a canonical
//! `Action` made from the entry's key (its `Command` is `cachet entry <key>`, its input
//! root the empty directory). Each output file, stdout and stderr is its own CAS blob
//! (SHA-256), so a file that several entries hold is stored once. One more blob, the
//! entry's layout (`.cachet/entry`: which output is which file of the entry, and its
//! facts), makes the result whole again. Objects that are not compile results (manifests,
//! `explain` recipes) are one blob, `.cachet/object`.
//!
//! Writes upload only what `FindMissingBlobs` says is missing: small blobs in
//! `BatchUpdateBlobs` calls up to the server's batch limit, larger ones by ByteStream.
//! A server that says it takes no ActionCache updates, or refuses one, makes the level
//! read-only from then on ([`Reapi::refuses_writes`]).

#[cfg(test)]
mod tests;

use std::io;
use std::sync::Mutex;

use prost::Message as _;
use serde::{Deserialize, Serialize};
use tonic::Code;

use crate::cache::Transfer;
use crate::cache::entry::{CacheEntry, MAX_ENTRY_SIZE, StoredFile};
pub use crate::reapi::Target;
use crate::reapi::proto::{self, Digest};
use crate::reapi::{Blob, Capabilities, Cas, Client, checked, digest_of, invalid_data, io_error};

/// The output that holds an entry's [`Layout`].
const LAYOUT_PATH: &str = ".cachet/entry";
/// The output that holds an object that is not a compile result.
const OBJECT_PATH: &str = ".cachet/object";

const GET_ACTION_RESULT: &str = "/build.bazel.remote.execution.v2.ActionCache/GetActionResult";
const UPDATE_ACTION_RESULT: &str =
    "/build.bazel.remote.execution.v2.ActionCache/UpdateActionResult";

/// Which output of an `ActionResult` is which file of the entry, and the entry's facts.
#[derive(Serialize, Deserialize)]
pub(crate) struct Layout {
    /// `(output path, role)`, in the entry's order.
    files: Vec<(String, String)>,
    meta: Vec<(String, Vec<u8>)>,
}

/// A REAPI server as a store of entries.
pub struct Reapi {
    cas: Cas,
    /// Why writes stop here, once the server refused one (or said it takes none).
    refused: Mutex<Option<String>>,
}

impl Reapi {
    /// A store on `target` under `instance_name`; no network I/O. Errors: the target's.
    pub fn new(target: &Target, instance_name: String) -> io::Result<Reapi> {
        Ok(Reapi {
            cas: Cas::new(Client::new(target)?, instance_name),
            refused: Mutex::new(None),
        })
    }

    /// Why this server takes no writes, once it has said so: it states that ActionCache
    /// updates are off, or refused one (`PERMISSION_DENIED`, `UNIMPLEMENTED`).
    pub fn refuses_writes(&self) -> Option<String> {
        self.refused.lock().unwrap().clone()
    }

    /// Asks the server for its capabilities (once): a line on why it takes no writes, if
    /// it does not, or on why it did not answer.
    pub async fn ask_capabilities(&self) -> Option<String> {
        match self.capabilities().await {
            Ok(_) => self.refuses_writes().map(|why| format!("read-only: {why}")),
            Err(e) => Some(format!("the server did not answer now: {e}")),
        }
    }

    /// What this store uploaded so far, and what the CAS already had.
    pub fn transfer(&self) -> Transfer {
        let t = self.cas.transferred();
        Transfer {
            blobs_uploaded: t.blobs_uploaded,
            blobs_present: t.blobs_present,
            bytes_uploaded: t.bytes_uploaded,
        }
    }

    fn refuse(&self, why: String) {
        let mut refused = self.refused.lock().unwrap();
        if refused.is_none() {
            tracing::warn!("REAPI level read-only from now on: {why}");
            *refused = Some(why);
        }
    }

    async fn capabilities(&self) -> io::Result<Capabilities> {
        let caps = self.cas.capabilities().await?;
        if !caps.action_cache_updates {
            self.refuse("the server says it takes no ActionCache updates".into());
        }
        Ok(caps)
    }

    fn instance_name(&self) -> String {
        self.cas.instance_name().to_owned()
    }

    /// The entry stored under `key`, encoded; `Ok(None)` on a miss, also when a blob it
    /// names is gone (servers evict CAS blobs on their own).
    pub async fn get(&self, key: &str) -> io::Result<Option<Vec<u8>>> {
        self.capabilities().await?;
        let (action_digest, _) = action_for(key);
        let request = proto::GetActionResultRequest {
            instance_name: self.instance_name(),
            action_digest: Some(action_digest),
            inline_stdout: true,
            inline_stderr: true,
        };
        let result: proto::ActionResult =
            match self.cas.client().unary(GET_ACTION_RESULT, request).await {
                Ok(result) => result,
                Err(status) if status.code() == Code::NotFound => return Ok(None),
                Err(status) => return Err(io_error("GetActionResult", &status)),
            };
        let mut wanted: Vec<Digest> = Vec::new();
        for file in &result.output_files {
            wanted.push(checked(file.digest.as_ref(), MAX_ENTRY_SIZE)?.clone());
        }
        for digest in [&result.stdout_digest, &result.stderr_digest]
            .into_iter()
            .flatten()
        {
            wanted.push(checked(Some(digest), MAX_ENTRY_SIZE)?.clone());
        }
        within_an_entry(&wanted)?;
        let Some(blobs) = self.cas.fetch(&wanted).await? else {
            return Ok(None);
        };
        let blob = |digest: &Option<Digest>| -> Vec<u8> {
            digest
                .as_ref()
                .and_then(|d| blobs.get(&d.hash))
                .cloned()
                .unwrap_or_default()
        };
        let output = |path: &str| result.output_files.iter().find(|f| f.path == path);
        if let Some(object) = output(OBJECT_PATH) {
            return Ok(Some(blob(&object.digest)));
        }
        let layout = output(LAYOUT_PATH).ok_or_else(|| {
            invalid_data("the ActionResult is not a cachet entry (no .cachet/entry)")
        })?;
        let layout: Layout = postcard::from_bytes(&blob(&layout.digest))
            .map_err(|e| invalid_data(format!("the entry's layout is malformed: {e}")))?;
        let mut files = Vec::with_capacity(layout.files.len());
        for (path, role) in layout.files {
            let file = output(&path)
                .ok_or_else(|| invalid_data(format!("the ActionResult has no output {path:?}")))?;
            files.push(StoredFile {
                role,
                executable: file.is_executable,
                data: blob(&file.digest),
            });
        }
        let text = |raw: Vec<u8>, digest: &Option<Digest>| match digest {
            Some(_) if raw.is_empty() => blob(digest),
            _ => raw,
        };
        let entry = CacheEntry {
            exit_code: result.exit_code,
            stdout: text(result.stdout_raw.clone(), &result.stdout_digest),
            stderr: text(result.stderr_raw.clone(), &result.stderr_digest),
            files,
            meta: layout.meta,
        };
        Ok(Some(entry.encode()))
    }

    /// Stores the encoded entry `bytes` under `key`: blobs first, then the ActionResult.
    /// Does nothing once the server refuses writes.
    pub async fn put(&self, key: &str, bytes: Vec<u8>) -> io::Result<()> {
        self.capabilities().await?;
        if self.refuses_writes().is_some() {
            return Ok(());
        }
        let (action_digest, action_blobs) = action_for(key);
        let mut blobs: Vec<(Digest, Vec<u8>)> = action_blobs;
        let mut add = |data: Vec<u8>| {
            let digest = digest_of(&data);
            blobs.push((digest.clone(), data));
            digest
        };
        let result = match CacheEntry::decode(&bytes) {
            Ok(entry) => {
                let mut result = proto::ActionResult {
                    exit_code: entry.exit_code,
                    ..Default::default()
                };
                let mut layout = Layout {
                    files: Vec::new(),
                    meta: entry.meta,
                };
                for (i, file) in entry.files.into_iter().enumerate() {
                    let path = format!("out/{i}");
                    result.output_files.push(proto::OutputFile {
                        path: path.clone(),
                        digest: Some(add(file.data)),
                        is_executable: file.executable,
                    });
                    layout.files.push((path, file.role));
                }
                if !entry.stdout.is_empty() {
                    result.stdout_digest = Some(add(entry.stdout));
                }
                if !entry.stderr.is_empty() {
                    result.stderr_digest = Some(add(entry.stderr));
                }
                let layout = postcard::to_stdvec(&layout).map_err(io::Error::other)?;
                result.output_files.push(proto::OutputFile {
                    path: LAYOUT_PATH.into(),
                    digest: Some(add(layout)),
                    is_executable: false,
                });
                result
            }
            // Not a compile result: the object whole, as one blob.
            Err(_) => proto::ActionResult {
                output_files: vec![proto::OutputFile {
                    path: OBJECT_PATH.into(),
                    digest: Some(add(bytes)),
                    is_executable: false,
                }],
                ..Default::default()
            },
        };
        // The protocol wants output files sorted by path.
        let mut result = result;
        result.output_files.sort_by(|a, b| a.path.cmp(&b.path));
        let blobs = blobs
            .into_iter()
            .map(|(d, b)| (d, Blob::Bytes(b)))
            .collect();
        self.cas.upload(blobs).await?;
        let request = proto::UpdateActionResultRequest {
            instance_name: self.instance_name(),
            action_digest: Some(action_digest),
            action_result: Some(result),
        };
        match self
            .cas
            .client()
            .unary::<_, proto::ActionResult>(UPDATE_ACTION_RESULT, request)
            .await
        {
            Ok(_) => Ok(()),
            Err(status)
                if matches!(status.code(), Code::PermissionDenied | Code::Unimplemented) =>
            {
                self.refuse(format!(
                    "the server refused an ActionCache update ({:?}: {})",
                    status.code(),
                    status.message()
                ));
                Ok(())
            }
            Err(status) => Err(io_error("UpdateActionResult", &status)),
        }
    }
}

/// Refuses an `ActionResult` whose distinct blobs add up to more than an entry may hold
/// (one planted in a shared store, say), before any is fetched.
fn within_an_entry(digests: &[Digest]) -> io::Result<()> {
    let mut seen = std::collections::HashSet::new();
    let total: u64 = digests
        .iter()
        .filter(|d| seen.insert(&d.hash))
        .map(|d| d.size_bytes.max(0) as u64)
        .sum();
    if total > MAX_ENTRY_SIZE {
        return Err(invalid_data(format!(
            "the ActionResult names {total} bytes of blobs, above an entry's {MAX_ENTRY_SIZE}"
        )));
    }
    Ok(())
}

/// The digest of a canonical `Action` for `key`, and the blobs of it and its `Command`
/// (uploaded with the entry: some servers check that an action's parts exist).
fn action_for(key: &str) -> (Digest, Vec<(Digest, Vec<u8>)>) {
    let command = proto::Command {
        arguments: vec!["cachet".into(), "entry".into(), key.into()],
        ..Default::default()
    }
    .encode_to_vec();
    let command_digest = digest_of(&command);
    let action = proto::Action {
        command_digest: Some(command_digest.clone()),
        input_root_digest: Some(digest_of(&proto::Directory::default().encode_to_vec())),
        ..Default::default()
    }
    .encode_to_vec();
    let action_digest = digest_of(&action);
    (
        action_digest.clone(),
        vec![(command_digest, command), (action_digest, action)],
    )
}
