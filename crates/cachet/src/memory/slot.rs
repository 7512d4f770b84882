//! What a compile's memory is predicted by: its slot (the same compile, built again) and
//! its kind (what an unknown slot is guessed from).

use std::ffi::OsString;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use serde::{Deserialize, Serialize};

/// The kinds of compile whose peaks differ by an order of magnitude, so that an unknown
/// slot is guessed from its own kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Kind {
    /// A C or C++ compile (`-c`, `-S`).
    C,
    /// A C or C++ link (the driver without `-c`): `ld`, LTO.
    Link,
    /// rustc making a library (`rlib`, `lib`) or only metadata.
    Rlib,
    /// rustc making something linked: a binary, test, dylib, cdylib, staticlib, proc macro.
    RustLinked,
    /// clippy-driver (rustc's work plus the lints).
    Clippy,
    /// Anything else the server runs or admits.
    Other,
}

impl Kind {
    /// Every kind, in display order.
    pub const ALL: [Kind; 6] = [
        Kind::C,
        Kind::Link,
        Kind::Rlib,
        Kind::RustLinked,
        Kind::Clippy,
        Kind::Other,
    ];

    /// The kind's name in stats and docs.
    pub fn name(self) -> &'static str {
        match self {
            Kind::C => "c",
            Kind::Link => "link",
            Kind::Rlib => "rlib",
            Kind::RustLinked => "rust-linked",
            Kind::Clippy => "clippy",
            Kind::Other => "other",
        }
    }

    /// What an unknown slot of this kind is predicted to need before the server has seen
    /// any of its kind (bytes): rough peaks of gcc 12 and rustc 1.9x on common code.
    pub fn built_in_default(self) -> u64 {
        const MIB: u64 = 1 << 20;
        match self {
            Kind::C => 256 * MIB,
            Kind::Other => 256 * MIB,
            Kind::Rlib => 512 * MIB,
            Kind::Clippy => 768 * MIB,
            Kind::RustLinked | Kind::Link => 1024 * MIB,
        }
    }
}

/// One compile as memory history knows it: the same slot, built again, peaks alike.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Slot {
    /// Its kind.
    pub kind: Kind,
    /// A digest of what identifies it (see [`Slot::of`]).
    pub id: u64,
    /// For people: the crate name or the source path (at most 100 bytes).
    pub label: String,
}

/// rustc flags whose value changes how much memory a compile takes.
const RUSTC_MEMORY_FLAGS: &[&str] = &[
    "opt-level",
    "debuginfo",
    "lto",
    "codegen-units",
    "incremental",
    "embed-bitcode",
];

impl Slot {
    /// The slot of `compiler` run in `cwd` with `args`.
    ///
    /// rustc (recognised by `--crate-name`): the crate name, its crate types, `--test`,
    /// `--target` and the codegen flags that change memory (`opt-level`, `debuginfo`, `lto`,
    /// `codegen-units`…); not `-C metadata` nor output paths, which change with every
    /// profile or build dir. Anything else (C and C++): the cwd, the source files and the
    /// flags, without the output paths (`-o`, `-MF`, `-MT`, `-MQ`).
    pub fn of(compiler: &Path, cwd: &Path, args: &[OsString]) -> Slot {
        let program = compiler
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let mut hasher = blake3::Hasher::new();
        let arg = |i: usize| args.get(i).map(|a| a.as_bytes()).unwrap_or_default();
        if let Some(at) = args.iter().position(|a| a == "--crate-name") {
            let name = String::from_utf8_lossy(arg(at + 1)).into_owned();
            hasher.update(b"rustc\0");
            hasher.update(name.as_bytes());
            let mut linked = false;
            let mut types = 0;
            let mut i = 0;
            while i < args.len() {
                let a = arg(i);
                // (flag, value, arguments used)
                let (flag, value, used): (&[u8], &[u8], usize) = match a {
                    b"--crate-type" | b"-C" | b"--target" => (a, arg(i + 1), 2),
                    b"--test" => (a, b"", 1),
                    _ if a.starts_with(b"--crate-type=") => (b"--crate-type", &a[13..], 1),
                    _ if a.starts_with(b"--target=") => (b"--target", &a[9..], 1),
                    _ if a.starts_with(b"-C") => (b"-C", &a[2..], 1),
                    _ => (b"", b"", 1),
                };
                i += used;
                let keep = match flag {
                    b"" => false,
                    b"--crate-type" => {
                        types += 1;
                        linked |= value
                            .split(|b| *b == b',')
                            .any(|t| t != b"rlib" && t != b"lib");
                        true
                    }
                    b"-C" => RUSTC_MEMORY_FLAGS
                        .iter()
                        .any(|f| value.starts_with(f.as_bytes())),
                    _ => true,
                };
                if keep {
                    hasher.update(flag);
                    hasher.update(b"\0");
                    hasher.update(value);
                    hasher.update(b"\0");
                }
            }
            // No --crate-type: rustc makes a binary.
            linked |= types == 0 || args.iter().any(|a| a == "--test");
            let kind = if program.starts_with("clippy-driver") {
                Kind::Clippy
            } else if linked {
                Kind::RustLinked
            } else {
                Kind::Rlib
            };
            return Slot::new(kind, &hasher, name);
        }
        hasher.update(b"cc\0");
        hasher.update(cwd.as_os_str().as_bytes());
        let mut compiles = false;
        let mut source = None;
        let mut skip_next = false;
        for a in args {
            let a = a.as_bytes();
            if skip_next {
                skip_next = false;
                continue;
            }
            if matches!(a, b"-o" | b"-MF" | b"-MT" | b"-MQ") {
                skip_next = true;
                continue;
            }
            if a.starts_with(b"-o") || a.starts_with(b"-MF") || a.starts_with(b"-Wp,-M") {
                continue;
            }
            compiles |= matches!(a, b"-c" | b"-S" | b"-E");
            if !a.starts_with(b"-") && source.is_none() {
                source = Some(String::from_utf8_lossy(a).into_owned());
            }
            hasher.update(a);
            hasher.update(b"\0");
        }
        // A link names its inputs; a call with none (`--version`, `-dumpmachine`, rustc's
        // probes) is light.
        let kind = if compiles {
            Kind::C
        } else if source.is_some() && !program.contains("rustc") {
            Kind::Link
        } else {
            Kind::Other
        };
        let label = source.unwrap_or(program);
        Slot::new(kind, &hasher, label)
    }

    fn new(kind: Kind, hasher: &blake3::Hasher, mut label: String) -> Slot {
        let digest = hasher.finalize();
        let id = u64::from_le_bytes(digest.as_bytes()[..8].try_into().expect("8 bytes"));
        if label.len() > 100 {
            let mut cut = label.len() - 97;
            while !label.is_char_boundary(cut) {
                cut += 1;
            }
            label = format!("...{}", &label[cut..]);
        }
        Slot { kind, id, label }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn slot(compiler: &str, cwd: &str, args: &[&str]) -> Slot {
        let args: Vec<OsString> = args.iter().map(OsString::from).collect();
        Slot::of(Path::new(compiler), Path::new(cwd), &args)
    }

    #[test]
    fn rustc_slots_ignore_metadata_and_paths_but_not_codegen() {
        let a = slot(
            "/r/rustc",
            "/w",
            &[
                "--crate-name",
                "serde",
                "--crate-type",
                "lib",
                "-C",
                "metadata=1",
                "--out-dir",
                "/a",
                "-C",
                "opt-level=3",
            ],
        );
        let b = slot(
            "/r/rustc",
            "/x",
            &[
                "--crate-name",
                "serde",
                "--crate-type",
                "lib",
                "-C",
                "metadata=2",
                "--out-dir",
                "/b",
                "-C",
                "opt-level=3",
            ],
        );
        let c = slot(
            "/r/rustc",
            "/w",
            &[
                "--crate-name",
                "serde",
                "--crate-type",
                "lib",
                "-C",
                "opt-level=0",
            ],
        );
        assert_eq!(a, b);
        assert_ne!(a.id, c.id);
        assert_eq!(a.kind, Kind::Rlib);
        assert_eq!(a.label, "serde");
    }

    #[test]
    fn rustc_kinds() {
        assert_eq!(
            slot(
                "/r/rustc",
                "/",
                &["--crate-name", "app", "--crate-type", "bin"]
            )
            .kind,
            Kind::RustLinked
        );
        assert_eq!(
            slot("/r/rustc", "/", &["--crate-name", "app"]).kind,
            Kind::RustLinked
        );
        assert_eq!(
            slot(
                "/r/rustc",
                "/",
                &["--crate-name", "t", "--crate-type=lib", "--test"]
            )
            .kind,
            Kind::RustLinked
        );
        assert_eq!(
            slot(
                "/r/rustc",
                "/",
                &["--crate-name", "m", "--crate-type", "proc-macro"]
            )
            .kind,
            Kind::RustLinked
        );
        assert_eq!(
            slot(
                "/c/clippy-driver",
                "/",
                &["--crate-name", "l", "--crate-type", "lib"]
            )
            .kind,
            Kind::Clippy
        );
    }

    #[test]
    fn c_slots_ignore_outputs_but_not_flags_or_cwd() {
        let a = slot(
            "/usr/bin/gcc",
            "/w",
            &["-O2", "-c", "a.c", "-o", "x/a.o", "-MF", "x/a.d"],
        );
        let b = slot(
            "/usr/bin/gcc",
            "/w",
            &["-O2", "-c", "a.c", "-o", "y/a.o", "-MFy/a.d"],
        );
        assert_eq!(a, b);
        assert_eq!(a.kind, Kind::C);
        assert_eq!(a.label, "a.c");
        assert_ne!(a.id, slot("/usr/bin/gcc", "/w", &["-O0", "-c", "a.c"]).id);
        assert_ne!(a.id, slot("/usr/bin/gcc", "/v", &["-O2", "-c", "a.c"]).id);
        assert_eq!(
            slot("/usr/bin/gcc", "/w", &["a.o", "b.o", "-o", "app"]).kind,
            Kind::Link
        );
    }
}
