//! gcc and clang (C, C++, Objective-C, assembler) in preprocessor mode.
//!
//! The key hashes the compiler's identity, the language, the arguments that affect the
//! object, the preprocessed source and the environment that changes output. The real compile
//! runs with the original arguments; only its outputs are stored.

pub mod args;
pub mod direct;

use std::ffi::OsString;
use std::path::PathBuf;

use args::{CompileArgs, Family};

use super::identity::Identity;
use crate::cache::CacheKey;
use crate::compiler::key::KeyHasher;
use crate::protocol::CompileRequest;

/// Environment variables that change what gcc or clang produce or print.
const KEY_VARS: &[&str] = &[
    "LANG",
    "LANGUAGE",
    "GCC_COLORS",
    "GCC_EXEC_PREFIX",
    "COMPILER_PATH",
    "GCC_COMPARE_DEBUG",
    "CCC_OVERRIDE_OPTIONS",
    "SOURCE_DATE_EPOCH",
    "CPATH",
    "C_INCLUDE_PATH",
    "CPLUS_INCLUDE_PATH",
    "OBJC_INCLUDE_PATH",
];

/// Variables that make the compiler write outputs we do not know about.
const EXTRA_OUTPUT_VARS: &[&str] = &["DEPENDENCIES_OUTPUT", "SUNPRO_DEPENDENCIES"];

/// One cacheable compile, ready to run.
#[derive(Debug, Clone)]
pub struct Plan {
    pub args: CompileArgs,
    /// Arguments of the real compile (the original ones, plus a colour flag when the
    /// client's terminal would have had colour).
    pub compile_args: Vec<OsString>,
    /// Arguments of the `-E` run, or None for input that is already preprocessed.
    pub preprocess_args: Option<Vec<OsString>>,
    /// Absolute paths of the outputs.
    pub object: PathBuf,
    pub depfile: Option<PathBuf>,
    pub color_flag: Option<&'static str>,
}

/// Why a compile is passed back to the client, or the plan to run it.
pub fn plan(identity: &Identity, request: &CompileRequest) -> Result<Plan, String> {
    for var in EXTRA_OUTPUT_VARS {
        if request.env_var(var).is_some() {
            return Err(format!("{var} is set"));
        }
    }
    let cwd = request.cwd_path();
    let argv = request.args_os();
    let input = args::ParseInput {
        args: &argv,
        cwd: &cwd,
        family: identity.family,
    };
    let args = match args::parse(&input) {
        args::Parsed::Cacheable(args) => args,
        args::Parsed::NotCacheable(reason) => return Err(reason),
    };
    let color_flag = (args.color.is_none() && would_color(identity.family, request)).then_some(
        match identity.family {
            Family::Gcc => "-fdiagnostics-color=always",
            Family::Clang => "-fcolor-diagnostics",
        },
    );
    let mut compile_args = args.expanded.clone();
    let mut preprocess_args = (!args.preprocessed_input).then(|| args.preprocess_args.clone());
    if let Some(flag) = color_flag {
        compile_args.insert(0, flag.into());
        if let Some(pre) = preprocess_args.as_mut() {
            pre.insert(0, flag.into());
        }
    }
    Ok(Plan {
        object: cwd.join(&args.output),
        depfile: args.depfile.as_ref().map(|d| cwd.join(&d.path)),
        compile_args,
        preprocess_args,
        color_flag,
        args,
    })
}

/// The compiler colours diagnostics on its own only when its stderr is a terminal; the
/// server's child writes to a pipe, so we ask for colour where the client's terminal would
/// have got it.
fn would_color(family: Family, request: &CompileRequest) -> bool {
    if !request.stderr_is_tty || request.env_var("TERM") == Some(b"dumb") {
        return false;
    }
    family == Family::Clang || request.env_var("GCC_COLORS") != Some(b"")
}

/// The cache key. `source` is the preprocessed text, or the input itself when it needs none.
pub fn key(identity: &Identity, plan: &Plan, request: &CompileRequest, source: &[u8]) -> CacheKey {
    use std::os::unix::ffi::OsStrExt;
    let mut h = KeyHasher::new(b"cachet c-family key v1");
    h.field(&identity.digest);
    h.field(plan.args.language.as_x_arg().as_bytes());
    h.field(b"args");
    if let Some(flag) = plan.color_flag {
        h.field(flag.as_bytes());
    }
    for arg in &plan.args.hashed_args {
        h.field(arg.as_bytes());
    }
    h.field(b"end args");
    // clang and clang++ are one binary whose driver mode comes from its name.
    h.field(b"driver");
    h.field(
        request
            .compiler_path()
            .file_name()
            .unwrap_or_default()
            .as_bytes(),
    );
    // Debug info records the working directory, as rewritten by any prefix map.
    if plan.args.debug_info {
        h.field(b"cwd");
        for recorded in recorded_cwds(&request.cwd, &plan.args.prefix_maps) {
            h.field(&recorded);
        }
    }
    // Without -MT/-MQ the dependency file names the object as its target.
    if let Some(dep) = &plan.args.depfile
        && dep.targets.is_empty()
    {
        h.field(b"dep target");
        h.field(plan.args.output.as_os_str().as_bytes());
    }
    for (name, value) in key_env(request) {
        h.field(name);
        h.field(value);
    }
    h.field(b"source");
    h.field(source);
    h.finish()
}

/// The environment that changes what gcc or clang produce or print, sorted.
pub(crate) fn key_env(request: &CompileRequest) -> Vec<(&[u8], &[u8])> {
    let mut vars: Vec<(&[u8], &[u8])> = request
        .env
        .iter()
        .filter(|(k, _)| {
            k.starts_with(b"LC_") || KEY_VARS.iter().any(|v| v.as_bytes() == k.as_slice())
        })
        .map(|(k, v)| (k.as_slice(), v.as_slice()))
        .collect();
    vars.sort();
    vars
}

/// What the compiler may record as the working directory: the cwd itself, or what each
/// matching prefix map turns it into. Compilers differ on which of several matching maps
/// wins, so every candidate goes into the key. Matching is by string prefix, as gcc does.
fn recorded_cwds(cwd: &[u8], maps: &[(String, String)]) -> Vec<Vec<u8>> {
    let remapped: Vec<Vec<u8>> = maps
        .iter()
        .filter_map(|(old, new)| {
            let rest = cwd
                .strip_prefix(old.as_bytes())
                .filter(|_| !old.is_empty())?;
            Some([new.as_bytes(), rest].concat())
        })
        .collect();
    if remapped.is_empty() {
        vec![cwd.to_vec()]
    } else {
        remapped
    }
}

#[cfg(test)]
mod tests;
