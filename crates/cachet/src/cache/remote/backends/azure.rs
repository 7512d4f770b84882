//! `type = "azblob"`: Azure Blob Storage, through OpenDAL.

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
    container: String,
    /// Not required here, but the client cannot be built without it.
    endpoint: Option<String>,
    /// Taken from the endpoint when unset.
    account_name: Option<String>,
    /// A shared key.
    account_key: Option<Secret>,
    /// A SAS token, instead of the key.
    sas_token: Option<Secret>,
}

impl BackendSettings for Settings {
    fn build(self, spec: &StoreSpec) -> Result<Arc<dyn Storage>, RemoteError> {
        let mut b = opendal::services::Azblob::default()
            .container(&self.container)
            .root("/");
        if let Some(v) = &self.endpoint {
            b = b.endpoint(v);
        }
        if let Some(v) = &self.account_name {
            b = b.account_name(v);
        }
        if let Some(v) = &self.account_key {
            b = b.account_key(v.expose());
        }
        if let Some(v) = &self.sas_token {
            b = b.sas_token(v.expose());
        }
        opendal(spec, Operator::new(b))
    }
}
