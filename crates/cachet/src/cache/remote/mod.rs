//! Shared stores, as cache levels after the local disk.
//!
//! Every backend but one goes through OpenDAL. The bazel-remote HTTP layout is our own
//! ([`http_cache`]): OpenDAL's `http` service is read-only and its `webdav` service sends
//! PROPFIND and MKCOL, which bazel-remote refuses. Memcached has a client of our own
//! ([`memcached`], for speed) under a chunking layer ([`chunked`]), because its default
//! item limit (1 MiB) is smaller than many rlibs.
//!
//! Keys are namespaced by the entry format version, so two versions of cachet can share
//! one bucket without reading each other's entries: `<prefix>cachet/v2/<key>`.

pub mod chunked;
pub mod http_cache;
pub mod memcached;

use std::io;
use std::sync::Arc;

use async_trait::async_trait;
use opendal::{ErrorKind as DalErrorKind, Operator};

use super::entry::ENTRY_FORMAT_VERSION;
use super::level::LevelOptions;
use super::{CacheKey, Storage};
use crate::config::{RemoteConfig, RemoteKind};

/// Where an entry lives in a shared store.
pub fn key_path(prefix: &str, key: &CacheKey) -> String {
    format!("{prefix}cachet/v{ENTRY_FORMAT_VERSION}/{}", key.to_hex())
}

/// The level options of a remote.
pub fn level_options(config: &RemoteConfig) -> LevelOptions {
    LevelOptions {
        name: config.name.clone(),
        kind: config.kind.name().into(),
        read_only: config.read_only,
        timeout: Some(config.timeout),
        breaker: (config.breaker_failures > 0)
            .then_some((config.breaker_failures, config.breaker_cooldown)),
        remove_corrupt: false,
    }
}

/// Builds the store of one remote. No network I/O happens here: startup never waits on a
/// remote, and one that is down shows up as errors on its level.
pub fn build(config: &RemoteConfig) -> Result<Arc<dyn Storage>, String> {
    // OpenDAL's HTTP services need a process-wide transport (reqwest); we do not use its
    // before-main auto-registration, so it is installed here, once.
    static TRANSPORT: std::sync::Once = std::sync::Once::new();
    TRANSPORT.call_once(opendal::install_default);
    let prefix = config.prefix.clone();
    let dal = |op: Result<Operator, opendal::Error>| -> Result<Arc<dyn Storage>, String> {
        let op = op.map_err(|e| e.to_string())?;
        Ok(Arc::new(Prefixed::new(op, prefix.clone())))
    };
    let text = |key: &str| config.get(key).unwrap_or("");
    match config.kind {
        RemoteKind::S3 => {
            let mut b = opendal::services::S3::default()
                .bucket(text("bucket"))
                .root("/");
            if let Some(endpoint) = config.get("endpoint") {
                b = b.endpoint(endpoint);
            }
            // Signing needs a region. A custom endpoint (MinIO, SeaweedFS, Ceph) rarely
            // cares which; for AWS set `region` or AWS_REGION (a region that only the
            // profile file names is not read).
            let region = config
                .get("region")
                .map(str::to_owned)
                .or_else(|| std::env::var("AWS_REGION").ok())
                .or_else(|| std::env::var("AWS_DEFAULT_REGION").ok())
                .unwrap_or_else(|| "us-east-1".into());
            b = b.region(&region);
            if config.flag("path_style") == Some(false) {
                b = b.enable_virtual_host_style();
            }
            if let Some(v) = config.get("access_key_id") {
                b = b.access_key_id(v);
            }
            if let Some(v) = config.get("secret_access_key") {
                b = b.secret_access_key(v);
            }
            if let Some(v) = config.get("session_token") {
                b = b.session_token(v);
            }
            if config.flag("anonymous") == Some(true) {
                b = b.skip_signature();
            }
            dal(Operator::new(b))
        }
        RemoteKind::Redis => {
            let mut b = opendal::services::Redis::default().root("/");
            if let Some(endpoint) = config.get("endpoint") {
                // The client takes only the scheme, host and port of the URL: a user,
                // password or /db in it are passed on here, below any explicit setting.
                let url = reqwest::Url::parse(endpoint)
                    .map_err(|e| format!("endpoint `{endpoint}` is not a URL: {e}"))?;
                if !url.username().is_empty() && config.get("username").is_none() {
                    b = b.username(url.username());
                }
                if let Some(password) = url.password()
                    && config.get("password").is_none()
                {
                    b = b.password(password);
                }
                if let Ok(db) = url.path().trim_start_matches('/').parse::<i64>()
                    && config.get("db").is_none()
                {
                    b = b.db(db);
                }
                b = b.endpoint(endpoint);
            }
            let cluster = config.list("cluster_endpoints");
            if !cluster.is_empty() {
                b = b.cluster_endpoints(&cluster.join(","));
            }
            if let Some(v) = config.get("username") {
                b = b.username(v);
            }
            if let Some(v) = config.get("password") {
                b = b.password(v);
            }
            if let Some(db) = config.count("db") {
                b = b.db(db as i64);
            }
            if let Some(ttl) = config.duration("ttl") {
                b = b.default_ttl(ttl);
            }
            dal(Operator::new(b))
        }
        RemoteKind::Memcached => {
            let endpoint = text("endpoint");
            let items: Box<dyn Items> = match config.get("username") {
                // SASL needs the binary protocol: OpenDAL's client has it (and is slow,
                // see memcached.rs).
                Some(user) => {
                    let mut b = opendal::services::Memcached::default()
                        .endpoint(endpoint)
                        .root("/")
                        .username(user);
                    if let Some(v) = config.get("password") {
                        b = b.password(v);
                    }
                    if let Some(ttl) = config.duration("ttl") {
                        b = b.default_ttl(ttl);
                    }
                    Box::new(Operator::new(b).map_err(|e| e.to_string())?)
                }
                None => {
                    let expiry = config.duration("ttl").map_or(0, |d| d.as_secs() as u32);
                    Box::new(memcached::Memcached::new(endpoint, expiry)?)
                }
            };
            if prefix.len() > memcached::MAX_KEY_LEN - 100 || prefix.contains(char::is_whitespace) {
                return Err(format!(
                    "memcached keys hold the prefix: `{prefix}` must be under 150 bytes, without spaces"
                ));
            }
            Ok(Arc::new(chunked::Chunked::new(
                items,
                prefix,
                config
                    .size("item_limit")
                    .unwrap_or(chunked::DEFAULT_ITEM_LIMIT),
                config
                    .count("max_chunks")
                    .unwrap_or(chunked::DEFAULT_MAX_CHUNKS),
            )))
        }
        RemoteKind::Webdav => {
            let mut b = opendal::services::Webdav::default()
                .endpoint(text("endpoint"))
                .root("/");
            if let Some(v) = config.get("username") {
                b = b.username(v);
            }
            if let Some(v) = config.get("password") {
                b = b.password(v);
            }
            if let Some(v) = config.get("token") {
                b = b.token(v);
            }
            if config.flag("create_dirs") == Some(false) {
                b = b.disable_create_dir(true);
            }
            dal(Operator::new(b))
        }
        RemoteKind::Gcs => {
            let mut b = opendal::services::Gcs::default()
                .bucket(text("bucket"))
                .root("/");
            if let Some(v) = config.get("endpoint") {
                b = b.endpoint(v);
            }
            if let Some(v) = config.get("credential_path") {
                b = b.credential_path(v);
            }
            if let Some(v) = config.get("credential") {
                b = b.credential(v);
            }
            if let Some(v) = config.get("token") {
                b = b.token(v.to_owned());
            }
            if let Some(v) = config.get("scope") {
                b = b.scope(v);
            }
            if config.flag("anonymous") == Some(true) {
                b = b.skip_signature();
            }
            dal(Operator::new(b))
        }
        RemoteKind::Azblob => {
            let mut b = opendal::services::Azblob::default()
                .container(text("container"))
                .root("/");
            if let Some(v) = config.get("endpoint") {
                b = b.endpoint(v);
            }
            if let Some(v) = config.get("account_name") {
                b = b.account_name(v);
            }
            if let Some(v) = config.get("account_key") {
                b = b.account_key(v);
            }
            if let Some(v) = config.get("sas_token") {
                b = b.sas_token(v);
            }
            dal(Operator::new(b))
        }
        RemoteKind::Gha => {
            // The runner's ACTIONS_CACHE_URL / ACTIONS_RUNTIME_TOKEN are read by the
            // service itself when these are not set.
            let mut b = opendal::services::Ghac::default().root("/");
            if let Some(v) = config.get("endpoint") {
                b = b.endpoint(v);
            }
            if let Some(v) = config.get("runtime_token") {
                b = b.runtime_token(v);
            }
            b = b.version(config.get("version").unwrap_or("cachet"));
            dal(Operator::new(b))
        }
        RemoteKind::Http => {
            let cache = http_cache::HttpCache::new(http_cache::HttpCacheConfig {
                endpoint: text("endpoint").to_owned(),
                timeout: config.timeout,
                bearer_token: config.get("bearer_token").map(str::to_owned),
                basic_auth: config.get("username").map(|user| {
                    (
                        user.to_owned(),
                        config.get("password").unwrap_or("").to_owned(),
                    )
                }),
                extra_headers: Vec::new(),
            })
            .map_err(|e| e.to_string())?;
            Ok(Arc::new(Prefixed::new(cache, prefix)))
        }
    }
}

/// OpenDAL's errors as I/O errors, keeping what the levels act on: not found, and time.
pub fn io_error(e: opendal::Error) -> io::Error {
    let kind = match e.kind() {
        DalErrorKind::NotFound => io::ErrorKind::NotFound,
        DalErrorKind::PermissionDenied => io::ErrorKind::PermissionDenied,
        DalErrorKind::RateLimited => io::ErrorKind::WouldBlock,
        _ if e.to_string().to_ascii_lowercase().contains("timed out") => io::ErrorKind::TimedOut,
        _ => io::ErrorKind::Other,
    };
    io::Error::new(kind, e.to_string())
}

/// A store of named items: OpenDAL's services, our memcached client, the HTTP layout.
#[async_trait]
pub trait Items: Send + Sync {
    /// Ok(None) when there is no such item.
    async fn read(&self, key: &str) -> io::Result<Option<Vec<u8>>>;
    async fn write(&self, key: &str, bytes: Vec<u8>) -> io::Result<()>;
    async fn delete(&self, key: &str) -> io::Result<()>;
}

#[async_trait]
impl Items for Operator {
    async fn read(&self, key: &str) -> io::Result<Option<Vec<u8>>> {
        match Operator::read(self, key).await {
            Ok(buffer) => Ok(Some(buffer.to_vec())),
            Err(e) if e.kind() == DalErrorKind::NotFound => Ok(None),
            Err(e) => Err(io_error(e)),
        }
    }

    async fn write(&self, key: &str, bytes: Vec<u8>) -> io::Result<()> {
        Operator::write(self, key, bytes)
            .await
            .map(drop)
            .map_err(io_error)
    }

    async fn delete(&self, key: &str) -> io::Result<()> {
        Operator::delete(self, key).await.map_err(io_error)
    }
}

#[async_trait]
impl Items for http_cache::HttpCache {
    async fn read(&self, key: &str) -> io::Result<Option<Vec<u8>>> {
        self.get(key).await
    }

    async fn write(&self, key: &str, bytes: Vec<u8>) -> io::Result<()> {
        self.put(key, bytes).await
    }

    /// bazel-remote has no delete; a bad entry is replaced by the next store of its key.
    async fn delete(&self, _key: &str) -> io::Result<()> {
        Ok(())
    }
}

/// A [`Storage`] over a store of named items, each entry at [`key_path`].
pub struct Prefixed<I> {
    items: I,
    prefix: String,
}

impl<I: Items> Prefixed<I> {
    pub fn new(items: I, prefix: String) -> Prefixed<I> {
        Prefixed { items, prefix }
    }
}

#[async_trait]
impl<I: Items> Storage for Prefixed<I> {
    async fn get(&self, key: &CacheKey) -> io::Result<Option<Vec<u8>>> {
        self.items.read(&key_path(&self.prefix, key)).await
    }

    async fn put(&self, key: &CacheKey, bytes: Vec<u8>) -> io::Result<()> {
        self.items.write(&key_path(&self.prefix, key), bytes).await
    }

    async fn remove(&self, key: &CacheKey) -> io::Result<()> {
        self.items.delete(&key_path(&self.prefix, key)).await
    }
}

#[cfg(test)]
mod tests;
