//! The C family's recipe for `explain`: the parts of its key as a user names them. The
//! explain slot is the object and the source, each relative to the base dir that covers
//! it, else to the cwd, so it is the same in another build dir or checkout.

use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use super::args::Language;
use super::identity::Identity;
use super::key::{key_env, recorded_cwds};
use super::plan::Plan;
use crate::compiler::explain::{Masker, Recipe, recipe::short};
use crate::compiler::job::Invocation;

/// How a language is named in explanations.
pub(super) fn language_name(language: Language) -> &'static str {
    match language {
        Language::C | Language::CPreprocessed | Language::CHeader => "C",
        Language::Cxx | Language::CxxPreprocessed | Language::CxxHeader => "C++",
        Language::ObjC | Language::ObjCPreprocessed | Language::ObjCHeader => "Objective-C",
        Language::ObjCxx | Language::ObjCxxPreprocessed | Language::ObjCxxHeader => "Objective-C++",
        Language::Asm | Language::AsmCpp => "assembler",
    }
}

/// `path` as the slot names it: under a base dir `<base N>/…`, else relative to the cwd
/// when under it, else as it is.
fn project_path(invocation: &Invocation, path: &Path) -> String {
    let absolute = invocation.cwd.join(path);
    let bytes = absolute.as_os_str().as_bytes();
    if let Some(relative) = invocation.base_dirs.relativize(bytes) {
        return String::from_utf8_lossy(&relative).into_owned();
    }
    match absolute.strip_prefix(&invocation.cwd) {
        Ok(relative) => relative.to_string_lossy().into_owned(),
        Err(_) => absolute.to_string_lossy().into_owned(),
    }
}

/// Everything but what the compile read (added from its variant once it has run).
/// `direct`: the direct key's arguments (the whole command line but where outputs go),
/// else preprocessor mode's.
pub(super) fn recipe(
    identity: &Identity,
    plan: &Plan,
    invocation: &Invocation,
    masker: &Masker,
    direct: bool,
) -> Recipe {
    let args = if direct {
        &plan.args.direct_args
    } else {
        &plan.args.hashed_args
    };
    let cwd = invocation.cwd_bytes();
    let cwd_recorded = if plan.args.records_cwd {
        Some("coverage or profiling records it".to_owned())
    } else if plan.args.debug_info
        && recorded_cwds(cwd, &plan.args.prefix_maps)
            .iter()
            .any(|r| r == cwd)
    {
        Some("-g without a prefix map".to_owned())
    } else {
        None
    };
    Recipe {
        language: language_name(plan.args.language).to_owned(),
        slot: format!(
            "{} from {}",
            project_path(invocation, &plan.object),
            project_path(invocation, &plan.args.input)
        ),
        compiler: format!(
            "{} {} (binary digest {})",
            invocation.compiler_name().to_string_lossy(),
            identity.version,
            short(&identity.digest)
        ),
        args: args
            .iter()
            .map(|a| masker.arg(&a.to_string_lossy()))
            .collect(),
        env: masker.env_list(key_env(invocation)),
        cwd: invocation.cwd.to_string_lossy().into_owned(),
        cwd_recorded,
        outputs: plan
            .outputs()
            .map(|p| p.to_string_lossy().into_owned())
            .collect(),
        ..Recipe::default()
    }
}
