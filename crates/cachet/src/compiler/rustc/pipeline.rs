//! One rustc compile: a hit restores the artifacts without running rustc; a miss runs
//! exactly one rustc, streamed to cargo as it runs (pipelining sees the `.rmeta` notice
//! early), and stores its artifacts under a manifest variant of what it read.

use std::borrow::Cow;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use super::args::{self, CrateType, Emit};
use super::linker::Linkers;
use super::plan::{
    crate_types_label, display_key, has_diagnostics, output_names, target_triple, uses_proc_macro,
};
use super::reasons::{LANGUAGE, NotCacheable, Refusal};
use super::toolchain::Toolchain;
use super::toolchain::Toolchains;
use super::{key, outputs, recipe, rmeta};
use crate::cache::{CacheEntry, CacheKey};
use crate::compiler::basedir::Maps;
use crate::compiler::explain;
use crate::compiler::file_hashes::FileHashes;
use crate::compiler::job::{Job, Outcome, Uncacheable};
use crate::compiler::key::KeyHasher;
use crate::compiler::manifest::{self, Manifest, NotStored, Variant};
use crate::compiler::observe;
use crate::compiler::pipeline::{Context, publish};
use crate::compiler::regular_files::{check_output_path, write_atomically};
use crate::compiler::stamp::{FileClock, FileStamp};

const META_DISPLAY: &str = "display";
const META_DIAGNOSTICS: &str = "diagnostics";
/// The out-dir the entry's dep-info and artifact notices name (see [`moved_out_dir`]).
const META_OUT_DIR: &str = "out_dir";

/// Handed back to the client, counted under the crate types' language stats.
fn uncacheable(context: &Context, crate_types: &[CrateType], reason: NotCacheable) -> Outcome {
    context
        .stats
        .update(|c| c.languages.entry(LANGUAGE.into()).or_default().uncacheable += 1);
    Outcome::Uncacheable(Uncacheable::Rust(Refusal {
        crate_types: crate_types_label(crate_types),
        reason,
    }))
}

/// Serves one rustc compile by `toolchain`.
pub(super) async fn compile(
    toolchains: &Toolchains,
    linkers: &Linkers,
    context: &Context,
    job: &Job,
    toolchain: Arc<Toolchain>,
    driver: Option<[u8; 32]>,
) -> io::Result<Outcome> {
    let started = Instant::now();
    let invocation = &job.invocation;
    let cwd = &invocation.cwd;
    // Under clippy-driver the first argument is the rustc it wraps (see `clippy`); the
    // compile still runs with it, as cargo asked.
    let rustc_args = &invocation.args[usize::from(driver.is_some())..];
    let args = match args::parse(&args::ParseInput {
        args: rustc_args,
        cwd,
    }) {
        args::Parsed::Cacheable(args) => args,
        args::Parsed::NotCacheable {
            crate_types,
            reason,
        } => {
            // cargo's `rustc -vV` and `--print` probes come before a build's first compile.
            toolchains.prewarm_libs(&toolchain, context.hashes.clone());
            linkers.prewarm(
                &context.launcher,
                &invocation.env,
                cwd,
                context.hashes.clone(),
            );
            return Ok(uncacheable(context, &crate_types, reason.into()));
        }
    };
    let types = &args.crate_types;
    if !args.emit.contains(&Emit::DepInfo) {
        return Ok(uncacheable(context, types, NotCacheable::NoDepInfo));
    }
    // A proc macro may read any file or variable while it expands, and dep-info shows
    // none of it: only an observed compile can key that.
    if !context.observing() && uses_proc_macro(&args) {
        return Ok(uncacheable(
            context,
            types,
            NotCacheable::UnobservedProcMacro,
        ));
    }
    let target = target_triple(&args, &toolchain);
    if !target.contains("linux") {
        return Ok(uncacheable(context, types, NotCacheable::NotLinux(target)));
    }
    let key::BaseKey {
        key: base,
        maps,
        inputs,
    } = match key::base_key(
        toolchains, linkers, context, invocation, &toolchain, &args, &target,
    )
    .await?
    {
        Ok(found) => found,
        Err(reason) => return Ok(uncacheable(context, types, reason)),
    };
    let base = match driver {
        Some(driver) => {
            let mut h = KeyHasher::new(b"cachet clippy base v1");
            h.field(&base.0);
            h.field(&driver);
            h.finish()
        }
        None => base,
    };
    let manifest_key = manifest::manifest_key(&base);
    let display = display_key(&args);
    let outputs = output_names(&args);
    let expected = Outputs {
        names: Arc::new(outputs.clone()),
        stem: format!("{}{}", args.crate_name, args.extra_filename),
    };
    let out_dir = cwd.join(&args.out_dir);
    for name in &outputs {
        if let Err(reason) = check_output_path(&out_dir.join(name)) {
            let name = name.clone();
            return Ok(uncacheable(
                context,
                types,
                NotCacheable::Output { name, reason },
            ));
        }
    }

    if !invocation.recache
        && let Some(entry) = lookup(context, job, &base, &maps, &manifest_key).await?
    {
        let same_display = entry.meta(META_DISPLAY) == Some(display.as_slice());
        let display_free = entry.meta(META_DIAGNOSTICS) == Some(&[0]);
        if (same_display || display_free) && entry.exit_code == 0 {
            let restored = {
                let (entry, out_dir, umask) = (entry.clone(), out_dir.clone(), invocation.umask);
                let expected = expected.clone();
                tokio::task::spawn_blocking(move || restore(&entry, &out_dir, &expected, umask))
                    .await
                    .map_err(io::Error::other)?
            };
            match restored {
                Ok(()) => {
                    let stderr = match moved_out_dir(&entry, &out_dir) {
                        Some(old) => Cow::Owned(rewrite_out_dir(&entry.stderr, old, &out_dir)),
                        None => Cow::Borrowed(entry.stderr.as_slice()),
                    };
                    job.replay_output(&entry.stdout, &stderr);
                    context.count_hit(started);
                    context
                        .stats
                        .update(|c| c.languages.entry(LANGUAGE.into()).or_default().hits += 1);
                    return Ok(Outcome::Hit);
                }
                Err(e) => tracing::debug!("restoring {} failed: {e}", args.crate_name),
            }
        }
    }

    // Identical requests in flight (same base key: same command, cwd, inputs) run once.
    let restore = {
        let (out_dir, umask) = (out_dir.clone(), invocation.umask);
        move |entry: &CacheEntry| restore(entry, &out_dir, &expected, umask)
    };
    // Base dirs make one base key serve several checkouts; only one checkout's compile
    // may be followed.
    let inflight = invocation
        .base_dirs
        .inflight_key(&base, invocation.cwd_bytes());
    let mut leader = match context.lead_or_follow(inflight, restore, job).await? {
        Ok(leader) => leader,
        Err(replayed) => {
            context
                .stats
                .update(|c| c.languages.entry(LANGUAGE.into()).or_default().hits += 1);
            return Ok(replayed);
        }
    };
    // As ccache does: a source stamped after this was edited while rustc read it.
    let compile_start = SystemTime::now();
    let start_clock = FileClock::now();
    let watch = context.watch()?;
    let result = context
        .run_leading(
            leader.as_mut(),
            job,
            invocation.args.clone(),
            watch.as_ref(),
        )
        .await?;
    if !result.exit.success() {
        let failed = context.finish_failed(leader, &result);
        context
            .stats
            .update(|c| c.languages.entry(LANGUAGE.into()).or_default().failures += 1);
        return Ok(failed);
    }
    // Open the outputs before the client hears back: cargo may move them right after.
    // Reading the large ones, and hashing what the compile read, wait for the background:
    // the build's next compile needs this one's answer, not its outputs' bytes.
    let opened = {
        let (out_dir, outputs) = (out_dir.clone(), outputs.clone());
        let depinfo_name = format!("{}{}.d", args.crate_name, args.extra_filename);
        tokio::task::spawn_blocking(move || {
            outputs::open(&out_dir, &outputs, &depinfo_name, compile_start)
        })
        .await
        .map_err(io::Error::other)?
    };
    let size = opened.as_ref().map_or(0, outputs::Opened::size)
        + (result.stdout.len() + result.stderr.len()) as u64;
    let storing = context.reserve_write(size).await;
    context.count_miss(started, invocation.recache);
    context
        .stats
        .update(|c| c.languages.entry(LANGUAGE.into()).or_default().misses += 1);
    let opened = match opened {
        Ok(opened) => opened,
        Err(why) => {
            publish(leader, &result, || None);
            not_stored(&context.stats, &args.crate_name, &why);
            return Ok(Outcome::Miss);
        }
    };
    let env: Vec<(Vec<u8>, Option<Vec<u8>>)> = opened
        .depinfo
        .env
        .iter()
        .map(|(name, _)| {
            let now = invocation.env_var(name).map(<[u8]>::to_vec);
            (name.as_bytes().to_vec(), now)
        })
        .collect();
    let parts = recipe::Parts {
        toolchain: &toolchain,
        target: &target,
        clippy: driver.is_some(),
        observing: context.observing(),
        inputs,
        outputs: outputs
            .iter()
            .map(|name| out_dir.join(name).to_string_lossy().into_owned())
            .collect(),
    };
    let mut recipe = recipe::recipe(invocation, &args, parts, context.explain.masker());
    let (stdout, stderr) = (result.stdout.clone(), result.stderr.clone());
    let meta = [
        (META_DISPLAY.into(), display),
        (
            META_DIAGNOSTICS.into(),
            vec![has_diagnostics(&result.stderr) as u8],
        ),
        (META_OUT_DIR.into(), out_dir.as_os_str().as_bytes().to_vec()),
    ];
    crate::cache::note_stored(base, size);
    let failures = crate::cache::read_log::current().failures_text();
    let read_inputs = {
        let reading = Reading {
            watch,
            sources: opened.depinfo.sources.clone(),
            written: opened.paths(),
            cwd: cwd.clone(),
            env: invocation.env.clone(),
            hashes: context.hashes.clone(),
            stats: context.stats.clone(),
            start_clock,
        };
        let hashes = context.hashes.clone();
        crate::background::run(size, move || {
            let read = opened
                .read(&hashes)
                .map(|(files, rmeta_in_rlib)| CacheEntry {
                    exit_code: 0,
                    stdout,
                    stderr,
                    files,
                    meta: meta.into_iter().chain(rmeta_in_rlib).collect(),
                });
            (read, reading.read())
        })
    };
    let (cache, stats, explain) = (
        context.cache.clone(),
        context.stats.clone(),
        context.explain.clone(),
    );
    let (crate_name, forced, source) = (
        args.crate_name.clone(),
        invocation.recache,
        args.input.as_os_str().as_bytes().to_vec(),
    );
    // The leader stays in flight until its entry is readable: the same compile asked for
    // meanwhile (the next build of this crate, started at once) follows it, not misses.
    tokio::spawn(async move {
        let _storing = storing;
        // Followers restore into this out-dir: of the facts, only the .rmeta's reference.
        let shared = |entry: &CacheEntry| {
            Some(CacheEntry {
                meta: entry
                    .meta
                    .iter()
                    .filter(|(name, _)| name == rmeta::META_RMETA_IN_RLIB)
                    .cloned()
                    .collect(),
                ..entry.clone()
            })
        };
        let (entry, inputs) = match read_inputs.await {
            Ok(both) => both,
            Err(e) => {
                tracing::warn!("reading {crate_name}'s outputs and inputs failed: {e}");
                publish(leader, &result, || None);
                return;
            }
        };
        let entry = match entry {
            Ok(entry) => entry,
            Err(why) => {
                not_stored(&stats, &crate_name, &why);
                publish(leader, &result, || None);
                return;
            }
        };
        let (sources, observed) = match inputs {
            Ok(read) => read,
            Err(why) => {
                not_stored(&stats, &crate_name, &why);
                publish(leader, &result, || shared(&entry));
                return;
            }
        };
        let variant = variant_of(sources, env, observed);
        recipe.add_variant(&variant, &source, "file", explain.masker());
        let entry_key = manifest::entry_key(&base, &variant, &maps);
        let stored = cache.put_in_background(entry_key, entry);
        manifest::update(&cache, manifest_key, move |manifest| manifest.add(variant)).await;
        publish(leader, &result, || shared(&stored));
        explain::miss(cache, explain, recipe, forced, true, failures).await;
    });
    Ok(Outcome::Miss)
}

/// Counts a compile whose result is not stored, and why.
fn not_stored(stats: &crate::stats::Stats, crate_name: &str, why: &NotStored) {
    tracing::info!("not storing {crate_name}: {why}");
    stats.update(|c| *c.not_stored.entry(why.label().into()).or_default() += 1);
}

/// The manifest variant of a compile: the sources its dep-info names, the variables it
/// names (`env` as they are now), and what observation adds.
fn variant_of(
    mut files: FileDigests,
    mut env: Vec<(Vec<u8>, Option<Vec<u8>>)>,
    observed: Option<ObservedParts>,
) -> Variant {
    let mut absent = Vec::new();
    if let Some(observed) = observed {
        files.extend(observed.files);
        env.extend(observed.env);
        absent = observed.absent;
    }
    files.sort();
    files.dedup_by(|a, b| a.0 == b.0);
    env.sort();
    env.dedup_by(|a, b| a.0 == b.0);
    Variant {
        files,
        absent,
        env,
        recorded_cwd: None,
    }
}

/// Content hashes of files by their names in a manifest variant.
type FileDigests = Vec<(Vec<u8>, [u8; 32])>;

/// What is needed to work out what a finished compile read, after the client has its
/// answer.
struct Reading {
    watch: Option<observe::Watch>,
    /// The sources its dep-info names.
    sources: Vec<PathBuf>,
    /// Its outputs (observation does not count them as inputs).
    written: Vec<PathBuf>,
    cwd: PathBuf,
    env: Vec<(std::ffi::OsString, std::ffi::OsString)>,
    hashes: Arc<FileHashes>,
    stats: Arc<crate::stats::Stats>,
    start_clock: FileClock,
}

impl Reading {
    /// The content hashes of the sources, and (when the compile was observed) what
    /// observation adds. A source changed since the compile started makes the result
    /// unsafe to store.
    fn read(self) -> Result<(FileDigests, Option<ObservedParts>), NotStored> {
        // Counted first, whatever else keeps the result from being stored.
        let observation = self.watch.map(|watch| {
            let log = watch.finish()?;
            log.complete(std::process::id())?;
            Ok::<_, NotStored>(log)
        });
        if let Some(done) = &observation {
            self.stats.update(|c| match done {
                Ok(_) => c.observed_compiles += 1,
                Err(_) => c.unobserved_compiles += 1,
            });
        }
        let mut files = Vec::new();
        for source in &self.sources {
            let path = self.cwd.join(source);
            let stamp =
                FileStamp::read(&path).map_err(|e| NotStored::Unreadable(path.clone(), e))?;
            if !stamp.settled_before(self.start_clock) {
                return Err(NotStored::TooNew(path));
            }
            let digest = self
                .hashes
                .hash(&path)
                .map_err(|e| NotStored::Unreadable(path.clone(), e))?;
            files.push((source.as_os_str().as_bytes().to_vec(), *digest.as_bytes()));
        }
        let observed = match observation {
            Some(log) => {
                let written: Vec<&Path> = self.written.iter().map(PathBuf::as_path).collect();
                Some(observed_inputs(
                    &log?.inputs(&written, &self.cwd, &self.env),
                    &self.cwd,
                    &self.hashes,
                    self.start_clock,
                )?)
            }
            None => None,
        };
        Ok((files, observed))
    }
}

/// The entry of the first manifest variant whose sources and env match now.
async fn lookup(
    context: &Context,
    job: &Job,
    base: &CacheKey,
    maps: &Maps,
    manifest_key: &CacheKey,
) -> io::Result<Option<CacheEntry>> {
    let manifest: Manifest = manifest::read(&context.cache, manifest_key).await;
    let invocation = &job.invocation;
    for variant in manifest.variants {
        // Variables first, on this thread: only files take the blocking pool.
        if manifest::env_mismatch(&variant, &invocation.cwd, &invocation.env).is_some() {
            continue;
        }
        let (hashes, cwd, checked) = (
            context.hashes.clone(),
            invocation.cwd.clone(),
            variant.clone(),
        );
        let changed =
            tokio::task::spawn_blocking(move || manifest::file_mismatch(&checked, &cwd, &hashes))
                .await
                .map_err(io::Error::other)?;
        if let Some(why) = &changed {
            tracing::debug!("variant differs: {why}");
        }
        if changed.is_none()
            && let Some(entry) = context
                .cache
                .get(&manifest::entry_key(base, &variant, maps))
                .await
        {
            return Ok(Some(entry));
        }
    }
    Ok(None)
}

/// What the observed compile read beyond its dep-info, as variant parts: files (and the
/// programs it ran) with content hashes, variables, absent paths; paths under `cwd`
/// relative. A file stamped after the compile started makes the result unsafe to store.
fn observed_inputs(
    observed: &observe::Observed,
    cwd: &Path,
    hashes: &FileHashes,
    compile_start: FileClock,
) -> Result<ObservedParts, NotStored> {
    let mut files = Vec::new();
    for path in observed
        .files
        .iter()
        .chain(&observed.found)
        .chain(&observed.programs)
    {
        let meta = std::fs::metadata(path).map_err(|_| NotStored::Gone(path.clone()))?;
        if !meta.is_file() {
            continue;
        }
        if !FileStamp::of(&meta).settled_before(compile_start) {
            return Err(NotStored::TooNew(path.clone()));
        }
        let digest = hashes
            .hash(path)
            .map_err(|e| NotStored::Unreadable(path.clone(), e))?;
        files.push((observe::variant_path(path, cwd), *digest.as_bytes()));
    }
    Ok(ObservedParts {
        files,
        env: observed.env.clone(),
        absent: observed
            .absent
            .iter()
            .map(|p| observe::variant_path(p, cwd))
            .collect(),
    })
}

/// The parts of a [`Variant`] that observation adds.
struct ObservedParts {
    files: FileDigests,
    env: Vec<(Vec<u8>, Option<Vec<u8>>)>,
    absent: Vec<Vec<u8>>,
}

/// The files a compile may write into its out-dir: its outputs by name, and split debug
/// info named after its dep-info's stem (`STEM.dwp`, `STEM.*.dwo`).
#[derive(Clone)]
struct Outputs {
    names: Arc<Vec<String>>,
    stem: String,
}

impl Outputs {
    fn expects(&self, name: &str) -> bool {
        let plain = !name.is_empty() && !name.contains('/') && !name.starts_with('.');
        let split = name == format!("{}.dwp", self.stem)
            || (name.starts_with(&format!("{}.", self.stem)) && name.ends_with(".dwo"));
        plain && (self.names.iter().any(|n| n == name) || split)
    }
}

/// Writes a hit's files into the out-dir, each whole or not at all, with the modes the
/// client's umask gives.
fn restore(entry: &CacheEntry, out_dir: &Path, outputs: &Outputs, umask: u32) -> io::Result<()> {
    let moved = moved_out_dir(entry, out_dir);
    // An entry from a shared store may have been planted: it writes only this compile's
    // own outputs, and never anything else, before anything is written.
    if let Some(file) = entry.files.iter().find(|f| !outputs.expects(&f.role)) {
        return Err(io::Error::other(format!(
            "the entry holds {:?}, not an output of this compile",
            file.role
        )));
    }
    let rmeta = rmeta::referred(entry).map_err(io::Error::other)?;
    // A missing out-dir fails here, and the miss path lets rustc report it as it would.
    for file in &entry.files {
        let base = if file.executable { 0o777 } else { 0o666 };
        let data = match (moved, rmeta) {
            (Some(old), _) if file.role.ends_with(".d") => {
                Cow::Owned(rewrite_out_dir(&file.data, old, out_dir))
            }
            (_, Some(rmeta)) if file.role.ends_with(".rmeta") => Cow::Borrowed(rmeta),
            _ => Cow::Borrowed(file.data.as_slice()),
        };
        write_atomically(&out_dir.join(&file.role), &data, base & !umask)?;
    }
    Ok(())
}

/// Remaps are the only way an entry is shared between out-dirs (see `key::key_args`);
/// rustc's dep-info and artifact notices name the out-dir as it was, so a hit from
/// elsewhere gets them rewritten. The out-dir it was compiled in, when that differs.
fn moved_out_dir<'a>(entry: &'a CacheEntry, out_dir: &Path) -> Option<&'a [u8]> {
    entry
        .meta(META_OUT_DIR)
        .filter(|old| *old != out_dir.as_os_str().as_bytes())
}

/// `old/` becomes `new/` on every line but comments (`# env-dep:` values are keyed
/// literally, so they are already right). Both are plain paths (see `key::plain_path`), so
/// make and JSON write them unescaped.
pub(super) fn rewrite_out_dir(data: &[u8], old: &[u8], new: &Path) -> Vec<u8> {
    let old = [old, b"/"].concat();
    let new = [new.as_os_str().as_bytes(), b"/"].concat();
    let mut out = Vec::with_capacity(data.len());
    for line in data.split_inclusive(|&b| b == b'\n') {
        if line.starts_with(b"#") {
            out.extend_from_slice(line);
            continue;
        }
        let mut rest = line;
        while let Some(at) = rest.windows(old.len()).position(|w| w == old.as_slice()) {
            out.extend_from_slice(&rest[..at]);
            out.extend_from_slice(&new);
            rest = &rest[at + old.len()..];
        }
        out.extend_from_slice(rest);
    }
    out
}

#[cfg(test)]
mod planted_entries {
    use super::*;
    use crate::cache::StoredFile;

    fn entry(names: &[&str]) -> CacheEntry {
        CacheEntry {
            exit_code: 0,
            stdout: Vec::new(),
            stderr: Vec::new(),
            files: names
                .iter()
                .map(|n| StoredFile {
                    role: (*n).to_owned(),
                    executable: false,
                    data: b"planted".to_vec(),
                })
                .collect(),
            meta: Vec::new(),
        }
    }

    /// An entry planted in a shared store writes nothing but this compile's outputs: not
    /// outside the out-dir, and not another file inside it.
    #[test]
    fn a_planted_entry_writes_nothing_but_the_compiles_own_outputs() {
        let dir = tempfile::tempdir().unwrap();
        let out_dir = dir.path().join("deps");
        std::fs::create_dir(&out_dir).unwrap();
        let outputs = Outputs {
            names: Arc::new(vec!["libfoo-abc.rlib".into(), "foo-abc.d".into()]),
            stem: "foo-abc".into(),
        };
        for bad in [
            "../escaped",
            "/tmp/absolute",
            "",
            ".hidden",
            "..",
            "build-script-build",
            "libfoo-abc.so",
            "foo-abc.d/../../x",
        ] {
            let planted = entry(&["libfoo-abc.rlib", bad]);
            assert!(
                restore(&planted, &out_dir, &outputs, 0o022).is_err(),
                "{bad:?}"
            );
            // Nothing at all was written, the good name included.
            assert_eq!(std::fs::read_dir(&out_dir).unwrap().count(), 0, "{bad:?}");
        }
        assert!(!dir.path().join("escaped").exists());
        // The compile's own outputs and its split debug info are restored.
        let good = entry(&[
            "libfoo-abc.rlib",
            "foo-abc.d",
            "foo-abc.dwp",
            "foo-abc.foo.1-cgu.0.rcgu.dwo",
        ]);
        restore(&good, &out_dir, &outputs, 0o022).unwrap();
        assert_eq!(std::fs::read_dir(&out_dir).unwrap().count(), 4);
    }
}
