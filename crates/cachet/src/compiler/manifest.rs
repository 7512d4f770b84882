//! The manifest, for both families: under a parent key (C direct mode's base key, C
//! preprocessor mode's key, rustc's base key), the variants of inputs earlier compiles
//! were seen to depend on. A variant lists every file the compile read with its content
//! hash, the paths it looked up and did not find (a header that would shadow another, a
//! `.gch` beside a header, a `__has_include` probe, a file a proc macro tried), and the
//! variables it read. A request for which all of them are as they were gets the entry
//! stored under [`entry_key`] of that variant.
//!
//! Variants come from observing the compile (see `compiler::observe`), and for rustc also
//! from its dep-info. Where observation is incomplete, C preprocessor mode falls back to
//! [`fallback_variant`]; direct mode is not used at all without it.

use std::ffi::OsString;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::cache::{Cache, CacheEntry, CacheKey, StoredFile};
use crate::compiler::basedir::{self, BaseDirs, Maps};
use crate::compiler::file_hashes::{FileHashes, TimeMacroNames};
use crate::compiler::key::KeyHasher;
use crate::compiler::observe::{self, Observed, variant_path};
use crate::compiler::stamp;

/// The role of the one file a manifest entry holds.
const MANIFEST_ROLE: &str = "manifest";

/// Variants kept per manifest.
const VARIANTS: usize = 8;

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    /// C only: set when direct mode must not serve this source (it uses the time macros,
    /// or its compile could not be observed whole): preprocessor mode instead.
    pub no_direct: bool,
    /// At most [`VARIANTS`]: a manifest planted in a shared store with millions of
    /// variants decodes to its first few, each of the rest dropped as it is read.
    #[serde(deserialize_with = "first_variants")]
    pub variants: Vec<Variant>,
}

/// The first [`VARIANTS`] of a list of variants, reading the rest one by one without
/// keeping them (postcard cannot skip a value without decoding it).
fn first_variants<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<Variant>, D::Error> {
    struct First;
    impl<'de> serde::de::Visitor<'de> for First {
        type Value = Vec<Variant>;

        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("a list of variants")
        }

        fn visit_seq<A: serde::de::SeqAccess<'de>>(
            self,
            mut seq: A,
        ) -> Result<Self::Value, A::Error> {
            let mut kept = Vec::with_capacity(VARIANTS);
            while let Some(variant) = seq.next_element::<Variant>()? {
                if kept.len() < VARIANTS {
                    kept.push(variant);
                }
            }
            Ok(kept)
        }
    }
    d.deserialize_seq(First)
}

/// What one compile read. Paths under the request's cwd are relative to it (so base dirs
/// can share them between checkouts), others absolute.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Variant {
    /// Every file the compile read (source, headers, `.incbin` data, the programs it ran,
    /// what a proc macro opened), with its blake3 content hash.
    pub files: Vec<(Vec<u8>, [u8; 32])>,
    /// Paths it looked up and did not find; a file appearing there may change the result.
    pub absent: Vec<Vec<u8>>,
    /// Variables it read from the request's environment, with their values (None: unset).
    pub env: Vec<(Vec<u8>, Option<Vec<u8>>)>,
    /// Set when an output records the cwd (the object or a diagnostic names it): the
    /// variant then serves only requests in that same cwd. C only; rustc keys its cwd.
    pub recorded_cwd: Option<Vec<u8>>,
}

impl Manifest {
    /// Puts `variant` first (most recent), keeping at most [`VARIANTS`].
    pub fn add(&mut self, variant: Variant) {
        self.variants.retain(|v| *v != variant);
        self.variants.insert(0, variant);
        self.variants.truncate(VARIANTS);
    }
}

/// What to do with a successful compile's result.
#[derive(Debug)]
pub enum Verdict {
    /// Store the entry under this variant.
    Store(Variant),
    /// Store nothing in direct mode, and serve this source in preprocessor mode from now
    /// on (time macros, or a compile that could not be observed whole).
    PreprocessorMode(NotStored),
    /// Store nothing (a file changed while it was read, a file we cannot key).
    Skip(NotStored),
}

/// Why a successful compile's result is not stored. [`NotStored::label`] groups them in stats.
#[derive(Debug, thiserror::Error)]
pub enum NotStored {
    /// The server cannot observe compiles on this machine.
    #[error("compiles are not observed")]
    Unobserved,
    /// The compile's observation log could not be read.
    #[error("the observation log: {0}")]
    ObservationLog(#[from] io::Error),
    /// Part of the compile's process tree ran without the interposer.
    #[error("{0}")]
    Incomplete(#[from] observe::Incomplete),
    /// An input was modified too close to (or after) the compile's start.
    #[error("{} is too new to trust", .0.display())]
    TooNew(PathBuf),
    /// An input the compile read is gone already.
    #[error("{} is gone", .0.display())]
    Gone(PathBuf),
    /// An input could not be read or hashed.
    #[error("{}: {}", .0.display(), .1)]
    Unreadable(PathBuf, #[source] io::Error),
    /// A source or header names `__DATE__`, `__TIME__` or `__TIMESTAMP__`.
    #[error("time macros")]
    TimeMacros,
    /// Assembler `.incbin`/`.include` in unobserved preprocessor text.
    #[error("assembler .incbin/.include reads unobserved files")]
    AssemblerIncludes,
    /// A `.gch` exists beside a header of an unobserved compile.
    #[error("precompiled header {}", .0.display())]
    PrecompiledHeader(PathBuf),
    /// rustc wrote no dep-info file.
    #[error("no dep-info file")]
    NoDepInfo,
    /// An output was written to after the compile ended, before it was read.
    #[error("{} changed after the compile", .0.display())]
    OutputChanged(PathBuf),
}

impl NotStored {
    /// The reason as stats group it: without the path that makes each one unique.
    pub fn label(&self) -> &'static str {
        match self {
            NotStored::Unobserved => "compiles are not observed",
            NotStored::ObservationLog(_) => "the observation log",
            NotStored::Incomplete(_) => "ran without the interposer",
            NotStored::TooNew(_) => "too new to trust",
            NotStored::Gone(_) => "is gone",
            NotStored::Unreadable(..) => "unreadable input",
            NotStored::TimeMacros => "time macros",
            NotStored::AssemblerIncludes => "assembler",
            NotStored::PrecompiledHeader(_) => "precompiled header",
            NotStored::NoDepInfo => "no dep-info file",
            NotStored::OutputChanged(_) => "output changed",
        }
    }
}

/// Where the manifest of `parent` is stored.
pub fn manifest_key(parent: &CacheKey) -> CacheKey {
    let mut h = KeyHasher::new(b"cachet manifest v4");
    h.field(&parent.0);
    h.finish()
}

/// `maps` are the prefix maps base dirs relativized: what they make of each absolute path
/// the compile read is what `__FILE__` and debug info record, so it is keyed too.
pub fn entry_key(parent: &CacheKey, variant: &Variant, maps: &Maps) -> CacheKey {
    let mut h = KeyHasher::new(b"cachet entry v4");
    h.field(&parent.0);
    if let Some(cwd) = &variant.recorded_cwd {
        h.field(b"recorded cwd");
        h.field(cwd);
    }
    for (path, digest) in &variant.files {
        h.field(path);
        h.field(digest);
    }
    h.field(b"absent");
    for path in &variant.absent {
        h.field(path);
    }
    h.field(b"env");
    for (name, value) in &variant.env {
        h.field(name);
        match value {
            Some(v) => {
                h.field(b"set");
                h.field(v);
            }
            None => h.field(b"unset"),
        }
    }
    if !maps.is_empty() {
        h.field(b"mapped");
        for (path, _) in &variant.files {
            if path.starts_with(b"/") {
                for form in maps.mapped_forms(path) {
                    h.field(path);
                    h.field(&form);
                }
            }
        }
    }
    h.finish()
}

fn os(bytes: &[u8]) -> &Path {
    Path::new(std::ffi::OsStr::from_bytes(bytes))
}

/// What is no longer as a variant saw it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Mismatch {
    /// A variable it read has another value (or is set, or unset, now).
    #[error("environment changed: {}", String::from_utf8_lossy(.0))]
    Env(Vec<u8>),
    /// A path it looked up and did not find exists now.
    #[error("now found: {}", .0.display())]
    NowFound(PathBuf),
    /// A file it read has other content now (or is gone).
    #[error("file changed: {}", .0.display())]
    FileChanged(PathBuf),
    /// Its outputs record another working directory.
    #[error("working directory differs and is recorded: {}", .0.display())]
    RecordedCwd(PathBuf),
}

/// Whether everything the variant read is as it was for a request in `cwd` with
/// `request_env` (blocking I/O; file hashes are remembered by stat).
pub fn matches(
    variant: &Variant,
    cwd: &Path,
    request_env: &[(OsString, OsString)],
    hashes: &FileHashes,
) -> bool {
    let why = cwd_mismatch(variant, cwd)
        .or_else(|| env_mismatch(variant, cwd, request_env))
        .or_else(|| file_mismatch(variant, cwd, hashes));
    if let Some(why) = &why {
        tracing::debug!("variant differs: {why}");
    }
    why.is_none()
}

/// The cwd the variant's outputs record, when it is not `cwd` (no I/O).
pub fn cwd_mismatch(variant: &Variant, cwd: &Path) -> Option<Mismatch> {
    variant
        .recorded_cwd
        .as_deref()
        .filter(|recorded| *recorded != cwd.as_os_str().as_bytes())
        .map(|recorded| Mismatch::RecordedCwd(os(recorded).to_owned()))
}

/// The first variable the variant read that has another value now (no I/O).
pub fn env_mismatch(
    variant: &Variant,
    cwd: &Path,
    request_env: &[(OsString, OsString)],
) -> Option<Mismatch> {
    variant
        .env
        .iter()
        .find(|(name, value)| !observe::env_matches(name, value.as_deref(), cwd, request_env))
        .map(|(name, _)| Mismatch::Env(name.clone()))
}

/// The first path the variant looked up that exists now, or file it read that changed
/// (blocking I/O).
pub fn file_mismatch(variant: &Variant, cwd: &Path, hashes: &FileHashes) -> Option<Mismatch> {
    for path in &variant.absent {
        if std::fs::symlink_metadata(cwd.join(os(path))).is_ok() {
            return Some(Mismatch::NowFound(os(path).to_owned()));
        }
    }
    for (path, digest) in &variant.files {
        if !hashes
            .hash(&cwd.join(os(path)))
            .is_ok_and(|h| h.as_bytes() == digest)
        {
            return Some(Mismatch::FileChanged(os(path).to_owned()));
        }
    }
    None
}

/// Which time macros send a source to preprocessor mode, where the expanded text is keyed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimeMacros {
    /// None: the key has the expanded text already (preprocessor mode).
    Keyed,
    /// `__TIMESTAMP__` only: `__DATE__` and `__TIME__` come from `SOURCE_DATE_EPOCH`,
    /// which is keyed, and the compiler honours it.
    TimestampOnly,
    /// `__DATE__`, `__TIME__` and `__TIMESTAMP__` (direct mode).
    All,
}

/// The variant an observed compile read. A source or header that names a time macro
/// `time_macros` counts sends the source to preprocessor mode.
pub fn variant_from_observed(
    observed: &Observed,
    cwd: &Path,
    base: &BaseDirs,
    hashes: &FileHashes,
    compile_start: stamp::FileClock,
    time_macros: TimeMacros,
) -> Verdict {
    let mut files = Vec::new();
    // Only what was opened for reading can be source text; programs and files merely
    // found are not scanned for time macros (cc1 names them all).
    let read = observed.files.iter().map(|p| (p, true));
    let found = observed.found.iter().chain(&observed.programs);
    for (path, is_text) in read.chain(found.map(|p| (p, false))) {
        let Ok(meta) = std::fs::metadata(path) else {
            return Verdict::Skip(NotStored::Gone(path.clone()));
        };
        if !meta.is_file() {
            continue;
        }
        if !stamp::FileStamp::of(&meta).settled_before(compile_start) {
            return Verdict::Skip(NotStored::TooNew(path.clone()));
        }
        // A precompiled header names every built-in macro in its tables: the header it
        // was made from is what says whether the time macros are used. The text is scanned
        // with its hash, in one read, and both are remembered; that hash serves a file that
        // is its own text.
        let mut text_hash = None;
        if time_macros != TimeMacros::Keyed
            && is_text
            && let Some(text_path) = source_text_of(path)
        {
            match hashes.hash_and_time_macros(&text_path) {
                Ok((_, names)) if uses_time_macros(names, time_macros) => {
                    return Verdict::PreprocessorMode(NotStored::TimeMacros);
                }
                Ok((hash, _)) => text_hash = (text_path == *path).then_some(hash),
                Err(e) => return Verdict::Skip(NotStored::Unreadable(path.clone(), e)),
            }
        }
        match text_hash.map_or_else(|| hashes.hash(path), Ok) {
            Ok(digest) => files.push((based_path(path, cwd, base), *digest.as_bytes())),
            Err(e) => return Verdict::Skip(NotStored::Unreadable(path.clone(), e)),
        }
    }
    files.sort();
    files.dedup();
    let mut absent: Vec<Vec<u8>> = observed
        .absent
        .iter()
        .map(|p| based_path(p, cwd, base))
        .collect();
    absent.sort();
    absent.dedup();
    Verdict::Store(Variant {
        files,
        absent,
        env: observed.env.clone(),
        recorded_cwd: None,
    })
}

/// How a variant names `path`: relative to `cwd` when under it, or when both lie under
/// base dirs (`../include/x.h`: another checkout's compile then checks its own file);
/// else absolute.
fn based_path(path: &Path, cwd: &Path, base: &BaseDirs) -> Vec<u8> {
    let plain = variant_path(path, cwd);
    match plain.starts_with(b"/") {
        true => base
            .relative_to_cwd(&plain, cwd.as_os_str().as_bytes())
            .unwrap_or(plain),
        false => plain,
    }
}

/// The file whose text a read file stands for: itself, or for a precompiled header
/// (`X.gch`, `X.pch`, a file in an `X.gch/` directory) the header `X` beside it, if any.
fn source_text_of(path: &Path) -> Option<PathBuf> {
    let header_of = |p: &Path| {
        let ext = p.extension()?;
        (ext == "gch" || ext == "pch").then(|| p.with_extension(""))
    };
    let header = header_of(path).or_else(|| path.parent().and_then(header_of));
    match header {
        Some(header) => header.is_file().then_some(header),
        None => Some(path.to_owned()),
    }
}

/// Preprocessor mode's variant where the compile could not be observed whole. The key
/// already hashes the preprocessed text, so headers, `__has_include` and shadowing are
/// covered; what the text does not show is handled conservatively:
/// - assembler `.incbin`/`.include` in the text: not stored (the files they read are
///   unknown);
/// - a `.gch` the compile would use in place of a header (`-E` ignores it): not stored
///   when one exists, and recorded as absent beside every header otherwise.
pub fn fallback_variant(preprocessed: &[u8], cwd: &Path) -> Verdict {
    if contains(preprocessed, b".incbin") || contains(preprocessed, b".include") {
        return Verdict::Skip(NotStored::AssemblerIncludes);
    }
    let mut absent = Vec::new();
    for (_, header) in basedir::line_markers(preprocessed) {
        if header.starts_with(b"<") {
            continue;
        }
        let mut pch = header.to_vec();
        pch.extend_from_slice(b".gch");
        let path = cwd.join(os(&pch));
        if std::fs::symlink_metadata(&path).is_ok() {
            return Verdict::Skip(NotStored::PrecompiledHeader(path));
        }
        absent.push(variant_path(&path, cwd));
    }
    absent.sort();
    absent.dedup();
    Verdict::Store(Variant {
        absent,
        ..Variant::default()
    })
}

/// The manifest stored under `key`, or an empty one (none yet, or unreadable).
pub async fn read(cache: &Cache, key: &CacheKey) -> Manifest {
    cache.get(key).await.map(decode).unwrap_or_default()
}

/// Changes the manifest under `key` with `change` (built on a write of it still going on),
/// and returns once the new manifest is readable (see `Cache::update`).
pub async fn update(
    cache: &Cache,
    key: CacheKey,
    change: impl FnOnce(&mut Manifest) + Send + 'static,
) {
    cache
        .update(key, true, move |old| changed(old, change))
        .await;
}

/// The manifest entry `old` with `change` made to its manifest.
fn changed(old: Option<CacheEntry>, change: impl FnOnce(&mut Manifest)) -> Option<CacheEntry> {
    let mut manifest = old.map(decode).unwrap_or_default();
    change(&mut manifest);
    Some(CacheEntry {
        exit_code: 0,
        stdout: vec![],
        stderr: vec![],
        files: vec![StoredFile {
            role: MANIFEST_ROLE.into(),
            executable: false,
            data: postcard::to_stdvec(&manifest).ok()?,
        }],
        meta: vec![],
    })
}

fn decode(entry: CacheEntry) -> Manifest {
    entry
        .files
        .into_iter()
        .find(|f| f.role == MANIFEST_ROLE)
        .and_then(|f| postcard::from_bytes(&f.data).ok())
        .unwrap_or_default()
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// Whether a text that names `names` names one that `which` counts: `__TIMESTAMP__`, or
/// with [`TimeMacros::All`] also `__DATE__` or `__TIME__`.
pub fn uses_time_macros(names: TimeMacroNames, which: TimeMacros) -> bool {
    match which {
        TimeMacros::Keyed => false,
        TimeMacros::TimestampOnly => names.timestamp,
        TimeMacros::All => names.timestamp || names.date_or_time,
    }
}

#[cfg(test)]
mod tests {
    /// A manifest planted in a shared store with a million variants decodes to the first
    /// few, never holding the rest.
    #[test]
    fn a_planted_manifest_of_a_million_variants_keeps_the_first_few() {
        use super::*;
        let many = Manifest {
            no_direct: false,
            variants: (0..1_000_000u32)
                .map(|n| Variant {
                    absent: vec![n.to_le_bytes().to_vec()],
                    ..Variant::default()
                })
                .collect(),
        };
        let bytes = postcard::to_stdvec(&many).unwrap();
        let decoded: Manifest = postcard::from_bytes(&bytes).unwrap();
        assert_eq!(decoded.variants.len(), VARIANTS);
        assert_eq!(decoded.variants[..], many.variants[..VARIANTS]);
    }

    use super::*;

    #[test]
    fn time_macros_are_found() {
        let uses_time_macros =
            |text: &[u8], which| uses_time_macros(TimeMacroNames::of(text), which);
        let all = TimeMacros::All;
        assert!(uses_time_macros(b"const char *d = __DATE__;", all));
        assert!(uses_time_macros(b"x __TIMESTAMP__", all));
        assert!(uses_time_macros(b"__TIME__", all));
        assert!(!uses_time_macros(
            b"int __x_DATE; _TIME__ __DATE_ __builtin_expect",
            all
        ));
        assert!(!uses_time_macros(b"", all));
        // With SOURCE_DATE_EPOCH honoured only __TIMESTAMP__ (the file's mtime) counts.
        let stamp = TimeMacros::TimestampOnly;
        assert!(!uses_time_macros(b"__DATE__ __TIME__", stamp));
        assert!(uses_time_macros(b"x __TIMESTAMP__", stamp));
    }

    #[test]
    fn a_precompiled_header_is_scanned_through_its_header() {
        let dir = tempfile::tempdir().unwrap();
        let at = |name: &str| dir.path().join(name);
        std::fs::write(at("p.h"), b"").unwrap();
        std::fs::create_dir(at("d.h.gch")).unwrap();
        std::fs::write(at("d.h"), b"").unwrap();
        assert_eq!(source_text_of(&at("p.h.gch")), Some(at("p.h")));
        assert_eq!(source_text_of(&at("p.h.pch")), Some(at("p.h")));
        assert_eq!(source_text_of(&at("d.h.gch/x86")), Some(at("d.h")));
        assert_eq!(source_text_of(&at("lone.h.gch")), None);
        assert_eq!(source_text_of(&at("a.c")), Some(at("a.c")));
    }

    #[test]
    fn the_fallback_refuses_incbin_and_existing_pch_and_watches_for_new_ones() {
        let dir = tempfile::tempdir().unwrap();
        let cwd = dir.path();
        let text = b"# 1 \"t.c\"\n# 1 \"inc/t.h\" 1\nint v = 1;\n# 1 \"<built-in>\"\n";
        let Verdict::Store(variant) = fallback_variant(text, cwd) else {
            panic!("a plain text is stored");
        };
        assert_eq!(
            variant.absent,
            vec![b"inc/t.h.gch".to_vec(), b"t.c.gch".to_vec()]
        );

        std::fs::create_dir_all(cwd.join("inc")).unwrap();
        std::fs::write(cwd.join("inc/t.h.gch"), b"pch").unwrap();
        assert!(matches!(fallback_variant(text, cwd), Verdict::Skip(_)));

        let asm = b"# 1 \"t.c\"\n__asm__(\".incbin \\\"data.bin\\\"\");\n";
        assert!(matches!(fallback_variant(asm, cwd), Verdict::Skip(_)));
    }

    #[test]
    fn a_variant_matches_only_while_files_absences_and_variables_hold() {
        let dir = tempfile::tempdir().unwrap();
        let cwd = dir.path();
        std::fs::write(cwd.join("t.h"), b"#define V 1\n").unwrap();
        let hashes = FileHashes::default();
        let digest = *blake3::hash(b"#define V 1\n").as_bytes();
        let variant = Variant {
            files: vec![(b"t.h".to_vec(), digest)],
            absent: vec![b"opt.h".to_vec()],
            env: vec![(b"MY_LEVEL".to_vec(), Some(b"debug".to_vec()))],
            recorded_cwd: None,
        };
        let env = |v: &str| vec![(OsString::from("MY_LEVEL"), OsString::from(v))];
        assert!(matches(&variant, cwd, &env("debug"), &hashes));
        assert!(!matches(&variant, cwd, &env("info"), &hashes));
        assert!(!matches(&variant, cwd, &[], &hashes));
        std::fs::write(cwd.join("opt.h"), b"").unwrap();
        assert!(!matches(&variant, cwd, &env("debug"), &hashes));
        std::fs::remove_file(cwd.join("opt.h")).unwrap();

        let recorded = Variant {
            recorded_cwd: Some(cwd.as_os_str().as_bytes().to_vec()),
            ..variant.clone()
        };
        assert!(matches(&recorded, cwd, &env("debug"), &hashes));
        let elsewhere = Variant {
            recorded_cwd: Some(b"/elsewhere".to_vec()),
            ..variant.clone()
        };
        assert!(!matches(&elsewhere, cwd, &env("debug"), &hashes));
        let maps = Maps::default();
        let parent = CacheKey([7; 32]);
        assert_ne!(
            entry_key(&parent, &recorded, &maps),
            entry_key(&parent, &elsewhere, &maps)
        );
        assert_ne!(
            entry_key(&parent, &variant, &maps),
            entry_key(&parent, &recorded, &maps)
        );
    }
}
