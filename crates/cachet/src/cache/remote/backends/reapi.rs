//! `type = "reapi"`: a Remote Execution API server's ActionCache and CAS, through our own
//! gRPC client ([`crate::cache::remote::reapi`]).

use std::io;
use std::path::PathBuf;
use std::sync::Arc;

use async_trait::async_trait;
use serde::Deserialize;

use super::settings::{List, Secret, SettingsError, auth_headers};
use super::{BackendSettings, StoreSpec};
use crate::cache::Storage;
use crate::cache::remote::reapi::{Reapi, Target};
use crate::cache::remote::{Items, Prefixed, RemoteError};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct Settings {
    /// `grpc://host:port` (plain) or `grpcs://host:port` (TLS); `http`/`https` too.
    endpoint: String,
    /// The server's instance name; empty for the default instance.
    instance_name: Option<String>,
    /// Sent as the header `api_key_header` (BuildBuddy's, by default).
    api_key: Option<Secret>,
    /// The header that carries `api_key`.
    api_key_header: Option<String>,
    /// Sent as `authorization: Bearer …`.
    bearer_token: Option<Secret>,
    /// More headers, `name: value` each (not secret: use `api_key` for a secret).
    headers: Option<List>,
    /// PEM certificates to trust besides the system's (a private CA).
    ca_file: Option<PathBuf>,
}

impl Settings {
    fn headers(&self) -> Result<Vec<(String, String)>, SettingsError> {
        auth_headers(
            self.headers.as_ref(),
            self.api_key.as_ref(),
            self.api_key_header.as_deref(),
            self.bearer_token.as_ref(),
        )
    }
}

impl BackendSettings for Settings {
    fn check(&self) -> Result<(), SettingsError> {
        self.headers().map(drop)
    }

    fn build(self, spec: &StoreSpec) -> Result<Arc<dyn Storage>, RemoteError> {
        let target = Target {
            endpoint: self.endpoint.clone(),
            headers: self.headers()?,
            ca_file: self.ca_file.clone(),
            timeout: spec.timeout,
        };
        let store = Reapi::new(&target, self.instance_name.unwrap_or_default())?;
        Ok(Arc::new(Prefixed::new(store, spec.prefix.to_owned())))
    }
}

#[async_trait]
impl Items for Reapi {
    async fn read(&self, key: &str) -> io::Result<Option<Vec<u8>>> {
        self.get(key).await
    }

    async fn write(&self, key: &str, bytes: Vec<u8>) -> io::Result<()> {
        self.put(key, bytes).await
    }

    /// The ActionCache has no delete; a bad entry is replaced by the next store of its key.
    async fn delete(&self, _key: &str) -> io::Result<()> {
        Ok(())
    }

    fn refuses_writes(&self) -> Option<String> {
        Reapi::refuses_writes(self)
    }

    fn transfer(&self) -> Option<crate::cache::Transfer> {
        Some(Reapi::transfer(self))
    }

    async fn ask_refuses_writes(&self) -> Option<String> {
        self.ask_capabilities().await
    }
}
