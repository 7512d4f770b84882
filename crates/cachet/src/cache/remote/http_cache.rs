//! Remote cache backend speaking the bazel-remote HTTP cache protocol.
//!
//! Layout, as bazel-remote (and nginx/WebDAV-style stores) expect it:
//! - `<endpoint>/cas/<sha256(bytes)>` holds the content itself;
//! - `<endpoint>/ac/<sha256(key)>` holds a serialized REAPI `ActionResult`
//!   whose single output file points at that CAS blob.
//!
//! Going through a real `ActionResult` (rather than storing raw bytes under
//! `/ac/`) is what lets a stock bazel-remote accept our writes without
//! `--disable_http_ac_validation`. Only GET and PUT are issued: bazel-remote
//! rejects WebDAV verbs, and plain PUT is all a static file server needs.

use std::fmt;
use std::io;
use std::time::Duration;

use prost::Message as _;
use reqwest::header::{CONTENT_TYPE, HeaderMap, HeaderName, HeaderValue};
use reqwest::{Client, StatusCode, Url};
use sha2::{Digest as _, Sha256};

use crate::reapi::proto;

/// Name of the single output file in every `ActionResult` we write.
const ENTRY_PATH: &str = "cachet-entry";

/// How much of an error response body to quote: enough for bazel-remote's
/// one-line validation messages, short enough to keep logs readable.
const ERROR_BODY_SNIPPET: usize = 200;

#[derive(Clone)]
pub struct HttpCacheConfig {
    /// Base URL, e.g. `http://host:8080/` or `https://host/some/prefix`.
    pub endpoint: String,
    /// Applies to each request as a whole (connect, send, and body read).
    pub timeout: Duration,
    pub bearer_token: Option<String>,
    pub basic_auth: Option<(String, String)>,
    pub extra_headers: Vec<(String, String)>,
}

// Hand-written so that secrets never end up in logs via `{:?}`.
impl fmt::Debug for HttpCacheConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HttpCacheConfig")
            .field("endpoint", &redact_str(&self.endpoint))
            .field("timeout", &self.timeout)
            .field(
                "bearer_token",
                &self.bearer_token.as_ref().map(|_| "<redacted>"),
            )
            .field(
                "basic_auth",
                &self.basic_auth.as_ref().map(|(u, _)| (u, "<redacted>")),
            )
            .field(
                "extra_headers",
                &self
                    .extra_headers
                    .iter()
                    .map(|(k, _)| k)
                    .collect::<Vec<_>>(),
            )
            .finish()
    }
}

enum Auth {
    None,
    Bearer(String),
    Basic(String, String),
}

pub struct HttpCache {
    client: Client,
    /// Always ends in `/`, so `join("cas/...")` keeps any path prefix.
    base: Url,
    auth: Auth,
}

impl fmt::Debug for HttpCache {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HttpCache")
            .field("base", &redact(&self.base))
            .finish_non_exhaustive()
    }
}

impl HttpCache {
    /// Validates the configuration and builds the client; performs no network I/O.
    pub fn new(config: HttpCacheConfig) -> io::Result<HttpCache> {
        let mut base = Url::parse(&config.endpoint).map_err(|e| {
            invalid_input(format!(
                "invalid HTTP cache endpoint {:?}: {e}",
                redact_str(&config.endpoint)
            ))
        })?;
        if !matches!(base.scheme(), "http" | "https") {
            return Err(invalid_input(format!(
                "HTTP cache endpoint {} must be http:// or https://",
                redact(&base)
            )));
        }
        if base.query().is_some() || base.fragment().is_some() {
            // `Url::join` would silently drop them, so refuse rather than surprise.
            return Err(invalid_input(format!(
                "HTTP cache endpoint {} must not have a query or fragment",
                redact(&base)
            )));
        }
        if !base.path().ends_with('/') {
            let path = format!("{}/", base.path());
            base.set_path(&path);
        }
        if config.timeout.is_zero() {
            return Err(invalid_input("HTTP cache timeout must be non-zero"));
        }

        let auth = match (config.bearer_token, config.basic_auth) {
            (Some(_), Some(_)) => {
                return Err(invalid_input(
                    "HTTP cache: set either a bearer token or basic auth, not both",
                ));
            }
            (Some(token), None) => Auth::Bearer(token),
            (None, Some((user, pass))) => Auth::Basic(user, pass),
            (None, None) => Auth::None,
        };

        let mut headers = HeaderMap::new();
        for (name, value) in &config.extra_headers {
            let name = HeaderName::from_bytes(name.as_bytes())
                .map_err(|e| invalid_input(format!("invalid header name {name:?}: {e}")))?;
            let mut value = HeaderValue::from_str(value)
                .map_err(|e| invalid_input(format!("invalid value for header {name}: {e}")))?;
            // Extra headers are often API keys; keep them out of debug output.
            value.set_sensitive(true);
            headers.append(name, value);
        }

        let client = Client::builder()
            .timeout(config.timeout)
            .connect_timeout(config.timeout)
            .default_headers(headers)
            // A redirected PUT may be replayed as a GET and "succeed" without
            // storing anything; a cache must not silently lose writes.
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| io::Error::other(format!("building HTTP cache client: {e}")))?;

        Ok(HttpCache { client, base, auth })
    }

    /// `key` is an opaque string such as `"cachet/v2/ab12..."`. `Ok(None)` on a miss,
    /// including an action entry whose content blob has gone missing.
    pub async fn get(&self, key: &str) -> io::Result<Option<Vec<u8>>> {
        let ac_url = self.url("ac", &sha256_hex(key.as_bytes()))?;
        let Some(ac_bytes) = self.fetch(&ac_url, None).await? else {
            return Ok(None);
        };
        let digest = entry_digest(&ac_bytes, &ac_url)?;

        let cas_url = self.url("cas", &digest.hash)?;
        // Converted without loss: entry_digest rejected negative sizes.
        let size = digest.size_bytes as u64;
        let Some(bytes) = self.fetch(&cas_url, Some(size)).await? else {
            // bazel-remote may evict CAS blobs independently of AC entries.
            return Ok(None);
        };
        if bytes.len() as u64 != size {
            return Err(invalid_data(format!(
                "{}: blob is {} bytes but the action entry says {size}",
                redact(&cas_url),
                bytes.len()
            )));
        }
        let actual = sha256_hex(&bytes);
        if actual != digest.hash {
            return Err(invalid_data(format!(
                "{}: blob sha256 is {actual}, expected {}",
                redact(&cas_url),
                digest.hash
            )));
        }
        Ok(Some(bytes))
    }

    pub async fn put(&self, key: &str, bytes: Vec<u8>) -> io::Result<()> {
        let digest = proto::Digest {
            hash: sha256_hex(&bytes),
            size_bytes: i64::try_from(bytes.len())
                .map_err(|_| invalid_input("cache entry too large"))?,
        };
        let cas_url = self.url("cas", &digest.hash)?;
        let ac_url = self.url("ac", &sha256_hex(key.as_bytes()))?;

        // CAS first: bazel-remote rejects an AC entry whose blobs are missing,
        // and readers treat a dangling AC as a miss anyway.
        self.upload(&cas_url, bytes).await?;

        let action = proto::ActionResult {
            output_files: vec![proto::OutputFile {
                path: ENTRY_PATH.to_owned(),
                digest: Some(digest),
                is_executable: false,
            }],
            ..Default::default()
        };
        self.upload(&ac_url, action.encode_to_vec()).await
    }

    fn url(&self, kind: &str, hash: &str) -> io::Result<Url> {
        self.base
            .join(&format!("{kind}/{hash}"))
            .map_err(|e| invalid_input(format!("building {kind} URL: {e}")))
    }

    fn request(&self, method: reqwest::Method, url: &Url) -> reqwest::RequestBuilder {
        let req = self.client.request(method, url.clone());
        match &self.auth {
            Auth::None => req,
            Auth::Bearer(token) => req.bearer_auth(token),
            Auth::Basic(user, pass) => req.basic_auth(user, Some(pass)),
        }
    }

    /// GET `url`; `Ok(None)` on 404. With `expected_len`, a Content-Length
    /// that disagrees fails before the body is downloaded.
    async fn fetch(&self, url: &Url, expected_len: Option<u64>) -> io::Result<Option<Vec<u8>>> {
        let resp = self
            .request(reqwest::Method::GET, url)
            .send()
            .await
            .map_err(|e| transport_error("GET", url, e))?;
        let status = resp.status();
        if status == StatusCode::NOT_FOUND {
            return Ok(None);
        }
        if !status.is_success() {
            return Err(status_error("GET", url, resp).await);
        }
        if let (Some(expected), Some(actual)) = (expected_len, resp.content_length())
            && expected != actual
        {
            return Err(invalid_data(format!(
                "{}: blob is {actual} bytes but the action entry says {expected}",
                redact(url)
            )));
        }
        let body = resp
            .bytes()
            .await
            .map_err(|e| transport_error("GET", url, e))?;
        Ok(Some(body.to_vec()))
    }

    async fn upload(&self, url: &Url, body: Vec<u8>) -> io::Result<()> {
        let resp = self
            .request(reqwest::Method::PUT, url)
            .header(CONTENT_TYPE, "application/octet-stream")
            .body(body)
            .send()
            .await
            .map_err(|e| transport_error("PUT", url, e))?;
        if resp.status().is_success() {
            Ok(())
        } else {
            Err(status_error("PUT", url, resp).await)
        }
    }
}

/// Decodes an AC entry and returns the digest of our output file, checked
/// well enough to be safe to splice into a URL.
pub(crate) fn entry_digest(ac_bytes: &[u8], ac_url: &Url) -> io::Result<proto::Digest> {
    let action = proto::ActionResult::decode(ac_bytes)
        .map_err(|e| invalid_data(format!("{}: not a valid ActionResult: {e}", redact(ac_url))))?;
    let file = action
        .output_files
        .into_iter()
        .find(|f| f.path == ENTRY_PATH)
        .ok_or_else(|| {
            invalid_data(format!(
                "{}: ActionResult has no output file {ENTRY_PATH:?}",
                redact(ac_url)
            ))
        })?;
    let digest = file.digest.ok_or_else(|| {
        invalid_data(format!(
            "{}: output file {ENTRY_PATH:?} has no digest",
            redact(ac_url)
        ))
    })?;
    // A hostile or corrupt entry must not be able to steer the CAS request
    // elsewhere (e.g. "../"), so only accept a canonical sha256.
    let canonical = digest.hash.len() == 64
        && digest
            .hash
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
    if !canonical || digest.size_bytes < 0 {
        return Err(invalid_data(format!(
            "{}: malformed digest {}/{}",
            redact(ac_url),
            digest.hash,
            digest.size_bytes
        )));
    }
    Ok(digest)
}

fn sha256_hex(data: &[u8]) -> String {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let hash = Sha256::digest(data);
    let mut out = String::with_capacity(hash.len() * 2);
    for b in hash.iter() {
        out.push(HEX[usize::from(b >> 4)] as char);
        out.push(HEX[usize::from(b & 0xf)] as char);
    }
    out
}

fn transport_error(method: &str, url: &Url, err: reqwest::Error) -> io::Error {
    let kind = if err.is_timeout() {
        io::ErrorKind::TimedOut
    } else {
        // Surface e.g. ConnectionRefused from the underlying socket error.
        io_kind_in_chain(&err).unwrap_or(io::ErrorKind::Other)
    };
    // reqwest's own message would print the URL unredacted; we print ours.
    let err = err.without_url();
    let mut msg = format!("{method} {}: {err}", redact(url));
    let mut source = std::error::Error::source(&err);
    while let Some(s) = source {
        msg.push_str(": ");
        msg.push_str(&s.to_string());
        source = s.source();
    }
    io::Error::new(kind, msg)
}

fn io_kind_in_chain(err: &(dyn std::error::Error + 'static)) -> Option<io::ErrorKind> {
    let mut cur = Some(err);
    while let Some(e) = cur {
        if let Some(io_err) = e.downcast_ref::<io::Error>() {
            return Some(io_err.kind());
        }
        cur = e.source();
    }
    None
}

async fn status_error(method: &str, url: &Url, resp: reqwest::Response) -> io::Error {
    let status = resp.status();
    let kind = match status {
        StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => io::ErrorKind::PermissionDenied,
        _ => io::ErrorKind::Other,
    };
    // Best effort: bazel-remote explains rejections (e.g. a failed AC
    // validation) in the body, which is worth quoting.
    let detail = match resp.text().await {
        Ok(body) => {
            let body = body.trim();
            let snippet: String = body.chars().take(ERROR_BODY_SNIPPET).collect();
            if snippet.is_empty() {
                String::new()
            } else if snippet.len() < body.len() {
                format!(": {snippet}...")
            } else {
                format!(": {snippet}")
            }
        }
        Err(_) => String::new(),
    };
    io::Error::new(
        kind,
        format!("{method} {}: HTTP {status}{detail}", redact(url)),
    )
}

/// The URL with any userinfo password removed, for messages.
fn redact(url: &Url) -> String {
    if url.password().is_some() {
        let mut url = url.clone();
        let _ = url.set_password(Some("<redacted>"));
        url.to_string()
    } else {
        url.to_string()
    }
}

fn redact_str(endpoint: &str) -> String {
    match Url::parse(endpoint) {
        Ok(url) => redact(&url),
        Err(_) => "<unparsable URL>".to_owned(),
    }
}

fn invalid_input(msg: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, msg.into())
}

fn invalid_data(msg: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg.into())
}

#[cfg(test)]
mod tests;
