//! A REAPI server's content-addressable storage: what the server says of itself, and
//! blobs up and down. Writes ask `FindMissingBlobs` first and send only what is missing:
//! small blobs in `BatchUpdateBlobs` calls up to the server's batch limit, larger ones by
//! ByteStream. Reads batch the same way, and check every blob against its digest.

use std::collections::{HashMap, HashSet};
use std::io;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};

use tonic::Code;

use super::grpc::{Client, io_error};
use super::proto::{self, Digest};
use super::{instance_prefix, upload_id, verify};

/// Batch limit when the server states none (bytes): gRPC's default message limit, less
/// room for framing.
const DEFAULT_BATCH: usize = (4 << 20) - (64 << 10);

const GET_CAPABILITIES: &str = "/build.bazel.remote.execution.v2.Capabilities/GetCapabilities";
const FIND_MISSING: &str =
    "/build.bazel.remote.execution.v2.ContentAddressableStorage/FindMissingBlobs";
const BATCH_UPDATE: &str =
    "/build.bazel.remote.execution.v2.ContentAddressableStorage/BatchUpdateBlobs";
const BATCH_READ: &str =
    "/build.bazel.remote.execution.v2.ContentAddressableStorage/BatchReadBlobs";

/// What the server said of itself, asked once.
#[derive(Clone, Copy, Debug)]
pub struct Capabilities {
    /// Bytes of blobs per batch call.
    pub batch: usize,
    /// Whether clients may write to the ActionCache.
    pub action_cache_updates: bool,
}

/// A blob to upload: bytes in hand, or a file read only if the server lacks it.
pub enum Blob {
    Bytes(Vec<u8>),
    File(PathBuf),
}

impl Blob {
    fn load(self) -> io::Result<Vec<u8>> {
        match self {
            Blob::Bytes(bytes) => Ok(bytes),
            Blob::File(path) => std::fs::read(&path)
                .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", path.display()))),
        }
    }
}

/// What went each way so far.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Transferred {
    /// Blobs sent (the server lacked them).
    pub blobs_uploaded: u64,
    /// Blobs not sent: the server had them.
    pub blobs_present: u64,
    pub bytes_uploaded: u64,
    pub bytes_downloaded: u64,
}

/// One instance's CAS on one server.
pub struct Cas {
    client: Client,
    instance_name: String,
    capabilities: tokio::sync::OnceCell<Capabilities>,
    uploads: AtomicU64,
    blobs_uploaded: AtomicU64,
    blobs_present: AtomicU64,
    bytes_uploaded: AtomicU64,
    bytes_downloaded: AtomicU64,
}

impl Cas {
    /// The CAS of `instance_name` through `client`; no network I/O.
    pub fn new(client: Client, instance_name: String) -> Cas {
        Cas {
            client,
            instance_name,
            capabilities: tokio::sync::OnceCell::new(),
            uploads: AtomicU64::new(0),
            blobs_uploaded: AtomicU64::new(0),
            blobs_present: AtomicU64::new(0),
            bytes_uploaded: AtomicU64::new(0),
            bytes_downloaded: AtomicU64::new(0),
        }
    }

    /// The client, for the calls of other services on the same server.
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// The instance every call names.
    pub fn instance_name(&self) -> &str {
        &self.instance_name
    }

    /// What went each way so far.
    pub fn transferred(&self) -> Transferred {
        Transferred {
            blobs_uploaded: self.blobs_uploaded.load(Ordering::Relaxed),
            blobs_present: self.blobs_present.load(Ordering::Relaxed),
            bytes_uploaded: self.bytes_uploaded.load(Ordering::Relaxed),
            bytes_downloaded: self.bytes_downloaded.load(Ordering::Relaxed),
        }
    }

    /// What the server says of itself (asked once). Errors: the call's, or a server that
    /// does not take SHA-256 digests.
    pub async fn capabilities(&self) -> io::Result<Capabilities> {
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
                let batch = match usize::try_from(cache.max_batch_total_size_bytes) {
                    Ok(0) | Err(_) => DEFAULT_BATCH,
                    // Room for the messages' own framing.
                    Ok(limit) => limit.saturating_sub(16 << 10).max(64 << 10),
                };
                Ok(Capabilities {
                    batch,
                    action_cache_updates: cache
                        .action_cache_update_capabilities
                        .is_some_and(|c| c.update_enabled),
                })
            })
            .await
            .copied()
    }

    /// Uploads the blobs the server lacks (`FindMissingBlobs` first); returns the bytes
    /// sent. A file blob is read only when it is sent.
    pub async fn upload(&self, blobs: Vec<(Digest, Blob)>) -> io::Result<u64> {
        let caps = self.capabilities().await?;
        let mut unique: HashMap<String, (Digest, Blob)> = HashMap::new();
        for (digest, blob) in blobs {
            unique.entry(digest.hash.clone()).or_insert((digest, blob));
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
        let (mut sent, mut bytes) = (0, 0u64);
        for digest in missing.missing_blob_digests {
            let Some((digest, blob)) = unique.remove(&digest.hash) else {
                continue;
            };
            let data = blob.load()?;
            if data.len() as i64 != digest.size_bytes {
                return Err(io::Error::other(format!(
                    "blob {} changed while it was uploaded",
                    digest.hash
                )));
            }
            sent += 1;
            bytes += data.len() as u64;
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
        self.bytes_uploaded.fetch_add(bytes, Ordering::Relaxed);
        self.blobs_uploaded.fetch_add(sent, Ordering::Relaxed);
        self.blobs_present
            .fetch_add(asked - sent, Ordering::Relaxed);
        Ok(bytes)
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
    /// missing. Digests come checked (see [`super::checked`]).
    pub async fn fetch(&self, digests: &[Digest]) -> io::Result<Option<HashMap<String, Vec<u8>>>> {
        let caps = self.capabilities().await?;
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
                let Some(digest) = blob.digest.as_ref().filter(|d| seen.contains(&d.hash)) else {
                    return Err(super::invalid_data(
                        "BatchReadBlobs sent a blob not asked for",
                    ));
                };
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
        let bytes: usize = found.values().map(Vec::len).sum();
        self.bytes_downloaded
            .fetch_add(bytes as u64, Ordering::Relaxed);
        Ok(Some(found))
    }
}
