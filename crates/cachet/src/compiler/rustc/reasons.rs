//! Why a rustc compile is not cached: a leaf the outcome types can name without reaching
//! into the family's pipeline.

use std::path::PathBuf;

use super::{args, linker};
use crate::compiler::regular_files::SpecialOutput;

/// The language rustc compiles, as stats name it.
pub const LANGUAGE: &str = "Rust";

/// Why a rustc compile is handed back to the client. `Display` is part of the stats label.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NotCacheable {
    /// The command line does something we do not cache.
    #[error("{0}")]
    Arguments(#[from] args::Unsupported),
    /// Without dep-info the sources are unknown.
    #[error("no --emit=dep-info")]
    NoDepInfo,
    /// Compiles are not observed, and a proc macro may read anything.
    #[error("a proc macro's inputs cannot be observed")]
    UnobservedProcMacro,
    /// Only Linux targets are known (output names, libraries).
    #[error("target {0} is not Linux")]
    NotLinux(String),
    /// The linker a linked crate type needs is not on PATH.
    #[error("linker {0} not found")]
    LinkerNotFound(String),
    /// A `-l KIND=` we do not know.
    #[error("native library kind {0}")]
    NativeLibKind(String),
    /// A native library that no search path has.
    #[error("native library {0} not found")]
    NativeLibNotFound(String),
    /// A link argument we cannot key.
    #[error("{0}")]
    LinkArg(#[from] linker::UnkeyedLinkArg),
    /// A file the base key needs could not be hashed (`label` says which).
    #[error("{label}: {}: {error}", path.display())]
    Input {
        label: String,
        path: PathBuf,
        /// The io error, as the OS put it (`No such file or directory (os error 2)`).
        error: String,
    },
    /// An output path is a device, FIFO, symlink...
    #[error("{name}: {reason}")]
    Output { name: String, reason: SpecialOutput },
}

/// A rustc compile handed back to the client: why, and the crate types it was for.
/// `Display` is the stats label (`rustc lib: no --emit=dep-info`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("rustc {crate_types}: {reason}")]
pub struct Refusal {
    /// The crate types, comma-separated (`unknown` when none was seen).
    pub crate_types: String,
    /// Why.
    pub reason: NotCacheable,
}
