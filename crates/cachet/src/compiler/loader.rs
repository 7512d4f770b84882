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
//! Only where the answer is exact: a dynamically linked ELF executable whose interpreter is
//! glibc's loader (for any other file the variable would not be read, and the program
//! would run), not setuid or setgid, and an `LD_LIBRARY_PATH` of absolute directories only
//! (a relative one resolves against the cwd, which the key does not hold). Everything else,
//! and a trace that fails, keeps the variable's text in the key, as before.

use std::ffi::{OsStr, OsString};
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use crate::compiler::stamp::{FileStamp, Memo};
use crate::process::{CommandSpec, Launcher};

const LIBRARY_PATH_VAR: &str = "LD_LIBRARY_PATH";

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
    if !all_absolute(library_path) || !loads_through_glibc(program) {
        return Ok(None);
    }
    let mut spec = CommandSpec::new(program, "/");
    spec.env = env.to_vec();
    spec.set_env("LD_TRACE_LOADED_OBJECTS", "1");
    let out = launcher.run_probe(spec).await?;
    if !out.exit.success() || out.stdout.is_empty() {
        return Ok(None);
    }
    Ok(Some(without_addresses(&out.stdout)))
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

/// The trace's lines with the load addresses (` (0x…)`, different at every run) taken off.
fn without_addresses(stdout: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(stdout.len());
    for line in stdout.split(|b| *b == b'\n') {
        let line = line.trim_ascii();
        if line.is_empty() {
            continue;
        }
        let line = match memchr::memmem::rfind(line, b" (0x") {
            Some(at) if line.ends_with(b")") => &line[..at],
            _ => line,
        };
        out.extend_from_slice(line);
        out.push(b'\n');
    }
    out
}

#[cfg(test)]
mod tests;
