//! Direct mode for gcc and clang: a hit without running the preprocessor.
//!
//! The direct key hashes the compiler, the arguments (include paths and macros too, since
//! no preprocessed text stands for them), the cwd, the environment and the source. Under
//! it a manifest lists what earlier compiles read: every header with its content hash, and
//! the places where a header of the same name would shadow it if one appeared (an earlier
//! directory on the include path). A request whose headers all still hash the same, and
//! where no shadowing file has appeared, gets that variant's entry.
//!
//! The header list comes from the real compile's own `-MD` output (added as
//! `-MD -MF <temp>` when the user did not ask for one), so a miss runs no preprocessor.
//! Traps handled: `__DATE__`/`__TIME__`/`__TIMESTAMP__` (such a compile is never stored in
//! direct mode, and later requests for it go to preprocessor mode), a header modified
//! during the compile or within the timestamp resolution (not stored), a new header that
//! shadows an old one (recorded absent paths), `-include` (in the dep list like any
//! header). Precompiled headers are passed through before we get here.

use std::ffi::OsString;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};

use super::Plan;
use super::args::Language;
use crate::cache::CacheKey;
use crate::compiler::basedir::{BaseDirs, Maps};
use crate::compiler::file_hashes::FileHashes;
use crate::compiler::identity::Identity;
use crate::compiler::key::KeyHasher;
use crate::compiler::rustc::depinfo;
use crate::protocol::CompileRequest;

/// File timestamps come from the kernel's coarse clock (a tick of a few ms): a file stamped
/// this close to the compile's start, or after it, may have changed while it was read.
const RESOLUTION: Duration = Duration::from_millis(20);

/// Variants kept per manifest.
const VARIANTS: usize = 8;

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    /// Set when the sources use the time macros: use preprocessor mode instead.
    pub no_direct: bool,
    pub variants: Vec<Variant>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Variant {
    /// Every file the compile read (source, headers, -include), with its content hash.
    pub files: Vec<(Vec<u8>, [u8; 32])>,
    /// Paths where a file would shadow one of those headers; they did not exist.
    pub absent: Vec<Vec<u8>>,
}

impl Manifest {
    pub fn add(&mut self, variant: Variant) {
        self.variants.retain(|v| *v != variant);
        self.variants.insert(0, variant);
        self.variants.truncate(VARIANTS);
    }
}

/// Whether direct mode can serve this compile. With -MMD the compiler's dep list leaves
/// out system headers, so we could not see them change: preprocessor mode then, unless
/// the user opted into depend mode (CACHET_DEPEND_MODE=1), which trusts the compiler's
/// list as it is.
pub fn applies(plan: &Plan, request: &CompileRequest) -> bool {
    let flag = |name: &str| {
        request
            .env_var(name)
            .map(|v| !(v.is_empty() || v == b"0" || v == b"false"))
    };
    let disabled = flag("CACHET_DIRECT_MODE") == Some(false);
    let depend_mode = flag("CACHET_DEPEND_MODE") == Some(true);
    let system_deps_left_out = plan.args.expanded.iter().any(|a| a == "-MMD");
    !disabled
        && !plan.args.preprocessed_input
        && plan.args.language != Language::Asm
        && (!system_deps_left_out || depend_mode)
}

/// The direct key: everything but the headers. `source` is the input's content hash.
/// Also returns the prefix maps that base dirs relativized, for [`entry_key`].
///
/// Under base dirs the cwd enters as its relative form: relative paths are resolved against
/// the requester's own cwd when the manifest is checked, and without `-g` nothing records
/// it. With `-g` the cwd also enters as debug info records it (literal unless a prefix map
/// rewrites it). Absolute paths in the arguments stay literal: `__FILE__` and the dep file
/// embed them.
pub fn base_key(
    identity: &Identity,
    plan: &Plan,
    request: &CompileRequest,
    source: &[u8; 32],
) -> (CacheKey, Maps) {
    let base = BaseDirs::of(request);
    let mut h = KeyHasher::new(b"cachet c-family direct v1");
    h.field(&identity.digest);
    h.field(
        request
            .compiler_path()
            .file_name()
            .unwrap_or_default()
            .as_bytes(),
    );
    h.field(plan.args.language.as_x_arg().as_bytes());
    h.field(b"args");
    // The full command line but where outputs go: include paths and macros matter here.
    let mut skip = false;
    let mut kept = Vec::new();
    for arg in &plan.compile_args {
        if skip {
            skip = false;
            continue;
        }
        if arg == "-o" || arg == "-MF" {
            skip = true;
            continue;
        }
        let bytes = arg.as_bytes();
        if bytes.starts_with(b"-o") || bytes.starts_with(b"-MF") {
            continue;
        }
        kept.push(arg);
    }
    let (args, maps) = super::key_args(&base, kept.into_iter());
    for arg in &args {
        h.field(arg);
    }
    h.field(b"cwd");
    if base.is_empty() {
        h.field(&request.cwd);
    } else {
        h.field(&base.key_form(&request.cwd));
        if plan.args.debug_info {
            h.field(b"recorded cwd");
            for recorded in super::recorded_cwds(&request.cwd, &plan.args.prefix_maps) {
                h.field(&recorded);
            }
        }
    }
    // Without -MT/-MQ the dependency file names the object as its target.
    if let Some(dep) = &plan.args.depfile
        && dep.targets.is_empty()
    {
        h.field(b"dep target");
        h.field(plan.args.output.as_os_str().as_bytes());
    }
    for (name, value) in super::key_env(request) {
        h.field(name);
        h.field(value);
    }
    h.field(b"source");
    h.field(source);
    (h.finish(), maps)
}

pub fn manifest_key(base: &CacheKey) -> CacheKey {
    let mut h = KeyHasher::new(b"cachet c-family direct manifest v1");
    h.field(&base.0);
    h.finish()
}

/// `maps` are the prefix maps base dirs relativized: what they make of each absolute path
/// the compile read is what `__FILE__` and debug info record, so it is keyed too.
pub fn entry_key(base: &CacheKey, variant: &Variant, maps: &Maps) -> CacheKey {
    let mut h = KeyHasher::new(b"cachet c-family direct entry v1");
    h.field(&base.0);
    for (path, digest) in &variant.files {
        h.field(path);
        h.field(digest);
    }
    for path in &variant.absent {
        h.field(path);
    }
    if !maps.is_empty() {
        h.field(b"mapped");
        for (path, _) in &variant.files {
            if path.starts_with(b"/") {
                for form in maps.mapped_forms(path) {
                    h.field(path);
                    h.field(&form);
                }
            }
        }
    }
    h.finish()
}

fn os(bytes: &[u8]) -> &Path {
    Path::new(std::ffi::OsStr::from_bytes(bytes))
}

/// Whether everything the variant read is as it was (blocking I/O).
pub fn matches(variant: &Variant, cwd: &Path, hashes: &FileHashes) -> bool {
    variant.absent.iter().all(|p| !cwd.join(os(p)).exists())
        && variant.files.iter().all(|(path, digest)| {
            hashes
                .hash(&cwd.join(os(path)))
                .is_ok_and(|h| h.as_bytes() == digest)
        })
}

/// The include search directories, in the order the compiler looks (quote includes first
/// look next to the source).
pub fn search_dirs(plan: &Plan) -> Vec<PathBuf> {
    let mut quote = vec![
        plan.args
            .input
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_default(),
    ];
    let (mut angle, mut system, mut after) = (Vec::new(), Vec::new(), Vec::new());
    let args = &plan.args.expanded;
    let mut i = 0;
    while i < args.len() {
        let arg = args[i].as_bytes();
        let mut take = |flag: &[u8], into: &mut Vec<PathBuf>| -> bool {
            if arg == flag {
                if let Some(next) = args.get(i + 1) {
                    into.push(PathBuf::from(next));
                }
                i += 1;
                true
            } else if let Some(rest) = arg.strip_prefix(flag) {
                into.push(os(rest).to_path_buf());
                true
            } else {
                false
            }
        };
        let _ = take(b"-iquote", &mut quote)
            || take(b"-isystem", &mut system)
            || take(b"-idirafter", &mut after)
            || take(b"-I", &mut angle);
        i += 1;
    }
    quote.extend(angle);
    quote.extend(system);
    quote.extend(after);
    quote
}

/// Joins make's backslash-newline continuations so the dep-info parser sees one rule line.
fn unfold(text: &str) -> String {
    text.replace("\\\n", " ")
}

/// The variant a successful compile read, from its dep file; Err says why it cannot be
/// stored in direct mode (`Ok(None)`: it uses the time macros).
pub fn variant_from_depfile(
    depfile: &str,
    plan: &Plan,
    cwd: &Path,
    hashes: &FileHashes,
    compile_start: SystemTime,
) -> Result<Option<Variant>, String> {
    let info = depinfo::parse(&unfold(depfile));
    if info.sources.is_empty() {
        return Err("empty dependency list".into());
    }
    let dirs = search_dirs(plan);
    let mut files = Vec::new();
    let mut absent = Vec::new();
    for source in &info.sources {
        let path = cwd.join(source);
        let meta = std::fs::metadata(&path).map_err(|e| format!("{}: {e}", path.display()))?;
        let modified = meta.modified().map_err(|e| e.to_string())?;
        if modified + RESOLUTION > compile_start {
            return Err(format!("{} is too new to trust", path.display()));
        }
        let text = std::fs::read(&path).map_err(|e| format!("{}: {e}", path.display()))?;
        if uses_time_macros(&text) {
            return Ok(None);
        }
        let digest = hashes.hash(&path).map_err(|e| e.to_string())?;
        files.push((source.as_os_str().as_bytes().to_vec(), *digest.as_bytes()));
        // Where a same-named header would have been found first: the most specific search
        // directory it lies in, and every directory searched before that one.
        let best = dirs
            .iter()
            .enumerate()
            .filter(|(_, dir)| !(dir.as_os_str().is_empty() && source.is_absolute()))
            .filter_map(|(i, dir)| {
                let name = source.strip_prefix(dir).ok()?;
                (!name.as_os_str().is_empty())
                    .then(|| (i, dir.components().count(), name.to_path_buf()))
            })
            .max_by_key(|(i, depth, _)| (*depth, std::cmp::Reverse(*i)));
        if let Some((found, _, name)) = best {
            for dir in &dirs[..found] {
                let candidate = dir.join(&name);
                if !cwd.join(&candidate).exists() {
                    absent.push(candidate.as_os_str().as_bytes().to_vec());
                }
            }
        }
    }
    absent.sort();
    absent.dedup();
    Ok(Some(Variant { files, absent }))
}

/// Whether `text` names `__DATE__`, `__TIME__` or `__TIMESTAMP__`. Hops from underscore to
/// underscore: every header of a miss is scanned, so this must be fast.
fn uses_time_macros(text: &[u8]) -> bool {
    let mut at = 0;
    while let Some(found) = text[at..].iter().position(|&b| b == b'_') {
        let rest = &text[at + found..];
        if rest.starts_with(b"__DATE__")
            || rest.starts_with(b"__TIME__")
            || rest.starts_with(b"__TIMESTAMP__")
        {
            return true;
        }
        at += found + 1;
    }
    false
}

/// Compile args with `-MD -MF <depfile>` added when the user asked for no dep file.
pub fn with_depfile(args: &[OsString], depfile: &Path) -> Vec<OsString> {
    let mut out = args.to_vec();
    out.extend(["-MD".into(), "-MF".into(), depfile.as_os_str().to_owned()]);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn time_macros_are_found() {
        assert!(uses_time_macros(b"const char *d = __DATE__;"));
        assert!(uses_time_macros(b"x __TIMESTAMP__"));
        assert!(uses_time_macros(b"__TIME__"));
        assert!(!uses_time_macros(
            b"int __x_DATE; _TIME__ __DATE_ __builtin_expect"
        ));
        assert!(!uses_time_macros(b""));
    }

    #[test]
    fn continuation_lines_are_joined() {
        let info = depinfo::parse(&unfold(
            "a.o: a.c inc/x.h \\\n /usr/include/stdio.h\n\ninc/x.h:\n",
        ));
        assert_eq!(
            info.sources,
            vec![
                PathBuf::from("a.c"),
                PathBuf::from("inc/x.h"),
                PathBuf::from("/usr/include/stdio.h")
            ]
        );
    }
}
