//! Shared-cache levels that come after the local disk: `[[remote]]` tables in the config
//! file, in order, and `CACHET_<TYPE>_<SETTING>` variables.
//!
//! A variable sets that setting on the first remote of its type, or adds a remote of that
//! type at the end when the file has none. Values are checked here, so a typo is a clear
//! error on the client that reads it, before any server starts.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;

use super::{ConfigError, Origin};
use crate::cache::Storage;
use crate::cache::level::LevelOptions;
use crate::cache::remote::backends::{self, Backend, Registered};
use crate::cache::remote::{RemoteError, StoreSpec};

use crate::cache::remote::backends::settings::{self, SettingsError, Span};

/// A remote's type: one of the backends this build has (see
/// `cache::remote::backends`). Compared by name.
#[derive(Clone, Copy)]
pub struct RemoteKind {
    name: &'static str,
    backend: &'static Backend,
}

/// The settings common to every remote. Their variables are `CACHET_<TYPE>_<KEY>` too.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Common {
    name: Option<String>,
    read_only: Option<bool>,
    timeout: Option<Span>,
    prefix: Option<String>,
    breaker_failures: Option<u32>,
    breaker_cooldown: Option<Span>,
    explain: Option<bool>,
}

pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5);
pub const DEFAULT_BREAKER_FAILURES: u32 = 3;
pub const DEFAULT_BREAKER_COOLDOWN: Duration = Duration::from_secs(30);

impl RemoteKind {
    /// The built backend called `name` (the `type` of a `[[remote]]` table).
    pub fn named(name: &str) -> Option<RemoteKind> {
        backends::ALL
            .iter()
            .find(|r| r.name == name)
            .and_then(RemoteKind::of)
    }

    fn of(registered: &'static Registered) -> Option<RemoteKind> {
        Some(RemoteKind {
            name: registered.name,
            backend: registered.backend.as_ref()?,
        })
    }

    /// Every backend this build has, in the order the registry lists them.
    fn all() -> impl Iterator<Item = RemoteKind> {
        backends::ALL.iter().filter_map(RemoteKind::of)
    }

    /// The `type` of its `[[remote]]` tables, such as `s3`.
    pub fn name(self) -> &'static str {
        self.name
    }

    pub(crate) fn backend(self) -> &'static Backend {
        self.backend
    }

    fn env_prefix(self) -> String {
        format!("CACHET_{}_", self.name.to_ascii_uppercase())
    }

    /// Every key of this type: the common ones, then the backend's own.
    fn keys(self) -> impl Iterator<Item = &'static str> {
        common_keys().iter().chain((self.backend.keys)()).copied()
    }

    fn known_keys(self) -> String {
        let mut keys: Vec<&str> = vec!["type"];
        keys.extend(self.keys());
        keys.join(", ")
    }
}

impl PartialEq for RemoteKind {
    fn eq(&self, other: &RemoteKind) -> bool {
        self.name == other.name
    }
}

impl Eq for RemoteKind {}

impl std::fmt::Debug for RemoteKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name)
    }
}

fn common_keys() -> &'static [&'static str] {
    settings::keys_of::<Common>()
}

/// One setting of a remote as given, and where it came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Setting {
    pub value: String,
    pub origin: Origin,
    /// Never shown: its field in the backend's settings is a [`settings::Secret`].
    pub secret: bool,
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
    /// `explain = true`: `explain` recipes are shared through this remote (needs
    /// `explain_key`).
    pub explain: bool,
}

impl RemoteConfig {
    /// Builds this remote's store with its type's backend. No network I/O: startup never
    /// waits on a remote, and one that is down shows up as errors on its level.
    pub fn build_store(&self) -> Result<Arc<dyn Storage>, RemoteError> {
        let spec = StoreSpec {
            prefix: &self.prefix,
            timeout: self.timeout,
            settings: own_pairs(&self.settings),
        };
        crate::cache::remote::build(self.kind.backend(), &spec)
    }

    /// How the cache treats this remote's level: its name, limits and breaker.
    pub fn level_options(&self) -> LevelOptions {
        LevelOptions {
            name: self.name.clone(),
            kind: self.kind.name().into(),
            read_only: self.read_only,
            timeout: Some(self.timeout),
            breaker: (self.breaker_failures > 0)
                .then_some((self.breaker_failures, self.breaker_cooldown)),
            remove_corrupt: false,
            explain: self.explain,
        }
    }

    /// A setting's text as given.
    #[cfg(test)]
    pub fn get(&self, key: &str) -> Option<&str> {
        self.settings.get(key).map(|s| s.value.as_str())
    }

    /// The settings for display: secrets and passwords inside URLs masked.
    pub fn shown(&self) -> Vec<(String, String, Origin)> {
        self.settings
            .iter()
            .map(|(key, s)| {
                let value = if s.secret {
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

fn remote_error(origin: &Origin, what: String) -> ConfigError {
    ConfigError::Remote {
        origin: origin.clone(),
        message: what,
    }
}

/// One `[[remote]]` table as raw settings.
pub(super) struct RawRemote {
    kind: RemoteKind,
    /// `remote #N` for a table of the file, for errors.
    label: Option<String>,
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
            Some(toml::Value::String(t)) => RemoteKind::named(t).ok_or_else(|| {
                let why = match backends::ALL.iter().find(|r| r.name == t) {
                    Some(r) => format!(
                        "{which}: type `{t}` is not available: cachet was built without the `{}` feature",
                        r.feature
                    ),
                    None => format!("{which}: unknown type `{t}` (known: {})", kind_names()),
                };
                remote_error(origin, why)
            })?,
            _ => {
                return Err(remote_error(
                    origin,
                    format!("{which}: needs `type = \"…\"` (one of {})", kind_names()),
                ));
            }
        };
        let mut table = table;
        table.remove("type");
        let settings =
            settings_of(table, origin, &which).map_err(|message| remote_error(origin, message))?;
        out.push(RawRemote {
            kind,
            label: Some(which),
            settings,
            origin: origin.clone(),
        });
    }
    Ok(out)
}

/// A table's settings as text, each with `origin`: strings, booleans, integers, and
/// arrays of strings (joined with commas). `which` names the table in errors.
pub(super) fn settings_of(
    table: toml::Table,
    origin: &Origin,
    which: &str,
) -> Result<BTreeMap<String, Setting>, String> {
    let mut settings = BTreeMap::new();
    for (key, value) in table {
        // Unknown keys are refused by the typed settings, once variables are applied.
        let text = match value {
            toml::Value::String(s) => s,
            toml::Value::Boolean(b) => b.to_string(),
            toml::Value::Integer(n) => n.to_string(),
            toml::Value::Array(items) => items
                .into_iter()
                .map(|item| match item {
                    toml::Value::String(s) => Ok(s),
                    other => Err(format!("{which}: `{key}` must list strings, not {other}")),
                })
                .collect::<Result<Vec<_>, _>>()?
                .join(","),
            other => {
                return Err(format!("{which}: `{key}` cannot be {}", other.type_str()));
            }
        };
        settings.insert(
            key,
            Setting {
                value: text,
                origin: origin.clone(),
                secret: false,
            },
        );
    }
    Ok(settings)
}

/// The types this build has.
fn kind_names() -> String {
    let names: Vec<&str> = RemoteKind::all().map(RemoteKind::name).collect();
    if names.is_empty() {
        return "none: cachet was built without remote backends".into();
    }
    names.join(", ")
}

/// Applies `CACHET_<TYPE>_<SETTING>` variables, then checks every remote.
pub(super) fn finish(
    mut remotes: Vec<RawRemote>,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Vec<RemoteConfig>, ConfigError> {
    for kind in RemoteKind::all() {
        let prefix = kind.env_prefix();
        let vars: Vec<(String, String)> = kind
            .keys()
            .filter_map(|key| {
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
                    label: None,
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
                    secret: false,
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

/// The backend's own settings (all but the common ones) as `(key, text)` pairs, for its
/// typed settings.
pub(crate) fn own_pairs(settings: &BTreeMap<String, Setting>) -> Vec<(&str, &str)> {
    let common = common_keys();
    settings
        .iter()
        .filter(|(key, _)| !common.contains(&key.as_str()))
        .map(|(key, s)| (key.as_str(), s.value.as_str()))
        .collect()
}

fn check(mut raw: RawRemote, taken: &[String]) -> Result<RemoteConfig, ConfigError> {
    let kind = raw.kind;
    let common_pairs: Vec<(&str, &str)> = raw
        .settings
        .iter()
        .filter(|(key, _)| common_keys().contains(&key.as_str()))
        .map(|(key, s)| (key.as_str(), s.value.as_str()))
        .collect();
    let (common, _) = settings::parse::<Common>(&common_pairs).map_err(|e| explain(&raw, e))?;
    let secrets =
        (kind.backend().check)(&own_pairs(&raw.settings)).map_err(|e| explain(&raw, e))?;
    if let Some(Span(timeout)) = common.timeout
        && timeout.is_zero()
    {
        return Err(remote_error(
            &raw.settings["timeout"].origin,
            format!("{} remote: `timeout` must be above zero", kind.name()),
        ));
    }
    let name = match common.name {
        Some(name) => name,
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
    for key in secrets {
        if let Some(setting) = raw.settings.get_mut(&key) {
            setting.secret = true;
        }
    }
    Ok(RemoteConfig {
        kind,
        name,
        read_only: common.read_only.unwrap_or(false),
        timeout: common.timeout.map_or(DEFAULT_TIMEOUT, |s| s.0),
        prefix: common.prefix.unwrap_or_default(),
        breaker_failures: common.breaker_failures.unwrap_or(DEFAULT_BREAKER_FAILURES),
        breaker_cooldown: common
            .breaker_cooldown
            .map_or(DEFAULT_BREAKER_COOLDOWN, |s| s.0),
        settings: raw.settings,
        origin: raw.origin,
        explain: common.explain.unwrap_or(false),
    })
}

/// A settings error as a config error: said in the words of the remote, at the place of
/// the setting to blame (or of the remote).
fn explain(raw: &RawRemote, error: SettingsError) -> ConfigError {
    let kind = raw.kind.name();
    let origin_of = |key: &str| raw.settings.get(key).map_or(&raw.origin, |s| &s.origin);
    match error {
        SettingsError::UnknownKey { key, .. } => remote_error(
            origin_of(&key),
            format!(
                "{} ({kind}): unknown key `{key}` (known keys: {})",
                raw.label.as_deref().unwrap_or("remote"),
                raw.kind.known_keys()
            ),
        ),
        SettingsError::Missing { key } => remote_error(
            &raw.origin,
            format!(
                "{kind} remote: `{key}` is required (or set {}{})",
                raw.kind.env_prefix(),
                key.to_ascii_uppercase()
            ),
        ),
        SettingsError::BadValue { key, expected, .. } => {
            let setting = &raw.settings[&key];
            remote_error(
                &setting.origin,
                format!(
                    "{kind} remote: `{key}` is `{}`, expected {expected}",
                    setting.value
                ),
            )
        }
        SettingsError::Invalid { key, message } => remote_error(
            key.map_or(&raw.origin, origin_of),
            format!("{kind} remote: {message}"),
        ),
        SettingsError::Other(message) => {
            remote_error(&raw.origin, format!("{kind} remote: {message}"))
        }
    }
}

#[cfg(test)]
mod tests;
