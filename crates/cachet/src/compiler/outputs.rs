//! Moving output files between the client's tree and cache entries.
//!
//! Only regular files are ever read into an entry or replaced by a hit. An output path
//! that is a device, FIFO, socket, directory or symlink (`-o /dev/null` in a configure
//! check, a FIFO a test harness reads) belongs to someone else: such compiles are passed
//! through ([`check_output_path`]), and the checks here hold again at read and write time,
//! in case the path changed in between.

use std::fs::File;
use std::io::{self, Read, Write};
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt, PermissionsExt};
use std::path::Path;

use super::gcc::Plan;
use crate::cache::{CacheEntry, StoredFile};
use crate::process::ProcessOutput;

pub const OBJECT: &str = "object";
pub const DEPFILE: &str = "depfile";

/// Reads what a successful compile wrote.
pub async fn collect(plan: &Plan, result: &ProcessOutput) -> io::Result<CacheEntry> {
    let mut files = vec![StoredFile {
        role: OBJECT.into(),
        executable: false,
        data: read_regular(&plan.object)?,
    }];
    if let Some(depfile) = &plan.depfile {
        files.push(StoredFile {
            role: DEPFILE.into(),
            executable: false,
            data: read_regular(depfile)?,
        });
    }
    Ok(super::entry_from(result, files))
}

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

/// Writes a hit's files where the compiler would have, with the modes the client's umask
/// gives. Each file appears whole or not at all (temp file, then rename).
pub fn restore(entry: &CacheEntry, plan: &Plan, umask: u32) -> io::Result<()> {
    for file in &entry.files {
        let target = match file.role.as_str() {
            OBJECT => &plan.object,
            DEPFILE => match &plan.depfile {
                Some(path) => path,
                None => continue,
            },
            other => return Err(io::Error::other(format!("unknown output role {other}"))),
        };
        let base = if file.executable { 0o777 } else { 0o666 };
        write_atomically(target, &file.data, base & !umask)?;
    }
    if plan.depfile.is_some() && !entry.files.iter().any(|f| f.role == DEPFILE) {
        return Err(io::Error::other("entry lacks the dependency file"));
    }
    Ok(())
}

pub(super) fn write_atomically(target: &Path, data: &[u8], mode: u32) -> io::Result<()> {
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
        return Err(io::Error::other(format!(
            "{} is {kind}, not replaced",
            target.display()
        )));
    }
    temp.persist(target).map_err(|e| e.error)?;
    Ok(())
}
