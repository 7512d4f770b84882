//! Finding the real compiler, and never ourselves.

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

/// The compiler's absolute path: a name with a slash as it is, a bare name on PATH,
/// skipping every entry that is really this binary (such as a `gcc -> cachet` symlink).
/// A path with a slash that is this binary (CMake's launcher given `CC=/x/gcc`, where
/// `/x/gcc -> cachet`) stands for its name: the real one is looked up on PATH.
pub fn resolve_compiler(name: &OsStr) -> Option<PathBuf> {
    let me = this_binary();
    let cwd = std::env::current_dir().ok()?;
    let is_us = |p: &Path| me.is_some() && p.canonicalize().ok() == me;
    let name = if name.as_bytes().contains(&b'/') {
        let path = cwd.join(name);
        if !is_us(&path) {
            return is_executable(&path).then_some(path);
        }
        PathBuf::from(path.file_name()?)
    } else {
        PathBuf::from(name)
    };
    let search = std::env::var_os("PATH")?;
    std::env::split_paths(&search)
        .map(|dir| cwd.join(dir).join(&name))
        .find(|candidate| is_executable(candidate) && !is_us(candidate))
}

/// Whether a compiler word names cachet itself rather than a compiler (`cachet cachet gcc`,
/// as a launcher in front of `CC="cachet gcc"` gives): named `cachet`, or a path to this
/// binary under a cachet name. Such words are skipped.
pub fn names_cachet(word: &OsStr) -> bool {
    let path = Path::new(word);
    let Some(file_name) = path.file_name() else {
        return false;
    };
    if file_name == "cachet" {
        return true;
    }
    let cachet_named = file_name.as_bytes().starts_with(b"cachet");
    cachet_named
        && word.as_bytes().contains(&b'/')
        && path
            .canonicalize()
            .ok()
            .is_some_and(|p| Some(p) == this_binary())
}

fn this_binary() -> Option<PathBuf> {
    std::env::current_exe()
        .ok()
        .and_then(|p| p.canonicalize().ok())
}

fn is_executable(path: &Path) -> bool {
    std::fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}
