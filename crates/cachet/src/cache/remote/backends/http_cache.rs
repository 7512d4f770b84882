//! `type = "http"`: an HTTP cache with the bazel-remote layout, through our own client
//! ([`crate::cache::remote::http_cache`]).

use std::io;
use std::sync::Arc;

use async_trait::async_trait;
use serde::Deserialize;

use super::{BackendSettings, StoreSpec};
use crate::cache::Storage;
use crate::cache::remote::http_cache::{HttpCache, HttpCacheConfig};
use crate::cache::remote::{Items, Prefixed, RemoteError};
use super::settings::{Secret, SettingsError};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct Settings {
    /// Base URL, `http://` or `https://`, with an optional path.
    endpoint: String,
    /// Sent as `Authorization: Bearer …`; not with `username`.
    bearer_token: Option<Secret>,
    /// HTTP basic authentication.
    username: Option<String>,
    /// With `username`; empty when unset.
    password: Option<Secret>,
}

impl BackendSettings for Settings {
    fn check(&self) -> Result<(), SettingsError> {
        if self.bearer_token.is_some() && self.username.is_some() {
            return Err(SettingsError::Invalid {
                key: None,
                message: "set `bearer_token` or `username`/`password`, not both".into(),
            });
        }
        Ok(())
    }

    fn build(self, spec: &StoreSpec) -> Result<Arc<dyn Storage>, RemoteError> {
        let password = self.password.as_ref().map_or("", Secret::expose).to_owned();
        let cache = HttpCache::new(HttpCacheConfig {
            endpoint: self.endpoint,
            timeout: spec.timeout,
            bearer_token: self.bearer_token.map(|t| t.expose().to_owned()),
            basic_auth: self.username.map(|user| (user, password)),
            extra_headers: Vec::new(),
        })?;
        Ok(Arc::new(Prefixed::new(cache, spec.prefix.to_owned())))
    }
}

#[async_trait]
impl Items for HttpCache {
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
