//! `type = "memcached"`: one memcached server, through our own text-protocol client
//! ([`crate::cache::remote::memcached`]), or OpenDAL's binary one for SASL, under the
//! chunking layer ([`crate::cache::remote::chunked`]).

use std::ops::RangeInclusive;
use std::sync::Arc;
use std::time::Duration;

use opendal::Operator;
use serde::Deserialize;

use super::{BackendSettings, StoreSpec};
use crate::cache::Storage;
use crate::cache::remote::{Items, RemoteError, chunked, memcached};
use super::settings::{Secret, SettingsError, Size, Span};

/// memcached reads an expiry above 30 days as a Unix time.
const TTL_RANGE: RangeInclusive<Duration> =
    Duration::from_secs(1)..=Duration::from_secs(30 * 86400);

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct Settings {
    /// `tcp://host:port` or `host:port` (`unix:///path` only with `username`).
    endpoint: String,
    /// SASL user: switches to OpenDAL's binary-protocol client.
    username: Option<String>,
    password: Option<Secret>,
    /// Expiry of every item, 1 s to 30 days; none when unset.
    ttl: Option<Span>,
    /// The server's largest item (its `-I`), 1 MiB by default.
    item_limit: Option<Size>,
    /// The most items one entry may take, 64 by default.
    max_chunks: Option<u32>,
}

impl BackendSettings for Settings {
    fn check(&self) -> Result<(), SettingsError> {
        match self.ttl {
            Some(Span(ttl)) if !TTL_RANGE.contains(&ttl) => Err(SettingsError::Invalid {
                key: Some("ttl"),
                message: format!("`ttl` of {ttl:?} is out of range (1 s to 30 days)"),
            }),
            _ => Ok(()),
        }
    }

    fn build(self, spec: &StoreSpec) -> Result<Arc<dyn Storage>, RemoteError> {
        let items: Box<dyn Items> = match &self.username {
            // SASL needs the binary protocol: OpenDAL's client has it (and is slow,
            // see memcached.rs).
            Some(user) => {
                let mut b = opendal::services::Memcached::default()
                    .endpoint(&self.endpoint)
                    .root("/")
                    .username(user);
                if let Some(v) = &self.password {
                    b = b.password(v.expose());
                }
                if let Some(Span(ttl)) = self.ttl {
                    b = b.default_ttl(ttl);
                }
                Box::new(Operator::new(b)?)
            }
            None => {
                let expiry = self.ttl.map_or(0, |Span(d)| d.as_secs() as u32);
                Box::new(memcached::Memcached::new(&self.endpoint, expiry)?)
            }
        };
        let prefix = spec.prefix;
        if prefix.len() > memcached::MAX_KEY_LEN - 100 || prefix.contains(char::is_whitespace) {
            return Err(RemoteError::Prefix {
                kind: "memcached",
                prefix: prefix.to_owned(),
                rule: "must be under 150 bytes, without spaces",
            });
        }
        Ok(Arc::new(chunked::Chunked::new(
            items,
            prefix.to_owned(),
            self.item_limit
                .map_or(chunked::DEFAULT_ITEM_LIMIT, |Size(n)| n),
            self.max_chunks
                .map_or(chunked::DEFAULT_MAX_CHUNKS, u64::from),
        )))
    }
}
