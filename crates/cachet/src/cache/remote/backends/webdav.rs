//! `type = "webdav"`: a WebDAV server (nginx with `dav_methods`, Apache `mod_dav`…),
//! through OpenDAL.

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
    /// Base URL of the collection.
    endpoint: String,
    username: Option<String>,
    password: Option<Secret>,
    /// A bearer token, instead of a user name and password.
    token: Option<Secret>,
    /// PROPFIND and MKCOL parent collections before a PUT; `true` by default.
    create_dirs: Option<bool>,
}

impl BackendSettings for Settings {
    fn build(self, spec: &StoreSpec) -> Result<Arc<dyn Storage>, RemoteError> {
        let mut b = opendal::services::Webdav::default()
            .endpoint(&self.endpoint)
            .root("/");
        if let Some(v) = &self.username {
            b = b.username(v);
        }
        if let Some(v) = &self.password {
            b = b.password(v.expose());
        }
        if let Some(v) = &self.token {
            b = b.token(v.expose());
        }
        if self.create_dirs == Some(false) {
            b = b.disable_create_dir(true);
        }
        opendal(spec, Operator::new(b))
    }
}
