//! Finding the real compiler, and never ourselves.

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

/// The compiler's absolute path: a name with a slash as it is, a bare name on PATH,
/// skipping every entry that is really this binary (such as a `gcc -> cachet` symlink).
pub fn resolve_compiler(name: &OsStr) -> Option<PathBuf> {
    let me = std::env::current_exe()
        .ok()
        .and_then(|p| p.canonicalize().ok());
    let cwd = std::env::current_dir().ok()?;
    let is_us = |p: &Path| me.is_some() && p.canonicalize().ok() == me;
    if name.as_bytes().contains(&b'/') {
        let path = cwd.join(name);
        return (is_executable(&path) && !is_us(&path)).then_some(path);
    }
    let search = std::env::var_os("PATH")?;
    std::env::split_paths(&search)
        .map(|dir| cwd.join(dir).join(name))
        .find(|candidate| is_executable(candidate) && !is_us(candidate))
}

fn is_executable(path: &Path) -> bool {
    std::fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}
