//! The Rust family's base key: everything known before compiling. The toolchain (`rustc
//! -vV` and the sysroot's libraries), the normalized arguments, the cwd, the content of
//! every `--extern` artifact and named native library, the target spec, and for linked
//! crate types the linker's identity and what the link args name; without observation,
//! the cargo environment too.

use std::ffi::OsString;
use std::io;
use std::os::unix::ffi::OsStrExt;

use super::args::RustcArgs;
use super::linker::{self, Linkers};
use super::plan::file_inputs;
use super::reasons::NotCacheable;
use super::toolchain::Toolchain;
use super::toolchain::Toolchains;
use crate::cache::CacheKey;
use crate::compiler::basedir::{self, BaseDirs, Maps, Match};
use crate::compiler::explain::{Input, recipe::short};
use crate::compiler::job::Invocation;
use crate::compiler::key::KeyHasher;
use crate::compiler::pipeline::Context;

/// Cargo variables that differ between identical builds and that rustc never reads.
const UNKEYED_CARGO_VARS: &[&[u8]] = &[b"CARGO_MAKEFLAGS"];

/// Variables that change what the linker does.
const LINK_VARS: &[&[u8]] = &[
    b"LIBRARY_PATH",
    b"LD_RUN_PATH",
    b"GCC_EXEC_PREFIX",
    b"COMPILER_PATH",
];

/// The base key, the prefix maps base dirs relativized, and the files it hashed (for
/// `explain`: each extern, native library, target spec and linked file, with its digest).
pub(super) struct BaseKey {
    pub key: CacheKey,
    pub maps: Maps,
    pub inputs: Vec<Input>,
}

/// Everything known before compiling, or why the compile cannot be keyed.
pub(super) async fn base_key(
    toolchains: &Toolchains,
    linkers: &Linkers,
    context: &Context,
    invocation: &Invocation,
    toolchain: &Toolchain,
    args: &RustcArgs,
    target: &str,
) -> io::Result<Result<BaseKey, NotCacheable>> {
    let (cwd, env) = (&invocation.cwd, &invocation.env);
    let libs = toolchains
        .libs_digest(toolchain, target, context.hashes.clone())
        .await?;
    let linked = args.crate_types.iter().any(|t| t.is_linked());
    let linker_digest = if linked {
        let name: OsString = args.linker.clone().map_or_else(|| "cc".into(), Into::into);
        let Some(path) = linker::find_program(&name, env, cwd) else {
            return Ok(Err(NotCacheable::LinkerNotFound(
                name.to_string_lossy().into_owned(),
            )));
        };
        let digest = linkers
            .digest(&context.launcher, &path, env, cwd, context.hashes.clone())
            .await?;
        Some((path, digest))
    } else {
        None
    };
    let inputs = match file_inputs(args, cwd) {
        Ok(inputs) => inputs,
        Err(reason) => return Ok(Err(reason)),
    };
    let hashes = context.hashes.clone();
    let hashed = tokio::task::spawn_blocking(move || {
        inputs
            .files
            .into_iter()
            .map(|(label, path)| match hashes.hash(&path) {
                Ok(digest) => Ok((label, path, digest)),
                Err(e) => Err(NotCacheable::Input {
                    label,
                    path,
                    error: e.to_string(),
                }),
            })
            .collect::<Result<Vec<_>, NotCacheable>>()
    })
    .await
    .map_err(io::Error::other)?;
    let hashed = match hashed {
        Ok(hashed) => hashed,
        Err(reason) => return Ok(Err(reason)),
    };

    let native_cpu = if args.native_cpu() {
        Some(
            toolchains
                .native_cpu(
                    &context.launcher,
                    &invocation.compiler,
                    toolchain,
                    target,
                    env,
                    cwd,
                )
                .await?,
        )
    } else {
        None
    };
    let base = &invocation.base_dirs;
    let mut h = KeyHasher::new(b"cachet rustc base v2");
    h.field(toolchain.version.as_bytes());
    h.field(&libs);
    if let Some(cpu) = native_cpu {
        h.field(b"native cpu");
        h.field(&cpu);
    }
    h.field(b"args");
    let (key_args, maps) = key_args(base, args);
    for arg in &key_args {
        h.field(arg);
    }
    h.field(b"cwd");
    h.field(&key_cwd(base, args, invocation.cwd_bytes()));
    h.field(b"inputs");
    let mut inputs = Vec::with_capacity(hashed.len());
    for (label, path, digest) in hashed {
        h.field(label.as_bytes());
        h.field(digest.as_bytes());
        inputs.push(Input {
            role: label.split(' ').next().unwrap_or("file").to_owned(),
            // An extern's file name (`libserde-….rlib`) is the same in every target dir.
            path: match path.file_name() {
                Some(name) if label.starts_with("extern ") => name.to_string_lossy().into_owned(),
                _ => path.to_string_lossy().into_owned(),
            },
            digest: short(digest.as_bytes()),
        });
    }
    if let Some((path, digest)) = linker_digest {
        h.field(b"linker");
        h.field(&digest);
        // In the recipe the linker is one more input: `linker changed: …/cc (content)`.
        inputs.push(Input {
            role: "linker".into(),
            path: path.to_string_lossy().into_owned(),
            digest: short(&digest),
        });
    }
    // Observed compiles key exactly the variables their process tree read (in the
    // manifest variant), so a rotated CARGO_REGISTRY_TOKEN is no miss and no secret
    // enters a key. Without observation, every cargo variable is keyed here.
    // What the compile reads with env! is keyed literally in the manifest variant.
    h.field(b"env");
    for (name, value) in keyed_env(invocation, linked, context.observing()) {
        h.field(name);
        if base.is_empty() {
            h.field(value);
        } else {
            h.field(&base.key_form(value));
        }
    }
    Ok(Ok(BaseKey {
        key: h.finish(),
        maps,
        inputs,
    }))
}

/// The variables the base key holds: without observation every cargo variable (and the
/// linker's for linked crate types); with it none, since the variant keys exactly what the
/// compile read. Sorted.
pub(super) fn keyed_env(
    invocation: &Invocation,
    linked: bool,
    observing: bool,
) -> Vec<(&[u8], &[u8])> {
    let mut vars: Vec<(&[u8], &[u8])> = invocation
        .env
        .iter()
        .filter(|_| !observing)
        .map(|(k, v)| (k.as_bytes(), v.as_bytes()))
        .filter(|(k, _)| {
            (k.starts_with(b"CARGO_") && !UNKEYED_CARGO_VARS.contains(k))
                || *k == b"RUSTC_BOOTSTRAP"
                || (linked && LINK_VARS.contains(k))
        })
        .collect();
    vars.sort();
    vars
}

/// The arguments as they enter the base key. Under base dirs, `--remap-path-prefix`'s FROM
/// becomes its relative form, and a path argument (the crate root, `--out-dir`, `-L`,
/// `--sysroot`) under a base dir that a remap covers enters as rustc records it: remapped.
/// Without a covering remap a path stays literal, since rustc embeds it in the rlib's
/// metadata, debug info and panic messages. The out-dir is remapped only when it is a
/// plain path, as the dep-info rewrite on a hit needs.
pub(super) fn key_args(base: &BaseDirs, args: &RustcArgs) -> (Vec<Vec<u8>>, Maps) {
    let tokens: Vec<Vec<u8>> = args
        .hashed_args
        .iter()
        .map(|a| a.as_bytes().to_vec())
        .collect();
    if base.is_empty() {
        return (tokens, Maps::default());
    }
    let remaps = &args.remap_path_prefixes;
    let (mut tokens, maps) = basedir::relativize_map_args(
        base,
        None,
        &tokens,
        &["--remap-path-prefix"],
        true,
        Match::Components,
    );
    const PATH_PREFIXES: &[&[u8]] = &[
        b"--out-dir=",
        b"--sysroot=",
        b"-Lnative=",
        b"-Lcrate=",
        b"-Lall=",
        b"-Lframework=",
        b"native=",
        b"crate=",
        b"all=",
        b"framework=",
        b"-L",
        b"",
    ];
    let mut previous: Vec<u8> = Vec::new();
    for token in tokens.iter_mut() {
        let after = std::mem::replace(&mut previous, token.clone());
        if token.first() == Some(&0) || after == b"--remap-path-prefix" {
            continue;
        }
        let Some(prefix) = PATH_PREFIXES
            .iter()
            .find(|p| token.starts_with(p) && token.get(p.len()) == Some(&b'/'))
        else {
            continue;
        };
        let path = &token[prefix.len()..];
        let is_out_dir = after == b"--out-dir" || *prefix == b"--out-dir=";
        if base.relativize(path).is_none() || (is_out_dir && !plain_path(path)) {
            continue;
        }
        if let Some(recorded) = basedir::remapped(Match::Components, remaps, path) {
            let mut keyed = [*prefix, b"\0remapped:"].concat();
            keyed.extend_from_slice(&recorded[0]);
            *token = keyed;
        }
    }
    (tokens, maps)
}

/// The cwd as the key has it: rustc records it in the rlib (and debug info), remapped if a
/// remap covers it. Under base dirs a covered cwd enters as its relative form plus what
/// rustc records; otherwise literally.
pub(super) fn key_cwd(base: &BaseDirs, args: &RustcArgs, cwd: &[u8]) -> Vec<u8> {
    if base.is_empty() || base.relativize(cwd).is_none() {
        return cwd.to_vec();
    }
    match basedir::remapped(Match::Components, &args.remap_path_prefixes, cwd) {
        Some(recorded) => [base.key_form(cwd).as_slice(), b"\0remapped:", &recorded[0]].concat(),
        None => cwd.to_vec(),
    }
}

/// A path that make-style dep files and JSON write as it is.
pub(super) fn plain_path(path: &[u8]) -> bool {
    path.iter()
        .all(|b| b.is_ascii_alphanumeric() || b"/._-+@,~=%".contains(b))
}
