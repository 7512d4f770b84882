//! A recipe: the parts of one compile's key as a user names them (the compiler, each
//! argument, each variable, each file read with its content digest), compact and free of
//! secrets, so that two compiles of one slot can be told apart in plain words.

use serde::{Deserialize, Serialize};

use crate::compiler::manifest::Variant;

/// One file a compile read, as its recipe keeps it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Input {
    /// What it is to the compile: `source`, `header`, `extern`, `file`.
    pub role: String,
    /// As the compile named it (relative to the cwd where it was).
    pub path: String,
    /// The first 12 hex digits of its blake3 content hash.
    pub digest: String,
}

/// The parts of one compile's key. Values that may be secret are keyed hashes (see
/// [`Masker`]); paths and known-safe names are kept as they are.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Recipe {
    /// `C`, `C++`, `Rust`…
    pub language: String,
    /// The explain slot for people: for C the object and the source, relative to the base
    /// dir or the cwd; for Rust the package, crate, crate types and target.
    pub slot: String,
    /// The compiler as people name it: `gcc 12.2.0 (binary digest 1a2b3c4d5e6f)`.
    pub compiler: String,
    /// The arguments that are keyed, in order.
    pub args: Vec<String>,
    /// The keyed environment: (name, value).
    pub env: Vec<(String, String)>,
    /// The working directory.
    pub cwd: String,
    /// Why an output records the cwd, when one does (then the cwd is keyed).
    pub cwd_recorded: Option<String>,
    /// Every file the compile read.
    pub inputs: Vec<Input>,
    /// Paths the compile looked up and did not find (a file appearing there shadows).
    pub absent: Vec<String>,
    /// Variables the compile itself read (`env!`, a proc macro, a build's `getenv`):
    /// (name, value or `(unset)`).
    pub env_read: Vec<(String, String)>,
    /// Where the outputs went (absolute paths).
    pub outputs: Vec<String>,
}

impl Recipe {
    /// Adds what the compile read, from its manifest variant: each file (`source` for
    /// `source`, else `role`), the paths it found absent, and the variables it read.
    pub fn add_variant(&mut self, variant: &Variant, source: &[u8], role: &str, masker: &Masker) {
        self.inputs
            .extend(variant.files.iter().map(|(path, digest)| Input {
                role: if path == source { "source" } else { role }.to_owned(),
                path: String::from_utf8_lossy(path).into_owned(),
                digest: short(digest),
            }));
        self.absent.extend(
            variant
                .absent
                .iter()
                .map(|p| String::from_utf8_lossy(p).into_owned()),
        );
        self.env_read
            .extend(variant.env.iter().map(|(name, value)| {
                let name = String::from_utf8_lossy(name).into_owned();
                let value = masker.env_value(&name, value.as_deref());
                (name, value)
            }));
    }
}

/// Names whose values are always hidden, whatever they look like.
const SECRET_WORDS: &[&str] = &[
    "TOKEN",
    "PASSWORD",
    "PASSWD",
    "SECRET",
    "CREDENTIAL",
    "_KEY",
    "APIKEY",
    "AUTH",
    "PRIVATE",
];

/// Variables whose values are shown: names of things, versions, paths, switches.
const SAFE_VARS: &[&str] = &[
    "CARGO_PKG_VERSION",
    "CARGO_PKG_VERSION_MAJOR",
    "CARGO_PKG_VERSION_MINOR",
    "CARGO_PKG_VERSION_PATCH",
    "CARGO_PKG_VERSION_PRE",
    "CARGO_PKG_NAME",
    "CARGO_CRATE_NAME",
    "CARGO_PKG_RUST_VERSION",
    "CARGO_PRIMARY_PACKAGE",
    "CARGO_CFG_TARGET_OS",
    "CARGO_CFG_TARGET_ARCH",
    "RUSTC_BOOTSTRAP",
    "SOURCE_DATE_EPOCH",
    "LANG",
    "LANGUAGE",
    "CACHET_DIRECT_MODE",
];

/// Hides values that may be secret behind a keyed hash: the same value shows the same
/// hash, so a change is seen, but the value cannot be guessed from it without the key (a
/// plain hash of a short secret could be brute-forced).
#[derive(Clone)]
pub struct Masker {
    key: [u8; 32],
}

impl Masker {
    /// A masker with `key`: the team's shared key for recipes that leave the machine, or
    /// this machine's own.
    pub fn new(key: [u8; 32]) -> Masker {
        Masker { key }
    }

    fn hidden(&self, value: &[u8]) -> String {
        let hash = blake3::keyed_hash(&self.key, value);
        format!("<hidden {}>", &hash.to_hex()[..12])
    }

    /// Whether a variable's name says its value is secret.
    pub fn secret_name(name: &str) -> bool {
        let upper = name.to_ascii_uppercase();
        SECRET_WORDS.iter().any(|w| upper.contains(w))
    }

    /// A variable's value as a recipe keeps it: shown for known-safe names, `LC_*`, and
    /// values that are paths; a keyed hash otherwise, and always for secret-looking names.
    pub fn env_value(&self, name: &str, value: Option<&[u8]>) -> String {
        let Some(value) = value else {
            return "(unset)".into();
        };
        if Masker::secret_name(name) {
            return self.hidden(value);
        }
        let text = String::from_utf8_lossy(value);
        let safe = SAFE_VARS.contains(&name)
            || name.starts_with("LC_")
            || name.starts_with("CARGO_FEATURE_")
            || looks_like_path(&text);
        if safe {
            text.into_owned()
        } else {
            self.hidden(value)
        }
    }

    /// Variables as a recipe keeps them: (name, [`env_value`](Self::env_value)).
    pub fn env_list<'a>(
        &self,
        vars: impl IntoIterator<Item = (&'a [u8], &'a [u8])>,
    ) -> Vec<(String, String)> {
        vars.into_iter()
            .map(|(name, value)| {
                let name = String::from_utf8_lossy(name).into_owned();
                let value = self.env_value(&name, Some(value));
                (name, value)
            })
            .collect()
    }

    /// An argument as a recipe keeps it: flags are shown; a value given to a macro
    /// (`-DNAME=VALUE`) or to the linker (`-Wl,…`, `-C link-arg=…`) is a keyed hash unless
    /// it is a path or a number, and always when the name looks secret.
    pub fn arg(&self, arg: &str) -> String {
        let split = |prefix: &str| -> Option<(usize, &str)> {
            arg.strip_prefix(prefix).map(|rest| (prefix.len(), rest))
        };
        // `-DNAME=VALUE`, `--cfg NAME="VALUE"` keep NAME; `-C link-arg=X`, `-Wl,X` keep the flag.
        let (head, value) = if let Some((at, rest)) = split("-D") {
            match rest.find('=') {
                Some(eq) => (&arg[..at + eq + 1], &rest[eq + 1..]),
                None => return arg.to_owned(),
            }
        } else if let Some((at, rest)) = split("-Clink-arg=")
            .or_else(|| split("-C link-arg="))
            .or_else(|| split("link-arg="))
            .or_else(|| split("-Clink-args="))
            .or_else(|| split("link-args="))
            .or_else(|| split("-Wl,"))
            .or_else(|| split("-Xlinker "))
        {
            (&arg[..at], rest)
        } else if let Some(eq) = arg.find('=')
            && Masker::secret_name(&arg[..eq])
        {
            // `--cfg api_token="…"`, `--env-set DB_PASSWORD=…`: a secret by its name.
            (&arg[..=eq], &arg[eq + 1..])
        } else {
            return arg.to_owned();
        };
        let secret = Masker::secret_name(head);
        if !secret && (looks_like_path(value) || value.parse::<f64>().is_ok()) {
            arg.to_owned()
        } else {
            format!("{head}{}", self.hidden(value.as_bytes()))
        }
    }
}

/// A value that is a path (or a list of them): shown, since paths are what a user needs
/// to see and are rarely secret.
fn looks_like_path(text: &str) -> bool {
    !text.is_empty()
        && !text.contains(char::is_whitespace)
        && (text.starts_with('/')
            || text.starts_with("./")
            || text.starts_with("../")
            || text.split(':').all(|part| part.starts_with('/')))
}

/// The first 12 hex digits of a digest.
pub fn short(digest: &[u8; 32]) -> String {
    blake3::Hash::from(*digest).to_hex()[..12].to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn masker() -> Masker {
        Masker::new([7; 32])
    }

    #[test]
    fn secrets_never_show_and_paths_and_safe_names_do() {
        let m = masker();
        assert_eq!(m.env_value("CARGO_PKG_VERSION", Some(b"0.3.1")), "0.3.1");
        assert_eq!(
            m.env_value("CARGO_HOME", Some(b"/home/a/.cargo")),
            "/home/a/.cargo"
        );
        assert_eq!(m.env_value("X", None), "(unset)");
        for (name, value) in [
            ("GITHUB_TOKEN", &b"ghp_abcdef"[..]),
            ("DB_PASSWORD", b"/looks/like/a/path"),
            ("AWS_SECRET_ACCESS_KEY", b"wJalr"),
            ("MY_LEVEL", b"3"),
        ] {
            let shown = m.env_value(name, Some(value));
            assert!(shown.starts_with("<hidden "), "{name}: {shown}");
            assert!(!shown.contains(std::str::from_utf8(value).unwrap()));
        }
        // The same value hides alike; another key hides it otherwise.
        assert_eq!(
            m.env_value("A_TOKEN", Some(b"s")),
            m.env_value("A_TOKEN", Some(b"s"))
        );
        assert_ne!(
            m.env_value("A_TOKEN", Some(b"s")),
            Masker::new([8; 32]).env_value("A_TOKEN", Some(b"s"))
        );
    }

    #[test]
    fn argument_values_are_hidden_unless_paths_or_numbers() {
        let m = masker();
        assert_eq!(m.arg("-O2"), "-O2");
        assert_eq!(m.arg("-DNDEBUG"), "-DNDEBUG");
        assert_eq!(m.arg("-DLEVEL=3"), "-DLEVEL=3");
        assert_eq!(m.arg("-DDATA=/usr/share/x"), "-DDATA=/usr/share/x");
        assert!(m.arg("-DAPI_KEY=123").starts_with("-DAPI_KEY=<hidden "));
        assert!(m.arg("-DGREETING=hello").starts_with("-DGREETING=<hidden "));
        assert!(
            m.arg("-Clink-arg=-Wl,--secret=abc")
                .starts_with("-Clink-arg=<hidden ")
        );
        assert_eq!(m.arg("-Wl,/opt/lib"), "-Wl,/opt/lib");
        assert!(m.arg("-Wl,--build-id=abc").starts_with("-Wl,<hidden "));
        assert!(m.arg("api_token=\"x\"").starts_with("api_token=<hidden "));
        assert_eq!(m.arg("feature=\"std\""), "feature=\"std\"");
    }
}
