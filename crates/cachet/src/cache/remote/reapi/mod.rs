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

mod grpc;
#[cfg(test)]
mod tests;

use std::collections::{HashMap, HashSet};
use std::io;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use prost::Message as _;
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};
use tonic::Code;

use super::proto::{self, Digest};
use crate::cache::Transfer;
use crate::cache::entry::{CacheEntry, MAX_ENTRY_SIZE, StoredFile};
pub use grpc::Target;
use grpc::{Client, io_error};

/// The output that holds an entry's [`Layout`].
const LAYOUT_PATH: &str = ".cachet/entry";
/// The output that holds an object that is not a compile result.
const OBJECT_PATH: &str = ".cachet/object";
/// Batch limit when the server states none (bytes): gRPC's default message limit, less
/// room for framing.
const DEFAULT_BATCH: usize = (4 << 20) - (64 << 10);

const GET_CAPABILITIES: &str = "/build.bazel.remote.execution.v2.Capabilities/GetCapabilities";
const GET_ACTION_RESULT: &str = "/build.bazel.remote.execution.v2.ActionCache/GetActionResult";
const UPDATE_ACTION_RESULT: &str =
    "/build.bazel.remote.execution.v2.ActionCache/UpdateActionResult";
const FIND_MISSING: &str =
    "/build.bazel.remote.execution.v2.ContentAddressableStorage/FindMissingBlobs";
const BATCH_UPDATE: &str =
    "/build.bazel.remote.execution.v2.ContentAddressableStorage/BatchUpdateBlobs";
const BATCH_READ: &str =
    "/build.bazel.remote.execution.v2.ContentAddressableStorage/BatchReadBlobs";

/// Which output of an `ActionResult` is which file of the entry, and the entry's facts.
#[derive(Serialize, Deserialize)]
struct Layout {
    /// `(output path, role)`, in the entry's order.
    files: Vec<(String, String)>,
    meta: Vec<(String, Vec<u8>)>,
}

/// What the server said of itself, asked once.
#[derive(Clone, Copy)]
struct Capabilities {
    /// Bytes of blobs per batch call.
    batch: usize,
}

/// A REAPI server as a store of entries.
pub struct Reapi {
    client: Client,
    instance_name: String,
    capabilities: tokio::sync::OnceCell<Capabilities>,
    /// Why writes stop here, once the server refused one (or said it takes none).
    refused: Mutex<Option<String>>,
    uploads: AtomicU64,
    blobs_uploaded: AtomicU64,
    blobs_present: AtomicU64,
    bytes_uploaded: AtomicU64,
}

impl Reapi {
    /// A store on `target` under `instance_name`; no network I/O. Errors: the target's.
    pub fn new(target: &Target, instance_name: String) -> io::Result<Reapi> {
        Ok(Reapi {
            client: Client::new(target)?,
            instance_name,
            capabilities: tokio::sync::OnceCell::new(),
            refused: Mutex::new(None),
            uploads: AtomicU64::new(0),
            blobs_uploaded: AtomicU64::new(0),
            blobs_present: AtomicU64::new(0),
            bytes_uploaded: AtomicU64::new(0),
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
        Transfer {
            blobs_uploaded: self.blobs_uploaded.load(Ordering::Relaxed),
            blobs_present: self.blobs_present.load(Ordering::Relaxed),
            bytes_uploaded: self.bytes_uploaded.load(Ordering::Relaxed),
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
        self.capabilities
            .get_or_try_init(|| async {
                let request = proto::GetCapabilitiesRequest {
                    instance_name: self.instance_name.clone(),
                };
                let caps: proto::ServerCapabilities = self
                    .client
                    .unary(GET_CAPABILITIES, request)
                    .await
                    .map_err(|s| io_error("GetCapabilities", &s))?;
                let cache = caps.cache_capabilities.unwrap_or_default();
                if !cache.digest_functions.is_empty()
                    && !cache.digest_functions.contains(&proto::SHA256)
                {
                    return Err(io::Error::other(
                        "the REAPI server does not take SHA-256 digests",
                    ));
                }
                if !cache
                    .action_cache_update_capabilities
                    .is_some_and(|c| c.update_enabled)
                {
                    self.refuse("the server says it takes no ActionCache updates".into());
                }
                let batch = match usize::try_from(cache.max_batch_total_size_bytes) {
                    Ok(0) | Err(_) => DEFAULT_BATCH,
                    // Room for the messages' own framing.
                    Ok(limit) => limit.saturating_sub(16 << 10).max(64 << 10),
                };
                Ok(Capabilities { batch })
            })
            .await
            .copied()
    }

    /// The entry stored under `key`, encoded; `Ok(None)` on a miss, also when a blob it
    /// names is gone (servers evict CAS blobs on their own).
    pub async fn get(&self, key: &str) -> io::Result<Option<Vec<u8>>> {
        let caps = self.capabilities().await?;
        let (action_digest, _) = action_for(key);
        let request = proto::GetActionResultRequest {
            instance_name: self.instance_name.clone(),
            action_digest: Some(action_digest),
            inline_stdout: true,
            inline_stderr: true,
        };
        let result: proto::ActionResult = match self.client.unary(GET_ACTION_RESULT, request).await
        {
            Ok(result) => result,
            Err(status) if status.code() == Code::NotFound => return Ok(None),
            Err(status) => return Err(io_error("GetActionResult", &status)),
        };
        let mut wanted: Vec<Digest> = Vec::new();
        for file in &result.output_files {
            wanted.push(checked(file.digest.as_ref())?.clone());
        }
        for digest in [&result.stdout_digest, &result.stderr_digest]
            .into_iter()
            .flatten()
        {
            wanted.push(checked(Some(digest))?.clone());
        }
        let Some(blobs) = self.fetch(&wanted, caps).await? else {
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
        let caps = self.capabilities().await?;
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
        self.upload(blobs, caps).await?;
        let request = proto::UpdateActionResultRequest {
            instance_name: self.instance_name.clone(),
            action_digest: Some(action_digest),
            action_result: Some(result),
        };
        match self
            .client
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

    /// Uploads the blobs the server lacks.
    async fn upload(&self, blobs: Vec<(Digest, Vec<u8>)>, caps: Capabilities) -> io::Result<()> {
        let mut unique: HashMap<String, (Digest, Vec<u8>)> = HashMap::new();
        for (digest, data) in blobs {
            unique.entry(digest.hash.clone()).or_insert((digest, data));
        }
        let request = proto::FindMissingBlobsRequest {
            instance_name: self.instance_name.clone(),
            blob_digests: unique.values().map(|(d, _)| d.clone()).collect(),
        };
        let missing: proto::FindMissingBlobsResponse = self
            .client
            .unary(FIND_MISSING, request)
            .await
            .map_err(|s| io_error("FindMissingBlobs", &s))?;
        let mut batch: Vec<proto::UpdateBlob> = Vec::new();
        let mut batch_bytes = 0;
        let asked = unique.len() as u64;
        let mut sent = 0;
        for digest in missing.missing_blob_digests {
            let Some((digest, data)) = unique.remove(&digest.hash) else {
                continue;
            };
            sent += 1;
            self.bytes_uploaded
                .fetch_add(data.len() as u64, Ordering::Relaxed);
            if data.len() > caps.batch {
                self.write_stream(&digest, data).await?;
                continue;
            }
            if batch_bytes + data.len() > caps.batch {
                self.batch_update(std::mem::take(&mut batch), caps).await?;
                batch_bytes = 0;
            }
            batch_bytes += data.len();
            batch.push(proto::UpdateBlob {
                digest: Some(digest),
                data,
            });
        }
        if !batch.is_empty() {
            self.batch_update(batch, caps).await?;
        }
        self.blobs_uploaded.fetch_add(sent, Ordering::Relaxed);
        self.blobs_present
            .fetch_add(asked - sent, Ordering::Relaxed);
        Ok(())
    }

    async fn batch_update(
        &self,
        requests: Vec<proto::UpdateBlob>,
        caps: Capabilities,
    ) -> io::Result<()> {
        let request = proto::BatchUpdateBlobsRequest {
            instance_name: self.instance_name.clone(),
            requests,
        };
        // A batch may be as large as the server says it takes (above gRPC's 4 MiB).
        let mut client = self.client.clone();
        client.accept_messages_of(caps.batch);
        let response: proto::BatchUpdateBlobsResponse =
            client
                .unary(BATCH_UPDATE, request)
                .await
                .map_err(|s| io_error("BatchUpdateBlobs", &s))?;
        for blob in response.responses {
            if let Some(status) = blob.status.filter(|s| s.code != 0) {
                return Err(io::Error::other(format!(
                    "REAPI BatchUpdateBlobs: a blob was refused (code {}: {})",
                    status.code, status.message
                )));
            }
        }
        Ok(())
    }

    async fn write_stream(&self, digest: &Digest, data: Vec<u8>) -> io::Result<()> {
        let n = self.uploads.fetch_add(1, Ordering::Relaxed);
        let resource = format!(
            "{}uploads/{}/blobs/{}/{}",
            instance_prefix(&self.instance_name),
            upload_id(n),
            digest.hash,
            digest.size_bytes
        );
        let committed = self
            .client
            .write(resource, &data)
            .await
            .map_err(|s| io_error("ByteStream.Write", &s))?;
        // A server that already had the blob may stop the write early and say so.
        if committed != digest.size_bytes && committed != -1 {
            return Err(io::Error::other(format!(
                "REAPI ByteStream.Write committed {committed} of {} bytes",
                digest.size_bytes
            )));
        }
        Ok(())
    }

    /// The blobs of `digests` by hash, each checked against its digest; None when one is
    /// missing.
    async fn fetch(
        &self,
        digests: &[Digest],
        caps: Capabilities,
    ) -> io::Result<Option<HashMap<String, Vec<u8>>>> {
        let mut found: HashMap<String, Vec<u8>> = HashMap::new();
        let mut seen = HashSet::new();
        let mut batch: Vec<Digest> = Vec::new();
        let mut batch_bytes = 0usize;
        let mut batches: Vec<Vec<Digest>> = Vec::new();
        for digest in digests {
            if !seen.insert(digest.hash.clone()) {
                continue;
            }
            let size = digest.size_bytes as usize;
            if size > caps.batch {
                let resource = format!(
                    "{}blobs/{}/{}",
                    instance_prefix(&self.instance_name),
                    digest.hash,
                    digest.size_bytes
                );
                match self.client.read(resource, digest.size_bytes as u64).await {
                    Ok(data) => {
                        verify(digest, &data)?;
                        found.insert(digest.hash.clone(), data);
                    }
                    Err(status) if status.code() == Code::NotFound => return Ok(None),
                    Err(status) => return Err(io_error("ByteStream.Read", &status)),
                }
                continue;
            }
            if batch_bytes + size > caps.batch {
                batches.push(std::mem::take(&mut batch));
                batch_bytes = 0;
            }
            batch_bytes += size;
            batch.push(digest.clone());
        }
        if !batch.is_empty() {
            batches.push(batch);
        }
        let mut client = self.client.clone();
        client.accept_messages_of(caps.batch);
        for digests in batches {
            let request = proto::BatchReadBlobsRequest {
                instance_name: self.instance_name.clone(),
                digests,
            };
            let response: proto::BatchReadBlobsResponse =
                client
                    .unary(BATCH_READ, request)
                    .await
                    .map_err(|s| io_error("BatchReadBlobs", &s))?;
            for blob in response.responses {
                let digest = checked(blob.digest.as_ref())?;
                match blob.status.map_or(0, |s| s.code) {
                    0 => {}
                    code if code == Code::NotFound as i32 => return Ok(None),
                    code => {
                        return Err(io::Error::other(format!(
                            "REAPI BatchReadBlobs: a blob could not be read (code {code})"
                        )));
                    }
                }
                verify(digest, &blob.data)?;
                found.insert(digest.hash.clone(), blob.data);
            }
        }
        if seen.iter().any(|hash| !found.contains_key(hash)) {
            return Ok(None);
        }
        Ok(Some(found))
    }
}

/// The digest of a canonical `Action` for `key`, and the blobs of it and its `Command`
/// (uploaded with the entry: some servers check that an action's parts exist).
fn action_for(key: &str) -> (Digest, Vec<(Digest, Vec<u8>)>) {
    let command = proto::Command {
        arguments: vec!["cachet".into(), "entry".into(), key.into()],
        output_paths: Vec::new(),
    }
    .encode_to_vec();
    let command_digest = digest_of(&command);
    let action = proto::Action {
        command_digest: Some(command_digest.clone()),
        input_root_digest: Some(digest_of(&proto::Directory::default().encode_to_vec())),
        do_not_cache: false,
        salt: Vec::new(),
    }
    .encode_to_vec();
    let action_digest = digest_of(&action);
    (
        action_digest.clone(),
        vec![(command_digest, command), (action_digest, action)],
    )
}

/// SHA-256 digest of `data`.
fn digest_of(data: &[u8]) -> Digest {
    Digest {
        hash: hex(&Sha256::digest(data)),
        size_bytes: data.len() as i64,
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A digest from the server, if it is one we may ask for: 64 lowercase hex digits and a
/// size within what an entry may hold.
fn checked(digest: Option<&Digest>) -> io::Result<&Digest> {
    let digest = digest.ok_or_else(|| invalid_data("an output without a digest"))?;
    let canonical = digest.hash.len() == 64
        && digest
            .hash
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
    if !canonical || digest.size_bytes < 0 || digest.size_bytes as u64 > MAX_ENTRY_SIZE {
        return Err(invalid_data(format!(
            "malformed digest {:?}/{}",
            digest.hash, digest.size_bytes
        )));
    }
    Ok(digest)
}

fn verify(digest: &Digest, data: &[u8]) -> io::Result<()> {
    if digest_of(data) != *digest {
        return Err(invalid_data(format!(
            "blob {} does not match its digest",
            digest.hash
        )));
    }
    Ok(())
}

/// `instance/` for a ByteStream resource name, nothing for the default instance.
fn instance_prefix(instance: &str) -> String {
    if instance.is_empty() {
        String::new()
    } else {
        format!("{}/", instance.trim_end_matches('/'))
    }
}

/// A UUID-shaped upload id, unique per process and upload (the protocol asks for a UUID
/// so that concurrent uploads of one blob do not collide).
fn upload_id(n: u64) -> String {
    let seed = format!(
        "{}-{n}-{:?}",
        std::process::id(),
        std::time::SystemTime::now()
    );
    let h = blake3::hash(seed.as_bytes()).to_hex();
    format!(
        "{}-{}-4{}-8{}-{}",
        &h[0..8],
        &h[8..12],
        &h[13..16],
        &h[17..20],
        &h[20..32]
    )
}

fn invalid_data(message: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, message.into())
}
