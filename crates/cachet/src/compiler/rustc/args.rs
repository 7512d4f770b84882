//! Parsing of rustc command lines (as cargo sends them through `RUSTC_WRAPPER`)
//! into a typed model, deciding whether the compile is cacheable.
//!
//! The rule is conservative: anything not understood yields
//! [`Parsed::NotCacheable`] with a short reason, so an odd flag can only cost a
//! cache miss, never produce a wrong hit.

use std::ffi::OsString;
use std::path::{Path, PathBuf};

#[cfg(test)]
mod tests;

/// A rustc invocation: the arguments after the rustc path, and the directory
/// rustc runs in (argfiles and relative paths are resolved against it).
#[derive(Debug, Clone, Copy)]
pub struct ParseInput<'a> {
    pub args: &'a [OsString],
    pub cwd: &'a Path,
}

// One value per compile request: the size difference costs nothing, and the
// unboxed variant keeps matching simple for callers.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Parsed {
    Cacheable(RustcArgs),
    NotCacheable {
        /// Crate types as far as they were seen (for statistics).
        crate_types: Vec<CrateType>,
        reason: Unsupported,
    },
}

/// Why a rustc command line is not cached. `Display` is the stats label.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Unsupported {
    /// A flag or form we never cache (`-v`, `--print`, `incremental`...), by name.
    #[error("{0}")]
    Refused(&'static str),
    /// A flag this parser does not know.
    #[error("unknown flag {0}")]
    UnknownFlag(String),
    /// A flag whose value is missing.
    #[error("missing value for {0}")]
    MissingValue(String),
    /// A `--crate-type` this parser does not know.
    #[error("unknown crate type {0}")]
    UnknownCrateType(String),
    /// An `--emit` kind this parser does not know.
    #[error("emit kind {0}")]
    EmitKind(String),
    /// A `-C` option this parser does not know.
    #[error("unknown codegen option {0}")]
    UnknownCodegenOption(String),
    /// A `-C split-debuginfo` value whose files we do not collect.
    #[error("-C split-debuginfo={0}")]
    SplitDebuginfo(String),
}

impl From<&'static str> for Unsupported {
    fn from(name: &'static str) -> Unsupported {
        Unsupported::Refused(name)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum CrateType {
    Bin,
    Lib,
    Rlib,
    Dylib,
    Cdylib,
    Staticlib,
    ProcMacro,
}

impl CrateType {
    pub fn as_str(&self) -> &'static str {
        match self {
            CrateType::Bin => "bin",
            CrateType::Lib => "lib",
            CrateType::Rlib => "rlib",
            CrateType::Dylib => "dylib",
            CrateType::Cdylib => "cdylib",
            CrateType::Staticlib => "staticlib",
            CrateType::ProcMacro => "proc-macro",
        }
    }

    /// Whether producing this crate type runs the system linker.
    pub fn is_linked(&self) -> bool {
        matches!(
            self,
            CrateType::Bin | CrateType::Dylib | CrateType::Cdylib | CrateType::ProcMacro
        )
    }

    fn from_str(s: &str) -> Option<CrateType> {
        Some(match s {
            "bin" => CrateType::Bin,
            "lib" => CrateType::Lib,
            "rlib" => CrateType::Rlib,
            "dylib" => CrateType::Dylib,
            "cdylib" => CrateType::Cdylib,
            "staticlib" => CrateType::Staticlib,
            "proc-macro" => CrateType::ProcMacro,
            _ => return None,
        })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Emit {
    DepInfo,
    Metadata,
    Link,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RustcArgs {
    /// Arguments after `@argfile` expansion.
    pub expanded: Vec<OsString>,
    /// The crate root source file, as written.
    pub input: PathBuf,
    pub crate_name: String,
    /// Deduplicated, in order of appearance; `[Bin]` for `--test`.
    pub crate_types: Vec<CrateType>,
    /// Set by `--test` (test harness binary).
    pub test: bool,
    /// Deduplicated, in order of appearance; `[Link]` when `--emit` is absent.
    pub emit: Vec<Emit>,
    pub out_dir: PathBuf,
    /// `-C extra-filename`, "" when absent.
    pub extra_filename: String,
    pub externs: Vec<Extern>,
    /// `-L [kind=]path`; kind is "all" when absent.
    pub search_paths: Vec<(String, PathBuf)>,
    pub native_libs: Vec<NativeLib>,
    /// In command-line order.
    pub cfgs: Vec<String>,
    /// In command-line order.
    pub check_cfgs: Vec<String>,
    pub target: Option<Target>,
    pub edition: Option<String>,
    /// Every `-C`/`--codegen` option in order; keys normalized to dashes.
    pub codegen: Vec<(String, Option<String>)>,
    pub linker: Option<PathBuf>,
    /// `-C link-arg` and whitespace-split `-C link-args`, in order.
    pub link_args: Vec<String>,
    pub display: DisplayFlags,
    /// `--remap-path-prefix FROM=TO`, in order.
    pub remap_path_prefixes: Vec<(String, String)>,
    /// The arguments that go into the cache key (see [`parse`]).
    pub hashed_args: Vec<OsString>,
}

/// `--extern [opts:]name[=path]`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Extern {
    pub name: String,
    /// As written (relative to the cwd if relative).
    pub path: Option<PathBuf>,
    pub options: Vec<String>,
}

/// `-l [kind[:modifiers]=]name[:rename]`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct NativeLib {
    pub kind: Option<String>,
    pub modifiers: Option<String>,
    pub name: String,
    pub rename: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Target {
    Triple(String),
    /// A custom target spec file, resolved against the cwd.
    JsonPath(PathBuf),
}

/// Flags that change only how diagnostics are rendered (cargo sets the width from the terminal).
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct DisplayFlags {
    pub diagnostic_width: Option<String>,
    pub color: Option<String>,
    /// `--json` contains `diagnostic-rendered-ansi`.
    pub rendered_ansi: bool,
}

/// `-C` options rustc accepts on stable; an unknown key may have effects we
/// cannot account for (e.g. writing extra files), so it is not cacheable.
const KNOWN_CODEGEN: &[&str] = &[
    "ar",
    "code-model",
    "codegen-units",
    "collapse-macro-debuginfo",
    "control-flow-guard",
    "debug-assertions",
    "debuginfo",
    "default-linker-libraries",
    "dlltool",
    "embed-bitcode",
    "extra-filename",
    "force-frame-pointers",
    "force-unwind-tables",
    "incremental",
    "inline-threshold",
    "instrument-coverage",
    "jump-tables",
    "link-arg",
    "link-args",
    "link-dead-code",
    "link-self-contained",
    "linker",
    "linker-flavor",
    "linker-plugin-lto",
    "llvm-args",
    "lto",
    "metadata",
    "no-prepopulate-passes",
    "no-redzone",
    "no-stack-check",
    "no-vectorize-loops",
    "no-vectorize-slp",
    "opt-level",
    "overflow-checks",
    "panic",
    "passes",
    "prefer-dynamic",
    "profile-generate",
    "profile-use",
    "relocation-model",
    "relro-level",
    "remark",
    "rpath",
    "save-temps",
    "soft-float",
    "split-debuginfo",
    "strip",
    "symbol-mangling-version",
    "target-cpu",
    "target-feature",
    "unsafe-allow-abi-mismatch",
];

/// Parses a rustc command line.
///
/// `hashed_args` is `expanded` with: display-only flags (`--diagnostic-width`,
/// `--color`, `diagnostic-rendered-ansi` in `--json`) removed, remaining
/// `--json` items sorted; `--extern` reduced to `--extern [opts:]name` (the
/// file's content is hashed elsewhere); `-L dependency=` removed; `--cfg`
/// values sorted and deduplicated, emitted as `--cfg X` pairs at the position
/// of the first `--cfg` (likewise `--check-cfg`). Everything else is kept in
/// order, as written.
pub fn parse(input: &ParseInput) -> Parsed {
    let expanded = match expand_argfiles(input.args, input.cwd) {
        Ok(e) => e,
        Err(reason) => {
            return Parsed::NotCacheable {
                crate_types: Vec::new(),
                reason,
            };
        }
    };
    let mut strs = Vec::with_capacity(expanded.len());
    for a in &expanded {
        match a.to_str() {
            Some(s) => strs.push(s.to_owned()),
            None => {
                return Parsed::NotCacheable {
                    crate_types: Vec::new(),
                    reason: "non-UTF-8 argument".into(),
                };
            }
        }
    }
    let mut p = Parser::new(input.cwd, strs);
    p.run();
    p.finish(expanded)
}

/// rustc expands `@path` into one argument per line of the file (not
/// recursively). `@shell:` is an unstable quoting form we do not model.
fn expand_argfiles(args: &[OsString], cwd: &Path) -> Result<Vec<OsString>, Unsupported> {
    let mut out = Vec::with_capacity(args.len());
    for arg in args {
        let Some(file) = arg.to_str().and_then(|s| s.strip_prefix('@')) else {
            out.push(arg.clone());
            continue;
        };
        if file.starts_with("shell:") {
            return Err("shell argfile".into());
        }
        let text = std::fs::read_to_string(cwd.join(file))
            .map_err(|_| Unsupported::Refused("argfile unreadable"))?;
        out.extend(text.lines().map(OsString::from));
    }
    Ok(out)
}

/// One piece of `hashed_args`; the cfg slots are filled with the sorted
/// values once all arguments are seen.
enum Hashed {
    Tok(String),
    CfgSlot,
    CheckCfgSlot,
}

struct Parser<'a> {
    cwd: &'a Path,
    args: Vec<String>,
    pos: usize,
    /// First reason found; parsing continues to collect crate types.
    reason: Option<Unsupported>,
    hashed: Vec<Hashed>,

    inputs: Vec<String>,
    crate_name: Option<String>,
    crate_types: Vec<CrateType>,
    test: bool,
    emit: Option<Vec<Emit>>,
    out_dir: Option<String>,
    extra_filename: String,
    externs: Vec<Extern>,
    search_paths: Vec<(String, PathBuf)>,
    native_libs: Vec<NativeLib>,
    cfgs: Vec<String>,
    check_cfgs: Vec<String>,
    target: Option<Target>,
    edition: Option<String>,
    codegen: Vec<(String, Option<String>)>,
    linker: Option<PathBuf>,
    link_args: Vec<String>,
    display: DisplayFlags,
    remap_path_prefixes: Vec<(String, String)>,
}

impl<'a> Parser<'a> {
    fn new(cwd: &'a Path, args: Vec<String>) -> Self {
        Parser {
            cwd,
            args,
            pos: 0,
            reason: None,
            hashed: Vec::new(),
            inputs: Vec::new(),
            crate_name: None,
            crate_types: Vec::new(),
            test: false,
            emit: None,
            out_dir: None,
            extra_filename: String::new(),
            externs: Vec::new(),
            search_paths: Vec::new(),
            native_libs: Vec::new(),
            cfgs: Vec::new(),
            check_cfgs: Vec::new(),
            target: None,
            edition: None,
            codegen: Vec::new(),
            linker: None,
            link_args: Vec::new(),
            display: DisplayFlags::default(),
            remap_path_prefixes: Vec::new(),
        }
    }

    fn fail(&mut self, reason: impl Into<Unsupported>) {
        if self.reason.is_none() {
            self.reason = Some(reason.into());
        }
    }

    fn keep(&mut self, toks: &[String]) {
        self.hashed
            .extend(toks.iter().map(|t| Hashed::Tok(t.clone())));
    }

    fn run(&mut self) {
        while self.pos < self.args.len() {
            let arg = self.args[self.pos].clone();
            self.pos += 1;
            if arg.starts_with("--") {
                self.long(&arg);
            } else if arg == "-" {
                self.fail("stdin input");
            } else if arg.starts_with('-') {
                self.short(&arg);
            } else {
                self.inputs.push(arg.clone());
                self.keep(&[arg]);
            }
        }
    }

    /// Takes the value of a flag: the inline part if any, else the next
    /// argument. Returns the value and the tokens as written.
    fn value(&mut self, arg: &str, inline: Option<&str>) -> Option<(String, Vec<String>)> {
        if let Some(v) = inline {
            return Some((v.to_owned(), vec![arg.to_owned()]));
        }
        match self.args.get(self.pos).cloned() {
            Some(v) => {
                self.pos += 1;
                Some((v.clone(), vec![arg.to_owned(), v]))
            }
            None => {
                self.fail(Unsupported::MissingValue(arg.to_owned()));
                None
            }
        }
    }

    fn long(&mut self, arg: &str) {
        let (name, inline) = match arg.split_once('=') {
            Some((n, v)) => (n, Some(v)),
            None => (arg, None),
        };
        // Flags without a value.
        match name {
            "--test" if inline.is_none() => {
                self.test = true;
                self.keep(&[arg.to_owned()]);
                return;
            }
            "--verbose" => return self.fail("-v"),
            "--version" => return self.fail("--version"),
            "--help" => return self.fail("--help"),
            "--print" => return self.fail("--print"),
            "--explain" => return self.fail("--explain"),
            "--env-set" => return self.fail("unstable option --env-set"),
            "--crate-name"
            | "--crate-type"
            | "--edition"
            | "--emit"
            | "--out-dir"
            | "--extern"
            | "--cfg"
            | "--check-cfg"
            | "--target"
            | "--error-format"
            | "--json"
            | "--diagnostic-width"
            | "--color"
            | "--remap-path-prefix"
            | "--cap-lints"
            | "--allow"
            | "--warn"
            | "--deny"
            | "--forbid"
            | "--force-warn"
            | "--sysroot"
            | "--codegen" => {}
            _ => return self.fail(Unsupported::UnknownFlag(name.to_owned())),
        }
        let Some((v, toks)) = self.value(arg, inline) else {
            return;
        };
        match name {
            "--crate-name" => {
                self.set_crate_name(v);
                self.keep(&toks);
            }
            "--crate-type" => {
                self.add_crate_types(&v);
                self.keep(&toks);
            }
            "--edition" => {
                if self.edition.replace(v).is_some() {
                    self.fail("repeated --edition");
                }
                self.keep(&toks);
            }
            "--emit" => {
                self.add_emit(&v);
                self.keep(&toks);
            }
            "--out-dir" => {
                if self.out_dir.replace(v).is_some() {
                    self.fail("repeated --out-dir");
                }
                self.keep(&toks);
            }
            "--extern" => self.add_extern(&v),
            "--cfg" => self.add_cfg(v),
            "--check-cfg" => self.add_check_cfg(v),
            "--target" => {
                self.set_target(v);
                self.keep(&toks);
            }
            "--json" => self.add_json(&v),
            "--diagnostic-width" => self.display.diagnostic_width = Some(v),
            "--color" => self.display.color = Some(v),
            "--remap-path-prefix" => {
                match v.rsplit_once('=') {
                    Some((from, to)) => self
                        .remap_path_prefixes
                        .push((from.to_owned(), to.to_owned())),
                    None => self.fail("bad --remap-path-prefix"),
                }
                self.keep(&toks);
            }
            "--allow" | "--warn" | "--deny" | "--forbid" | "--force-warn" => {
                self.lint(&v, &toks);
            }
            "--codegen" => self.add_codegen(&v, &toks),
            // --error-format, --cap-lints, --sysroot: only hashed.
            _ => self.keep(&toks),
        }
    }

    fn short(&mut self, arg: &str) {
        let mut chars = arg[1..].chars();
        let flag = chars.next().unwrap_or('-');
        let rest = chars.as_str();
        // Flags without a value; rustc's getopts would also accept grouped
        // short flags, but only `-vV` (cargo's version probe) is seen in
        // practice.
        match (flag, rest) {
            ('g' | 'O', "") => return self.keep(&[arg.to_owned()]),
            ('v', "V") | ('V', "") => return self.fail("--version"),
            ('v', "") => return self.fail("-v"),
            ('h', "") => return self.fail("--help"),
            ('Z', _) => return self.fail("unstable -Z option"),
            ('o', _) => return self.fail("-o output"),
            ('C' | 'L' | 'l' | 'A' | 'W' | 'D' | 'F', _) => {}
            _ => return self.fail(Unsupported::UnknownFlag(arg.to_owned())),
        }
        let inline = (!rest.is_empty()).then_some(rest);
        let Some((v, toks)) = self.value(arg, inline) else {
            return;
        };
        match flag {
            'C' => self.add_codegen(&v, &toks),
            'L' => self.add_search_path(&v, &toks),
            'l' => self.add_native_lib(&v, &toks),
            _ => self.lint(&v, &toks),
        }
    }

    fn set_crate_name(&mut self, v: String) {
        // The name becomes part of output file names: insist on what rustc
        // accepts so a stored artifact name can never escape the out dir.
        if v.is_empty() || !v.chars().all(|c| c.is_alphanumeric() || c == '_') {
            self.fail("bad --crate-name");
        }
        if self.crate_name.replace(v).is_some() {
            self.fail("repeated --crate-name");
        }
    }

    fn add_crate_types(&mut self, v: &str) {
        for part in v.split(',') {
            match CrateType::from_str(part) {
                Some(t) => {
                    if !self.crate_types.contains(&t) {
                        self.crate_types.push(t);
                    }
                }
                None => self.fail(Unsupported::UnknownCrateType(part.to_owned())),
            }
        }
    }

    fn add_emit(&mut self, v: &str) {
        let emit = self.emit.get_or_insert_with(Vec::new);
        let mut bad = None;
        for part in v.split(',') {
            if part.contains('=') {
                bad.get_or_insert(Unsupported::Refused("emit to explicit path"));
                continue;
            }
            let kind = match part {
                "dep-info" => Emit::DepInfo,
                "metadata" => Emit::Metadata,
                "link" => Emit::Link,
                other => {
                    bad.get_or_insert_with(|| Unsupported::EmitKind(other.to_owned()));
                    continue;
                }
            };
            if !emit.contains(&kind) {
                emit.push(kind);
            }
        }
        if let Some(reason) = bad {
            self.fail(reason);
        }
    }

    fn add_extern(&mut self, v: &str) {
        let (spec, path) = match v.split_once('=') {
            Some((s, p)) => (s, Some(PathBuf::from(p))),
            None => (v, None),
        };
        let (options, name) = match spec.split_once(':') {
            Some((o, n)) => (o.split(',').map(str::to_owned).collect(), n),
            None => (Vec::new(), spec),
        };
        if name.is_empty() {
            self.fail("bad --extern");
        }
        // The path is left out of the key: the file's content is hashed by
        // the caller, so moving the target dir does not change the key.
        self.keep(&["--extern".to_owned(), spec.to_owned()]);
        self.externs.push(Extern {
            name: name.to_owned(),
            path,
            options,
        });
    }

    fn add_cfg(&mut self, v: String) {
        if self.cfgs.is_empty() {
            self.hashed.push(Hashed::CfgSlot);
        }
        self.cfgs.push(v);
    }

    fn add_check_cfg(&mut self, v: String) {
        if self.check_cfgs.is_empty() {
            self.hashed.push(Hashed::CheckCfgSlot);
        }
        self.check_cfgs.push(v);
    }

    fn set_target(&mut self, v: String) {
        // Same rule as rustc: a name ending in .json is a spec file path.
        let t = if v.ends_with(".json") {
            Target::JsonPath(self.cwd.join(&v))
        } else {
            Target::Triple(v)
        };
        if self.target.replace(t).is_some() {
            self.fail("repeated --target");
        }
    }

    fn add_json(&mut self, v: &str) {
        let mut items: Vec<&str> = Vec::new();
        for item in v.split(',') {
            if item == "diagnostic-rendered-ansi" {
                self.display.rendered_ansi = true;
            } else {
                items.push(item);
            }
        }
        if !items.is_empty() {
            items.sort_unstable();
            self.hashed
                .push(Hashed::Tok(format!("--json={}", items.join(","))));
        }
    }

    fn lint(&mut self, v: &str, toks: &[String]) {
        // `-W help` and friends print the lint list instead of compiling.
        if v == "help" {
            return self.fail("--help");
        }
        self.keep(toks);
    }

    fn add_codegen(&mut self, v: &str, toks: &[String]) {
        let (key, value) = match v.split_once('=') {
            Some((k, val)) => (k, Some(val.to_owned())),
            None => (v, None),
        };
        // rustc treats `_` and `-` in option names alike.
        let key = key.replace('_', "-");
        self.keep(toks);
        if key == "help" {
            return self.fail("--help");
        }
        if !KNOWN_CODEGEN.contains(&key.as_str()) {
            self.fail(Unsupported::UnknownCodegenOption(key.clone()));
        }
        let val = value.as_deref();
        match key.as_str() {
            "incremental" => self.fail("incremental"),
            "save-temps" if !is_off(val) => self.fail("-C save-temps"),
            // packed and unpacked write .dwp/.dwo files next to the outputs; the compiler
            // module collects them by name.
            "split-debuginfo" if !matches!(val, Some("off" | "packed" | "unpacked")) => {
                self.fail(Unsupported::SplitDebuginfo(val.unwrap_or("").to_owned()));
            }
            "profile-generate" => self.fail("-C profile-generate"),
            "profile-use" => self.fail("-C profile-use"),
            "linker" => self.linker = value.clone().map(PathBuf::from),
            "link-arg" => self.link_args.extend(value.clone()),
            "link-args" => self
                .link_args
                .extend(val.unwrap_or("").split_whitespace().map(str::to_owned)),
            "extra-filename" => {
                let v = val.unwrap_or("");
                // Part of output file names: no path separators.
                if v.contains(['/', '\\']) {
                    self.fail("bad -C extra-filename");
                }
                self.extra_filename = v.to_owned();
            }
            _ => {}
        }
        self.codegen.push((key, value));
    }

    fn add_search_path(&mut self, v: &str, toks: &[String]) {
        // Same rule as rustc: only a known kind prefix is split off.
        let (kind, path) = ["dependency", "crate", "native", "framework", "all"]
            .iter()
            .find_map(|k| v.strip_prefix(k)?.strip_prefix('=').map(|p| (*k, p)))
            .unwrap_or(("all", v));
        // Transitive deps are reached through the direct deps' metadata,
        // whose content is hashed; the directory itself says nothing.
        if kind != "dependency" {
            self.keep(toks);
        }
        self.search_paths
            .push((kind.to_owned(), PathBuf::from(path)));
    }

    fn add_native_lib(&mut self, v: &str, toks: &[String]) {
        let (kind_part, name_part) = match v.split_once('=') {
            Some((k, n)) => (Some(k), n),
            None => (None, v),
        };
        let (kind, modifiers) = match kind_part.map(|k| k.split_once(':').unwrap_or((k, ""))) {
            Some((k, m)) => (Some(k.to_owned()), (!m.is_empty()).then(|| m.to_owned())),
            None => (None, None),
        };
        let (name, rename) = match name_part.split_once(':') {
            Some((n, r)) => (n, Some(r.to_owned())),
            None => (name_part, None),
        };
        if name.is_empty() {
            self.fail("bad -l");
        }
        self.keep(toks);
        self.native_libs.push(NativeLib {
            kind,
            modifiers,
            name: name.to_owned(),
            rename,
        });
    }

    fn finish(mut self, expanded: Vec<OsString>) -> Parsed {
        if self.test {
            // rustc builds a test harness executable whatever --crate-type says.
            self.crate_types = vec![CrateType::Bin];
        }
        match self.inputs.len() {
            0 => self.fail("no input"),
            1 => {}
            _ => self.fail("multiple inputs"),
        }
        if self.crate_name.is_none() {
            self.fail("no --crate-name");
        }
        if self.crate_types.is_empty() {
            self.fail("no --crate-type");
        }
        if self.out_dir.is_none() {
            self.fail("no --out-dir");
        }
        if let Some(reason) = self.reason {
            return Parsed::NotCacheable {
                crate_types: self.crate_types,
                reason,
            };
        }

        let mut cfgs = self.cfgs.clone();
        cfgs.sort();
        cfgs.dedup();
        let mut check_cfgs = self.check_cfgs.clone();
        check_cfgs.sort();
        check_cfgs.dedup();
        let mut hashed_args = Vec::with_capacity(self.hashed.len() + 2 * cfgs.len());
        for h in self.hashed {
            let (flag, values) = match h {
                Hashed::Tok(t) => {
                    hashed_args.push(OsString::from(t));
                    continue;
                }
                Hashed::CfgSlot => ("--cfg", &cfgs),
                Hashed::CheckCfgSlot => ("--check-cfg", &check_cfgs),
            };
            for v in values {
                hashed_args.push(flag.into());
                hashed_args.push(v.into());
            }
        }

        let (Some(input), Some(crate_name), Some(out_dir)) =
            (self.inputs.pop(), self.crate_name, self.out_dir)
        else {
            unreachable!("checked above");
        };
        Parsed::Cacheable(RustcArgs {
            expanded,
            input: PathBuf::from(input),
            crate_name,
            crate_types: self.crate_types,
            test: self.test,
            emit: self.emit.unwrap_or_else(|| vec![Emit::Link]),
            out_dir: PathBuf::from(out_dir),
            extra_filename: self.extra_filename,
            externs: self.externs,
            search_paths: self.search_paths,
            native_libs: self.native_libs,
            cfgs: self.cfgs,
            check_cfgs: self.check_cfgs,
            target: self.target,
            edition: self.edition,
            codegen: self.codegen,
            linker: self.linker,
            link_args: self.link_args,
            display: self.display,
            remap_path_prefixes: self.remap_path_prefixes,
            hashed_args,
        })
    }
}

impl RustcArgs {
    /// `-C target-cpu=native`: the output depends on this machine's CPU, which the key
    /// must then hold (see `Toolchains::native_cpu`).
    pub fn native_cpu(&self) -> bool {
        self.codegen
            .iter()
            .any(|(k, v)| k == "target-cpu" && v.as_deref() == Some("native"))
    }
}

fn is_off(v: Option<&str>) -> bool {
    matches!(v, Some("no" | "n" | "off" | "false"))
}
