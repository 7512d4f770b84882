//! Why a gcc or clang compile is not cached: a leaf the outcome types can name without
//! reaching into the family's pipeline.

use super::args;
use crate::compiler::regular_files::SpecialOutput;

/// Why a gcc or clang compile is handed back to the client. `Display` is the stats label.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NotCacheable {
    /// A variable that makes the compiler write a dependency file we do not know about.
    #[error("{0} is set")]
    ExtraOutputVar(&'static str),
    /// The command line does something we do not cache.
    #[error("{0}")]
    Arguments(#[from] args::Unsupported),
    /// The `-E` run failed but the compile did not: it ran uncached (counted, not refused).
    #[error("preprocessor failed")]
    PreprocessorFailed,
    /// An output path is a device, FIFO, symlink...
    #[error("{0}")]
    Output(#[from] SpecialOutput),
}
