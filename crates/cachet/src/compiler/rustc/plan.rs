//! The Rust family's plan: which files a rustc compile writes, which files and libraries
//! it reads that its arguments name, and what display its diagnostics are rendered for.

use std::path::{Path, PathBuf};

use super::args::{CrateType, Emit, NativeLib, RustcArgs, Target};
use super::linker;
use super::reasons::NotCacheable;
use super::toolchain::Toolchain;
use crate::compiler::key::KeyHasher;

/// Where a linker finds libraries that no -L names.
const SYSTEM_LIB_DIRS: &[&str] = &[
    "/usr/local/lib",
    "/usr/lib/x86_64-linux-gnu",
    "/lib/x86_64-linux-gnu",
    "/usr/lib/aarch64-linux-gnu",
    "/lib/aarch64-linux-gnu",
    "/usr/lib64",
    "/lib64",
    "/usr/lib",
    "/lib",
];

/// File names rustc writes into the out-dir for these crate types and emit kinds (Linux).
pub fn output_names(args: &RustcArgs) -> Vec<String> {
    let stem = format!("{}{}", args.crate_name, args.extra_filename);
    let mut names = Vec::new();
    for emit in &args.emit {
        match emit {
            Emit::DepInfo => names.push(format!("{stem}.d")),
            Emit::Metadata => names.push(format!("lib{stem}.rmeta")),
            Emit::Link => {
                for crate_type in &args.crate_types {
                    names.push(match crate_type {
                        CrateType::Bin => stem.clone(),
                        CrateType::Lib | CrateType::Rlib => format!("lib{stem}.rlib"),
                        CrateType::Dylib | CrateType::Cdylib | CrateType::ProcMacro => {
                            format!("lib{stem}.so")
                        }
                        CrateType::Staticlib => format!("lib{stem}.a"),
                    });
                }
            }
        }
    }
    names.dedup();
    let mut seen = std::collections::HashSet::new();
    names.retain(|n| seen.insert(n.clone()));
    names
}

pub(super) fn crate_types_label(types: &[CrateType]) -> String {
    if types.is_empty() {
        return "unknown".into();
    }
    types
        .iter()
        .map(|t| t.as_str())
        .collect::<Vec<_>>()
        .join(",")
}

pub(super) fn display_key(args: &RustcArgs) -> Vec<u8> {
    let d = &args.display;
    let mut h = KeyHasher::new(b"display");
    h.field(d.diagnostic_width.as_deref().unwrap_or("").as_bytes());
    h.field(d.color.as_deref().unwrap_or("").as_bytes());
    h.field(&[d.rendered_ansi as u8]);
    h.finish().0.to_vec()
}

/// Whether stderr holds anything but artifact notices, whose text never depends on display.
pub(super) fn has_diagnostics(stderr: &[u8]) -> bool {
    stderr
        .split(|b| *b == b'\n')
        .filter(|line| !line.is_empty())
        .any(|line| !line.starts_with(br#"{"$message_type":"artifact""#))
}

pub(super) fn target_triple(args: &RustcArgs, toolchain: &Toolchain) -> String {
    match &args.target {
        Some(Target::Triple(t)) => t.clone(),
        Some(Target::JsonPath(p)) => p
            .file_stem()
            .unwrap_or_default()
            .to_string_lossy()
            .into_owned(),
        None => toolchain.host.clone(),
    }
}

/// The files a native library may be, or why the compile cannot be keyed.
fn native_lib_files(
    lib: &NativeLib,
    search: &[(String, PathBuf)],
    cwd: &Path,
    linked: bool,
) -> Result<Vec<PathBuf>, NotCacheable> {
    let verbatim = lib
        .modifiers
        .as_deref()
        .is_some_and(|m| m.contains("+verbatim"));
    let names: Vec<String> = match lib.kind.as_deref() {
        _ if verbatim => vec![lib.name.clone()],
        Some("static") => vec![format!("lib{}.a", lib.name)],
        None | Some("dylib") => vec![format!("lib{}.so", lib.name), format!("lib{}.a", lib.name)],
        Some(other) => return Err(NotCacheable::NativeLibKind(other.to_owned())),
    };
    let dirs = search
        .iter()
        .filter(|(kind, _)| kind == "native" || kind == "all")
        .map(|(_, dir)| cwd.join(dir));
    for dir in dirs {
        let found: Vec<PathBuf> = names
            .iter()
            .map(|n| dir.join(n))
            .filter(|p| p.is_file())
            .collect();
        if !found.is_empty() {
            return Ok(found);
        }
    }
    let is_static = lib.kind.as_deref() == Some("static");
    if !linked && !is_static {
        // An rlib records a dylib by name only; the final link finds it.
        return Ok(Vec::new());
    }
    for dir in SYSTEM_LIB_DIRS {
        let found: Vec<PathBuf> = names
            .iter()
            .map(|n| Path::new(dir).join(n))
            .filter(|p| p.is_file())
            .collect();
        if !found.is_empty() {
            return Ok(found);
        }
    }
    Err(NotCacheable::NativeLibNotFound(lib.name.clone()))
}

/// Inputs of the base key that are files, and why a compile cannot be keyed.
pub(super) struct FileInputs {
    pub files: Vec<(String, PathBuf)>,
}

pub(super) fn file_inputs(args: &RustcArgs, cwd: &Path) -> Result<FileInputs, NotCacheable> {
    let linked = args.crate_types.iter().any(|t| t.is_linked());
    let mut files = Vec::new();
    for ext in &args.externs {
        if let Some(path) = &ext.path {
            files.push((format!("extern {}", ext.name), cwd.join(path)));
        }
    }
    for lib in &args.native_libs {
        for path in native_lib_files(lib, &args.search_paths, cwd, linked)? {
            files.push((format!("native {}", lib.name), path));
        }
    }
    if let Some(Target::JsonPath(path)) = &args.target {
        files.push(("target spec".into(), cwd.join(path)));
    }
    if linked {
        for arg in &args.link_args {
            for path in linker::link_arg_inputs(arg, cwd).map_err(NotCacheable::LinkArg)? {
                files.push((format!("link arg {arg}"), path));
            }
        }
    }
    Ok(FileInputs { files })
}

/// Whether the crate uses a proc macro (an `--extern` shared object).
pub(super) fn uses_proc_macro(args: &RustcArgs) -> bool {
    args.externs.iter().any(|e| {
        e.path
            .as_ref()
            .is_some_and(|p| p.extension() == Some("so".as_ref()))
    })
}
