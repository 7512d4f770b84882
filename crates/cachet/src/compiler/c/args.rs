//! Command-line analysis for gcc/clang compiles in preprocessor mode.
//!
//! The cache key is built from the preprocessed source plus the arguments
//! that can still change the object after preprocessing. Anything this
//! module does not fully understand is reported as not cacheable, because a
//! spurious miss only costs time while a wrong hit produces a wrong object.

use std::ffi::{OsStr, OsString};
use std::fs;
use std::path::{Path, PathBuf};

use crate::compiler::depfile::Target;

#[cfg(test)]
mod tests;

/// Compiler family; a few flags are only understood by one of them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Family {
    Gcc,
    Clang,
}

/// What the server received from the client.
#[derive(Debug, Clone, Copy)]
pub struct ParseInput<'a> {
    /// Arguments after the compiler name.
    pub args: &'a [OsString],
    pub cwd: &'a Path,
    pub family: Family,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Parsed {
    Cacheable(Box<CompileArgs>),
    /// Why; the client then runs the compiler itself.
    NotCacheable(Unsupported),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CompileArgs {
    /// Arguments with `@file`s expanded; the real compile runs with these.
    pub expanded: Vec<OsString>,
    /// The input as written on the command line.
    pub input: PathBuf,
    pub language: Language,
    /// `-o` value, or `<input stem>.o`; relative to `cwd` if relative.
    pub output: PathBuf,
    pub depfile: Option<DepFile>,
    /// Arguments for the separate `-E` run (output on stdout). Empty when
    /// `preprocessed_input` is set, since there is no `-E` run then.
    pub preprocess_args: Vec<OsString>,
    /// Arguments that still affect the object after preprocessing.
    pub hashed_args: Vec<OsString>,
    /// The command line as direct mode keys it: all of it but where the outputs go (`-o`,
    /// `-MF`, the dependency file of `-Wp,-MD,FILE`) and the dependency file's targets,
    /// which a hit writes for itself.
    pub direct_args: Vec<OsString>,
    pub debug_info: bool,
    /// Files the compile writes beside the object, by role (see `outputs.rs`), relative to
    /// `cwd` if relative: `.gcno`, `.dwo`, `.su`, `.ci`, `.dia`.
    pub extra_outputs: Vec<(&'static str, PathBuf)>,
    /// The object records its own path (the `.gcda` of coverage and profiling, the `.dwo`
    /// of split DWARF), or reads a file named after it (`-fprofile-use` without a path):
    /// `-o` is keyed.
    pub records_output: bool,
    /// The object or a note records the cwd (coverage, profiling): the cwd is keyed.
    pub records_cwd: bool,
    /// It reads files named by flags that preprocessed text does not show (profile data,
    /// sanitizer lists): stored only when the compile was observed.
    pub reads_flag_files: bool,
    /// `(old, new)` from `-fdebug-prefix-map`/`-ffile-prefix-map`, in
    /// command-line order.
    pub prefix_maps: Vec<(String, String)>,
    /// Explicit diagnostics colour choice; `None` means auto/unspecified.
    pub color: Option<bool>,
    /// The input needs no preprocessing (.i, .ii, .mi, .mii, .s); the key
    /// hashes the input file itself.
    pub preprocessed_input: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DepFile {
    /// `-MF` value, else derived from `-o` or the input like gcc does.
    pub path: PathBuf,
    /// The rule's targets: `-MT`/`-MQ` values in order, or the default one (the `-o`
    /// path; the input's basename with `.o` for gcc's `-Wp,-MD` and without `-o`).
    pub targets: Vec<Target>,
    /// `-MP`: phony targets for each header.
    pub phony: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Language {
    C,
    Cxx,
    ObjC,
    ObjCxx,
    /// `.s`: assembler without preprocessing.
    Asm,
    /// `.S`/`.sx`: assembler run through cpp.
    AsmCpp,
    CPreprocessed,
    CxxPreprocessed,
    ObjCPreprocessed,
    ObjCxxPreprocessed,
    /// A header compiled into a precompiled header (`.gch`/`.pch`).
    CHeader,
    CxxHeader,
    ObjCHeader,
    ObjCxxHeader,
}

impl Language {
    /// The name accepted by `-x`.
    pub fn as_x_arg(&self) -> &'static str {
        match self {
            Language::C => "c",
            Language::Cxx => "c++",
            Language::ObjC => "objective-c",
            Language::ObjCxx => "objective-c++",
            Language::Asm => "assembler",
            Language::AsmCpp => "assembler-with-cpp",
            Language::CPreprocessed => "cpp-output",
            Language::CxxPreprocessed => "c++-cpp-output",
            Language::ObjCPreprocessed => "objective-c-cpp-output",
            Language::ObjCxxPreprocessed => "objective-c++-cpp-output",
            Language::CHeader => "c-header",
            Language::CxxHeader => "c++-header",
            Language::ObjCHeader => "objective-c-header",
            Language::ObjCxxHeader => "objective-c++-header",
        }
    }

    /// Parses a `-x` value (including the aliases gcc/clang accept).
    pub fn from_x_arg(name: &str) -> Option<Language> {
        Some(match name {
            "c" => Language::C,
            "c++" => Language::Cxx,
            "objective-c" => Language::ObjC,
            "objective-c++" => Language::ObjCxx,
            "assembler" => Language::Asm,
            "assembler-with-cpp" => Language::AsmCpp,
            "cpp-output" => Language::CPreprocessed,
            "c++-cpp-output" => Language::CxxPreprocessed,
            "objective-c-cpp-output" | "objc-cpp-output" => Language::ObjCPreprocessed,
            "objective-c++-cpp-output" | "objc++-cpp-output" => Language::ObjCxxPreprocessed,
            "c-header" => Language::CHeader,
            "c++-header" => Language::CxxHeader,
            "objective-c-header" => Language::ObjCHeader,
            "objective-c++-header" => Language::ObjCxxHeader,
            _ => return None,
        })
    }

    /// Language implied by a file extension (case-sensitive, like gcc).
    pub fn from_extension(ext: &str) -> Option<Language> {
        Some(match ext {
            "c" => Language::C,
            "cc" | "cp" | "cxx" | "cpp" | "CPP" | "c++" | "C" => Language::Cxx,
            "m" => Language::ObjC,
            "mm" | "M" => Language::ObjCxx,
            "s" => Language::Asm,
            "S" | "sx" => Language::AsmCpp,
            "i" => Language::CPreprocessed,
            "ii" => Language::CxxPreprocessed,
            "mi" => Language::ObjCPreprocessed,
            "mii" => Language::ObjCxxPreprocessed,
            "h" => Language::CHeader,
            "hh" | "hpp" | "hxx" | "h++" | "H" | "HPP" | "tcc" => Language::CxxHeader,
            _ => return None,
        })
    }

    /// A header: the compile makes a precompiled header.
    pub fn is_header(&self) -> bool {
        matches!(
            self,
            Language::CHeader | Language::CxxHeader | Language::ObjCHeader | Language::ObjCxxHeader
        )
    }

    /// True when the compiler does not run the preprocessor on this input.
    pub fn is_preprocessed(&self) -> bool {
        matches!(
            self,
            Language::Asm
                | Language::CPreprocessed
                | Language::CxxPreprocessed
                | Language::ObjCPreprocessed
                | Language::ObjCxxPreprocessed
        )
    }

    /// The language of this language's `-E` output.
    #[cfg(test)]
    pub fn preprocessed(&self) -> Language {
        match self {
            Language::C => Language::CPreprocessed,
            Language::Cxx => Language::CxxPreprocessed,
            Language::ObjC => Language::ObjCPreprocessed,
            Language::ObjCxx => Language::ObjCxxPreprocessed,
            Language::AsmCpp => Language::Asm,
            other => *other,
        }
    }
}

/// Roles of the side outputs (entry file roles and key markers).
pub const COVERAGE_NOTES: &str = "coverage notes";
pub const SPLIT_DWARF: &str = "split dwarf";
pub const STACK_USAGE: &str = "stack usage";
pub const CALLGRAPH_INFO: &str = "callgraph info";
pub const SERIALIZED_DIAGNOSTICS: &str = "serialized diagnostics";

/// Deepest chain of `@file`s inside `@file`s we follow (also stops cycles).
const MAX_RESPONSE_DEPTH: usize = 10;

/// Why a gcc or clang command line is not cached. `Display` is the stats label.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Unsupported {
    /// A flag or form we never cache (`-E`, linking, modules...), by what it is.
    #[error("{0}")]
    Refused(&'static str),
    /// A flag that is not UTF-8.
    #[error("non-UTF-8 flag {0}")]
    NonUtf8Flag(String),
    /// A flag whose value is missing.
    #[error("missing argument to {0}")]
    MissingArgument(String),
    /// The input file does not exist.
    #[error("input file {} missing", .0.display())]
    InputMissing(PathBuf),
    /// The input is a device, FIFO or directory (but `/dev/null`, an empty input).
    #[error("input {} is not a regular file", .0.display())]
    InputNotRegular(PathBuf),
    /// The input path has no file name.
    #[error("input {} has no file name", .0.display())]
    InputWithoutName(PathBuf),
    /// An input whose extension names no language we know.
    #[error("unknown language for {}", .0.display())]
    UnknownLanguageFor(PathBuf),
    /// A `-x` language we do not know.
    #[error("unknown language {0}")]
    UnknownLanguage(String),
    /// A flag this parser does not know.
    #[error("unknown flag {0}")]
    UnknownFlag(String),
    /// A flag whose form we cannot read.
    #[error("malformed {0}")]
    Malformed(String),
    /// An assembler option (`-Wa,`) that writes or reads files we do not know.
    #[error("assembler option {0}")]
    AssemblerOption(String),
    /// `-d<letters>`: dumps or annotations.
    #[error("dump option {0}")]
    DumpOption(String),
    /// An `@file` that cannot be read.
    #[error("response file {} unreadable", .0.display())]
    ResponseFileUnreadable(PathBuf),
    /// An `@file` that is not text.
    #[error("response file {} not valid text", .0.display())]
    ResponseFileNotText(PathBuf),
}

impl From<&'static str> for Unsupported {
    fn from(what: &'static str) -> Unsupported {
        Unsupported::Refused(what)
    }
}

/// Parses a gcc or clang command line.
pub fn parse(input: &ParseInput) -> Parsed {
    match parse_inner(input) {
        Ok(args) => Parsed::Cacheable(Box::new(args)),
        Err(reason) => Parsed::NotCacheable(reason),
    }
}

/// Where the pieces of one argument (flag plus its value) go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Keep {
    Both,
    /// Only affects preprocessing, so its effect is already in the text.
    PreprocessOnly,
    /// Must not reach the `-E` run (would write files or stop compiling).
    HashOnly,
    Neither,
}

/// Flags that take a value, either joined or as the next argument.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Output,
    Lang,
    Cpp,
    Include,
    DepFile,
    DepTarget,
    Keep,
    Arch,
    Assembler,
    DiagnosticsFile,
}

struct ValueFlag {
    name: &'static str,
    separate: bool,
    joined: bool,
    clang_only: bool,
    kind: Kind,
}

const fn vf(name: &'static str, separate: bool, joined: bool, kind: Kind) -> ValueFlag {
    ValueFlag {
        name,
        separate,
        joined,
        clang_only: false,
        kind,
    }
}

const fn clang(flag: ValueFlag) -> ValueFlag {
    ValueFlag {
        clang_only: true,
        ..flag
    }
}

const VALUE_FLAGS: &[ValueFlag] = &[
    vf("-o", true, true, Kind::Output),
    vf("-x", true, true, Kind::Lang),
    vf("-I", true, true, Kind::Cpp),
    vf("-D", true, true, Kind::Cpp),
    vf("-U", true, true, Kind::Cpp),
    vf("-include", true, true, Kind::Include),
    vf("-imacros", true, true, Kind::Cpp),
    vf("-isystem", true, true, Kind::Cpp),
    vf("-iquote", true, true, Kind::Cpp),
    vf("-idirafter", true, true, Kind::Cpp),
    vf("-iprefix", true, true, Kind::Cpp),
    vf("-iwithprefix", true, true, Kind::Cpp),
    vf("-iwithprefixbefore", true, true, Kind::Cpp),
    vf("-isysroot", true, true, Kind::Cpp),
    vf("-imultilib", true, true, Kind::Cpp),
    vf("--sysroot", true, false, Kind::Cpp),
    vf("--sysroot=", false, true, Kind::Cpp),
    vf("-MF", true, true, Kind::DepFile),
    vf("-MT", true, true, Kind::DepTarget),
    vf("-MQ", true, true, Kind::DepTarget),
    vf("--param", true, false, Kind::Keep),
    vf("--param=", false, true, Kind::Keep),
    vf("-arch", true, false, Kind::Arch),
    clang(vf(
        "--serialize-diagnostics",
        true,
        false,
        Kind::DiagnosticsFile,
    )),
    clang(vf("-ivfsoverlay", true, true, Kind::Cpp)),
    // Linker options are ignored with -c but kept so the key stays honest.
    vf("-Xlinker", true, false, Kind::Keep),
    vf("-L", true, true, Kind::Keep),
    vf("-l", true, true, Kind::Keep),
    vf("-Xassembler", true, false, Kind::Assembler),
    clang(vf("-target", true, false, Kind::Keep)),
    clang(vf("--target=", false, true, Kind::Keep)),
    clang(vf("--gcc-toolchain=", false, true, Kind::Keep)),
    clang(vf("-mllvm", true, false, Kind::Keep)),
];

/// Longest table entry matching `flag`; the value is `Some` when joined.
fn find_value_flag<'f>(
    flag: &'f str,
    family: Family,
) -> Option<(&'static ValueFlag, Option<&'f str>)> {
    let mut best: Option<(&'static ValueFlag, Option<&'f str>)> = None;
    for spec in VALUE_FLAGS {
        if spec.clang_only && family != Family::Clang {
            continue;
        }
        let found = if flag == spec.name && spec.separate {
            Some(None)
        } else if spec.joined && flag.len() > spec.name.len() {
            flag.strip_prefix(spec.name).map(Some)
        } else {
            None
        };
        if let Some(value) = found
            && best.is_none_or(|(b, _)| b.name.len() < spec.name.len())
        {
            best = Some((spec, value));
        }
    }
    best
}

#[derive(Default)]
struct State {
    compile: bool,
    /// `-S`: stop after compiling, with assembler text as the output.
    assembly: bool,
    inputs: Vec<(PathBuf, Option<Language>)>,
    lang: Option<Language>,
    output: Option<OsString>,
    dep_file: Option<OsString>,
    dep_enabled: bool,
    dep_targets: Vec<Target>,
    dep_phony: bool,
    /// `-Wp,-MD,FILE` or `-Wp,-MMD,FILE`: the preprocessor's own dependency file.
    wp_dep_file: Option<OsString>,
    arch_count: usize,
    debug_info: bool,
    /// `-gsplit-dwarf` (not `=single`): a `.dwo` beside the object when there is debug info.
    split_dwarf: bool,
    /// `--coverage`, `-ftest-coverage`: a `.gcno` beside the object.
    coverage_notes: bool,
    stack_usage: bool,
    callgraph_info: bool,
    /// clang's `--serialize-diagnostics FILE`.
    diagnostics_file: Option<OsString>,
    records_output: bool,
    records_cwd: bool,
    reads_flag_files: bool,
    prefix_maps: Vec<(String, String)>,
    color: Option<bool>,
}

fn parse_inner(input: &ParseInput) -> Result<CompileArgs, Unsupported> {
    let expanded = expand_response_files(input.args, input.cwd)?;
    let mut st = State::default();
    // -E goes first so that it cannot end up after a `-x`'s value or similar.
    let mut pp: Vec<OsString> = vec!["-E".into()];
    let mut hashed: Vec<OsString> = Vec::new();
    let mut direct: Vec<OsString> = Vec::new();

    let mut i = 0;
    while i < expanded.len() {
        let arg = &expanded[i];
        i += 1;
        let bytes = arg.as_encoded_bytes();
        if bytes == b"-" {
            return Err("input from stdin (-)".into());
        }
        if bytes.first() != Some(&b'-') {
            st.inputs.push((PathBuf::from(arg), st.lang));
            pp.push(arg.clone());
            direct.push(arg.clone());
            continue;
        }
        // clang ends its options at `--`: every later argument is an input, whatever it
        // looks like (gcc refuses `--`, and the compile shows it).
        if bytes == b"--" && input.family == Family::Clang {
            pp.push(arg.clone());
            direct.push(arg.clone());
            for rest in &expanded[i..] {
                if rest == "-" {
                    return Err("input from stdin (-)".into());
                }
                st.inputs.push((PathBuf::from(rest), st.lang));
                pp.push(rest.clone());
                direct.push(rest.clone());
            }
            break;
        }
        let Some(flag) = arg.to_str() else {
            return Err(Unsupported::NonUtf8Flag(arg.to_string_lossy().into_owned()));
        };
        if let Some(options) = flag.strip_prefix("-Wp,") {
            let keep = st.preprocessor_options(flag, options)?;
            if matches!(keep, Keep::PreprocessOnly) {
                pp.push(arg.clone());
                direct.push(arg.clone());
            } else {
                // The dependency file's name is where an output goes: keyed without it.
                let kind = options.split(',').next().unwrap_or_default();
                let key_form = OsString::from(format!("-Wp,{kind}"));
                hashed.push(key_form.clone());
                direct.push(key_form);
            }
            continue;
        }
        if let Some(reason) = reject_reason(flag) {
            return Err(reason);
        }

        let (keep, group) = if let Some((spec, joined)) = find_value_flag(flag, input.family) {
            let (value, group) = match joined {
                Some(v) => (OsString::from(v), vec![arg.clone()]),
                None => {
                    let Some(v) = expanded.get(i) else {
                        return Err(Unsupported::MissingArgument(flag.to_owned()));
                    };
                    i += 1;
                    (v.clone(), vec![arg.clone(), v.clone()])
                }
            };
            (st.value_flag(spec, &value)?, group)
        } else {
            (st.simple_flag(flag, input.family)?, vec![arg.clone()])
        };
        if matches!(keep, Keep::Both | Keep::PreprocessOnly) {
            pp.extend(group.iter().cloned());
        }
        if !matches!(keep, Keep::Neither) {
            direct.extend(group.iter().cloned());
        }
        if matches!(keep, Keep::Both | Keep::HashOnly) {
            hashed.extend(group);
        }
    }

    match (st.compile, st.assembly) {
        (false, false) => return Err("linking (no -c)".into()),
        (true, true) => return Err("both -c and -S".into()),
        _ => {}
    }
    let (input_path, x_lang) = match st.inputs.len() {
        0 => return Err("no input file".into()),
        1 => st.inputs.pop().expect("one input"),
        _ => return Err("multiple inputs".into()),
    };
    let language = match x_lang {
        Some(lang) => lang,
        None => language_from_path(&input_path)?,
    };
    match fs::metadata(input.cwd.join(&input_path)) {
        Ok(meta) if meta.is_file() => {}
        // An empty input: kbuild's compiler probes (`-c -x c /dev/null`) read it.
        Ok(_) if input.cwd.join(&input_path) == Path::new("/dev/null") => {}
        Ok(_) => return Err(Unsupported::InputNotRegular(input_path.clone())),
        Err(_) => return Err(Unsupported::InputMissing(input_path.clone())),
    }
    if st.arch_count > 1 {
        // Fat objects: clang refuses -E with several -arch.
        return Err("multiple -arch".into());
    }

    let stem = input_path
        .file_stem()
        .ok_or_else(|| Unsupported::InputWithoutName(input_path.clone()))?;
    let output = match &st.output {
        Some(o) if o == "-" => return Err("output to stdout (-o -)".into()),
        Some(o) => PathBuf::from(o),
        // A precompiled header goes beside its header, whatever the cwd.
        None if language.is_header() => {
            let mut pch = input_path.clone().into_os_string();
            pch.push(".gch");
            PathBuf::from(pch)
        }
        None if st.assembly => with_suffix(stem, ".s"),
        None => with_suffix(stem, ".o"),
    };
    if st.assembly && matches!(language, Language::Asm | Language::AsmCpp) {
        // gcc has no assembler text to write for assembler input.
        return Err("-S of assembler input".into());
    }
    if st.assembly && language.is_header() {
        return Err("-S of a header".into());
    }
    let driver_dep =
        st.dep_enabled || st.dep_file.is_some() || !st.dep_targets.is_empty() || st.dep_phony;
    if st.wp_dep_file.is_some() && driver_dep {
        return Err("-Wp,-MD with the driver's dependency flags".into());
    }
    // The target a rule gets without -MT/-MQ: the -o path as written, or the input's
    // basename with `.o` (also for -S). gcc's -Wp,-MD always takes the latter, as cpp
    // itself picks it; clang's driver handles -Wp,-MD as its own -MD.
    let default_target = |wp: bool| {
        let text = match &st.output {
            Some(o) if !(wp && input.family == Family::Gcc) => o.as_encoded_bytes().to_vec(),
            _ => with_suffix(stem, ".o")
                .into_os_string()
                .into_encoded_bytes(),
        };
        vec![Target { text, quoted: true }]
    };
    // gcc writes a dependency file only from the preprocessor: none for plain assembler.
    let wp_depfile = st.wp_dep_file.take().map(|path| DepFile {
        path: PathBuf::from(path),
        targets: default_target(true),
        phony: false,
    });
    let depfile = wp_depfile.filter(|_| language != Language::Asm);
    let depfile = depfile.or_else(|| {
        (st.dep_enabled && language != Language::Asm).then(|| DepFile {
            path: match (&st.dep_file, &st.output) {
                (Some(mf), _) => PathBuf::from(mf),
                (None, Some(_)) => output.with_extension("d"),
                (None, None) => with_suffix(stem, ".d"),
            },
            targets: match st.dep_targets.is_empty() {
                true => default_target(false),
                false => std::mem::take(&mut st.dep_targets),
            },
            phony: st.dep_phony,
        })
    });

    if st.split_dwarf && st.assembly {
        return Err("-gsplit-dwarf with -S".into());
    }
    // gcc and clang name their side outputs after the object, its extension replaced.
    let side = |ext: &str| output.with_extension(ext);
    let mut extra_outputs = Vec::new();
    if st.coverage_notes {
        extra_outputs.push((COVERAGE_NOTES, side("gcno")));
    }
    if st.split_dwarf && st.debug_info {
        extra_outputs.push((SPLIT_DWARF, side("dwo")));
    }
    if st.stack_usage {
        extra_outputs.push((STACK_USAGE, side("su")));
    }
    if st.callgraph_info {
        extra_outputs.push((CALLGRAPH_INFO, side("ci")));
    }
    if let Some(file) = st.diagnostics_file.take() {
        extra_outputs.push((SERIALIZED_DIAGNOSTICS, PathBuf::from(file)));
    }
    if extra_outputs.iter().any(|(_, path)| *path == output) {
        return Err("a side output at the object's path".into());
    }
    if !extra_outputs.is_empty() {
        hashed.extend(extra_outputs.iter().map(|(role, _)| OsString::from(*role)));
        direct.extend(extra_outputs.iter().map(|(role, _)| OsString::from(*role)));
    }

    let preprocessed_input = language.is_preprocessed();
    if preprocessed_input {
        pp.clear();
    }
    Ok(CompileArgs {
        expanded,
        input: input_path,
        language,
        output,
        depfile,
        preprocess_args: pp,
        hashed_args: hashed,
        direct_args: direct,
        debug_info: st.debug_info,
        extra_outputs,
        records_output: st.records_output || st.split_dwarf,
        records_cwd: st.records_cwd,
        reads_flag_files: st.reads_flag_files,
        prefix_maps: st.prefix_maps,
        color: st.color,
        preprocessed_input,
    })
}

fn with_suffix(stem: &OsStr, suffix: &str) -> PathBuf {
    let mut name = stem.to_os_string();
    name.push(suffix);
    PathBuf::from(name)
}

fn language_from_path(path: &Path) -> Result<Language, Unsupported> {
    let ext = path.extension().and_then(OsStr::to_str).unwrap_or("");
    Language::from_extension(ext).ok_or_else(|| Unsupported::UnknownLanguageFor(path.to_owned()))
}

impl State {
    fn value_flag(&mut self, spec: &ValueFlag, value: &OsStr) -> Result<Keep, Unsupported> {
        Ok(match spec.kind {
            Kind::Output => {
                // gcc 12 and clang both let the last -o win.
                self.output = Some(value.to_os_string());
                Keep::Neither
            }
            Kind::Lang => {
                self.lang = x_language(value)?;
                Keep::Both
            }
            Kind::Cpp => Keep::PreprocessOnly,
            // gcc and clang prefer X.gch (clang also X.pch) over X; the -E run does not,
            // but the compile is observed to read it, and its manifest keys the content
            // (unobserved, a .gch beside a header is not stored: manifest.rs).
            Kind::Include => Keep::PreprocessOnly,
            Kind::DepFile => {
                self.dep_file = Some(value.to_os_string());
                Keep::Neither
            }
            Kind::DepTarget => {
                // Only the dependency file names its targets, and a hit writes them.
                self.dep_targets.push(Target {
                    text: value.as_encoded_bytes().to_vec(),
                    quoted: spec.name == "-MQ",
                });
                Keep::Neither
            }
            Kind::Keep => Keep::Both,
            Kind::Arch => {
                self.arch_count += 1;
                Keep::Both
            }
            Kind::Assembler => {
                let opt = value.to_str().ok_or("non-UTF-8 -Xassembler option")?;
                check_assembler_option(opt)?;
                Keep::Both
            }
            Kind::DiagnosticsFile => {
                // An output: where it goes is not keyed, that it is written is.
                self.diagnostics_file = Some(value.to_os_string());
                Keep::Neither
            }
        })
    }

    /// `-Wp,OPT[,OPT…]`: options for the preprocessor itself (`options` is what follows
    /// `-Wp,`). `-MD,FILE` and `-MMD,FILE` (how kbuild asks for every compile's dependency
    /// file) name an output the compile writes; `-D…` and `-U…` are macros, as `-D` and
    /// `-U` are. Anything else is passed through. The dependency form stays out of the
    /// `-E` run (it would write the file); the macros are in it.
    fn preprocessor_options(&mut self, flag: &str, options: &str) -> Result<Keep, Unsupported> {
        const OTHER: &str = "-Wp, (preprocessor options)";
        let mut pieces = options.split(',');
        let (mut dep, mut macros) = (false, false);
        while let Some(piece) = pieces.next() {
            match piece {
                "-MD" | "-MMD" => {
                    let file = pieces.next().filter(|f| !f.is_empty());
                    let file = file.ok_or_else(|| Unsupported::MissingArgument(flag.into()))?;
                    if self.wp_dep_file.replace(file.into()).is_some() {
                        return Err("-Wp,-MD given twice".into());
                    }
                    dep = true;
                }
                p if p.len() > 2 && (p.starts_with("-D") || p.starts_with("-U")) => macros = true,
                _ => return Err(OTHER.into()),
            }
        }
        match (dep, macros) {
            (true, false) => Ok(Keep::HashOnly),
            (false, true) => Ok(Keep::PreprocessOnly),
            _ => Err(OTHER.into()),
        }
    }

    fn simple_flag(&mut self, flag: &str, family: Family) -> Result<Keep, Unsupported> {
        const PLAIN: &[&str] = &[
            "-ansi",
            "-pedantic",
            "-pedantic-errors",
            "-w",
            "-W",
            "-pipe",
            "-pthread",
            "-nostdinc",
            "-nostdinc++",
            "-nostdlib",
            "-nostdlib++",
            "-nostartfiles",
            "-nodefaultlibs",
            "-nolibc",
            "-shared",
            "-shared-libgcc",
            "-rdynamic",
            "-pie",
            "-no-pie",
            "-s",
            "-p",
            "-pg",
            "-undef",
            "-trigraphs",
            "-traditional",
            "-traditional-cpp",
            "-C",
            "-CC",
            "-no-canonical-prefixes",
            "-Qunused-arguments",
            "-Qn",
            "-Qy",
            "-integrated-as",
            "-no-integrated-as",
        ];
        const PLAIN_PREFIXES: &[&str] = &[
            "-O",
            "-m",
            "-std=",
            "-static",
            "-stdlib=",
            "-rtlib=",
            "-unwindlib=",
        ];

        match flag {
            "-c" => {
                self.compile = true;
                return Ok(Keep::HashOnly);
            }
            // Compile to assembler text: the output is the `.s` file, cached as an object is.
            "-S" => {
                self.assembly = true;
                return Ok(Keep::HashOnly);
            }
            "-MD" | "-MMD" => {
                self.dep_enabled = true;
                return Ok(Keep::HashOnly);
            }
            "-MP" => {
                self.dep_phony = true;
                return Ok(Keep::HashOnly);
            }
            // Without line markers the -E text would not name the input.
            "-P" => return Ok(Keep::HashOnly),
            _ => {}
        }
        if PLAIN.contains(&flag) || PLAIN_PREFIXES.iter().any(|p| flag.starts_with(p)) {
            return Ok(Keep::Both);
        }
        if let Some(rest) = flag.strip_prefix("-g") {
            match rest {
                // gcc: split DWARF implies -g; clang (12 and later): it does not.
                "split-dwarf" | "split-dwarf=split" => {
                    self.split_dwarf = true;
                    if family == Family::Gcc {
                        self.debug_info = true;
                    }
                }
                "split-dwarf=single" => self.split_dwarf = false,
                _ => {
                    if let Some(on) = debug_effect(rest) {
                        self.debug_info = on;
                    }
                }
            }
            return Ok(Keep::Both);
        }
        if flag == "--coverage" {
            self.coverage_notes = true;
            self.records_output = true;
            self.records_cwd = true;
            return Ok(Keep::Both);
        }
        if let Some(rest) = flag.strip_prefix("-W") {
            if let Some(opts) = rest.strip_prefix("a,") {
                opts.split(',').try_for_each(check_assembler_option)?;
            }
            return Ok(Keep::Both);
        }
        if flag.starts_with("-f") {
            self.f_flag(flag, family)?;
            return Ok(Keep::Both);
        }
        Err(Unsupported::UnknownFlag(flag.to_owned()))
    }

    fn f_flag(&mut self, flag: &str, family: Family) -> Result<(), Unsupported> {
        // Profiling and coverage: the object records the absolute path of its run-time
        // data (cwd and -o), the notes record the cwd.
        const RECORDING: &[&str] = &[
            "-fprofile-arcs",
            "-fprofile-generate",
            "-fprofile-instr-generate",
            "-fcs-profile-generate",
            "-fcoverage-mapping",
            "-ftest-coverage",
        ];
        // Profile data and lists the compile reads, named by the flag (or after -o).
        const READING: &[&str] = &[
            "-fprofile-use",
            "-fprofile-instr-use",
            "-fprofile-sample-use=",
            "-fauto-profile",
            "-fbranch-probabilities",
            "-fsanitize-ignorelist=",
            "-fsanitize-blacklist=",
            "-fsanitize-coverage-allowlist=",
            "-fsanitize-coverage-ignorelist=",
        ];
        if RECORDING.iter().any(|p| flag.starts_with(p)) {
            self.records_output = true;
            self.records_cwd = true;
            self.coverage_notes |= flag == "-ftest-coverage";
        }
        if READING.iter().any(|p| flag.starts_with(p)) {
            self.reads_flag_files = true;
            self.records_output = true;
        }
        match flag {
            "-fstack-usage" => self.stack_usage = true,
            f if f.starts_with("-fcallgraph-info") => self.callgraph_info = true,
            _ => {}
        }
        for prefix in ["-fdebug-prefix-map=", "-ffile-prefix-map="] {
            if let Some(map) = flag.strip_prefix(prefix) {
                let (old, new) = map
                    .split_once('=')
                    .ok_or_else(|| Unsupported::Malformed(flag.to_owned()))?;
                self.prefix_maps.push((old.to_owned(), new.to_owned()));
            }
        }
        match flag {
            "-fdiagnostics-color" | "-fdiagnostics-color=always" => self.color = Some(true),
            "-fdiagnostics-color=never" | "-fno-diagnostics-color" => self.color = Some(false),
            "-fdiagnostics-color=auto" => self.color = None,
            "-fcolor-diagnostics" if family == Family::Clang => self.color = Some(true),
            "-fno-color-diagnostics" if family == Family::Clang => self.color = Some(false),
            _ => {}
        }
        Ok(())
    }
}

/// `Some(level != 0)` for `-g` spellings that set the debug level, `None`
/// for modifiers that do not enable debug info by themselves. Unknown
/// spellings count as enabling: a false "on" only costs cache sharing.
fn debug_effect(rest: &str) -> Option<bool> {
    const MODIFIERS: &[&str] = &[
        "no-",
        "z",
        "column-info",
        "strict-dwarf",
        "record-",
        "pubnames",
        "gnu-pubnames",
        "as-",
        "statement-frontiers",
        "variable-location-views",
        "inline-points",
        "internal-reset-location-views",
        "describe-dies",
        "embed-source",
        "simple-template-names",
        "dwarf32",
        "dwarf64",
    ];
    match rest {
        "0" | "gdb0" | "ctf0" => Some(false),
        _ if MODIFIERS.iter().any(|m| rest.starts_with(m)) => None,
        _ => Some(true),
    }
}

fn x_language(value: &OsStr) -> Result<Option<Language>, Unsupported> {
    let name = value.to_str().ok_or("non-UTF-8 -x value")?;
    match name {
        "none" => Ok(None),
        "c++-system-header" | "c++-user-header" => Err("header units (C++ modules)".into()),
        _ => Language::from_x_arg(name)
            .map(Some)
            .ok_or_else(|| Unsupported::UnknownLanguage(name.to_owned())),
    }
}

/// Assembler options are allowed only when they are self-contained flags:
/// a bare word could be a file argument of the previous option, and the
/// denied ones write listings/dependency files or read include files.
fn check_assembler_option(opt: &str) -> Result<(), Unsupported> {
    const DENIED: &[&str] = &["-a", "-I", "-o", "--MD", "-MD", "@"];
    if !opt.starts_with('-') || DENIED.iter().any(|d| opt.starts_with(d)) {
        return Err(Unsupported::AssemblerOption(opt.to_owned()));
    }
    Ok(())
}

/// Flags that are known but make the compile uncacheable.
fn reject_reason(flag: &str) -> Option<Unsupported> {
    let fixed = match flag {
        "-E" => "-E",
        "-M" | "-MM" => "-M/-MM (dependencies only)",
        "-MG" => "-MG",
        "-v" => "-v",
        "-Q" => "-Q",
        "-###" => "-###",
        "--version" | "-dumpversion" | "-dumpfullversion" | "-dumpmachine" | "-dumpspecs"
        | "--help" | "-help" => "query flag",
        "-fsyntax-only" => "-fsyntax-only (no object)",
        "-fpch-preprocess" | "-emit-pch" | "-include-pch" => "precompiled header",
        "-fpreprocessed" | "-fdirectives-only" => "partial preprocessing",
        "-frecord-gcc-switches" | "-frecord-command-line" => "command line recorded in object",
        "-Xclang" => "-Xclang",
        "-Xpreprocessor" => "-Xpreprocessor",
        "-aux-info" => "-aux-info",
        _ => "",
    };
    if !fixed.is_empty() {
        return Some(Unsupported::Refused(fixed));
    }

    const PREFIXES: &[(&str, &str)] = &[
        ("-print-", "query flag"),
        ("--print-", "query flag"),
        ("-save-temps", "-save-temps"),
        ("--save-temps", "-save-temps"),
        ("-fprofile-remapping-file=", "profile data input"),
        ("-fprofile-list=", "file input"),
        ("-fxray-attr-list=", "file input"),
        ("-fxray-always-instrument=", "file input"),
        ("-fxray-never-instrument=", "file input"),
        ("-fthinlto-index=", "file input"),
        ("-fembed-offload-object=", "file input"),
        ("-fdump-", "dump files"),
        ("-fcompare-debug", "-fcompare-debug"),
        ("-fsave-optimization-record", "extra output file"),
        ("-foptimization-record-file=", "extra output file"),
        ("-ftime-trace", "extra output file"),
        ("-fproc-stat-report", "extra output file"),
        ("-fplugin", "compiler plugin"),
        ("-fpass-plugin=", "compiler plugin"),
        ("-specs", "-specs"),
        ("--specs", "-specs"),
        ("-B", "-B"),
        ("-include-pch", "precompiled header"),
    ];
    if let Some((_, reason)) = PREFIXES.iter().find(|(p, _)| flag.starts_with(p)) {
        return Some(Unsupported::Refused(reason));
    }

    if let Some(rest) = flag.strip_prefix("-f") {
        if !rest.starts_with("no-") && rest.contains("module") {
            return Some("modules".into());
        }
        if rest.starts_with("opt-info") && rest.contains('=') {
            return Some("-fopt-info to file".into());
        }
        if rest.starts_with("diagnostics-format=") && rest.ends_with("-file") {
            return Some("diagnostics to file".into());
        }
    }
    // -d<letters> dump or annotate; -dumpbase/-dumpdir rename aux outputs.
    if flag.starts_with("-d") && flag.len() > 2 {
        return Some(Unsupported::DumpOption(flag.to_owned()));
    }
    None
}

fn expand_response_files(args: &[OsString], cwd: &Path) -> Result<Vec<OsString>, Unsupported> {
    let mut out = Vec::with_capacity(args.len());
    expand_into(args, cwd, 0, &mut out)?;
    Ok(out)
}

/// Nested response file names are resolved against the cwd, like gcc
/// (libiberty) and the clang driver do.
fn expand_into(
    args: &[OsString],
    cwd: &Path,
    depth: usize,
    out: &mut Vec<OsString>,
) -> Result<(), Unsupported> {
    for arg in args {
        let Some(name) = response_file_name(arg) else {
            out.push(arg.clone());
            continue;
        };
        if depth >= MAX_RESPONSE_DEPTH {
            return Err("response files nested too deeply".into());
        }
        // gcc would treat an unreadable @file as a literal input file name.
        let data = fs::read(cwd.join(&name))
            .map_err(|_| Unsupported::ResponseFileUnreadable(name.clone()))?;
        let words = split_response_file(&data)
            .into_iter()
            .map(bytes_to_os)
            .collect::<Option<Vec<_>>>()
            .ok_or_else(|| Unsupported::ResponseFileNotText(name.clone()))?;
        expand_into(&words, cwd, depth + 1, out)?;
    }
    Ok(())
}

#[cfg(unix)]
fn response_file_name(arg: &OsStr) -> Option<PathBuf> {
    use std::os::unix::ffi::OsStrExt;
    let rest = arg.as_bytes().strip_prefix(b"@")?;
    Some(PathBuf::from(OsStr::from_bytes(rest)))
}

#[cfg(not(unix))]
fn response_file_name(arg: &OsStr) -> Option<PathBuf> {
    // A non-UTF-8 @arg is left alone and later fails as a missing input.
    arg.to_str()?.strip_prefix('@').map(PathBuf::from)
}

#[cfg(unix)]
fn bytes_to_os(bytes: Vec<u8>) -> Option<OsString> {
    use std::os::unix::ffi::OsStringExt;
    Some(OsString::from_vec(bytes))
}

#[cfg(not(unix))]
fn bytes_to_os(bytes: Vec<u8>) -> Option<OsString> {
    String::from_utf8(bytes).ok().map(OsString::from)
}

/// gcc (libiberty buildargv) rules: whitespace separates, `'` and `"` quote,
/// backslash escapes the next byte everywhere, `""` is an empty argument.
pub(crate) fn split_response_file(data: &[u8]) -> Vec<Vec<u8>> {
    let mut words = Vec::new();
    let mut word = Vec::new();
    let mut in_word = false;
    let mut quote: Option<u8> = None;
    let mut bytes = data.iter().copied();
    while let Some(b) = bytes.next() {
        if b == b'\\' {
            in_word = true;
            if let Some(next) = bytes.next() {
                word.push(next);
            }
            continue;
        }
        if let Some(q) = quote {
            if b == q {
                quote = None;
            } else {
                word.push(b);
            }
            continue;
        }
        match b {
            b'\'' | b'"' => {
                quote = Some(b);
                in_word = true;
            }
            b' ' | b'\t' | b'\n' | b'\r' | 0x0b | 0x0c => {
                if in_word {
                    words.push(std::mem::take(&mut word));
                    in_word = false;
                }
            }
            _ => {
                word.push(b);
                in_word = true;
            }
        }
    }
    if in_word {
        words.push(word);
    }
    words
}
