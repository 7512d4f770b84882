//! The gRPC calls of a REAPI client, over one tonic channel: unary and server-streaming
//! calls with the target's headers, and ByteStream reads and writes for blobs above the
//! batch limit.
//! The channel is made at the first call and connects lazily, so building a client
//! neither waits on the network nor needs a runtime.

use std::io;
use std::path::PathBuf;
use std::time::Duration;

use tonic::codegen::http::uri::PathAndQuery;
use tonic::metadata::{AsciiMetadataKey, AsciiMetadataValue};
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint};
use tonic::{Code, Status};
use tonic_prost::ProstCodec;

/// Calls made at most, the first included, for a call the server turned away for now.
const ATTEMPTS: u32 = 4;

/// The wait before the second attempt; doubled for each one after.
const FIRST_BACKOFF: Duration = Duration::from_millis(25);

/// Whether a failed call may succeed when made again: the server is busy
/// (`RESOURCE_EXHAUSTED`: BuildGrid's "Concurrent RPC limit exceeded"), restarting or
/// unreachable for a moment (`UNAVAILABLE`), or lost a race (`ABORTED`). The REAPI spec
/// asks clients to retry these with backoff.
fn retryable(code: Code) -> bool {
    matches!(
        code,
        Code::ResourceExhausted | Code::Unavailable | Code::Aborted
    )
}

/// Runs `call` until it succeeds, fails for good, or [`ATTEMPTS`] ran out, waiting
/// [`FIRST_BACKOFF`] doubled between attempts (with jitter, so that clients turned away
/// together do not come back together). The level's timeout bounds the whole.
async fn with_retries<T, F, Fut>(mut call: F) -> Result<T, Status>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, Status>>,
{
    let mut wait = FIRST_BACKOFF;
    for attempt in 1.. {
        match call().await {
            Err(status) if attempt < ATTEMPTS && retryable(status.code()) => {
                let jitter = Duration::from_micros(u64::from(std::process::id() % 997) * 13);
                tokio::time::sleep(wait + jitter).await;
                wait *= 2;
            }
            done => return done,
        }
    }
    unreachable!("the loop returns")
}

/// Bytes of one ByteStream write message (servers take 1–4 MiB; 1 MiB is what Bazel sends).
const WRITE_CHUNK: usize = 1 << 20;

/// How to reach the server.
#[derive(Clone)]
pub struct Target {
    /// `grpc://host:port` or `http://` (plain), `grpcs://` or `https://` (TLS).
    pub endpoint: String,
    /// `(name, value)` sent with every call: API keys, `authorization`.
    pub headers: Vec<(String, String)>,
    /// PEM certificates to trust besides the system's.
    pub ca_file: Option<PathBuf>,
    /// The limit of each call.
    pub timeout: Duration,
}

impl std::fmt::Debug for Target {
    /// Header values are secrets (API keys, tokens): only their names are shown.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names: Vec<&str> = self.headers.iter().map(|(n, _)| n.as_str()).collect();
        f.debug_struct("Target")
            .field("endpoint", &self.endpoint)
            .field("headers", &names)
            .field("ca_file", &self.ca_file)
            .field("timeout", &self.timeout)
            .finish()
    }
}

/// One server's channel and the metadata every call carries.
#[derive(Clone)]
pub struct Client {
    endpoint: Endpoint,
    channel: std::sync::Arc<std::sync::OnceLock<Channel>>,
    headers: Vec<(AsciiMetadataKey, AsciiMetadataValue)>,
    /// The largest message we accept (bytes): batch reads come back in one.
    max_message: usize,
}

impl Client {
    /// Checks the target and makes the channel. Errors: a malformed endpoint, header or CA
    /// file.
    pub fn new(target: &Target) -> io::Result<Client> {
        let (uri, tls) = match target.endpoint.split_once("://") {
            Some(("grpc" | "http", rest)) => (format!("http://{rest}"), false),
            Some(("grpcs" | "https", rest)) => (format!("https://{rest}"), true),
            _ => {
                return Err(invalid(format!(
                    "REAPI endpoint {:?} must start with grpc://, grpcs://, http:// or https://",
                    target.endpoint
                )));
            }
        };
        let mut endpoint = Endpoint::from_shared(uri)
            .map_err(|e| invalid(format!("REAPI endpoint {:?}: {e}", target.endpoint)))?
            .connect_timeout(target.timeout)
            .timeout(target.timeout)
            .tcp_nodelay(true);
        if tls {
            let mut config = ClientTlsConfig::new().with_native_roots();
            if let Some(path) = &target.ca_file {
                let pem = std::fs::read(path).map_err(|e| {
                    io::Error::new(e.kind(), format!("REAPI ca_file {}: {e}", path.display()))
                })?;
                config = config.ca_certificate(Certificate::from_pem(pem));
            }
            endpoint = endpoint
                .tls_config(config)
                .map_err(|e| invalid(format!("REAPI TLS settings: {e}")))?;
        }
        let mut headers = Vec::new();
        for (name, value) in &target.headers {
            let key: AsciiMetadataKey = name
                .to_ascii_lowercase()
                .parse()
                .map_err(|_| invalid(format!("REAPI header name {name:?} is not valid")))?;
            let mut value: AsciiMetadataValue = value
                .parse()
                .map_err(|_| invalid(format!("REAPI header {name}: the value is not valid")))?;
            value.set_sensitive(true);
            headers.push((key, value));
        }
        Ok(Client {
            endpoint,
            channel: Default::default(),
            headers,
            max_message: 4 << 20,
        })
    }

    /// Send and accept messages up to `bytes` (a batch of that many bytes of blobs) and
    /// their framing; never less than gRPC's usual 4 MiB.
    pub fn accept_messages_of(&mut self, bytes: usize) {
        self.max_message = (bytes + (64 << 10)).max(4 << 20);
    }

    fn request<T>(&self, message: T) -> tonic::Request<T> {
        let mut request = tonic::Request::new(message);
        for (key, value) in &self.headers {
            request.metadata_mut().insert(key.clone(), value.clone());
        }
        request
    }

    async fn ready(&self) -> Result<tonic::client::Grpc<Channel>, Status> {
        let channel = self
            .channel
            .get_or_init(|| self.endpoint.connect_lazy())
            .clone();
        let mut grpc = tonic::client::Grpc::new(channel)
            .max_decoding_message_size(self.max_message)
            .max_encoding_message_size(self.max_message);
        grpc.ready()
            .await
            .map_err(|e| Status::unavailable(format!("cannot reach the server: {e}")))?;
        Ok(grpc)
    }

    /// One unary call of `method` (`/package.Service/Method`), made again while the
    /// server turns it away for now (see [`retryable`]).
    pub async fn unary<Req, Resp>(&self, method: &'static str, message: Req) -> Result<Resp, Status>
    where
        Req: prost::Message + Clone + Send + Sync + 'static,
        Resp: prost::Message + Default + Send + Sync + 'static,
    {
        with_retries(|| async {
            let mut grpc = self.ready().await?;
            let codec = ProstCodec::<Req, Resp>::default();
            let path = PathAndQuery::from_static(method);
            Ok(grpc
                .unary(self.request(message.clone()), path, codec)
                .await?
                .into_inner())
        })
        .await
    }

    /// Starts a server-streaming call of `method` (made again while the server turns it
    /// away for now); the stream's messages are the caller's to read.
    pub async fn stream<Req, Resp>(
        &self,
        method: &'static str,
        message: Req,
    ) -> Result<tonic::Streaming<Resp>, Status>
    where
        Req: prost::Message + Clone + Send + Sync + 'static,
        Resp: prost::Message + Default + Send + Sync + 'static,
    {
        with_retries(|| async {
            let mut grpc = self.ready().await?;
            let codec = ProstCodec::<Req, Resp>::default();
            let path = PathAndQuery::from_static(method);
            Ok(grpc
                .server_streaming(self.request(message.clone()), path, codec)
                .await?
                .into_inner())
        })
        .await
    }

    /// The whole of a ByteStream resource, refused past `limit` bytes.
    pub async fn read(&self, resource_name: String, limit: u64) -> Result<Vec<u8>, Status> {
        with_retries(|| self.read_once(resource_name.clone(), limit)).await
    }

    async fn read_once(&self, resource_name: String, limit: u64) -> Result<Vec<u8>, Status> {
        use super::proto::{ReadRequest, ReadResponse};
        let mut grpc = self.ready().await?;
        let codec = ProstCodec::<ReadRequest, ReadResponse>::default();
        let path = PathAndQuery::from_static("/google.bytestream.ByteStream/Read");
        let request = self.request(ReadRequest {
            resource_name,
            read_offset: 0,
            read_limit: 0,
        });
        let mut stream = grpc
            .server_streaming(request, path, codec)
            .await?
            .into_inner();
        let mut data = Vec::new();
        while let Some(chunk) = stream.message().await? {
            if data.len() as u64 + chunk.data.len() as u64 > limit {
                return Err(Status::out_of_range(format!(
                    "the server sent more than the {limit} bytes the blob has"
                )));
            }
            data.extend_from_slice(&chunk.data);
        }
        Ok(data)
    }

    /// Writes `data` to the ByteStream resource in 1 MiB messages; returns the size the
    /// server committed.
    pub async fn write(&self, resource_name: String, data: &[u8]) -> Result<i64, Status> {
        with_retries(|| self.write_once(resource_name.clone(), data)).await
    }

    async fn write_once(&self, resource_name: String, data: &[u8]) -> Result<i64, Status> {
        use super::proto::{WriteRequest, WriteResponse};
        let mut grpc = self.ready().await?;
        let codec = ProstCodec::<WriteRequest, WriteResponse>::default();
        let path = PathAndQuery::from_static("/google.bytestream.ByteStream/Write");
        let chunks: Vec<&[u8]> = if data.is_empty() {
            vec![&[]]
        } else {
            data.chunks(WRITE_CHUNK).collect()
        };
        let last = chunks.len() - 1;
        let mut offset = 0i64;
        let messages: Vec<WriteRequest> = chunks
            .into_iter()
            .enumerate()
            .map(|(i, chunk)| {
                let message = WriteRequest {
                    // Only the first message names the resource.
                    resource_name: if i == 0 {
                        resource_name.clone()
                    } else {
                        String::new()
                    },
                    write_offset: offset,
                    finish_write: i == last,
                    data: chunk.to_vec(),
                };
                offset += chunk.len() as i64;
                message
            })
            .collect();
        let request = self.request(tokio_stream::iter(messages));
        let response = grpc.client_streaming(request, path, codec).await?;
        Ok(response.into_inner().committed_size)
    }
}

/// A failed call as an I/O error that names the call; a deadline is `TimedOut`.
pub fn io_error(call: &str, status: &Status) -> io::Error {
    let kind = match status.code() {
        Code::DeadlineExceeded => io::ErrorKind::TimedOut,
        Code::Unavailable => io::ErrorKind::ConnectionRefused,
        Code::Unauthenticated | Code::PermissionDenied => io::ErrorKind::PermissionDenied,
        _ => io::ErrorKind::Other,
    };
    io::Error::new(
        kind,
        format!("REAPI {call}: {:?}: {}", status.code(), status.message()),
    )
}

fn invalid(message: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, message)
}
