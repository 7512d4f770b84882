//! The Rust family's recipe for `explain`: the parts of its base key as a user names them.
//! The explain slot is the package, the crate, its crate types and the target, so it is
//! the same in every target dir and checkout.

use std::os::unix::ffi::OsStrExt;

use super::args::RustcArgs;
use super::key::{key_args, key_cwd, keyed_env};
use super::toolchain::Toolchain;
use crate::compiler::explain::{Input, Masker, Recipe};
use crate::compiler::job::Invocation;

/// What a recipe needs beyond the invocation and its parsed arguments.
pub(super) struct Parts<'a> {
    pub toolchain: &'a Toolchain,
    pub target: &'a str,
    /// Under clippy-driver.
    pub clippy: bool,
    pub observing: bool,
    /// The files the base key hashed.
    pub inputs: Vec<Input>,
    /// Where the artifacts go (absolute paths).
    pub outputs: Vec<String>,
}

/// Everything but what the compile read (added from its variant once it has run).
pub(super) fn recipe(
    invocation: &Invocation,
    args: &RustcArgs,
    parts: Parts<'_>,
    masker: &Masker,
) -> Recipe {
    let types: Vec<&str> = args.crate_types.iter().map(|t| t.as_str()).collect();
    let package = invocation
        .env_var("CARGO_PKG_NAME")
        .map(|p| String::from_utf8_lossy(p).into_owned());
    let linked = args.crate_types.iter().any(|t| t.is_linked());
    let base = &invocation.base_dirs;
    let cwd = invocation.cwd_bytes();
    let mut slot = format!(
        "crate {} ({}{}) for {}",
        args.crate_name,
        types.join(", "),
        if args.test { ", test" } else { "" },
        parts.target
    );
    if let Some(package) = package {
        let version = invocation
            .env_var("CARGO_PKG_VERSION")
            .map(|v| format!(" {}", String::from_utf8_lossy(v)))
            .unwrap_or_default();
        slot = format!("{slot} of package {package}{version}");
    }
    // The crate root tells a build script's probe compiles (`--crate-name` of the package,
    // another root) from the package's own.
    let root = invocation.cwd.join(&args.input);
    let manifest_dir = invocation
        .env_var("CARGO_MANIFEST_DIR")
        .map(|d| std::path::PathBuf::from(std::ffi::OsStr::from_bytes(d)));
    let root = match manifest_dir
        .as_deref()
        .and_then(|d| root.strip_prefix(d).ok())
    {
        Some(relative) => relative.to_string_lossy().into_owned(),
        None => args.input.to_string_lossy().into_owned(),
    };
    slot = format!("{slot} from {root}");
    if parts.clippy {
        slot.push_str(", under clippy");
    }
    let version = parts.toolchain.version.lines().next().unwrap_or_default();
    Recipe {
        language: "Rust".into(),
        slot,
        compiler: if parts.clippy {
            format!("{version} with clippy-driver")
        } else {
            version.to_owned()
        },
        args: key_args(base, args)
            .0
            .iter()
            .map(|a| masker.arg(&String::from_utf8_lossy(a)))
            .collect(),
        env: masker.env_list(keyed_env(invocation, linked, parts.observing)),
        cwd: invocation.cwd.to_string_lossy().into_owned(),
        // rustc records the cwd in the crate's metadata unless a remap covers it.
        cwd_recorded: (key_cwd(base, args, cwd) == cwd)
            .then(|| "rustc records it in the crate".to_owned()),
        inputs: parts.inputs,
        outputs: parts.outputs,
        ..Recipe::default()
    }
}
