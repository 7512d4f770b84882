//! The C family's plan: what one cacheable gcc or clang compile runs and writes.

use std::ffi::OsString;
use std::path::PathBuf;

use super::args::{self, CompileArgs, Family};
use super::identity::Identity;
use super::reasons::NotCacheable;
use crate::compiler::basedir;
use crate::compiler::depfile::{Layout, target_tokens};
use crate::compiler::job::Invocation;
use crate::compiler::regular_files::check_output_path;

/// Variables that make the compiler write outputs we do not know about.
const EXTRA_OUTPUT_VARS: &[&str] = &["DEPENDENCIES_OUTPUT", "SUNPRO_DEPENDENCIES"];

/// One cacheable compile, ready to run.
#[derive(Debug, Clone)]
pub struct Plan {
    pub args: CompileArgs,
    /// Arguments of the real compile: the original ones, plus the flag that turns colour
    /// on when the command line leaves colour to the terminal (such compiles always run
    /// coloured, so one entry serves every client; see `compiler::colour`).
    pub compile_args: Vec<OsString>,
    /// Arguments of the `-E` run, or None for input that is already preprocessed.
    pub preprocess_args: Option<Vec<OsString>>,
    /// Absolute paths of the outputs.
    pub object: PathBuf,
    pub depfile: Option<PathBuf>,
    /// The request's cwd.
    pub cwd: PathBuf,
    /// With base dirs: the absolute paths the key names relative to the cwd (from the
    /// command line, their directories, and the cwd itself as `.`), each with that
    /// relative form. A hit made in another checkout has them rewritten in its `.d` and
    /// diagnostics; an output that records one serves only its own cwd.
    pub rebased: Vec<(Vec<u8>, Vec<u8>)>,
    /// Side outputs by role (`.gcno`, `.dwo`, `.su`, `.ci`, `.dia`).
    pub extra_outputs: Vec<(&'static str, PathBuf)>,
    /// How this compiler lays out a dependency file, and the targets this compile's has
    /// (escaped as written): a hit writes them into a stored `.d`.
    pub dep_layout: Layout,
    pub dep_targets: Vec<Vec<u8>>,
    /// The client's stderr would not be coloured: diagnostics reach it without colour.
    pub strip_colour: bool,
    /// `SOURCE_DATE_EPOCH` is set and the compiler takes `__DATE__`/`__TIME__` from it
    /// (set by `CFamily` after probing): those macros then need no preprocessor mode.
    pub fixed_dates: bool,
}

impl Plan {
    /// Every file the compile writes: the object, the dependency file, the side outputs.
    pub fn outputs(&self) -> impl Iterator<Item = &std::path::Path> {
        let side = self.extra_outputs.iter().map(|(_, path)| path.as_path());
        std::iter::once(self.object.as_path())
            .chain(self.depfile.as_deref())
            .chain(side)
    }
}

/// Why a compile is passed back to the client, or the plan to run it.
pub fn plan(identity: &Identity, invocation: &Invocation) -> Result<Plan, NotCacheable> {
    for var in EXTRA_OUTPUT_VARS {
        if invocation.env_var(var).is_some() {
            return Err(NotCacheable::ExtraOutputVar(var));
        }
    }
    let cwd = &invocation.cwd;
    let input = args::ParseInput {
        args: &invocation.args,
        cwd,
        family: identity.family,
    };
    let mut args = match args::parse(&input) {
        args::Parsed::Cacheable(args) => *args,
        args::Parsed::NotCacheable(reason) => return Err(NotCacheable::Arguments(reason)),
    };
    let flag = match identity.family {
        Family::Gcc => "-fdiagnostics-color=always",
        Family::Clang => "-fcolor-diagnostics",
    };
    let terminal = would_color(identity.family, invocation);
    let (color_flag, strip_colour) = match args.color {
        Some(_) => (None, false),
        // A precompiled header records the diagnostics options (clang's does): colour
        // only where the client's terminal would have it, and keyed.
        None if args.language.is_header() => {
            if terminal {
                args.hashed_args.push(flag.into());
                args.direct_args.push(flag.into());
            }
            (terminal.then_some(flag), false)
        }
        None => (Some(flag), !terminal),
    };
    let mut compile_args = args.expanded.clone();
    let mut preprocess_args = (!args.preprocessed_input).then(|| args.preprocess_args.clone());
    if let Some(flag) = color_flag {
        compile_args.insert(0, flag.into());
        if let Some(pre) = preprocess_args.as_mut() {
            pre.insert(0, flag.into());
        }
    }
    let object = cwd.join(&args.output);
    let depfile = args.depfile.as_ref().map(|d| cwd.join(&d.path));
    let extra_outputs: Vec<(&'static str, PathBuf)> = args
        .extra_outputs
        .iter()
        .map(|(role, path)| (*role, cwd.join(path)))
        .collect();
    let side = extra_outputs.iter().map(|(_, path)| path);
    for path in std::iter::once(&object).chain(&depfile).chain(side) {
        check_output_path(path).map_err(NotCacheable::Output)?;
    }
    let dep_layout = match identity.family {
        Family::Gcc => Layout::Gcc,
        Family::Clang => Layout::Clang,
    };
    let dep_targets = args
        .depfile
        .as_ref()
        .map(|d| target_tokens(dep_layout, &d.targets))
        .unwrap_or_default();
    let rebased = rebased(invocation, &args.direct_args);
    Ok(Plan {
        cwd: cwd.clone(),
        rebased,
        object,
        depfile,
        extra_outputs,
        dep_layout,
        dep_targets,
        compile_args,
        preprocess_args,
        strip_colour,
        fixed_dates: false,
        args,
    })
}

/// See [`Plan::rebased`].
fn rebased(invocation: &Invocation, args: &[OsString]) -> Vec<(Vec<u8>, Vec<u8>)> {
    let (base, cwd) = (&invocation.base_dirs, invocation.cwd_bytes());
    let mut out = Vec::new();
    if base.covers(cwd) {
        out.push((cwd.to_vec(), b".".to_vec()));
    }
    for path in basedir::rebased_paths(base, cwd, args) {
        let Some(relative) = base.relative_to_cwd(&path, cwd) else {
            continue;
        };
        let parent = |p: &[u8]| {
            p.iter()
                .rposition(|&b| b == b'/')
                .map(|at| p[..at].to_vec())
        };
        if let (Some(dir), Some(rel_dir)) = (parent(&path), parent(&relative)) {
            out.push((dir, rel_dir));
        }
        out.push((path, relative));
    }
    out.sort();
    out.dedup();
    out
}

/// Whether the client would see colour: the compiler colours diagnostics on its own only
/// when its stderr is a terminal (and `TERM` is not `dumb`; for gcc, `GCC_COLORS` is not
/// empty).
fn would_color(family: Family, invocation: &Invocation) -> bool {
    if !invocation.stderr_is_tty || invocation.env_var("TERM") == Some(b"dumb") {
        return false;
    }
    family == Family::Clang || invocation.env_var("GCC_COLORS") != Some(b"")
}
