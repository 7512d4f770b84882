//! A finished rustc compile's outputs, taken in two steps so that the build's next compile
//! does not wait for the large ones to be read:
//! - when the compile ends, before cargo hears of it: every output is opened, the small ones
//!   (the dep-info among them) read whole;
//! - later, on the background threads: the large ones (`.rlib`, executables) are read
//!   through the files opened in the first step.
//!
//! An open file is the same file whatever the build does to its name meanwhile: cargo
//! hard-links an executable elsewhere, a later compile of the same crate renames a new
//! `.rlib` over it, `cargo clean` removes it. Only a write into the file itself changes what
//! is read, and a write changes its length or modification time, which are checked: such an
//! output is not stored.

use std::fs::File;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::SystemTime;

use super::rmeta;
use crate::cache::StoredFile;
use crate::compiler::depfile;
use crate::compiler::file_hashes::FileHashes;
use crate::compiler::manifest::NotStored;
use crate::compiler::regular_files::{open_regular, read_whole};
use crate::compiler::stamp::FileStamp;

/// Outputs of at most this many bytes are read when the compile ends.
const READ_AT_ONCE: u64 = 64 << 10;

/// Files held open for reading later, at most: past it, outputs are read at once, so
/// deferred reads never take the fds that connections and compilers need.
const MAX_HELD_OPEN: usize = 256;

/// Files held open now, by every compile.
static HELD_OPEN: AtomicUsize = AtomicUsize::new(0);

/// One file counted in a count of files held open (such as [`HELD_OPEN`]), given back
/// when dropped.
struct HeldOpen(&'static AtomicUsize);

impl HeldOpen {
    fn take(count: &'static AtomicUsize) -> Option<HeldOpen> {
        count
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| {
                (n < MAX_HELD_OPEN).then_some(n + 1)
            })
            .ok()
            .map(|_| HeldOpen(count))
    }
}

impl Drop for HeldOpen {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A compile's outputs, opened when it ended, and its parsed dep-info.
pub(super) struct Opened {
    files: Vec<OpenedFile>,
    pub depinfo: depfile::DepFile,
}

struct OpenedFile {
    name: String,
    path: PathBuf,
    /// As opened, before any byte was read.
    stamp: FileStamp,
    executable: bool,
    content: Content,
}

enum Content {
    Read(Vec<u8>),
    /// To be read later through the open file, which must then still have this length
    /// (bytes) and modification time.
    Open {
        file: File,
        len: u64,
        mtime: (i64, i64),
        _held: HeldOpen,
    },
}

/// What the outputs a later compile may take with `--extern` end with: libraries and
/// proc-macros (`.so` on Linux).
const EXTERN_SUFFIXES: [&str; 3] = [".rlib", ".rmeta", ".so"];

/// The outputs as an entry stores them, and the entry fact of a `.rmeta` stored as a
/// reference into the `.rlib` (see [`rmeta`]).
pub(super) type ReadOutputs = (Vec<StoredFile>, Option<(String, Vec<u8>)>);

/// Opens a successful compile's outputs (`outputs` by name in `out_dir`, and the split
/// debug info it wrote since `compile_start`), reads the small ones and parses the dep-info
/// `depinfo_name`. Errors: an output that cannot be opened or is not a regular file, no
/// dep-info among them.
pub(super) fn open(
    out_dir: &Path,
    outputs: &[String],
    depinfo_name: &str,
    compile_start: SystemTime,
) -> Result<Opened, NotStored> {
    open_counted(out_dir, outputs, depinfo_name, compile_start, &HELD_OPEN)
}

/// [`open`], with files held open counted in `held_open`.
fn open_counted(
    out_dir: &Path,
    outputs: &[String],
    depinfo_name: &str,
    compile_start: SystemTime,
    held_open: &'static AtomicUsize,
) -> Result<Opened, NotStored> {
    let mut files = Vec::new();
    let mut depinfo_text = None;
    let stem = depinfo_name.trim_end_matches(".d");
    // A little slack: these are outputs, and a stale one is only one written just before.
    let since = compile_start - std::time::Duration::from_millis(50);
    let split = split_debuginfo_files(out_dir, stem, since);
    for name in outputs.iter().chain(&split) {
        let path = out_dir.join(name);
        let unreadable = |e| NotStored::Unreadable(path.clone(), e);
        let (mut file, meta) = open_regular(&path).map_err(unreadable)?;
        // The dep-info is read now whatever its size: rustc rewrites it in place.
        let held = (meta.len() > READ_AT_ONCE && name != depinfo_name)
            .then(|| HeldOpen::take(held_open))
            .flatten();
        let content = match held {
            Some(held) => Content::Open {
                file,
                len: meta.len(),
                mtime: (meta.mtime(), meta.mtime_nsec()),
                _held: held,
            },
            None => {
                let data = read_whole(&mut file, meta.len()).map_err(unreadable)?;
                if name == depinfo_name {
                    depinfo_text = Some(String::from_utf8_lossy(&data).into_owned());
                }
                Content::Read(data)
            }
        };
        files.push(OpenedFile {
            name: name.clone(),
            stamp: FileStamp::of(&meta),
            executable: meta.permissions().mode() & 0o111 != 0,
            path,
            content,
        });
    }
    let depinfo = depfile::parse(&depinfo_text.ok_or(NotStored::NoDepInfo)?);
    Ok(Opened { files, depinfo })
}

impl Opened {
    /// The bytes the entry will hold for the outputs: a `.rmeta` beside an `.rlib` is
    /// counted once (see [`rmeta::share`]).
    pub fn size(&self) -> u64 {
        let len = |f: &OpenedFile| match &f.content {
            Content::Read(data) => data.len() as u64,
            Content::Open { len, .. } => *len,
        };
        let has_rlib = self.files.iter().any(|f| f.name.ends_with(".rlib"));
        self.files
            .iter()
            .filter(|f| !(has_rlib && f.name.ends_with(".rmeta")))
            .map(len)
            .sum()
    }

    /// The output paths, for observation (which does not count them as inputs).
    pub fn paths(&self) -> Vec<PathBuf> {
        self.files.iter().map(|f| f.path.clone()).collect()
    }

    /// Reads the rest (blocking I/O) and makes the entry's files, the `.rmeta` emptied
    /// where it is a slice of the `.rlib`. The content hash of each output a later compile
    /// may take as an extern (`.rlib`, `.rmeta`, a proc-macro's `.so`) goes into `hashes`
    /// from the bytes read here, so that compile need not read it again. Errors: a read
    /// fails, or an output was written to since the compile ended
    /// ([`NotStored::OutputChanged`]).
    pub fn read(self, hashes: &FileHashes) -> Result<ReadOutputs, NotStored> {
        let mut files = Vec::with_capacity(self.files.len());
        for opened in self.files {
            let data = match opened.content {
                Content::Read(data) => data,
                Content::Open {
                    mut file,
                    len,
                    mtime,
                    ..
                } => {
                    let unreadable = |e| NotStored::Unreadable(opened.path.clone(), e);
                    let data = read_whole(&mut file, len).map_err(unreadable)?;
                    let meta = file.metadata().map_err(unreadable)?;
                    if data.len() as u64 != len
                        || meta.len() != len
                        || (meta.mtime(), meta.mtime_nsec()) != mtime
                    {
                        return Err(NotStored::OutputChanged(opened.path));
                    }
                    data
                }
            };
            if EXTERN_SUFFIXES.iter().any(|s| opened.name.ends_with(s)) {
                hashes.seed(&opened.path, opened.stamp, || blake3::hash(&data));
            }
            files.push(StoredFile {
                role: opened.name,
                executable: opened.executable,
                data,
            });
        }
        let rmeta_in_rlib = rmeta::share(&mut files);
        Ok((files, rmeta_in_rlib))
    }
}

/// Split debuginfo that this compile wrote: `<stem>.dwp` (packed) and
/// `<stem>.<cgu>.rcgu.dwo` files (unpacked), whose names rustc picks per codegen unit.
fn split_debuginfo_files(out_dir: &Path, stem: &str, since: SystemTime) -> Vec<String> {
    let Ok(entries) = std::fs::read_dir(out_dir) else {
        return Vec::new();
    };
    let mut names: Vec<String> = entries
        .flatten()
        .filter(|e| {
            e.metadata()
                .and_then(|m| m.modified())
                .is_ok_and(|m| m >= since)
        })
        .filter_map(|e| e.file_name().into_string().ok())
        .filter(|n| {
            n == &format!("{stem}.dwp")
                || (n.starts_with(&format!("{stem}.")) && n.ends_with(".dwo"))
        })
        .collect();
    names.sort();
    names
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn out_dir() -> (tempfile::TempDir, Vec<String>) {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("a.d"),
            "a.rlib: src/lib.rs\n\nsrc/lib.rs:\n",
        )
        .unwrap();
        std::fs::write(dir.path().join("a.rlib"), vec![7u8; 200 << 10]).unwrap();
        (dir, vec!["a.d".into(), "a.rlib".into()])
    }

    fn opened(dir: &Path, names: &[String]) -> Opened {
        open(dir, names, "a.d", SystemTime::now()).unwrap()
    }

    #[test]
    fn a_large_output_renamed_over_or_removed_after_the_compile_is_read_as_it_was() {
        let (dir, names) = out_dir();
        let outputs = opened(dir.path(), &names);
        assert_eq!(outputs.size(), (200 << 10) + 32);
        // What a later compile of the crate does to the name.
        std::fs::write(dir.path().join("new.rlib"), vec![8u8; 100 << 10]).unwrap();
        std::fs::rename(dir.path().join("new.rlib"), dir.path().join("a.rlib")).unwrap();
        let (files, _) = outputs.read(&FileHashes::default()).unwrap();
        assert_eq!(files[1].role, "a.rlib");
        assert_eq!(files[1].data, vec![7u8; 200 << 10]);
        // And `cargo clean`.
        let outputs = opened(dir.path(), &names);
        std::fs::remove_file(dir.path().join("a.rlib")).unwrap();
        assert_eq!(
            outputs.read(&FileHashes::default()).unwrap().0[1].data,
            vec![8u8; 100 << 10]
        );
    }

    #[test]
    fn an_extern_read_for_storage_is_not_read_again_to_key_the_next_compile() {
        use crate::compiler::stamp::tests::set_mtime;
        let (dir, names) = out_dir();
        let (rlib, depinfo) = (dir.path().join("a.rlib"), dir.path().join("a.d"));
        let past = SystemTime::now() - std::time::Duration::from_secs(10);
        set_mtime(&rlib, past);
        set_mtime(&depinfo, past);
        let hashes = FileHashes::default();
        opened(dir.path(), &names).read(&hashes).unwrap();
        assert_eq!(hashes.hash(&rlib).unwrap(), blake3::hash(&[7u8; 200 << 10]));
        assert_eq!(hashes.stats().hits, 1, "the rlib's hash came from its read");
        assert_eq!(hashes.stats().entries, 1, "the dep-info is no extern");

        // Replaced after the compile: what was read is not taken for the new file.
        let outputs = opened(dir.path(), &names);
        let new = dir.path().join("new.rlib");
        std::fs::write(&new, [8u8; 100]).unwrap();
        set_mtime(&new, past);
        std::fs::rename(&new, &rlib).unwrap();
        let hashes = FileHashes::default();
        outputs.read(&hashes).unwrap();
        assert_eq!(hashes.hash(&rlib).unwrap(), blake3::hash(&[8u8; 100]));
    }

    #[test]
    fn a_large_output_written_to_after_the_compile_is_not_stored() {
        let (dir, names) = out_dir();
        let outputs = opened(dir.path(), &names);
        let mut file = std::fs::OpenOptions::new()
            .append(true)
            .open(dir.path().join("a.rlib"))
            .unwrap();
        file.write_all(b"more").unwrap();
        assert!(matches!(
            outputs.read(&FileHashes::default()),
            Err(NotStored::OutputChanged(path)) if path.ends_with("a.rlib")
        ));
    }

    #[test]
    fn a_small_output_is_read_when_the_compile_ends() {
        let (dir, names) = out_dir();
        let outputs = opened(dir.path(), &names);
        std::fs::write(dir.path().join("a.d"), "rewritten by the next compile").unwrap();
        let (files, _) = outputs.read(&FileHashes::default()).unwrap();
        assert_eq!(files[0].data, b"a.rlib: src/lib.rs\n\nsrc/lib.rs:\n");
    }

    #[test]
    fn past_the_bound_on_files_held_open_outputs_are_read_at_once() {
        static COUNT: AtomicUsize = AtomicUsize::new(0);
        let (dir, names) = out_dir();
        let open = || open_counted(dir.path(), &names, "a.d", SystemTime::now(), &COUNT);
        let held: Vec<HeldOpen> = std::iter::from_fn(|| HeldOpen::take(&COUNT)).collect();
        assert_eq!(held.len(), MAX_HELD_OPEN);
        assert!(matches!(open().unwrap().files[1].content, Content::Read(_)));
        drop(held);
        let outputs = open().unwrap();
        assert!(matches!(outputs.files[1].content, Content::Open { .. }));
        assert_eq!(COUNT.load(Ordering::Relaxed), 1);
        drop(outputs);
        assert_eq!(COUNT.load(Ordering::Relaxed), 0);
    }

    #[test]
    fn no_dep_info_is_an_error() {
        let (dir, _) = out_dir();
        let names = vec!["a.rlib".to_string()];
        assert!(matches!(
            open(dir.path(), &names, "a.d", SystemTime::now()),
            Err(NotStored::NoDepInfo)
        ));
    }
}
