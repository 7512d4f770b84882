//! The `[execution]` table and its `CACHET_EXECUTION_<KEY>` variables: remote execution
//! of C and C++ misses on a Remote Execution API service (docs/remote-execution.md).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use super::remotes::{Setting, mask_url_password, settings_of};
use super::{ConfigError, Origin};
use crate::cache::remote::backends::settings::{
    self, List, Secret, SettingsError, Span, auth_headers,
};
use crate::execution;
use crate::reapi::Target;

/// Actions out at once, unless set.
pub const DEFAULT_MAX_IN_FLIGHT: u32 = 32;
/// The most one action may take, unless set.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(600);
const DEFAULT_BREAKER_FAILURES: u32 = 3;
const DEFAULT_BREAKER_COOLDOWN: Duration = Duration::from_secs(30);

/// The keys of `[execution]`, as given.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Raw {
    /// `grpc://host:port` (plain) or `grpcs://host:port` (TLS); `http`/`https` too.
    endpoint: String,
    instance_name: Option<String>,
    api_key: Option<Secret>,
    api_key_header: Option<String>,
    bearer_token: Option<Secret>,
    headers: Option<List>,
    ca_file: Option<PathBuf>,
    /// `name=value` each.
    platform: Option<List>,
    max_in_flight: Option<u32>,
    timeout: Option<Span>,
    breaker_failures: Option<u32>,
    breaker_cooldown: Option<Span>,
    upload_toolchain: Option<bool>,
    /// A test switch: a compile whose slot ran before never runs locally; a remote
    /// failure fails it instead.
    forbid_local: Option<bool>,
}

/// `[execution]`, checked.
#[derive(Debug, Clone)]
pub struct ExecutionConfig {
    pub settings: execution::Settings,
    /// Whether cachet uploads the compiler it identified (driver, the programs it runs,
    /// their libraries and loader) with each action; off when workers have it already.
    pub upload_toolchain: bool,
    /// The test switch `forbid_local`.
    pub forbid_local: bool,
    /// Every setting as given, for `--show-config` (secrets masked).
    pub shown: Vec<(String, String, Origin)>,
}

/// Reads the `[execution]` table of a config file.
pub(super) fn from_file(
    value: toml::Value,
    origin: &Origin,
) -> Result<BTreeMap<String, Setting>, ConfigError> {
    let toml::Value::Table(table) = value else {
        return Err(execution_error(
            origin,
            "`execution` must be a table: [execution]".into(),
        ));
    };
    settings_of(table, origin, "[execution]").map_err(|message| execution_error(origin, message))
}

fn execution_error(origin: &Origin, message: String) -> ConfigError {
    ConfigError::Execution {
        origin: origin.clone(),
        message,
    }
}

/// Applies `CACHET_EXECUTION_<KEY>` variables to the file's settings and checks them;
/// None when remote execution is not configured.
pub(super) fn finish(
    mut given: BTreeMap<String, Setting>,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Option<ExecutionConfig>, ConfigError> {
    for key in settings::keys_of::<Raw>() {
        let var = format!("CACHET_EXECUTION_{}", key.to_ascii_uppercase());
        if let Some(value) = env(&var) {
            given.insert(
                key.to_string(),
                Setting {
                    value,
                    origin: Origin::EnvVar(var),
                    secret: false,
                },
            );
        }
    }
    if given.is_empty() {
        return Ok(None);
    }
    let origin_of = |key: Option<&str>| {
        key.and_then(|k| given.get(k))
            .or_else(|| given.values().next())
            .map(|s| s.origin.clone())
            .unwrap_or(Origin::Default)
    };
    let error = |e: SettingsError| {
        let key = match &e {
            SettingsError::UnknownKey { key, .. } | SettingsError::BadValue { key, .. } => {
                Some(key.as_str())
            }
            SettingsError::Missing { key } => Some(*key),
            SettingsError::Invalid { key, .. } => *key,
            SettingsError::Other(_) => None,
        };
        let message = match (&e, key) {
            (SettingsError::Invalid { .. }, Some(key)) => format!("[execution] `{key}`: {e}"),
            _ => format!("[execution]: {e}"),
        };
        execution_error(&origin_of(key), message)
    };
    let pairs: Vec<(&str, &str)> = given
        .iter()
        .map(|(k, s)| (k.as_str(), s.value.as_str()))
        .collect();
    let (raw, secrets) = settings::parse::<Raw>(&pairs).map_err(error)?;
    let headers = auth_headers(
        raw.headers.as_ref(),
        raw.api_key.as_ref(),
        raw.api_key_header.as_deref(),
        raw.bearer_token.as_ref(),
    )
    .map_err(error)?;
    let mut platform = Vec::new();
    for item in raw.platform.iter().flat_map(|l| &l.0) {
        let Some((name, value)) = item.split_once('=') else {
            return Err(error(SettingsError::Invalid {
                key: Some("platform"),
                message: format!("{item:?} is not `name=value`"),
            }));
        };
        platform.push((name.trim().to_owned(), value.trim().to_owned()));
    }
    let timeout = raw.timeout.map_or(DEFAULT_TIMEOUT, |Span(d)| d);
    if timeout.is_zero() {
        return Err(error(SettingsError::Invalid {
            key: Some("timeout"),
            message: "`timeout` must be above zero".into(),
        }));
    }
    let failures = raw.breaker_failures.unwrap_or(DEFAULT_BREAKER_FAILURES);
    let cooldown = raw
        .breaker_cooldown
        .map_or(DEFAULT_BREAKER_COOLDOWN, |Span(d)| d);
    let target = Target {
        endpoint: raw.endpoint,
        headers,
        ca_file: raw.ca_file,
        timeout,
    };
    // Checks the endpoint, headers and CA file now, so that a typo is a config error.
    crate::reapi::Client::new(&target)
        .map_err(|e| execution_error(&origin_of(Some("endpoint")), format!("[execution]: {e}")))?;
    let shown = given
        .iter()
        .map(|(key, s)| {
            let value = if secrets.contains(key) {
                "****".to_owned()
            } else {
                mask_url_password(&s.value)
            };
            (key.clone(), value, s.origin.clone())
        })
        .collect();
    Ok(Some(ExecutionConfig {
        settings: execution::Settings {
            target,
            instance_name: raw.instance_name.unwrap_or_default(),
            platform,
            max_in_flight: raw.max_in_flight.unwrap_or(DEFAULT_MAX_IN_FLIGHT).max(1) as usize,
            timeout,
            breaker: (failures > 0).then_some((failures, cooldown)),
        },
        upload_toolchain: raw.upload_toolchain.unwrap_or(true),
        forbid_local: raw.forbid_local.unwrap_or(false),
        shown,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(
        file: &[(&str, &str)],
        env: &[(&str, &str)],
    ) -> Result<Option<ExecutionConfig>, ConfigError> {
        let given = file
            .iter()
            .map(|(k, v)| {
                (
                    k.to_string(),
                    Setting {
                        value: v.to_string(),
                        origin: Origin::File("c.toml".into()),
                        secret: false,
                    },
                )
            })
            .collect();
        let env: Vec<(String, String)> = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        finish(given, &|name| {
            env.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone())
        })
    }

    #[test]
    fn nothing_set_is_no_execution_and_variables_override_the_file() {
        assert!(load(&[], &[]).unwrap().is_none());
        let config = load(
            &[("endpoint", "grpc://a:1"), ("max_in_flight", "4")],
            &[
                ("CACHET_EXECUTION_MAX_IN_FLIGHT", "9"),
                (
                    "CACHET_EXECUTION_PLATFORM",
                    "OSFamily=Linux,container-image=docker://x",
                ),
                ("CACHET_EXECUTION_API_KEY", "sekrit"),
            ],
        )
        .unwrap()
        .unwrap();
        assert_eq!(config.settings.max_in_flight, 9);
        assert_eq!(
            config.settings.platform,
            [
                ("OSFamily".to_owned(), "Linux".to_owned()),
                ("container-image".to_owned(), "docker://x".to_owned())
            ]
        );
        assert_eq!(
            config.settings.target.headers,
            [("x-buildbuddy-api-key".to_owned(), "sekrit".to_owned())]
        );
        assert_eq!(config.settings.timeout, DEFAULT_TIMEOUT);
        assert!(config.upload_toolchain && !config.forbid_local);
        let shown: Vec<&str> = config.shown.iter().map(|(_, v, _)| v.as_str()).collect();
        assert!(shown.contains(&"****") && !shown.contains(&"sekrit"));
    }

    #[test]
    fn malformed_settings_are_clear_errors_that_name_the_key() {
        for (file, needle) in [
            (vec![("instance_name", "x")], "`endpoint` is required"),
            (vec![("endpoint", "ftp://a")], "must start with grpc://"),
            (
                vec![("endpoint", "grpc://a:1"), ("platform", "novalue")],
                "platform",
            ),
            (
                vec![("endpoint", "grpc://a:1"), ("timeout", "0s")],
                "timeout",
            ),
            (
                vec![("endpoint", "grpc://a:1"), ("speed", "fast")],
                "unknown key `speed`",
            ),
            (
                vec![("endpoint", "grpc://a:1"), ("headers", "no colon")],
                "name: value",
            ),
        ] {
            let e = load(&file, &[]).unwrap_err().to_string();
            assert!(e.contains(needle), "{file:?}: {e}");
            assert!(e.contains("[execution]"), "{e}");
        }
    }
}
