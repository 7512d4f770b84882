//! `type = "redis"`: one Redis (or Valkey) server, or a Redis Cluster, through OpenDAL.

use std::sync::Arc;
use std::time::Duration;

use opendal::Operator;
use serde::Deserialize;

use super::{BackendSettings, StoreSpec, opendal};
use crate::cache::Storage;
use crate::cache::remote::RemoteError;
use super::settings::{List, Secret, SettingsError, Span};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct Settings {
    /// One server: `redis://`, `rediss://` (TLS) or `unix://`. This or `cluster_endpoints`.
    endpoint: Option<String>,
    /// A Cluster's nodes; when set, `endpoint` is not used.
    cluster_endpoints: Option<List>,
    username: Option<String>,
    password: Option<Secret>,
    db: Option<u32>,
    /// Expiry set on every write; at least 1 s (Redis refuses 0).
    ttl: Option<Span>,
}

impl BackendSettings for Settings {
    fn check(&self) -> Result<(), SettingsError> {
        if self.endpoint.is_none() && self.cluster_endpoints.is_none() {
            return Err(SettingsError::Invalid {
                key: None,
                message: "set `endpoint` (one node) or `cluster_endpoints` (a Cluster)".into(),
            });
        }
        if let Some(Span(ttl)) = self.ttl
            && ttl < Duration::from_secs(1)
        {
            return Err(SettingsError::Invalid {
                key: Some("ttl"),
                message: format!("`ttl` of {ttl:?} is out of range (1 s or more)"),
            });
        }
        Ok(())
    }

    fn build(self, spec: &StoreSpec) -> Result<Arc<dyn Storage>, RemoteError> {
        let mut b = opendal::services::Redis::default().root("/");
        if let Some(endpoint) = &self.endpoint {
            // The client takes only the scheme, host and port of the URL: a user,
            // password or /db in it are passed on here, below any explicit setting.
            let url = reqwest::Url::parse(endpoint).map_err(|e| RemoteError::NotAUrl {
                endpoint: endpoint.clone(),
                reason: e.to_string(),
            })?;
            if !url.username().is_empty() && self.username.is_none() {
                b = b.username(url.username());
            }
            if let Some(password) = url.password()
                && self.password.is_none()
            {
                b = b.password(password);
            }
            if let Ok(db) = url.path().trim_start_matches('/').parse::<i64>()
                && self.db.is_none()
            {
                b = b.db(db);
            }
            b = b.endpoint(endpoint);
        }
        let cluster = self.cluster_endpoints.unwrap_or_default().0;
        if !cluster.is_empty() {
            b = b.cluster_endpoints(&cluster.join(","));
        }
        if let Some(v) = &self.username {
            b = b.username(v);
        }
        if let Some(v) = &self.password {
            b = b.password(v.expose());
        }
        if let Some(db) = self.db {
            b = b.db(i64::from(db));
        }
        if let Some(Span(ttl)) = self.ttl {
            b = b.default_ttl(ttl);
        }
        opendal(spec, Operator::new(b))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::remotes::own_pairs;
    use crate::cache::remote::backends::settings::parse;

    #[test]
    fn a_cluster_list_and_a_ttl_in_days_are_read() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.toml");
        std::fs::write(
            &path,
            "[[remote]]\ntype = \"redis\"\n\
             cluster_endpoints = [\"redis://10.0.0.1:7000\", \"redis://10.0.0.2:7000\"]\n\
             ttl = \"7d\"\n",
        )
        .unwrap();
        let config = crate::config::Config::load_with(|name| match name {
            "CACHET_CONFIG" => Some(path.clone().into_os_string()),
            "HOME" => Some("/h".into()),
            _ => None,
        })
        .unwrap();
        let (settings, _) = parse::<Settings>(&own_pairs(&config.remotes[0].settings)).unwrap();
        assert_eq!(
            settings.cluster_endpoints.unwrap().0,
            ["redis://10.0.0.1:7000", "redis://10.0.0.2:7000"]
        );
        assert_eq!(settings.ttl, Some(Span(Duration::from_secs(7 * 86400))));
    }
}
