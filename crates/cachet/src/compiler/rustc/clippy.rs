//! `cargo clippy`: cargo runs each workspace crate as `cachet clippy-driver rustc ARGS…`
//! (`RUSTC_WORKSPACE_WRAPPER` inside `RUSTC_WRAPPER`). clippy-driver is rustc with lints
//! added, and its compile is a check build (`--emit=dep-info,metadata`), cached like one;
//! the lints are the diagnostics a hit replays. What clippy adds to the key: the
//! clippy-driver binary, `CLIPPY_ARGS` (the lint flags cargo-clippy passes), and the
//! configuration file that applies, found as clippy finds it (clippy_config's
//! `lookup_conf_file`: `.clippy.toml` or `clippy.toml` in `CLIPPY_CONF_DIR`, else
//! `CARGO_MANIFEST_DIR`, else the cwd, then each parent in turn).

use std::ffi::OsStr;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use crate::compiler::file_hashes::FileHashes;
use crate::compiler::job::Invocation;
use crate::compiler::key::KeyHasher;

/// Variables clippy-driver reads that change its lints.
const CLIPPY_VARS: &[&str] = &[
    "CLIPPY_ARGS",
    "CLIPPY_CONF_DIR",
    "CLIPPY_DISABLE_DOCS_LINKS",
];

/// The configuration file names clippy looks for in each directory, in its order.
const CONF_FILES: &[&str] = &[".clippy.toml", "clippy.toml"];

/// The rustc that clippy-driver wraps, when `invocation` is `clippy-driver rustc ARGS…`
/// (clippy-driver's own test: its first argument's file stem is `rustc`).
pub fn wrapped_rustc(invocation: &Invocation) -> Option<&Path> {
    let driver = invocation.compiler.file_name()?.to_str()?;
    if !driver.starts_with("clippy-driver") {
        return None;
    }
    let rustc = Path::new(invocation.args.first()?);
    (rustc.file_stem()? == "rustc" && rustc.is_absolute()).then_some(rustc)
}

/// What clippy adds to a compile's key: the driver binary's content, its variables, and
/// the applying configuration file's path and content (blake3, 32 bytes). Errors: the
/// driver or the configuration file cannot be read.
pub fn driver_key(invocation: &Invocation, hashes: &FileHashes) -> io::Result<[u8; 32]> {
    let mut h = KeyHasher::new(b"cachet clippy-driver v1");
    h.field(hashes.hash(&invocation.compiler)?.as_bytes());
    for var in CLIPPY_VARS {
        h.field(var.as_bytes());
        match invocation.env_var(var) {
            Some(value) => h.field(value),
            None => h.field(b"\0unset"),
        }
    }
    match conf_file(invocation) {
        Some(path) => {
            h.field(b"clippy.toml");
            h.field(path.as_os_str().as_encoded_bytes());
            h.field(hashes.hash(&path)?.as_bytes());
        }
        None => h.field(b"no clippy.toml"),
    }
    Ok(h.finish().0)
}

/// The configuration file clippy-driver would read for this compile, if any.
fn conf_file(invocation: &Invocation) -> Option<PathBuf> {
    let start = invocation
        .env_var("CLIPPY_CONF_DIR")
        .or_else(|| invocation.env_var("CARGO_MANIFEST_DIR"))
        .map(|dir| invocation.cwd.join(Path::new(OsStr::from_bytes(dir))))
        .unwrap_or_else(|| invocation.cwd.clone());
    let mut dir = start.canonicalize().ok()?;
    loop {
        for name in CONF_FILES {
            let candidate = dir.join(name);
            if let Ok(found) = candidate.canonicalize()
                && found.is_file()
            {
                return Some(found);
            }
        }
        if !dir.pop() {
            return None;
        }
    }
}
