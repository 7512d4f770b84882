//! Remote execution: running a compile's command on a Remote Execution API service's
//! workers (BuildBuddy, Buildbarn, EngFlow, NativeLink, BuildGrid) through `Execute`.
//!
//! This module knows actions, not compilers: a family hands it a [`Request`] (the
//! command, its environment and working directory, the files it reads with their
//! digests, the outputs it writes) and gets back the worker's [`Completed`] result or a
//! [`Failure`] that the family turns into a local compile. Uploads go through the CAS
//! (`FindMissingBlobs` first; blobs the server is known to hold are not asked about
//! again), at most `max_in_flight` actions are out at once, each under a deadline, and a
//! circuit breaker stops calling a server that keeps failing.
//!
//! The input root mirrors the client's file system ([`tree`]): workers must run the
//! action with the input root as `/` (chrooted), so that every absolute path the compile
//! names, and the cwd it records in debug info, is the client's. docs/remote-execution.md
//! says what each service needs for that.

#[cfg(test)]
mod tests;
pub mod tree;

use std::collections::HashSet;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use prost::Message as _;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tonic::Code;

use crate::cache::breaker::Breaker;
use crate::reapi::proto::{self, Digest};
use crate::reapi::{
    Blob, Cas, Client, MAX_BLOB_SIZE, Target, checked, digest_of_message, io_error,
};
pub use tree::{InputTree, TreeFile};

const EXECUTE: &str = "/build.bazel.remote.execution.v2.Execution/Execute";
const WAIT_EXECUTION: &str = "/build.bazel.remote.execution.v2.Execution/WaitExecution";

/// How long one CAS call may take (the upload of a big input, say).
const CAS_CALL_TIMEOUT: Duration = Duration::from_secs(60);

/// How many times a stream that ended before its operation was done is waited on again.
const WAIT_AGAIN: u32 = 3;

/// Where and how actions run.
#[derive(Debug, Clone)]
pub struct Settings {
    /// The server, its headers and CA (its `timeout` is ignored: see `timeout`).
    pub target: Target,
    pub instance_name: String,
    /// Platform properties every action asks for (a container image, an OS), by name.
    pub platform: Vec<(String, String)>,
    /// Actions out at once.
    pub max_in_flight: usize,
    /// The most one action may take, upload to download.
    pub timeout: Duration,
    /// Failures in a row that open the breaker, and how long it then stays open; None for
    /// no breaker.
    pub breaker: Option<(u32, Duration)>,
}

/// One action to run.
#[derive(Debug, Clone)]
pub struct Request {
    /// The program (an absolute path in the input root) and its arguments.
    pub arguments: Vec<String>,
    /// The whole environment the command gets.
    pub env: Vec<(String, String)>,
    /// The absolute working directory (the input root mirrors the file system).
    pub cwd: PathBuf,
    /// Output files, relative to `cwd`, without `..`.
    pub outputs: Vec<String>,
    /// Files the command reads: absolute path, digest, and the local file to upload.
    pub inputs: Vec<(PathBuf, TreeFile)>,
    /// Directories that must exist, empty unless inputs lie in them (a `/tmp`).
    pub dirs: Vec<PathBuf>,
}

/// What a worker made of an action.
#[derive(Debug, Clone)]
pub struct Completed {
    pub exit_code: i32,
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
    /// Each requested output (relative to the cwd), its content and executable bit; only
    /// for a successful action.
    pub outputs: Vec<(String, Vec<u8>, bool)>,
    /// Served from the server's ActionCache (the same action ran before), not run now.
    pub cached: bool,
    /// The worker's name, as the server reports it.
    pub worker: String,
    pub upload: Duration,
    /// Time in the server's queue before a worker took it (from the result's metadata).
    pub queued: Duration,
    /// Time the worker ran the command (from the result's metadata).
    pub run: Duration,
    /// Bytes sent for this action (inputs the server lacked, the action's own messages).
    pub bytes_up: u64,
    /// Bytes of outputs and logs fetched.
    pub bytes_down: u64,
}

/// Why an action did not come back with a result: the caller compiles locally.
#[derive(Debug, thiserror::Error)]
pub enum Failure {
    #[error("the breaker is open after failures in a row")]
    BreakerOpen,
    #[error("the action could not be laid out: {0}")]
    Layout(io::Error),
    #[error("uploading its inputs failed: {0}")]
    Upload(io::Error),
    #[error("the server failed the action: {0}")]
    Server(String),
    #[error("no result within {0:?}")]
    Timeout(Duration),
    #[error("the result is unusable: {0}")]
    Result(String),
    #[error("the compile was cancelled")]
    Cancelled,
}

impl Failure {
    /// Its name in stats.
    pub fn label(&self) -> &'static str {
        match self {
            Failure::BreakerOpen => "breaker open",
            Failure::Layout(_) => "inputs not expressible",
            Failure::Upload(_) => "upload failed",
            Failure::Server(_) => "server error",
            Failure::Timeout(_) => "timeout",
            Failure::Result(_) => "bad result",
            Failure::Cancelled => "cancelled",
        }
    }
}

/// A connection to one execution service.
pub struct Execution {
    cas: Cas,
    exec: Client,
    instance_name: String,
    platform: Option<proto::Platform>,
    timeout: Duration,
    slots: Semaphore,
    breaker: Option<Breaker>,
    /// Blobs the server is known to hold (uploaded or found present by this server).
    present: Mutex<HashSet<String>>,
}

impl Execution {
    /// A client of the service in `settings`; no network I/O. Errors: a malformed
    /// endpoint, header or CA file.
    pub fn new(settings: &Settings) -> io::Result<Execution> {
        let mut cas_target = settings.target.clone();
        cas_target.timeout = CAS_CALL_TIMEOUT.min(settings.timeout);
        let mut exec_target = settings.target.clone();
        exec_target.timeout = settings.timeout;
        let mut properties: Vec<proto::Property> = settings
            .platform
            .iter()
            .map(|(name, value)| proto::Property {
                name: name.clone(),
                value: value.clone(),
            })
            .collect();
        properties.sort();
        Ok(Execution {
            cas: Cas::new(Client::new(&cas_target)?, settings.instance_name.clone()),
            exec: Client::new(&exec_target)?,
            instance_name: settings.instance_name.clone(),
            platform: (!properties.is_empty()).then_some(proto::Platform { properties }),
            timeout: settings.timeout,
            slots: Semaphore::new(settings.max_in_flight.max(1)),
            breaker: settings
                .breaker
                .map(|(failures, cooldown)| Breaker::new(failures, cooldown)),
            present: Mutex::default(),
        })
    }

    /// Uploads `files` (a toolchain, say) now, so that later actions find them; the bytes
    /// sent (0 when the server had them all).
    pub async fn upload_files(&self, files: &[(PathBuf, TreeFile)]) -> io::Result<u64> {
        let blobs = files
            .iter()
            .map(|(path, f)| (f.digest.clone(), Blob::File(path.clone())))
            .collect();
        let sent = self.cas.upload(blobs).await?;
        let mut present = self.present.lock().unwrap();
        present.extend(files.iter().map(|(_, f)| f.digest.hash.clone()));
        Ok(sent)
    }

    /// Runs `request` on a worker: waits for one of the `max_in_flight` places, uploads
    /// what the server lacks while holding what `uploading` gives (one of the machine's
    /// slots: an upload reads and sends files here), executes, and fetches the outputs
    /// of a successful action. An action that ran and failed is `Ok` with its exit code;
    /// anything else that went wrong is a [`Failure`] (counted by the breaker).
    pub async fn run<G>(
        &self,
        request: &Request,
        cancel: &CancellationToken,
        uploading: impl Future<Output = io::Result<G>>,
    ) -> Result<Completed, Failure> {
        if !self.breaker.as_ref().is_none_or(Breaker::allow) {
            return Err(Failure::BreakerOpen);
        }
        let run = async {
            let _slot = self.slots.acquire().await.map_err(|_| Failure::Cancelled)?;
            match tokio::time::timeout(self.timeout, self.run_now(request, uploading)).await {
                Ok(outcome) => outcome,
                Err(_) => Err(Failure::Timeout(self.timeout)),
            }
        };
        let outcome = tokio::select! {
            outcome = run => outcome,
            _ = cancel.cancelled() => Err(Failure::Cancelled),
        };
        if let Some(breaker) = &self.breaker {
            match &outcome {
                // Neither says anything of the service.
                Err(Failure::Layout(_) | Failure::Cancelled) => breaker.abandoned(),
                Err(_) => {
                    if breaker.failed() {
                        tracing::warn!("remote execution paused: failures in a row");
                    }
                }
                Ok(_) => breaker.succeeded(),
            }
        }
        outcome
    }

    async fn run_now<G>(
        &self,
        request: &Request,
        uploading: impl Future<Output = io::Result<G>>,
    ) -> Result<Completed, Failure> {
        let slot = uploading.await.map_err(|_| Failure::Cancelled)?;
        let started = Instant::now();
        let (action_digest, blobs) = self.lay_out(request).map_err(Failure::Layout)?;
        let mut bytes_up = self.upload(blobs.clone(), false).await?;
        let upload = started.elapsed();
        drop(slot);
        let mut response = self.execute(&action_digest).await?;
        let missing_inputs = |r: &proto::ExecuteResponse| {
            r.status
                .as_ref()
                .is_some_and(|s| s.code == Code::FailedPrecondition as i32)
        };
        if missing_inputs(&response) {
            // The server lost blobs we thought it held (evicted): send them all again.
            self.present.lock().unwrap().clear();
            bytes_up += self.upload(blobs, true).await?;
            response = self.execute(&action_digest).await?;
        }
        if let Some(status) = response.status.as_ref().filter(|s| s.code != 0) {
            return Err(server_failure(status));
        }
        let result = response
            .result
            .ok_or_else(|| Failure::Result("an ExecuteResponse without a result".into()))?;
        self.collect(request, result, response.cached_result, upload, bytes_up)
            .await
    }

    /// The action's digest, and every blob it needs: its messages, the tree's
    /// directories, and the input files (read only if the server lacks them).
    fn lay_out(&self, request: &Request) -> io::Result<(Digest, Vec<(Digest, PathOrBytes)>)> {
        let mut tree = InputTree::default();
        for dir in &request.dirs {
            tree.add_dir(dir)?;
        }
        tree.add_dir(&request.cwd)?;
        for (path, file) in &request.inputs {
            tree.add_file(path, file.clone())?;
        }
        let (root, directories) = tree.finish();
        let working_directory = relative_to_root(&request.cwd)?;
        let mut env: Vec<proto::EnvironmentVariable> = request
            .env
            .iter()
            .map(|(name, value)| proto::EnvironmentVariable {
                name: name.clone(),
                value: value.clone(),
            })
            .collect();
        env.sort_by(|a, b| a.name.cmp(&b.name));
        env.dedup_by(|a, b| a.name == b.name);
        let mut outputs = request.outputs.clone();
        outputs.sort();
        let command = proto::Command {
            arguments: request.arguments.clone(),
            environment_variables: env,
            output_files: outputs.clone(),
            platform: self.platform.clone(),
            working_directory,
            output_paths: outputs,
        };
        let (command_digest, command_bytes) = digest_of_message(&command);
        let action = proto::Action {
            command_digest: Some(command_digest.clone()),
            input_root_digest: Some(root),
            timeout: Some(proto::Duration {
                seconds: self.timeout.as_secs() as i64,
                nanos: 0,
            }),
            do_not_cache: false,
            salt: Vec::new(),
            platform: self.platform.clone(),
        };
        let (action_digest, action_bytes) = digest_of_message(&action);
        let mut blobs: Vec<(Digest, PathOrBytes)> = vec![
            (command_digest, PathOrBytes::Bytes(command_bytes)),
            (action_digest.clone(), PathOrBytes::Bytes(action_bytes)),
        ];
        blobs.extend(
            directories
                .into_iter()
                .map(|(d, bytes)| (d, PathOrBytes::Bytes(bytes))),
        );
        blobs.extend(
            request
                .inputs
                .iter()
                .map(|(path, f)| (f.digest.clone(), PathOrBytes::Path(path.clone()))),
        );
        Ok((action_digest, blobs))
    }

    /// Uploads the blobs the server may lack (all of them when `all`); the bytes sent.
    async fn upload(&self, blobs: Vec<(Digest, PathOrBytes)>, all: bool) -> Result<u64, Failure> {
        let wanted: Vec<(Digest, Blob)> = {
            let present = self.present.lock().unwrap();
            blobs
                .into_iter()
                .filter(|(d, _)| all || !present.contains(&d.hash))
                .map(|(d, b)| (d, b.into_blob()))
                .collect()
        };
        let hashes: Vec<String> = wanted.iter().map(|(d, _)| d.hash.clone()).collect();
        let sent = self.cas.upload(wanted).await.map_err(Failure::Upload)?;
        self.present.lock().unwrap().extend(hashes);
        Ok(sent)
    }

    /// Executes the action and follows its operation to the end.
    async fn execute(&self, action_digest: &Digest) -> Result<proto::ExecuteResponse, Failure> {
        let request = proto::ExecuteRequest {
            instance_name: self.instance_name.clone(),
            skip_cache_lookup: false,
            action_digest: Some(action_digest.clone()),
        };
        let server =
            |status: tonic::Status| Failure::Server(io_error("Execute", &status).to_string());
        let mut stream = match self
            .exec
            .stream::<_, proto::Operation>(EXECUTE, request)
            .await
        {
            Ok(stream) => stream,
            // Some services check the action's blobs before they queue it (BuildGrid):
            // the same answer as a worker's that lacked an input.
            Err(status) if status.code() == Code::FailedPrecondition => {
                return Ok(proto::ExecuteResponse {
                    status: Some(proto::Status {
                        code: Code::FailedPrecondition as i32,
                        message: status.message().to_owned(),
                    }),
                    ..Default::default()
                });
            }
            Err(status) => return Err(server(status)),
        };
        let mut name = String::new();
        let mut waits = 0;
        loop {
            match stream.message().await {
                Ok(Some(operation)) => {
                    name.clone_from(&operation.name);
                    if operation.done {
                        return finished(operation);
                    }
                    continue;
                }
                // The stream ended (a server restart, a proxy's idle limit) before the
                // operation did: ask for it again by name.
                Ok(None) | Err(_) if !name.is_empty() && waits < WAIT_AGAIN => waits += 1,
                Ok(None) => {
                    return Err(Failure::Server("the Execute stream ended early".into()));
                }
                Err(status) => return Err(server(status)),
            }
            let request = proto::WaitExecutionRequest { name: name.clone() };
            stream = self
                .exec
                .stream::<_, proto::Operation>(WAIT_EXECUTION, request)
                .await
                .map_err(server)?;
        }
    }

    /// The worker's result with its logs, and the outputs of a successful action.
    async fn collect(
        &self,
        request: &Request,
        result: proto::ActionResult,
        cached: bool,
        upload: Duration,
        bytes_up: u64,
    ) -> Result<Completed, Failure> {
        let bad = |e: io::Error| Failure::Result(e.to_string());
        let mut wanted: Vec<Digest> = Vec::new();
        let mut files: Vec<(String, Digest, bool)> = Vec::new();
        if result.exit_code == 0 {
            for output in &request.outputs {
                // Only the outputs asked for are taken, whatever else the result names.
                let Some(file) = result.output_files.iter().find(|f| f.path == *output) else {
                    return Err(Failure::Result(format!("no output {output:?}")));
                };
                let digest = checked(file.digest.as_ref(), MAX_BLOB_SIZE).map_err(bad)?;
                wanted.push(digest.clone());
                files.push((output.clone(), digest.clone(), file.is_executable));
            }
        }
        for digest in [&result.stdout_digest, &result.stderr_digest]
            .into_iter()
            .flatten()
        {
            wanted.push(checked(Some(digest), MAX_BLOB_SIZE).map_err(bad)?.clone());
        }
        let blobs = match self.cas.fetch(&wanted).await.map_err(bad)? {
            Some(blobs) => blobs,
            None => return Err(Failure::Result("a blob it names is gone".into())),
        };
        let bytes_down = blobs.values().map(|b| b.len() as u64).sum::<u64>()
            + (result.stdout_raw.len() + result.stderr_raw.len()) as u64;
        let log = |raw: Vec<u8>, digest: &Option<Digest>| match digest {
            Some(d) if raw.is_empty() => blobs.get(&d.hash).cloned().unwrap_or_default(),
            _ => raw,
        };
        let stdout = log(result.stdout_raw.clone(), &result.stdout_digest);
        let stderr = log(result.stderr_raw.clone(), &result.stderr_digest);
        let outputs = files
            .into_iter()
            .map(|(path, digest, executable)| {
                let data = blobs.get(&digest.hash).cloned().unwrap_or_default();
                (path, data, executable)
            })
            .collect();
        let meta = result.execution_metadata.unwrap_or_default();
        let between =
            |from: Option<proto::Timestamp>, to: Option<proto::Timestamp>| match (from, to) {
                (Some(from), Some(to)) => {
                    Duration::from_micros(to.micros().saturating_sub(from.micros()).max(0) as u64)
                }
                _ => Duration::ZERO,
            };
        Ok(Completed {
            exit_code: result.exit_code,
            stdout,
            stderr,
            outputs,
            cached,
            queued: between(meta.queued_timestamp, meta.worker_start_timestamp),
            run: between(
                meta.execution_start_timestamp,
                meta.execution_completed_timestamp,
            ),
            worker: meta.worker,
            upload,
            bytes_up,
            bytes_down,
        })
    }
}

/// A blob's content: bytes in hand, or a file read only when sent.
#[derive(Clone)]
enum PathOrBytes {
    Path(PathBuf),
    Bytes(Vec<u8>),
}

impl PathOrBytes {
    fn into_blob(self) -> Blob {
        match self {
            PathOrBytes::Path(path) => Blob::File(path),
            PathOrBytes::Bytes(bytes) => Blob::Bytes(bytes),
        }
    }
}

/// A status the service failed an action with.
fn server_failure(status: &proto::Status) -> Failure {
    Failure::Server(format!(
        "{:?}: {}",
        Code::from_i32(status.code),
        status.message
    ))
}

/// The `ExecuteResponse` of a finished operation, or why there is none.
pub(crate) fn finished(operation: proto::Operation) -> Result<proto::ExecuteResponse, Failure> {
    if let Some(error) = operation.error.filter(|e| e.code != 0) {
        return Err(server_failure(&error));
    }
    let any = operation
        .response
        .ok_or_else(|| Failure::Result("a finished operation without a response".into()))?;
    proto::ExecuteResponse::decode(any.value.as_slice())
        .map_err(|e| Failure::Result(format!("the ExecuteResponse is malformed: {e}")))
}

/// An absolute directory as the protocol names it: relative to the input root.
fn relative_to_root(dir: &Path) -> io::Result<String> {
    let bytes = dir.as_os_str().as_bytes();
    let relative = bytes.strip_prefix(b"/").ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{} is not absolute", dir.display()),
        )
    })?;
    String::from_utf8(relative.to_vec())
        .map(|s| s.trim_end_matches('/').to_owned())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "the cwd is not UTF-8"))
}
