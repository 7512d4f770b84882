//! Only regular files are a compile's outputs. An output path that is a device, FIFO,
//! socket, directory or symlink (`-o /dev/null` in a configure check, a FIFO a test harness
//! reads) belongs to someone else: such compiles are passed through
//! ([`check_output_path`]), and the checks hold again when outputs are read
//! ([`read_regular`]) and when a hit replaces them, in case the path changed in between.

use std::fs::File;
use std::io::{self, Read, Write};
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt, PermissionsExt};
use std::path::Path;

/// A kind of file that is not a regular file. `Display`: "a symlink", "a FIFO", ...
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum NonRegular {
    #[error("a symlink")]
    Symlink,
    #[error("a directory")]
    Directory,
    #[error("a FIFO")]
    Fifo,
    #[error("a socket")]
    Socket,
    #[error("a device")]
    Device,
    #[error("not a regular file")]
    Other,
}

/// What kind of non-regular file `path` is, when it exists and is not a regular file
/// (`lstat`, so a symlink is one even when it points to a regular file).
pub fn non_regular_kind(path: &Path) -> Option<NonRegular> {
    let kind = std::fs::symlink_metadata(path).ok()?.file_type();
    Some(if kind.is_file() {
        return None;
    } else if kind.is_symlink() {
        NonRegular::Symlink
    } else if kind.is_dir() {
        NonRegular::Directory
    } else if kind.is_fifo() {
        NonRegular::Fifo
    } else if kind.is_socket() {
        NonRegular::Socket
    } else if kind.is_char_device() || kind.is_block_device() {
        NonRegular::Device
    } else {
        NonRegular::Other
    })
}

/// A path we refused to read as an output (`kind` None: it is not a regular file) or to
/// replace with a hit's output (`kind`: what it is). Rides inside an `io::Error`.
#[derive(Debug, thiserror::Error)]
#[error("{} is {}", path.display(), match kind {
    Some(kind) => format!("{kind}, not replaced"),
    None => "not a regular file".to_owned(),
})]
pub struct NotReplaced {
    /// The path.
    pub path: std::path::PathBuf,
    /// What it is, when it was about to be replaced.
    pub kind: Option<NonRegular>,
}

/// An output path that exists and is not a regular file: the compile is then passed
/// through, so the compiler writes it as it would without us.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("output is {0}")]
pub struct SpecialOutput(pub NonRegular);

/// `Err` when an output path exists and is not a regular file.
pub fn check_output_path(path: &Path) -> Result<(), SpecialOutput> {
    match non_regular_kind(path) {
        Some(kind) => Err(SpecialOutput(kind)),
        None => Ok(()),
    }
}

/// Reads an output the compile wrote, refusing anything but a regular file: never follows
/// a symlink, never blocks on a FIFO.
pub fn read_regular(path: &Path) -> io::Result<Vec<u8>> {
    let (mut file, meta) = open_regular(path)?;
    read_whole(&mut file, meta.len())
}

/// The rest of `file`, `len` bytes expected (the buffer's first capacity).
pub fn read_whole(file: &mut File, len: u64) -> io::Result<Vec<u8>> {
    // A large buffer comes from those kept for reuse (see `cache::buffers`).
    let mut data = crate::cache::buffers::take(len as usize);
    file.read_to_end(&mut data)?;
    Ok(data)
}

/// Opens an output the compile wrote for reading, with its metadata; the same refusals as
/// [`read_regular`].
pub fn open_regular(path: &Path) -> io::Result<(File, std::fs::Metadata)> {
    let file = File::options()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(path)?;
    let meta = file.metadata()?;
    if !meta.is_file() {
        return Err(io::Error::other(NotReplaced {
            path: path.to_owned(),
            kind: None,
        }));
    }
    Ok((file, meta))
}

/// Writes `data` to `target` with `mode`, whole or not at all (a temp file beside it, then
/// a rename). Refuses to replace anything but a regular file.
pub(crate) fn write_atomically(target: &Path, data: &[u8], mode: u32) -> io::Result<()> {
    let dir = target
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let mut temp = tempfile::Builder::new()
        .prefix(".cachet-")
        .tempfile_in(dir)?;
    temp.write_all(data)?;
    temp.as_file()
        .set_permissions(std::fs::Permissions::from_mode(mode))?;
    // A rename replaces whatever the path is; only a regular file may be replaced.
    if let Some(kind) = non_regular_kind(target) {
        return Err(io::Error::other(NotReplaced {
            path: target.to_owned(),
            kind: Some(kind),
        }));
    }
    temp.persist(target).map_err(|e| e.error)?;
    Ok(())
}
