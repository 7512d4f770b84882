//! `type = "s3"`: Amazon S3 and S3-compatible servers (MinIO, SeaweedFS, Ceph), through
//! OpenDAL.

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
    /// AWS's endpoint for the region when unset.
    endpoint: Option<String>,
    /// Else AWS_REGION, else AWS_DEFAULT_REGION, else `us-east-1`.
    region: Option<String>,
    /// `true` (the default): `<endpoint>/<bucket>/<key>`; `false`: virtual-host style.
    path_style: Option<bool>,
    /// Unsigned requests, without loading credentials.
    anonymous: Option<bool>,
    access_key_id: Option<String>,
    secret_access_key: Option<Secret>,
    session_token: Option<Secret>,
}

impl BackendSettings for Settings {
    fn build(self, spec: &StoreSpec) -> Result<Arc<dyn Storage>, RemoteError> {
        let mut b = opendal::services::S3::default()
            .bucket(&self.bucket)
            .root("/");
        if let Some(endpoint) = &self.endpoint {
            b = b.endpoint(endpoint);
        }
        // Signing needs a region. A custom endpoint (MinIO, SeaweedFS, Ceph) rarely
        // cares which; for AWS set `region` or AWS_REGION (a region that only the
        // profile file names is not read).
        let region = self
            .region
            .or_else(|| std::env::var("AWS_REGION").ok())
            .or_else(|| std::env::var("AWS_DEFAULT_REGION").ok())
            .unwrap_or_else(|| "us-east-1".into());
        b = b.region(&region);
        if self.path_style == Some(false) {
            b = b.enable_virtual_host_style();
        }
        if let Some(v) = &self.access_key_id {
            b = b.access_key_id(v);
        }
        if let Some(v) = &self.secret_access_key {
            b = b.secret_access_key(v.expose());
        }
        if let Some(v) = &self.session_token {
            b = b.session_token(v.expose());
        }
        if self.anonymous == Some(true) {
            b = b.skip_signature();
        }
        opendal(spec, Operator::new(b))
    }
}
