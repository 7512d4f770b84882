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
use std::os::unix::ffi::OsStrExt;

use super::plan::Plan;
use crate::cache::{CacheEntry, StoredFile};
use crate::compiler::basedir;
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
    let mut entry = entry_from(result, files);
    if !plan.rebased.is_empty() {
        // Where the paths a hit elsewhere rewrites were made.
        entry
            .meta
            .push((MADE_IN.into(), plan.cwd.as_os_str().as_bytes().to_vec()));
    }
    Ok(entry)
}

/// The entry fact that names the cwd a compile under base dirs ran in.
const MADE_IN: &str = "cwd";

/// The paths to rewrite in a hit's dependency file and diagnostics, as (stored form,
/// this compile's form): empty unless the entry was made in another checkout's cwd.
pub fn rebase_pairs(entry: &CacheEntry, plan: &Plan) -> Vec<(Vec<u8>, Vec<u8>)> {
    let Some(made_in) = entry.meta(MADE_IN) else {
        return Vec::new();
    };
    if made_in == plan.cwd.as_os_str().as_bytes() {
        return Vec::new();
    }
    plan.rebased
        .iter()
        .map(|(path, relative)| (basedir::join_relative(made_in, relative), path.clone()))
        .filter(|(stored, path)| stored != path)
        .collect()
}

/// The diagnostics a hit replays: the stored ones, with another checkout's paths made
/// this one's.
pub fn diagnostics<'a>(entry: &'a CacheEntry, plan: &Plan) -> Cow<'a, [u8]> {
    let pairs = rebase_pairs(entry, plan);
    match pairs.is_empty() {
        true => Cow::Borrowed(&entry.stderr),
        false => Cow::Owned(basedir::rewrite_paths(&entry.stderr, &pairs)),
    }
}

/// Whether an output of `entry` contains `needle` (a directory the outputs would then
/// record). With `rewritten`, the dependency file and diagnostics are not looked at (a hit
/// rewrites their paths).
pub fn records(entry: &CacheEntry, needle: &[u8], rewritten: bool) -> bool {
    let finder = memchr::memmem::Finder::new(needle);
    let is_depfile = |role: &str| role == DEPFILE || role == DEPFILE_RULE;
    let files = entry
        .files
        .iter()
        .filter(|f| !(rewritten && is_depfile(&f.role)))
        .map(|f| f.data.as_slice());
    let stderr = (!rewritten).then_some(entry.stderr.as_slice());
    std::iter::once(entry.stdout.as_slice())
        .chain(stderr)
        .chain(files)
        .any(|data| finder.find(data).is_some())
}

/// Writes a hit's files where the compiler would have, with the modes the client's umask
/// gives. Each file appears whole or not at all (temp file, then rename). Fails, so that
/// the compile runs, where a stored dependency file cannot be made this compile's.
pub fn restore(entry: &CacheEntry, plan: &Plan, umask: u32) -> io::Result<()> {
    // Paths of another checkout in the .d, escaped as the .d escapes them.
    let pairs: Vec<(Vec<u8>, Vec<u8>)> = rebase_pairs(entry, plan)
        .into_iter()
        .map(|(stored, path)| (depfile::quote(&stored), depfile::quote(&path)))
        .collect();
    let rebase = |name: &[u8]| {
        let rewritten = basedir::rewrite_paths(name, &pairs);
        (rewritten != name).then_some(rewritten)
    };
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
            DEPFILE_RULE => {
                depfile::rewrite(plan.dep_layout, &file.data, &plan.dep_targets, rebase)
                    .map(Cow::Owned)
                    .ok_or_else(|| {
                        io::Error::other("stored dependency file is not in its layout")
                    })?
            }
            DEPFILE if !depfile::names_targets(&file.data, &plan.dep_targets) => {
                return Err(io::Error::other(
                    "stored dependency file names other targets",
                ));
            }
            DEPFILE if !pairs.is_empty() => {
                return Err(io::Error::other(
                    "stored dependency file names another checkout",
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
