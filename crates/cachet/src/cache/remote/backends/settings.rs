//! Typed remote settings read from their text.
//!
//! A remote's settings arrive as text: from the config file (booleans, numbers and arrays
//! are turned into text there) or from `CACHET_<TYPE>_<KEY>` variables. The settings of each
//! backend, and those common to every remote, are structs that derive `Deserialize` with
//! `deny_unknown_fields`; [`parse`] fills one from the text, so the struct alone says which
//! keys exist, which are required (not `Option`), how each must read and which are secret.
//!
//! Field types: `String`, `bool` (`true`/`false`, `1`/`0`, `yes`/`no`, `on`/`off`), `u32`
//! (a whole number), [`Span`] (a duration), [`Size`] (bytes), [`List`] (commas) and
//! [`Secret`] (text never shown), each possibly in an `Option`. `#[serde(flatten)]` is not
//! supported (it hides the field names that [`keys_of`] reads).

use std::cell::Cell;
use std::fmt;
use std::time::Duration;

use serde::de::{self, DeserializeOwned, IntoDeserializer, Visitor};
use serde::{Deserialize, Deserializer, forward_to_deserialize_any};

use crate::units::{parse_bool, parse_duration, parse_size};

/// Why a remote's settings do not fit its struct. The key is the setting's name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SettingsError {
    /// A key the struct has no field for; `known` lists the struct's fields.
    #[error("unknown key `{key}` (known keys: {})", known.join(", "))]
    UnknownKey {
        key: String,
        known: &'static [&'static str],
    },
    /// A required (non-`Option`) field with no setting.
    #[error("`{key}` is required")]
    Missing { key: &'static str },
    /// A value that does not read as its field's type.
    #[error("`{key}` is `{value}`, expected {expected}")]
    BadValue {
        key: String,
        value: String,
        expected: String,
    },
    /// Settings that read well one by one but not together (a backend's own check).
    /// `key` names the setting to blame, if one is.
    #[error("{message}")]
    Invalid {
        key: Option<&'static str>,
        message: String,
    },
    /// Anything else serde reports.
    #[error("{0}")]
    Other(String),
}

impl de::Error for SettingsError {
    fn custom<T: fmt::Display>(msg: T) -> Self {
        SettingsError::Other(msg.to_string())
    }

    fn unknown_field(field: &str, expected: &'static [&'static str]) -> Self {
        SettingsError::UnknownKey {
            key: field.to_owned(),
            known: expected,
        }
    }

    fn missing_field(field: &'static str) -> Self {
        SettingsError::Missing { key: field }
    }

    fn invalid_value(unexp: de::Unexpected, exp: &dyn de::Expected) -> Self {
        let value = match unexp {
            de::Unexpected::Str(s) => s.to_owned(),
            other => other.to_string(),
        };
        // The key is filled in by the map that was reading it.
        SettingsError::BadValue {
            key: String::new(),
            value,
            expected: exp.to_string(),
        }
    }
}

/// A remote's settings as `(key, text)` pairs.
pub type Texts<'a> = [(&'a str, &'a str)];

/// Fills `T` from `(key, text)` pairs. Also returns the keys whose field is a [`Secret`].
pub fn parse<T: DeserializeOwned>(pairs: &Texts) -> Result<(T, Vec<String>), SettingsError> {
    let secrets = SecretKeys::default();
    let value = T::deserialize(Pairs {
        pairs,
        secrets: &secrets,
    })?;
    Ok((value, secrets.found.into_inner()))
}

/// The keys of a settings struct: its field names, in order.
pub fn keys_of<T: DeserializeOwned>() -> &'static [&'static str] {
    /// Asks the derived code for its field list, then stops it.
    struct Probe<'a>(&'a mut &'static [&'static str]);

    impl<'de> Deserializer<'de> for Probe<'_> {
        type Error = SettingsError;

        fn deserialize_any<V: Visitor<'de>>(self, _: V) -> Result<V::Value, SettingsError> {
            Err(SettingsError::Other("settings must be a struct".into()))
        }

        fn deserialize_struct<V: Visitor<'de>>(
            self,
            _name: &'static str,
            fields: &'static [&'static str],
            _: V,
        ) -> Result<V::Value, SettingsError> {
            *self.0 = fields;
            Err(SettingsError::Other(
                "only the field names were wanted".into(),
            ))
        }

        forward_to_deserialize_any! {
            bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes
            byte_buf option unit unit_struct newtype_struct seq tuple tuple_struct map enum
            identifier ignored_any
        }
    }

    let mut fields: &'static [&'static str] = &[];
    let _ = T::deserialize(Probe(&mut fields));
    fields
}

/// Text that is never shown: `--show-config` prints `****` for a setting of this type,
/// and `{:?}` does too.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// The text itself, for handing to the store's client.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("****")
    }
}

/// The newtype name by which [`Pairs`] recognises a [`Secret`] field.
const SECRET: &str = "cachet::Secret";

impl<'de> Deserialize<'de> for Secret {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Secret, D::Error> {
        struct Text;
        impl<'de> Visitor<'de> for Text {
            type Value = Secret;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("text")
            }
            fn visit_newtype_struct<D: Deserializer<'de>>(self, d: D) -> Result<Secret, D::Error> {
                String::deserialize(d).map(Secret)
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Secret, E> {
                Ok(Secret(v.to_owned()))
            }
        }
        deserializer.deserialize_newtype_struct(SECRET, Text)
    }
}

/// A duration: seconds, or a number with `ms`, `s`, `m`, `h` or `d`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Span(pub Duration);

/// A size in bytes, above zero: bytes, or a number with `K`, `M`, `G`, `T` (powers of 1024).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Size(pub u64);

/// A list: a TOML array of strings, or commas in a variable. Blank items are dropped.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct List(pub Vec<String>);

/// Deserializes `T` from a string with `read`, or names `expected`.
fn from_text<'de, D, T>(
    deserializer: D,
    expected: &'static str,
    read: fn(&str) -> Option<T>,
) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
{
    struct Text<T> {
        expected: &'static str,
        read: fn(&str) -> Option<T>,
    }
    impl<'de, T> Visitor<'de> for Text<T> {
        type Value = T;
        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str(self.expected)
        }
        fn visit_str<E: de::Error>(self, v: &str) -> Result<T, E> {
            (self.read)(v).ok_or_else(|| E::invalid_value(de::Unexpected::Str(v), &self))
        }
    }
    deserializer.deserialize_str(Text { expected, read })
}

impl<'de> Deserialize<'de> for Span {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Span, D::Error> {
        from_text(d, "a duration such as 500ms, 5s or 7d", |v| {
            parse_duration(v).map(Span)
        })
    }
}

impl<'de> Deserialize<'de> for Size {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Size, D::Error> {
        from_text(d, "a size such as 1M", |v| {
            parse_size(v).filter(|n| *n > 0).map(Size)
        })
    }
}

impl<'de> Deserialize<'de> for List {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<List, D::Error> {
        from_text(d, "a list", |v| {
            Some(List(
                v.split(',')
                    .map(|s| s.trim().to_owned())
                    .filter(|s| !s.is_empty())
                    .collect(),
            ))
        })
    }
}

/// The keys read as [`Secret`]s while filling a struct.
#[derive(Default)]
struct SecretKeys {
    found: std::cell::RefCell<Vec<String>>,
}

/// A remote's settings as a serde map of text values.
struct Pairs<'a> {
    pairs: &'a [(&'a str, &'a str)],
    secrets: &'a SecretKeys,
}

impl<'de> Deserializer<'de> for Pairs<'_> {
    type Error = SettingsError;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, SettingsError> {
        visitor.visit_map(Entries {
            pairs: self.pairs.iter(),
            current: None,
            secrets: self.secrets,
        })
    }

    forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes
        byte_buf option unit unit_struct newtype_struct seq tuple tuple_struct map struct
        enum identifier ignored_any
    }
}

struct Entries<'a> {
    pairs: std::slice::Iter<'a, (&'a str, &'a str)>,
    current: Option<&'a (&'a str, &'a str)>,
    secrets: &'a SecretKeys,
}

impl<'de> de::MapAccess<'de> for Entries<'_> {
    type Error = SettingsError;

    fn next_key_seed<K: de::DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, SettingsError> {
        self.current = self.pairs.next();
        match self.current {
            Some((key, _)) => seed.deserialize(key.into_deserializer()).map(Some),
            None => Ok(None),
        }
    }

    fn next_value_seed<V: de::DeserializeSeed<'de>>(
        &mut self,
        seed: V,
    ) -> Result<V::Value, SettingsError> {
        let (key, text) = self.current.expect("serde asks for a value after its key");
        let secret = Cell::new(false);
        let value = seed
            .deserialize(Value {
                text,
                secret: &secret,
            })
            .map_err(|e| match e {
                SettingsError::BadValue {
                    value, expected, ..
                } => SettingsError::BadValue {
                    key: key.to_string(),
                    value,
                    expected,
                },
                other => other,
            })?;
        if secret.get() {
            self.secrets.found.borrow_mut().push(key.to_string());
        }
        Ok(value)
    }
}

/// One setting's text as a serde value.
struct Value<'a> {
    text: &'a str,
    /// Set when the field is a [`Secret`].
    secret: &'a Cell<bool>,
}

impl Value<'_> {
    fn bad(&self, expected: &str) -> SettingsError {
        SettingsError::BadValue {
            key: String::new(),
            value: self.text.to_owned(),
            expected: expected.to_owned(),
        }
    }
}

impl<'de> Deserializer<'de> for Value<'_> {
    type Error = SettingsError;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, SettingsError> {
        visitor.visit_str(self.text)
    }

    fn deserialize_bool<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, SettingsError> {
        match parse_bool(self.text) {
            Some(b) => visitor.visit_bool(b),
            None => Err(self.bad("true or false")),
        }
    }

    fn deserialize_u32<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, SettingsError> {
        match self.text.trim().parse() {
            Ok(n) => visitor.visit_u32(n),
            Err(_) => Err(self.bad("a whole number")),
        }
    }

    fn deserialize_u64<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, SettingsError> {
        match self.text.trim().parse() {
            Ok(n) => visitor.visit_u64(n),
            Err(_) => Err(self.bad("a whole number")),
        }
    }

    /// A setting that is present is `Some`: absent ones never reach here.
    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, SettingsError> {
        visitor.visit_some(self)
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        name: &'static str,
        visitor: V,
    ) -> Result<V::Value, SettingsError> {
        if name == SECRET {
            self.secret.set(true);
        }
        visitor.visit_newtype_struct(self)
    }

    forward_to_deserialize_any! {
        i8 i16 i32 i64 i128 u8 u16 u128 f32 f64 char str string bytes byte_buf unit
        unit_struct seq tuple tuple_struct map struct enum identifier ignored_any
    }
}

/// BuildBuddy's API-key header, the most common managed service's.
const DEFAULT_API_KEY_HEADER: &str = "x-buildbuddy-api-key";

/// The headers a REAPI client sends (the `reapi` level and `[execution]`): `headers`
/// (`name: value` each), `api_key` under `api_key_header` (BuildBuddy's by default), and
/// `bearer_token` as `authorization: Bearer …`. Errors: a line that is not `name: value`,
/// or `api_key_header` without `api_key`.
pub fn auth_headers(
    headers: Option<&List>,
    api_key: Option<&Secret>,
    api_key_header: Option<&str>,
    bearer_token: Option<&Secret>,
) -> Result<Vec<(String, String)>, SettingsError> {
    let mut out = Vec::new();
    for line in headers.iter().flat_map(|l| &l.0) {
        let Some((name, value)) = line.split_once(':') else {
            return Err(SettingsError::Invalid {
                key: Some("headers"),
                message: format!("{line:?} is not `name: value`"),
            });
        };
        out.push((name.trim().to_owned(), value.trim().to_owned()));
    }
    match (api_key, api_key_header) {
        (Some(key), header) => out.push((
            header.unwrap_or(DEFAULT_API_KEY_HEADER).to_owned(),
            key.expose().to_owned(),
        )),
        (None, Some(_)) => {
            return Err(SettingsError::Invalid {
                key: Some("api_key_header"),
                message: "`api_key_header` names the header of `api_key`, which is not set".into(),
            });
        }
        (None, None) => {}
    }
    if let Some(token) = bearer_token {
        out.push(("authorization".into(), format!("Bearer {}", token.expose())));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Example {
        host: String,
        token: Option<Secret>,
        on: Option<bool>,
        count: Option<u32>,
        wait: Option<Span>,
        limit: Option<Size>,
        nodes: Option<List>,
    }

    #[test]
    fn fields_read_from_text_and_secrets_are_found() {
        let (e, secrets) = parse::<Example>(&[
            ("count", " 7"),
            ("host", "h"),
            ("limit", "1M"),
            ("nodes", "a, b,,c"),
            ("on", "yes"),
            ("token", "t"),
            ("wait", "500ms"),
        ])
        .unwrap();
        assert_eq!(e.host, "h");
        assert_eq!(e.token.as_ref().map(Secret::expose), Some("t"));
        assert_eq!(format!("{:?}", e.token), "Some(****)");
        assert_eq!(e.on, Some(true));
        assert_eq!(e.count, Some(7));
        assert_eq!(e.wait, Some(Span(Duration::from_millis(500))));
        assert_eq!(e.limit, Some(Size(1 << 20)));
        assert_eq!(
            e.nodes,
            Some(List(vec!["a".into(), "b".into(), "c".into()]))
        );
        assert_eq!(secrets, ["token"]);

        let (e, secrets) = parse::<Example>(&[("host", "h")]).unwrap();
        assert!(e.token.is_none() && e.wait.is_none() && secrets.is_empty());
    }

    #[test]
    fn mistakes_name_the_key() {
        let keys = ["host", "token", "on", "count", "wait", "limit", "nodes"];
        assert_eq!(keys_of::<Example>(), keys);
        assert_eq!(
            parse::<Example>(&[("host", "h"), ("hots", "h")]).unwrap_err(),
            SettingsError::UnknownKey {
                key: "hots".into(),
                known: keys_of::<Example>(),
            }
        );
        assert_eq!(
            parse::<Example>(&[("on", "1")]).unwrap_err(),
            SettingsError::Missing { key: "host" }
        );
        for (key, value, expected) in [
            ("on", "maybe", "true or false"),
            ("count", "-1", "a whole number"),
            ("wait", "soon", "a duration such as 500ms, 5s or 7d"),
            ("limit", "0", "a size such as 1M"),
        ] {
            assert_eq!(
                parse::<Example>(&[("host", "h"), (key, value)]).unwrap_err(),
                SettingsError::BadValue {
                    key: key.into(),
                    value: value.into(),
                    expected: expected.into(),
                },
            );
        }
    }
}
