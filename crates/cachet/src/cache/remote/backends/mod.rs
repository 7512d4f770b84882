//! The remote backends: one file each, listed once in [`ALL`].
//!
//! A backend's file holds a `Settings` struct (its own keys, typed: see
//! [`settings`]) and its [`BackendSettings`] impl, which checks the
//! settings together and builds the store. The common keys (`name`, `prefix`, `timeout`…)
//! and the `CACHET_<TYPE>_<KEY>` variables are handled for every backend by
//! `config::remotes`.
//!
//! To add one: a new file here, a line in the `backends!` list below, a Cargo feature of
//! that name, and a section in docs/storage.md.

pub(crate) mod settings;

use std::sync::Arc;

use opendal::Operator;
use serde::de::DeserializeOwned;

use super::{Prefixed, RemoteError, StoreSpec};
use crate::cache::Storage;
use settings::{SettingsError, Texts};

/// The typed settings of one backend, and how it is built from them.
pub(crate) trait BackendSettings: DeserializeOwned {
    /// Checks what the field types cannot say alone (settings that go together, ranges).
    /// Runs when the configuration is loaded.
    fn check(&self) -> Result<(), SettingsError> {
        Ok(())
    }

    /// Builds the store. No network I/O: startup never waits on a remote.
    fn build(self, spec: &StoreSpec) -> Result<Arc<dyn Storage>, RemoteError>;
}

/// What the configuration and the server need of a backend, as plain functions.
pub struct Backend {
    /// Its own keys, in the order of its struct.
    pub(crate) keys: fn() -> &'static [&'static str],
    /// Fills and checks its settings from `(key, text)` pairs; the keys that are secrets.
    pub(crate) check: fn(&Texts) -> Result<Vec<String>, SettingsError>,
    /// Builds the store of a remote of this type.
    pub(crate) build: fn(&StoreSpec) -> Result<Arc<dyn Storage>, RemoteError>,
}

impl Backend {
    const fn of<S: BackendSettings>() -> Backend {
        Backend {
            keys: settings::keys_of::<S>,
            check: check::<S>,
            build: build::<S>,
        }
    }
}

fn check<S: BackendSettings>(pairs: &Texts) -> Result<Vec<String>, SettingsError> {
    let (settings, secrets) = settings::parse::<S>(pairs)?;
    settings.check()?;
    Ok(secrets)
}

fn build<S: BackendSettings>(spec: &StoreSpec) -> Result<Arc<dyn Storage>, RemoteError> {
    let (settings, _) = settings::parse::<S>(&spec.settings)?;
    settings.build(spec)
}

/// One line of the registry.
pub struct Registered {
    /// The `type` of its `[[remote]]` tables, and the `<TYPE>` of its variables.
    pub(crate) name: &'static str,
    /// The Cargo feature that builds it.
    pub(crate) feature: &'static str,
    /// None when this build lacks the feature.
    pub(crate) backend: Option<Backend>,
}

/// A store behind OpenDAL, its keys under the remote's prefix.
fn opendal(
    spec: &StoreSpec,
    op: opendal::Result<Operator>,
) -> Result<Arc<dyn Storage>, RemoteError> {
    Ok(Arc::new(Prefixed::new(op?, spec.prefix.to_owned())))
}

/// `type => feature => file`: declares each file (when its feature is on) and lists it in
/// [`ALL`].
macro_rules! backends {
    ($($name:literal => $feature:literal => $file:ident,)*) => {
        $(
            #[cfg(feature = $feature)]
            mod $file;
        )*

        /// Every backend, built or not, in the order that `CACHET_<TYPE>_*` variables add
        /// remotes of types the file does not have.
        pub(crate) static ALL: &[Registered] = &[$(
            Registered {
                name: $name,
                feature: $feature,
                #[cfg(feature = $feature)]
                backend: Some(Backend::of::<$file::Settings>()),
                #[cfg(not(feature = $feature))]
                backend: None,
            },
        )*];
    };
}

backends! {
    "s3" => "s3" => s3,
    "redis" => "redis" => redis,
    "memcached" => "memcached" => memcached,
    "http" => "http-cache" => http_cache,
    "webdav" => "webdav" => webdav,
    "gcs" => "gcs" => gcs,
    "azblob" => "azure" => azure,
    "gha" => "gha" => gha,
    "reapi" => "reapi" => reapi,
}
