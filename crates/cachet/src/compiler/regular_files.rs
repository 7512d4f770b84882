//! Only regular files are a compile's outputs. An output path that is a device, FIFO,
//! socket, directory or symlink (`-o /dev/null` in a configure check, a FIFO a test harness
//! reads) belongs to someone else: such compiles are passed through
//! ([`check_output_path`]), and the checks hold again when outputs are read
//! ([`read_regular`]) and when a hit replaces them, in case the path changed in between.

use std::fs::File;
use std::io::{self, Read};
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
use std::path::Path;

/// What kind of non-regular file `path` is, when it exists and is not a regular file
/// (`lstat`, so a symlink is one even when it points to a regular file).
pub fn non_regular_kind(path: &Path) -> Option<&'static str> {
    let kind = std::fs::symlink_metadata(path).ok()?.file_type();
    Some(if kind.is_file() {
        return None;
    } else if kind.is_symlink() {
        "a symlink"
    } else if kind.is_dir() {
        "a directory"
    } else if kind.is_fifo() {
        "a FIFO"
    } else if kind.is_socket() {
        "a socket"
    } else if kind.is_char_device() || kind.is_block_device() {
        "a device"
    } else {
        "not a regular file"
    })
}

/// `Err(reason)` when an output path exists and is not a regular file: the compile is then
/// passed through, so the compiler writes it as it would without us.
pub fn check_output_path(path: &Path) -> Result<(), String> {
    match non_regular_kind(path) {
        Some(kind) => Err(format!("output is {kind}")),
        None => Ok(()),
    }
}

/// Reads an output the compile wrote, refusing anything but a regular file: never follows
/// a symlink, never blocks on a FIFO.
pub fn read_regular(path: &Path) -> io::Result<Vec<u8>> {
    let mut file = File::options()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(path)?;
    let meta = file.metadata()?;
    if !meta.is_file() {
        return Err(io::Error::other(format!(
            "{} is not a regular file",
            path.display()
        )));
    }
    let mut data = Vec::with_capacity(meta.len() as usize);
    file.read_to_end(&mut data)?;
    Ok(data)
}
