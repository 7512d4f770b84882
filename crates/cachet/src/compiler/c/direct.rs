//! Direct mode for gcc and clang: a hit without running the preprocessor.
//!
//! The direct key hashes the compiler, the arguments (include paths and macros too, since
//! no preprocessed text stands for them), the cwd, the environment and the source. Under
//! it the manifest of observed inputs (see `manifest.rs`) lists what earlier compiles
//! read, looked for and did not find, and which variables they read; a request for which
//! all of that still holds gets that variant's entry, without the preprocessor.
//!
//! The variants come from observing the real compile, so a miss runs no preprocessor
//! either, and `-MMD` compiles (whose dependency list leaves out system headers) are
//! served like any other. Traps handled: `__DATE__`/`__TIME__`/`__TIMESTAMP__` (such a
//! compile is never stored in direct mode, and later requests for it go to preprocessor
//! mode), a file modified during the compile or within the timestamp resolution (not
//! stored), a new header that shadows an old one, a `.gch` beside a header and
//! `__has_include` (absent paths the compiler looked up), `.incbin` data (a file read).
//! Without observation (the interposer cannot load) direct mode is not used.

use std::os::unix::ffi::OsStrExt;

use super::args::Language;
use super::identity::Identity;
use super::key::{hash_env, hash_recorded_paths, key_args};
use super::plan::Plan;
use crate::cache::CacheKey;
use crate::compiler::basedir::Maps;
use crate::compiler::job::Invocation;
use crate::compiler::key::KeyHasher;

/// Whether direct mode can serve this compile: it needs `observing` (the server can
/// observe compiles), input that is preprocessed by this compile, and not
/// `CACHET_DIRECT_MODE=0`.
pub fn applies(plan: &Plan, invocation: &Invocation, observing: bool) -> bool {
    let disabled = invocation
        .env_var("CACHET_DIRECT_MODE")
        .is_some_and(|v| v.is_empty() || v == b"0" || v == b"false");
    observing && !disabled && !plan.args.preprocessed_input && plan.args.language != Language::Asm
}

/// The direct key: everything but the headers. `source` is the input's content hash.
/// Also returns the prefix maps that base dirs relativized, for [`entry_key`].
///
/// The cwd is not keyed: relative paths are resolved against the requester's own cwd when
/// the manifest is checked, and an output that records the cwd is served only in it (see
/// `manifest::Variant::recorded_cwd`). With `-g` the cwd enters as debug info records it
/// (literal unless a prefix map rewrites it). Absolute paths in the arguments stay
/// literal: `__FILE__` and the dep file embed them.
pub fn base_key(
    identity: &Identity,
    plan: &Plan,
    invocation: &Invocation,
    source: &[u8; 32],
) -> (CacheKey, Maps) {
    let base = &invocation.base_dirs;
    let mut h = KeyHasher::new(b"cachet c-family direct v2");
    h.field(&identity.digest);
    h.field(invocation.compiler_name().as_bytes());
    h.field(plan.args.language.as_x_arg().as_bytes());
    h.field(b"args");
    // The full command line but where outputs go: include paths and macros matter here.
    let (args, maps) = key_args(base, invocation.cwd_bytes(), plan.args.direct_args.iter());
    for arg in &args {
        h.field(arg);
    }
    // The cwd only where an output records it: relative paths that name inputs are
    // checked against the requester's own cwd through the manifest.
    hash_recorded_paths(&mut h, plan, invocation);
    hash_env(&mut h, invocation);
    h.field(b"source");
    h.field(source);
    (h.finish(), maps)
}
