//! The C family's key in preprocessor mode: the compiler's identity, the language, the
//! arguments that affect the object, the preprocessed source and the environment that
//! changes output.

use std::os::unix::ffi::OsStrExt;

use super::identity::Identity;
use super::plan::Plan;
use crate::cache::CacheKey;
use crate::compiler::basedir::{self, BaseDirs, Maps, Match};
use crate::compiler::job::Invocation;
use crate::compiler::key::KeyHasher;

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

/// Prefix maps whose OLD side base dirs may relativize (gcc and clang split at the first `=`).
pub(crate) const MAP_FLAGS: &[&str] = &[
    "-fdebug-prefix-map=",
    "-ffile-prefix-map=",
    "-fmacro-prefix-map=",
];

/// The arguments as they enter a key: with base dirs, prefix maps' OLD side relativized,
/// and other absolute paths under a base dir (`-I/abs`, the source, `-include /abs`) made
/// relative to the cwd (see [`rebased_paths`]).
pub(crate) fn key_args<'a>(
    base: &BaseDirs,
    cwd: &[u8],
    args: impl Iterator<Item = &'a std::ffi::OsString>,
) -> (Vec<Vec<u8>>, Maps) {
    let tokens: Vec<Vec<u8>> = args.map(|a| a.as_bytes().to_vec()).collect();
    if base.is_empty() {
        return (tokens, Maps::default());
    }
    let (tokens, maps) =
        basedir::relativize_map_args(base, Some(cwd), &tokens, MAP_FLAGS, false, Match::String);
    let tokens = tokens
        .into_iter()
        .map(|token| match basedir::rebase_token(base, cwd, &token) {
            // Tagged so that it never equals a literal argument.
            Some((at, relative)) => [&token[..at], b"\0rel:", &relative].concat(),
            None => token,
        })
        .collect();
    (tokens, maps)
}

/// The cache key. `source` is the preprocessed text, or the input itself when it needs none.
pub fn key(identity: &Identity, plan: &Plan, invocation: &Invocation, source: &[u8]) -> CacheKey {
    let base = &invocation.base_dirs;
    let mut h = KeyHasher::new(b"cachet c-family key v2");
    h.field(&identity.digest);
    h.field(plan.args.language.as_x_arg().as_bytes());
    h.field(b"args");
    let (hashed_args, maps) = key_args(base, invocation.cwd_bytes(), plan.args.hashed_args.iter());
    for arg in &hashed_args {
        h.field(arg);
    }
    h.field(b"end args");
    // clang and clang++ are one binary whose driver mode comes from its name.
    h.field(b"driver");
    h.field(invocation.compiler_name().as_bytes());
    hash_recorded_paths(&mut h, plan, invocation);
    hash_env(&mut h, invocation);
    h.field(b"source");
    if base.is_empty() {
        h.field(source);
    } else {
        hash_source_with_base_dirs(&mut h, plan, invocation, source, &maps);
    }
    h.finish()
}

/// The paths the outputs record (both keys): debug info records the cwd, as rewritten by
/// any prefix map; coverage and profiling the cwd and `-o` literally; split DWARF the `-o`
/// path (its `.dwo`).
pub(super) fn hash_recorded_paths(h: &mut KeyHasher, plan: &Plan, invocation: &Invocation) {
    if plan.args.debug_info {
        h.field(b"debug cwd");
        for recorded in recorded_cwds(invocation.cwd_bytes(), &plan.args.prefix_maps) {
            h.field(&recorded);
        }
    }
    if plan.args.records_cwd {
        h.field(b"cwd");
        h.field(invocation.cwd_bytes());
    }
    if plan.args.records_output {
        h.field(b"output");
        h.field(plan.args.output.as_os_str().as_bytes());
    }
}

/// The part both keys share: the environment that changes output. (The dependency file's
/// targets are not keyed: a hit writes its own, see `outputs.rs`.)
pub(super) fn hash_env(h: &mut KeyHasher, invocation: &Invocation) {
    for (name, value) in key_env(invocation) {
        h.field(name);
        h.field(value);
    }
}

/// The preprocessed text under base dirs. gcc's `-g` output names the cwd in a line marker
/// (`# 1 "/cwd//"`) that no prefix map rewrites; the key already has the cwd as debug info
/// records it, so that line is left out. Other paths in line markers stay literal: the dep
/// file, diagnostics and `__builtin_FILE` show them as they are. Where a relativized map
/// would rewrite one of them, what it becomes is keyed too (see basedir.rs).
fn hash_source_with_base_dirs(
    h: &mut KeyHasher,
    plan: &Plan,
    invocation: &Invocation,
    source: &[u8],
    maps: &Maps,
) {
    h.field(b"base dirs");
    let cwd_marker = [invocation.cwd_bytes(), b"//"].concat();
    let skip = plan
        .args
        .debug_info
        .then(|| {
            basedir::line_markers(source)
                .take(4)
                .find(|(_, path)| *path == cwd_marker.as_slice())
        })
        .flatten()
        .map(|(start, _)| {
            let end = source[start..]
                .iter()
                .position(|&b| b == b'\n')
                .map_or(source.len(), |n| start + n + 1);
            (start, end)
        });
    match skip {
        Some((start, end)) => {
            h.field(&source[..start]);
            h.field(b"cwd marker");
            h.field(&source[end..]);
        }
        None => h.field(source),
    }
    if !maps.is_empty() {
        // The path itself is in the text; what the maps make of it is not.
        h.field(b"mapped");
        for (start, path) in basedir::line_markers(source) {
            if path.starts_with(b"/") && skip.is_none_or(|(s, _)| s != start) {
                for form in maps.mapped_forms(path) {
                    h.field(&form);
                }
            }
        }
    }
}

/// The environment that changes what gcc or clang produce or print, sorted.
pub(crate) fn key_env(invocation: &Invocation) -> Vec<(&[u8], &[u8])> {
    let mut vars: Vec<(&[u8], &[u8])> = invocation
        .env
        .iter()
        .map(|(k, v)| (k.as_bytes(), v.as_bytes()))
        .filter(|(k, _)| k.starts_with(b"LC_") || KEY_VARS.iter().any(|v| v.as_bytes() == *k))
        .collect();
    vars.sort();
    vars
}

/// What the compiler may record as the working directory: the cwd itself, or what each
/// matching prefix map turns it into. Compilers differ on which of several matching maps
/// wins, so every candidate goes into the key. Matching is by string prefix, as gcc does.
pub(crate) fn recorded_cwds(cwd: &[u8], maps: &[(String, String)]) -> Vec<Vec<u8>> {
    basedir::remapped(Match::String, maps, cwd).unwrap_or_else(|| vec![cwd.to_vec()])
}
