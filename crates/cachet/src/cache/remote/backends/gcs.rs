//! `type = "gcs"`: Google Cloud Storage, through OpenDAL.

use std::sync::Arc;

use opendal::Operator;
use serde::Deserialize;

use super::{BackendSettings, StoreSpec, opendal};
use crate::cache::Storage;
use crate::cache::remote::RemoteError;
use super::settings::Secret;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct Settings {
    bucket: String,
    /// `https://storage.googleapis.com` when unset.
    endpoint: Option<String>,
    /// Path of a service account JSON key file.
    credential_path: Option<String>,
    /// The same JSON, base64-encoded.
    credential: Option<Secret>,
    /// An OAuth2 access token.
    token: Option<Secret>,
    /// OAuth2 scope; read-write on storage when unset.
    scope: Option<String>,
    /// Unsigned requests, for a public bucket.
    anonymous: Option<bool>,
}

impl BackendSettings for Settings {
    fn build(self, spec: &StoreSpec) -> Result<Arc<dyn Storage>, RemoteError> {
        let mut b = opendal::services::Gcs::default()
            .bucket(&self.bucket)
            .root("/");
        if let Some(v) = &self.endpoint {
            b = b.endpoint(v);
        }
        if let Some(v) = &self.credential_path {
            b = b.credential_path(v);
        }
        if let Some(v) = &self.credential {
            b = b.credential(v.expose());
        }
        if let Some(v) = &self.token {
            b = b.token(v.expose().to_owned());
        }
        if let Some(v) = &self.scope {
            b = b.scope(v);
        }
        if self.anonymous == Some(true) {
            b = b.skip_signature();
        }
        opendal(spec, Operator::new(b))
    }
}
