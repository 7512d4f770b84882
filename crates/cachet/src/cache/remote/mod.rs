//! Shared stores, as cache levels after the local disk.
//!
//! Each backend is one file in [`backends`], with its typed settings and its build, and one
//! line in that module's registry; [`build`] dispatches on the remote's type through it.
//!
//! Every backend but one goes through OpenDAL. The bazel-remote HTTP layout is our own
//! ([`http_cache`]): OpenDAL's `http` service is read-only and its `webdav` service sends
//! PROPFIND and MKCOL, which bazel-remote refuses. Memcached has a client of our own
//! ([`memcached`], for speed) under a chunking layer ([`chunked`]), because its default
//! item limit (1 MiB) is smaller than many rlibs.
//!
//! Keys are namespaced by the entry format version, so two versions of cachet can share
//! one bucket without reading each other's entries: `<prefix>cachet/v2/<key>`.

// With no backend built (`--no-default-features`), the registry's shared machinery has no
// user; that build is still meant to compile quietly.
#[cfg_attr(not(feature = "default"), allow(dead_code))]
pub(crate) mod backends;
pub mod chunked;
#[cfg(feature = "http-cache")]
pub mod http_cache;
#[cfg(feature = "memcached")]
pub mod memcached;
#[cfg(feature = "reapi")]
pub mod reapi;

use std::io;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use opendal::{ErrorKind as DalErrorKind, Operator};

use super::entry::ENTRY_FORMAT_VERSION;
use super::{CacheKey, Storage};
use backends::Backend;
use backends::settings::SettingsError;

/// Why a remote's store cannot be built. Nothing here has touched the network.
#[derive(Debug, thiserror::Error)]
pub enum RemoteError {
    /// Its settings do not fit its type (only for a configuration not checked on load).
    #[error(transparent)]
    Settings(#[from] SettingsError),
    /// OpenDAL refused the service's settings.
    #[error("{0}")]
    Service(#[from] opendal::Error),
    /// A client of our own refused its settings.
    #[error("{0}")]
    Client(#[from] io::Error),
    /// An endpoint that does not parse as a URL.
    #[error("endpoint `{endpoint}` is not a URL: {reason}")]
    NotAUrl { endpoint: String, reason: String },
    /// An endpoint of the wrong shape for its type, such as a memcached URL with a path.
    #[error("{kind} endpoint `{endpoint}` is not {expected}")]
    Endpoint {
        kind: &'static str,
        endpoint: String,
        expected: &'static str,
    },
    /// A prefix the store's keys cannot hold.
    #[error("{kind} keys hold the prefix: `{prefix}` {rule}")]
    Prefix {
        kind: &'static str,
        prefix: String,
        rule: &'static str,
    },
}

/// What building a store takes from its remote's configuration.
pub struct StoreSpec<'a> {
    /// Prepended to every key, so that several teams can share a bucket.
    pub prefix: &'a str,
    /// The limit of every call to the store.
    pub timeout: Duration,
    /// The backend's own settings, as `(key, text)` pairs.
    pub settings: Vec<(&'a str, &'a str)>,
}

/// Where an entry lives in a shared store.
pub fn key_path(prefix: &str, key: &CacheKey) -> String {
    format!("{prefix}cachet/v{ENTRY_FORMAT_VERSION}/{}", key.to_hex())
}

/// Builds the store of one remote, by its type's backend (see [`backends`]). No network
/// I/O happens here: startup never waits on a remote, and one that is down shows up as
/// errors on its level.
pub fn build(backend: &Backend, spec: &StoreSpec) -> Result<Arc<dyn Storage>, RemoteError> {
    // OpenDAL's HTTP services need a process-wide transport (reqwest); we do not use its
    // before-main auto-registration, so it is installed here, once.
    static TRANSPORT: std::sync::Once = std::sync::Once::new();
    TRANSPORT.call_once(opendal::install_default);
    (backend.build)(spec)
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
    /// Why the store takes no writes any more, once it has said so (see
    /// [`Storage::refuses_writes`]).
    fn refuses_writes(&self) -> Option<String> {
        None
    }
    /// See [`Storage::transfer`].
    fn transfer(&self) -> Option<crate::cache::Transfer> {
        None
    }
    /// See [`Storage::ask_refuses_writes`].
    async fn ask_refuses_writes(&self) -> Option<String> {
        None
    }
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

    fn refuses_writes(&self) -> Option<String> {
        self.items.refuses_writes()
    }

    fn transfer(&self) -> Option<crate::cache::Transfer> {
        self.items.transfer()
    }

    async fn ask_refuses_writes(&self) -> Option<String> {
        self.items.ask_refuses_writes().await
    }
}

#[cfg(test)]
mod tests;
