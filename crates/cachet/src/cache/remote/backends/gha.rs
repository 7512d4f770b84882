//! `type = "gha"`: the GitHub Actions cache service, through OpenDAL.

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
    /// ACTIONS_CACHE_URL (or ACTIONS_RESULTS_URL) when unset.
    endpoint: Option<String>,
    /// ACTIONS_RUNTIME_TOKEN when unset.
    runtime_token: Option<Secret>,
    /// A namespace inside the repository's cache; `cachet` when unset.
    version: Option<String>,
}

impl BackendSettings for Settings {
    fn build(self, spec: &StoreSpec) -> Result<Arc<dyn Storage>, RemoteError> {
        // The runner's ACTIONS_CACHE_URL / ACTIONS_RUNTIME_TOKEN are read by the
        // service itself when these are not set.
        let mut b = opendal::services::Ghac::default().root("/");
        if let Some(v) = &self.endpoint {
            b = b.endpoint(v);
        }
        if let Some(v) = &self.runtime_token {
            b = b.runtime_token(v.expose());
        }
        b = b.version(self.version.as_deref().unwrap_or("cachet"));
        opendal(spec, Operator::new(b))
    }
}
