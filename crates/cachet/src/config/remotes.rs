//! Shared-cache levels that come after the local disk: `[[remote]]` tables in the config
//! file, in order, and `CACHET_<TYPE>_<SETTING>` variables.
//!
//! A variable sets that setting on the first remote of its type, or adds a remote of that
//! type at the end when the file has none. Values are checked here, so a typo is a clear
//! error on the client that reads it, before any server starts.

use std::collections::BTreeMap;
use std::time::Duration;

use super::{ConfigError, Origin, parse_duration, parse_size};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RemoteKind {
    S3,
    Redis,
    Memcached,
    /// An HTTP cache with the bazel-remote layout (`/ac/`, `/cas/`).
    Http,
    Webdav,
    Gcs,
    Azblob,
    /// The GitHub Actions cache.
    Gha,
}

/// How a setting's text must read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Shape {
    Text,
    Bool,
    Count,
    Size,
    Duration,
    /// A list: a TOML array, or commas in a variable.
    List,
}

const COMMON: &[(&str, Shape)] = &[
    ("name", Shape::Text),
    ("read_only", Shape::Bool),
    ("timeout", Shape::Duration),
    ("prefix", Shape::Text),
    ("breaker_failures", Shape::Count),
    ("breaker_cooldown", Shape::Duration),
];

/// Settings whose values are never shown.
pub const SECRET_KEYS: &[&str] = &[
    "password",
    "secret_access_key",
    "session_token",
    "bearer_token",
    "token",
    "credential",
    "account_key",
    "sas_token",
    "runtime_token",
];

pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5);
pub const DEFAULT_BREAKER_FAILURES: u32 = 3;
pub const DEFAULT_BREAKER_COOLDOWN: Duration = Duration::from_secs(30);

impl RemoteKind {
    pub const ALL: [RemoteKind; 8] = [
        RemoteKind::S3,
        RemoteKind::Redis,
        RemoteKind::Memcached,
        RemoteKind::Http,
        RemoteKind::Webdav,
        RemoteKind::Gcs,
        RemoteKind::Azblob,
        RemoteKind::Gha,
    ];

    pub fn name(self) -> &'static str {
        match self {
            RemoteKind::S3 => "s3",
            RemoteKind::Redis => "redis",
            RemoteKind::Memcached => "memcached",
            RemoteKind::Http => "http",
            RemoteKind::Webdav => "webdav",
            RemoteKind::Gcs => "gcs",
            RemoteKind::Azblob => "azblob",
            RemoteKind::Gha => "gha",
        }
    }

    fn parse(text: &str) -> Option<RemoteKind> {
        RemoteKind::ALL.into_iter().find(|k| k.name() == text)
    }

    fn env_prefix(self) -> String {
        format!("CACHET_{}_", self.name().to_ascii_uppercase())
    }

    /// The settings of this type, besides the common ones.
    fn own(self) -> &'static [(&'static str, Shape)] {
        use Shape::*;
        match self {
            RemoteKind::S3 => &[
                ("bucket", Text),
                ("endpoint", Text),
                ("region", Text),
                ("path_style", Bool),
                ("anonymous", Bool),
                ("access_key_id", Text),
                ("secret_access_key", Text),
                ("session_token", Text),
            ],
            RemoteKind::Redis => &[
                ("endpoint", Text),
                ("cluster_endpoints", List),
                ("username", Text),
                ("password", Text),
                ("db", Count),
                ("ttl", Duration),
            ],
            RemoteKind::Memcached => &[
                ("endpoint", Text),
                ("username", Text),
                ("password", Text),
                ("ttl", Duration),
                ("item_limit", Size),
                ("max_chunks", Count),
            ],
            RemoteKind::Http => &[
                ("endpoint", Text),
                ("bearer_token", Text),
                ("username", Text),
                ("password", Text),
            ],
            RemoteKind::Webdav => &[
                ("endpoint", Text),
                ("username", Text),
                ("password", Text),
                ("token", Text),
                ("create_dirs", Bool),
            ],
            RemoteKind::Gcs => &[
                ("bucket", Text),
                ("endpoint", Text),
                ("credential_path", Text),
                ("credential", Text),
                ("token", Text),
                ("scope", Text),
                ("anonymous", Bool),
            ],
            RemoteKind::Azblob => &[
                ("container", Text),
                ("endpoint", Text),
                ("account_name", Text),
                ("account_key", Text),
                ("sas_token", Text),
            ],
            RemoteKind::Gha => &[
                ("endpoint", Text),
                ("runtime_token", Text),
                ("version", Text),
            ],
        }
    }

    fn required(self) -> &'static [&'static str] {
        match self {
            RemoteKind::S3 | RemoteKind::Gcs => &["bucket"],
            RemoteKind::Redis => &[],
            RemoteKind::Memcached | RemoteKind::Http | RemoteKind::Webdav => &["endpoint"],
            RemoteKind::Azblob => &["container"],
            RemoteKind::Gha => &[],
        }
    }

    fn shape(self, key: &str) -> Option<Shape> {
        COMMON
            .iter()
            .chain(self.own())
            .find(|(k, _)| *k == key)
            .map(|(_, s)| *s)
    }

    fn known_keys(self) -> String {
        let mut keys: Vec<&str> = vec!["type"];
        keys.extend(COMMON.iter().chain(self.own()).map(|(k, _)| *k));
        keys.join(", ")
    }
}

/// One setting of a remote as given, and where it came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Setting {
    pub value: String,
    pub origin: Origin,
}

/// One shared-cache level, checked.
#[derive(Debug, Clone)]
pub struct RemoteConfig {
    pub kind: RemoteKind,
    /// Unique among the levels; shown in stats.
    pub name: String,
    pub read_only: bool,
    /// The limit of every call to this store.
    pub timeout: Duration,
    /// Prepended to every key, so that several teams can share a bucket.
    pub prefix: String,
    /// Failed calls in a row that open the circuit breaker; 0 turns the breaker off.
    pub breaker_failures: u32,
    /// How long an open breaker skips the level before it tries again.
    pub breaker_cooldown: Duration,
    /// Every setting as given (the backend reads its own keys from here).
    pub settings: BTreeMap<String, Setting>,
    /// Where the remote itself was declared.
    pub origin: Origin,
}

impl RemoteConfig {
    pub fn get(&self, key: &str) -> Option<&str> {
        self.settings.get(key).map(|s| s.value.as_str())
    }

    /// A boolean setting (checked when loaded).
    pub fn flag(&self, key: &str) -> Option<bool> {
        self.get(key).and_then(parse_bool)
    }

    pub fn count(&self, key: &str) -> Option<u64> {
        self.get(key).and_then(|v| v.trim().parse().ok())
    }

    pub fn size(&self, key: &str) -> Option<u64> {
        self.get(key).and_then(parse_size)
    }

    pub fn duration(&self, key: &str) -> Option<Duration> {
        self.get(key).and_then(parse_duration)
    }

    pub fn list(&self, key: &str) -> Vec<String> {
        self.get(key)
            .map(|v| {
                v.split(',')
                    .map(|s| s.trim().to_owned())
                    .filter(|s| !s.is_empty())
                    .collect()
            })
            .unwrap_or_default()
    }

    /// The settings for display: secrets and passwords inside URLs masked.
    pub fn shown(&self) -> Vec<(String, String, Origin)> {
        self.settings
            .iter()
            .map(|(key, s)| {
                let value = if SECRET_KEYS.contains(&key.as_str()) {
                    "****".to_owned()
                } else {
                    mask_url_password(&s.value)
                };
                (key.clone(), value, s.origin.clone())
            })
            .collect()
    }
}

/// `scheme://user:secret@host` → `scheme://user:****@host`, for every URL in a list.
pub fn mask_url_password(value: &str) -> String {
    value
        .split(',')
        .map(|part| {
            let Some(scheme_end) = part.find("://") else {
                return part.to_owned();
            };
            let rest = &part[scheme_end + 3..];
            let authority_end = rest.find('/').unwrap_or(rest.len());
            let Some(at) = rest[..authority_end].rfind('@') else {
                return part.to_owned();
            };
            match rest[..at].find(':') {
                Some(colon) => format!(
                    "{}{}:****{}",
                    &part[..scheme_end + 3],
                    &rest[..colon],
                    &rest[at..]
                ),
                None => part.to_owned(),
            }
        })
        .collect::<Vec<_>>()
        .join(",")
}

pub(super) fn parse_bool(text: &str) -> Option<bool> {
    match text.trim().to_ascii_lowercase().as_str() {
        "1" | "true" | "yes" | "on" => Some(true),
        "0" | "false" | "no" | "off" => Some(false),
        _ => None,
    }
}

fn remote_error(origin: &Origin, what: String) -> ConfigError {
    ConfigError::Remote {
        origin: origin.clone(),
        message: what,
    }
}

/// One `[[remote]]` table as raw settings.
pub(super) struct RawRemote {
    kind: RemoteKind,
    settings: BTreeMap<String, Setting>,
    origin: Origin,
}

/// Reads the `remote` array of tables of a config file.
pub(super) fn from_file(
    value: toml::Value,
    origin: &Origin,
) -> Result<Vec<RawRemote>, ConfigError> {
    let toml::Value::Array(tables) = value else {
        return Err(remote_error(
            origin,
            "`remote` must be an array of tables: write each as [[remote]]".into(),
        ));
    };
    let mut out = Vec::new();
    for (index, table) in tables.into_iter().enumerate() {
        let which = format!("remote #{}", index + 1);
        let toml::Value::Table(table) = table else {
            return Err(remote_error(origin, format!("{which} is not a table")));
        };
        let kind = match table.get("type") {
            Some(toml::Value::String(t)) => RemoteKind::parse(t).ok_or_else(|| {
                remote_error(
                    origin,
                    format!("{which}: unknown type `{t}` (known: {})", kind_names()),
                )
            })?,
            _ => {
                return Err(remote_error(
                    origin,
                    format!("{which}: needs `type = \"…\"` (one of {})", kind_names()),
                ));
            }
        };
        let mut settings = BTreeMap::new();
        for (key, value) in table {
            if key == "type" {
                continue;
            }
            if kind.shape(&key).is_none() {
                return Err(remote_error(
                    origin,
                    format!(
                        "{which} ({}): unknown key `{key}` (known keys: {})",
                        kind.name(),
                        kind.known_keys()
                    ),
                ));
            }
            let text = match value {
                toml::Value::String(s) => s,
                toml::Value::Boolean(b) => b.to_string(),
                toml::Value::Integer(n) => n.to_string(),
                toml::Value::Array(items) => items
                    .into_iter()
                    .map(|item| match item {
                        toml::Value::String(s) => Ok(s),
                        other => Err(remote_error(
                            origin,
                            format!("{which}: `{key}` must list strings, not {other}"),
                        )),
                    })
                    .collect::<Result<Vec<_>, _>>()?
                    .join(","),
                other => {
                    return Err(remote_error(
                        origin,
                        format!("{which}: `{key}` cannot be {}", other.type_str()),
                    ));
                }
            };
            settings.insert(
                key,
                Setting {
                    value: text,
                    origin: origin.clone(),
                },
            );
        }
        out.push(RawRemote {
            kind,
            settings,
            origin: origin.clone(),
        });
    }
    Ok(out)
}

fn kind_names() -> String {
    RemoteKind::ALL.map(RemoteKind::name).join(", ")
}

/// Applies `CACHET_<TYPE>_<SETTING>` variables, then checks every remote.
pub(super) fn finish(
    mut remotes: Vec<RawRemote>,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Vec<RemoteConfig>, ConfigError> {
    for kind in RemoteKind::ALL {
        let prefix = kind.env_prefix();
        let vars: Vec<(String, String)> = COMMON
            .iter()
            .chain(kind.own())
            .filter_map(|(key, _)| {
                let var = format!("{prefix}{}", key.to_ascii_uppercase());
                env(&var).map(|value| (key.to_string(), value))
            })
            .collect();
        if vars.is_empty() {
            continue;
        }
        let index = match remotes.iter().position(|r| r.kind == kind) {
            Some(index) => index,
            None => {
                remotes.push(RawRemote {
                    kind,
                    settings: BTreeMap::new(),
                    origin: Origin::EnvVar(format!("{prefix}*")),
                });
                remotes.len() - 1
            }
        };
        for (key, value) in vars {
            let var = format!("{prefix}{}", key.to_ascii_uppercase());
            remotes[index].settings.insert(
                key,
                Setting {
                    value,
                    origin: Origin::EnvVar(var),
                },
            );
        }
    }

    let mut names: Vec<String> = vec!["local".into()];
    let mut out = Vec::new();
    for raw in remotes {
        let config = check(raw, &names)?;
        names.push(config.name.clone());
        out.push(config);
    }
    Ok(out)
}

fn check(raw: RawRemote, taken: &[String]) -> Result<RemoteConfig, ConfigError> {
    let kind = raw.kind;
    for (key, setting) in &raw.settings {
        let shape = kind.shape(key).expect("keys are checked when read");
        let value = setting.value.trim();
        let ok = match shape {
            Shape::Text | Shape::List => true,
            Shape::Bool => parse_bool(value).is_some(),
            Shape::Count => value.parse::<u32>().is_ok(),
            Shape::Size => parse_size(value).is_some_and(|n| n > 0),
            Shape::Duration => parse_duration(value).is_some(),
        };
        if !ok {
            let expected = match shape {
                Shape::Bool => "true or false",
                Shape::Count => "a whole number",
                Shape::Size => "a size such as 1M",
                Shape::Duration => "a duration such as 500ms, 5s or 7d",
                Shape::Text | Shape::List => unreachable!(),
            };
            return Err(remote_error(
                &setting.origin,
                format!(
                    "{} remote: `{key}` is `{}`, expected {expected}",
                    kind.name(),
                    setting.value
                ),
            ));
        }
    }
    for key in kind.required() {
        if !raw.settings.contains_key(*key) {
            return Err(remote_error(
                &raw.origin,
                format!(
                    "{} remote: `{key}` is required (or set {}{})",
                    kind.name(),
                    kind.env_prefix(),
                    key.to_ascii_uppercase()
                ),
            ));
        }
    }
    if kind == RemoteKind::Redis
        && !raw.settings.contains_key("endpoint")
        && !raw.settings.contains_key("cluster_endpoints")
    {
        return Err(remote_error(
            &raw.origin,
            "redis remote: set `endpoint` (one node) or `cluster_endpoints` (a Cluster)".into(),
        ));
    }
    let get_duration = |key: &str| {
        raw.settings
            .get(key)
            .and_then(|s| parse_duration(&s.value).map(|d| (d, &s.origin)))
    };
    if let Some((ttl, origin)) = get_duration("ttl") {
        // Redis refuses an expiry of 0 s; memcached reads one above 30 days as a date.
        let ok = match kind {
            RemoteKind::Redis => ttl >= Duration::from_secs(1),
            _ => (Duration::from_secs(1)..=Duration::from_secs(30 * 86400)).contains(&ttl),
        };
        if !ok {
            return Err(remote_error(
                origin,
                format!(
                    "{} remote: `ttl` of {ttl:?} is out of range (1 s{})",
                    kind.name(),
                    if kind == RemoteKind::Redis {
                        " or more"
                    } else {
                        " to 30 days"
                    }
                ),
            ));
        }
    }
    if let Some((timeout, origin)) = get_duration("timeout")
        && timeout.is_zero()
    {
        return Err(remote_error(
            origin,
            format!("{} remote: `timeout` must be above zero", kind.name()),
        ));
    }
    if kind == RemoteKind::Http
        && raw.settings.contains_key("bearer_token")
        && raw.settings.contains_key("username")
    {
        return Err(remote_error(
            &raw.origin,
            "http remote: set `bearer_token` or `username`/`password`, not both".into(),
        ));
    }
    let name = match raw.settings.get("name") {
        Some(s) => s.value.clone(),
        None => {
            let base = kind.name().to_owned();
            let mut name = base.clone();
            let mut n = 2;
            while taken.contains(&name) {
                name = format!("{base}-{n}");
                n += 1;
            }
            name
        }
    };
    if name.is_empty() || taken.contains(&name) {
        return Err(remote_error(
            &raw.origin,
            format!("remote name `{name}` is empty or already used (names must be unique)"),
        ));
    }
    let get = |key: &str| raw.settings.get(key).map(|s| s.value.as_str());
    Ok(RemoteConfig {
        kind,
        name,
        read_only: get("read_only").and_then(parse_bool).unwrap_or(false),
        timeout: get("timeout")
            .and_then(parse_duration)
            .filter(|d| !d.is_zero())
            .unwrap_or(DEFAULT_TIMEOUT),
        prefix: get("prefix").unwrap_or("").to_owned(),
        breaker_failures: get("breaker_failures")
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(DEFAULT_BREAKER_FAILURES),
        breaker_cooldown: get("breaker_cooldown")
            .and_then(parse_duration)
            .unwrap_or(DEFAULT_BREAKER_COOLDOWN),
        settings: raw.settings,
        origin: raw.origin,
    })
}

#[cfg(test)]
mod tests;
