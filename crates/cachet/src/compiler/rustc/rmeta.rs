//! A crate's `.rmeta` stored as a reference into its `.rlib`.
//!
//! With `--emit=dep-info,metadata,link` (what cargo asks for a library) rustc writes the
//! crate's metadata twice: as the `.rmeta` file and, byte for byte, inside the `lib.rmeta`
//! member of the `.rlib` archive (rustc_codegen_ssa's `METADATA_FILENAME`: an object file
//! whose `.rmeta` section holds the same bytes). Stored once, a cold build compresses,
//! hashes and writes about a sixth fewer bytes. The reference is made only when the bytes
//! are found whole in that member; a restore checks that it fits the stored `.rlib`.

use crate::cache::{CacheEntry, StoredFile};

/// The entry fact that holds the reference: `OFFSET LEN` (decimal) of the `.rmeta` bytes
/// inside the entry's `.rlib`; the stored `.rmeta` file is then empty.
pub(super) const META_RMETA_IN_RLIB: &str = "rmeta_in_rlib";

/// Empties the `.rmeta` among `files` when its bytes sit whole in the `.rlib` among them,
/// and returns the fact to keep in the entry; `None` (files untouched) otherwise.
pub(super) fn share(files: &mut [StoredFile]) -> Option<(String, Vec<u8>)> {
    let rlib = files.iter().position(|f| f.role.ends_with(".rlib"))?;
    let rmeta = files.iter().position(|f| f.role.ends_with(".rmeta"))?;
    let len = files[rmeta].data.len();
    let offset = find_in_member(&files[rlib].data, b"lib.rmeta", &files[rmeta].data)?;
    files[rmeta].data = Vec::new();
    Some((
        META_RMETA_IN_RLIB.to_owned(),
        format!("{offset} {len}").into_bytes(),
    ))
}

/// The `.rmeta` bytes an entry made by [`share`] refers to, as a slice of its `.rlib`;
/// `Ok(None)` for an entry without the reference. `Err` for a reference that does not fit
/// (a damaged or planted entry).
pub(super) fn referred(entry: &CacheEntry) -> Result<Option<&[u8]>, String> {
    let Some(fact) = entry.meta(META_RMETA_IN_RLIB) else {
        return Ok(None);
    };
    let bad = || format!("a bad {META_RMETA_IN_RLIB} reference");
    let text = std::str::from_utf8(fact).map_err(|_| bad())?;
    let (offset, len) = text.split_once(' ').ok_or_else(bad)?;
    let (offset, len): (usize, usize) = (
        offset.parse().map_err(|_| bad())?,
        len.parse().map_err(|_| bad())?,
    );
    let rlib = entry
        .files
        .iter()
        .find(|f| f.role.ends_with(".rlib"))
        .ok_or_else(bad)?;
    let end = offset.checked_add(len).ok_or_else(bad)?;
    rlib.data.get(offset..end).map(Some).ok_or_else(bad)
}

/// The offset in `archive` of `wanted`, found whole inside the member called `name`.
///
/// The common `ar` format: `!<arch>\n`, then per member a 60-byte header (bytes 0..16
/// the name, GNU style ending in `/`; bytes 48..58 the data size in decimal), the data,
/// and a pad byte to an even offset.
fn find_in_member(archive: &[u8], name: &[u8], wanted: &[u8]) -> Option<usize> {
    const MAGIC: &[u8] = b"!<arch>\n";
    const HEADER: usize = 60;
    let mut at = MAGIC.len();
    if !archive.starts_with(MAGIC) {
        return None;
    }
    while at + HEADER <= archive.len() {
        let header = &archive[at..at + HEADER];
        let size: usize = std::str::from_utf8(&header[48..58])
            .ok()?
            .trim()
            .parse()
            .ok()?;
        let data = at + HEADER;
        let end = data.checked_add(size)?;
        let member = archive.get(data..end)?;
        let named = header[..16]
            .strip_prefix(name)
            .is_some_and(|rest| rest.starts_with(b"/") || rest.starts_with(b" "));
        if named {
            return find_whole(member, wanted).map(|at| data + at);
        }
        at = end + (size & 1);
    }
    None
}

/// Where `wanted` starts in `haystack`: candidates found by its first bytes, then compared
/// whole (a searcher built for a needle of megabytes costs more than this).
fn find_whole(haystack: &[u8], wanted: &[u8]) -> Option<usize> {
    let prefix = &wanted[..wanted.len().min(64)];
    if prefix.is_empty() {
        return None;
    }
    memchr::memmem::find_iter(haystack, prefix).find(|&at| haystack[at..].starts_with(wanted))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn member(name: &str, data: &[u8]) -> Vec<u8> {
        let mut out = format!(
            "{name:<16}{:<12}{:<6}{:<6}{:<8}{:<10}`\n",
            0,
            0,
            0,
            644,
            data.len()
        )
        .into_bytes();
        out.extend_from_slice(data);
        if data.len() % 2 == 1 {
            out.push(b'\n');
        }
        out
    }

    fn file(role: &str, data: &[u8]) -> StoredFile {
        StoredFile {
            role: role.into(),
            executable: false,
            data: data.to_vec(),
        }
    }

    fn entry_of(files: Vec<StoredFile>, meta: Vec<(String, Vec<u8>)>) -> CacheEntry {
        CacheEntry {
            exit_code: 0,
            stdout: vec![],
            stderr: vec![],
            files,
            meta,
        }
    }

    fn archive(metadata: &[u8]) -> Vec<u8> {
        [
            b"!<arch>\n".to_vec(),
            member("/", b"odd"),
            member("foo.o/", b"object code"),
            member("lib.rmeta/", metadata),
        ]
        .concat()
    }

    #[test]
    fn an_rmeta_found_in_its_rlib_is_stored_as_a_reference_and_restored_whole() {
        let metadata = b"rust metadata, verbatim";
        // As rustc writes it: inside an object file that is the member.
        let wrapped = [&b"ELF header"[..], metadata, b"section table"].concat();
        let mut files = vec![
            file("libfoo-1.rlib", &archive(&wrapped)),
            file("libfoo-1.rmeta", metadata),
            file("foo-1.d", b"deps"),
        ];
        let fact = share(&mut files).expect("found in the archive");
        assert!(files[1].data.is_empty());
        let entry = entry_of(files, vec![fact]);
        assert_eq!(referred(&entry).unwrap(), Some(&metadata[..]));
    }

    /// What the module relies on, checked with the rustc that builds this crate: the
    /// `.rmeta` of a library sits whole inside its `.rlib`.
    #[test]
    fn a_real_rlib_holds_its_rmeta() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("lib.rs"), "pub fn answer() -> u32 { 42 }\n").unwrap();
        let rustc = std::env::var_os("RUSTC").unwrap_or_else(|| "rustc".into());
        let status = std::process::Command::new(rustc)
            .current_dir(dir.path())
            .args(["--crate-type=lib", "--crate-name=probe", "--edition=2021"])
            .args([
                "--emit=dep-info,metadata,link",
                "-Cextra-filename=-1",
                "lib.rs",
            ])
            .stdin(std::process::Stdio::null())
            .status()
            .unwrap();
        assert!(status.success());
        let read = |name: &str| file(name, &std::fs::read(dir.path().join(name)).unwrap());
        let metadata = read("libprobe-1.rmeta").data;
        let mut files = vec![read("libprobe-1.rlib"), read("libprobe-1.rmeta")];
        let fact = share(&mut files).expect("the rmeta sits inside the rlib");
        let entry = entry_of(files, vec![fact]);
        assert_eq!(referred(&entry).unwrap(), Some(metadata.as_slice()));
    }

    #[test]
    fn no_reference_unless_the_bytes_are_a_whole_member() {
        let metadata = b"rust metadata, verbatim";
        for rlib in [
            archive(b"other metadata of the same len"),
            // In another member.
            [
                b"!<arch>\n".to_vec(),
                member("foo.o/", metadata),
                member("lib.rmeta/", b"other"),
            ]
            .concat(),
            // Not an archive.
            metadata.to_vec(),
            // A header that lies about its size.
            [b"!<arch>\n".to_vec(), member("a/", b"abc")[..50].to_vec()].concat(),
        ] {
            let mut files = vec![
                file("libfoo-1.rlib", &rlib),
                file("libfoo-1.rmeta", metadata),
            ];
            assert_eq!(share(&mut files), None);
            assert_eq!(files[1].data, metadata);
        }
        let mut files = vec![file("libfoo-1.rmeta", metadata)];
        assert_eq!(share(&mut files), None);
    }

    #[test]
    fn a_reference_that_does_not_fit_is_an_error() {
        let entry = |fact: &str, rlib: &[u8]| {
            entry_of(
                vec![file("libfoo-1.rlib", rlib), file("libfoo-1.rmeta", b"")],
                vec![(META_RMETA_IN_RLIB.into(), fact.as_bytes().to_vec())],
            )
        };
        for fact in ["8 100", "x 1", "1", "18446744073709551615 2", ""] {
            assert!(referred(&entry(fact, b"0123456789")).is_err(), "{fact:?}");
        }
        assert_eq!(
            referred(&entry("2 3", b"0123456789")).unwrap(),
            Some(&b"234"[..])
        );
        let mut plain = entry("1 1", b"");
        plain.meta.clear();
        assert_eq!(referred(&plain).unwrap(), None);
    }
}
