//! Which shared objects the dynamic loader maps for a program under an `LD_LIBRARY_PATH`,
//! as the loader itself says (glibc's `LD_TRACE_LOADED_OBJECTS`, what ldd(1) runs), so a
//! helper's remembered answer (`rustc -vV`, a linker's probe) is keyed on the libraries
//! the variable resolves to rather than on its text.
//!
//! Why: cargo runs its own probes, its compiles and the compiles of build scripts each
//! with another `LD_LIBRARY_PATH` (`<target>/debug/deps` and more in front of the
//! toolchain's `lib`), none of which changes a library that rustc or cc loads. Keyed on
//! the text, a fresh server probed rustc three times and the linker twice, each on the
//! build's longest path (30-75 ms apiece).
//!
//! Only where the list says it all: a dynamically linked ELF executable whose interpreter
//! is glibc's loader (for any other file the variable would not be read, and the program
//! would run), not setuid or setgid, not a compiler launcher that runs another program
//! (ccache, sccache, distcc, icecc: the program it runs loads its own libraries), an
//! `LD_LIBRARY_PATH` of absolute directories only (a relative one resolves against the
//! cwd, which the key does not hold), and output every line of which has the trace's
//! shape. Everything else keeps the variable's text in the key, as before. A trace is
//! taken once per program file and value: a library that appears later in one of the
//! directories, ahead of the one listed, is not noticed (as with the text before).
//! Probes whose program runs children (gcc's `-dM -E` runs cc1) keep the text too: their
//! callers do not ask.

use std::ffi::{OsStr, OsString};
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use crate::compiler::stamp::{FileStamp, Memo};
use crate::process::{CommandSpec, Launcher};

const LIBRARY_PATH_VAR: &str = "LD_LIBRARY_PATH";

/// Programs that run another compiler given on their command line or found on PATH:
/// tracing them would list their libraries, not the compiler's.
const LAUNCHERS: &[&str] = &["ccache", "sccache", "distcc", "icecc", "icerun", "cachet"];

/// The name under which a key holds the traced objects in place of `LD_LIBRARY_PATH`: no
/// environment variable can have it (names never contain `=`).
pub const LOADED_OBJECTS_KEY: &str = "LD_LIBRARY_PATH=loaded objects";

/// Traces by program (path and stamp) and `LD_LIBRARY_PATH` value; `None` where tracing
/// does not apply or failed.
#[derive(Default)]
pub struct LoadedObjects {
    traces: Memo<(PathBuf, FileStamp, OsString), Option<Vec<u8>>>,
}

impl LoadedObjects {
    /// `env`, a helper run's environment ([`crate::process::helper_env`]), made into a
    /// key: its `LD_LIBRARY_PATH` replaced by [`LOADED_OBJECTS_KEY`] and the objects the
    /// loader maps for `program` under it (one `name => path` per line, in load order,
    /// without addresses). Unchanged when the variable is unset or the trace does not apply
    /// (see the module's doc). One trace run per program file and value, never an error.
    pub async fn key_env(
        &self,
        launcher: &Launcher,
        program: &Path,
        stamp: FileStamp,
        env: &[(OsString, OsString)],
    ) -> Vec<(OsString, OsString)> {
        let Some(value) = env
            .iter()
            .rev()
            .find(|(k, _)| k == LIBRARY_PATH_VAR)
            .map(|(_, v)| v.clone())
        else {
            return env.to_vec();
        };
        let key = (program.to_owned(), stamp, value);
        let traced = self
            .traces
            .get(
                &key,
                stamp.settled(),
                |_| true,
                || trace(launcher, program, &key.2, env),
            )
            .await
            .ok()
            .flatten();
        match traced {
            Some(objects) => env
                .iter()
                .filter(|(k, _)| k != LIBRARY_PATH_VAR)
                .cloned()
                .chain([(
                    LOADED_OBJECTS_KEY.into(),
                    OsStr::from_bytes(&objects).to_owned(),
                )])
                .collect(),
            None => env.to_vec(),
        }
    }
}

/// The loader's list for `program`, or None where it does not apply. Runs at `/` with
/// `env` and `LD_TRACE_LOADED_OBJECTS=1`: glibc's loader then maps the objects, prints
/// them and exits before the program's own code runs.
async fn trace(
    launcher: &Launcher,
    program: &Path,
    library_path: &OsStr,
    env: &[(OsString, OsString)],
) -> io::Result<Option<Vec<u8>>> {
    if !all_absolute(library_path) || is_launcher(program) || !loads_through_glibc(program) {
        return Ok(None);
    }
    let mut spec = CommandSpec::new(program, "/");
    spec.env = env.to_vec();
    spec.set_env("LD_TRACE_LOADED_OBJECTS", "1");
    let out = launcher.run_probe(spec).await?;
    if !out.exit.success() {
        return Ok(None);
    }
    Ok(objects(&out.stdout))
}

/// Whether `program`, or a symlink on the way to its file, is named as one of
/// [`LAUNCHERS`] (`/usr/lib64/ccache/cc` links to `ccache`).
fn is_launcher(program: &Path) -> bool {
    let named = |path: &Path| {
        path.file_name()
            .is_some_and(|n| LAUNCHERS.iter().any(|l| n.as_bytes() == l.as_bytes()))
    };
    let mut path = program.to_owned();
    // Linux follows at most 40 links (path_resolution(7)).
    for _ in 0..40 {
        if named(&path) {
            return true;
        }
        let Ok(target) = std::fs::read_link(&path) else {
            break;
        };
        path = path.parent().unwrap_or(Path::new("/")).join(target);
    }
    std::fs::canonicalize(program).is_ok_and(|real| named(&real))
}

/// Whether every directory of an `LD_LIBRARY_PATH` is absolute. glibc splits it at `:`
/// and `;` (ld.so(8)); an empty entry means the cwd.
fn all_absolute(value: &OsStr) -> bool {
    value
        .as_bytes()
        .split(|b| *b == b':' || *b == b';')
        .all(|dir| dir.first() == Some(&b'/'))
}

/// Whether `program` is a dynamically linked ELF executable run by glibc's loader
/// (`PT_INTERP` names `ld-linux*` or `ld64.so.*`), not setuid or setgid.
fn loads_through_glibc(program: &Path) -> bool {
    let Ok(file) = std::fs::File::open(program) else {
        return false;
    };
    let Ok(meta) = file.metadata() else {
        return false;
    };
    if meta.permissions().mode() & 0o6000 != 0 {
        return false;
    }
    let data = object::ReadCache::new(file);
    let interpreter = match object::FileKind::parse(&data) {
        Ok(object::FileKind::Elf64) => {
            interpreter::<object::elf::FileHeader64<object::Endianness>>(&data)
        }
        Ok(object::FileKind::Elf32) => {
            interpreter::<object::elf::FileHeader32<object::Endianness>>(&data)
        }
        _ => None,
    };
    interpreter.is_some_and(|path| {
        let name = Path::new(OsStr::from_bytes(&path))
            .file_name()
            .map(|n| n.as_bytes().to_vec())
            .unwrap_or_default();
        name.starts_with(b"ld-linux") || name.starts_with(b"ld64.so.")
    })
}

/// The `PT_INTERP` path of an ELF file, if it has one.
fn interpreter<Elf: object::read::elf::FileHeader>(
    data: &object::ReadCache<std::fs::File>,
) -> Option<Vec<u8>> {
    use object::read::elf::ProgramHeader;
    let header = Elf::parse(data).ok()?;
    let endian = header.endian().ok()?;
    header
        .program_headers(endian, data)
        .ok()?
        .iter()
        .find_map(|segment| segment.interpreter(endian, data).ok().flatten())
        .map(<[u8]>::to_vec)
}

/// A loader's trace with the load addresses (` (0x…)`, different at every run) taken off,
/// one line per object; None unless `stdout` is one: at least one line, each
/// `name => path (0x…)`, `name => not found` or `name-or-path (0x…)`. Anything else (a
/// program that ran after all, under a loader that ignores the switch) is not taken for one.
fn objects(stdout: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(stdout.len());
    for line in stdout.split(|b| *b == b'\n') {
        let line = line.trim_ascii();
        if line.is_empty() {
            continue;
        }
        let object = if line.ends_with(b" => not found") {
            line
        } else {
            let rest = line.strip_suffix(b")")?;
            let at = memchr::memmem::rfind(rest, b" (0x")?;
            let address = &rest[at + 4..];
            if address.is_empty() || !address.iter().all(u8::is_ascii_hexdigit) {
                return None;
            }
            &line[..at]
        };
        out.extend_from_slice(object);
        out.push(b'\n');
    }
    (!out.is_empty()).then_some(out)
}

#[cfg(test)]
mod tests;
