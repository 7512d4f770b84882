//! Moving a C compile's outputs (object, dependency file) between the client's tree and
//! cache entries. Only regular files
//! are ever read into an entry or replaced by a hit (see `regular_files`).

use std::io;

use super::plan::Plan;
use crate::cache::{CacheEntry, StoredFile};
use crate::compiler::pipeline::entry_from;
use crate::compiler::regular_files::{read_regular, write_atomically};
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
    Ok(entry_from(result, files))
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
