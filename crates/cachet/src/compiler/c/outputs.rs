//! Moving a C compile's outputs (object, dependency file, side outputs such as `.gcno` or
//! `.dwo`) between the client's tree and
//! cache entries. Only regular files are ever read into an entry or replaced by a hit (see
//! `regular_files`).
//!
//! A dependency file is stored as the compiler wrote it. When it is exactly in the
//! compiler's layout (almost always) it is stored as a [`DEPFILE_RULE`], and a hit writes it
//! with its own targets, wrapped as its compiler would have wrapped it; the targets are then
//! left out of the key, so objects in another build dir share the entry. Otherwise it is a
//! plain [`DEPFILE`], served only to compiles with the same targets.

use std::borrow::Cow;
use std::io;

use super::plan::Plan;
use crate::cache::{CacheEntry, StoredFile};
use crate::compiler::depfile;
use crate::compiler::pipeline::entry_from;
use crate::compiler::regular_files::{read_regular, write_atomically};
use crate::process::ProcessOutput;

pub const OBJECT: &str = "object";
/// A dependency file served only to a compile whose rule has the same targets.
pub const DEPFILE: &str = "depfile";
/// A dependency file a hit rewrites for its own targets.
pub const DEPFILE_RULE: &str = "depfile rule";

/// Reads what a successful compile wrote.
pub async fn collect(plan: &Plan, result: &ProcessOutput) -> io::Result<CacheEntry> {
    let mut files = vec![StoredFile {
        role: OBJECT.into(),
        executable: false,
        data: read_regular(&plan.object)?,
    }];
    for (role, path) in &plan.extra_outputs {
        files.push(StoredFile {
            role: (*role).into(),
            executable: false,
            data: read_regular(path)?,
        });
    }
    if let Some(depfile) = &plan.depfile {
        let data = read_regular(depfile)?;
        let reproduced = depfile::retarget(plan.dep_layout, &data, &plan.dep_targets);
        files.push(StoredFile {
            role: match reproduced.as_ref() == Some(&data) {
                true => DEPFILE_RULE.into(),
                false => DEPFILE.into(),
            },
            executable: false,
            data,
        });
    }
    Ok(entry_from(result, files))
}

/// Whether any output or diagnostic of `entry` contains `needle` (a directory the outputs
/// would then record).
pub fn records(entry: &CacheEntry, needle: &[u8]) -> bool {
    let finder = memchr::memmem::Finder::new(needle);
    std::iter::once(entry.stdout.as_slice())
        .chain([entry.stderr.as_slice()])
        .chain(entry.files.iter().map(|f| f.data.as_slice()))
        .any(|data| finder.find(data).is_some())
}

/// Writes a hit's files where the compiler would have, with the modes the client's umask
/// gives. Each file appears whole or not at all (temp file, then rename). Fails, so that
/// the compile runs, where a stored dependency file cannot be made this compile's.
pub fn restore(entry: &CacheEntry, plan: &Plan, umask: u32) -> io::Result<()> {
    // Everything is worked out before anything is written.
    let mut writes: Vec<(&std::path::Path, Cow<[u8]>, u32)> = Vec::with_capacity(2);
    for file in &entry.files {
        let target = match file.role.as_str() {
            OBJECT => &plan.object,
            DEPFILE | DEPFILE_RULE => match &plan.depfile {
                Some(path) => path,
                None => continue,
            },
            other => match plan.extra_outputs.iter().find(|(role, _)| *role == other) {
                Some((_, path)) => path,
                None => return Err(io::Error::other(format!("unknown output role {other}"))),
            },
        };
        let data = match file.role.as_str() {
            DEPFILE_RULE => depfile::retarget(plan.dep_layout, &file.data, &plan.dep_targets)
                .map(Cow::Owned)
                .ok_or_else(|| io::Error::other("stored dependency file is not in its layout"))?,
            DEPFILE if !depfile::names_targets(&file.data, &plan.dep_targets) => {
                return Err(io::Error::other(
                    "stored dependency file names other targets",
                ));
            }
            _ => Cow::Borrowed(file.data.as_slice()),
        };
        let base = if file.executable { 0o777 } else { 0o666 };
        writes.push((target, data, base & !umask));
    }
    if let Some(missing) = plan
        .outputs()
        .find(|wanted| !writes.iter().any(|(path, ..)| path == wanted))
    {
        return Err(io::Error::other(format!(
            "entry lacks {}",
            missing.display()
        )));
    }
    for (path, data, mode) in writes {
        write_atomically(path, &data, mode)?;
    }
    Ok(())
}
