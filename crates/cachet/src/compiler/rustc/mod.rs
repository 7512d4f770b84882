//! rustc under cargo: every crate type, keyed without running rustc on a hit.
//!
//! The key has two levels, as ccache's direct mode does for C:
//! - the **base key** covers what is known before compiling: the toolchain (`rustc -vV`
//!   and the sysroot's libraries), the normalized arguments, the cwd, the content of every
//!   `--extern` artifact and named native library, the target spec, the cargo environment,
//!   and for linked crate types the linker's identity and what the link args name;
//! - under it, a **manifest** lists the source files (with content hashes) and the env vars
//!   that earlier compiles read, taken from the dep-info file the compile itself wrote. A
//!   request whose sources and env still match a variant gets that variant's entry.
//!
//! So a hit runs no rustc at all and a miss runs exactly one: the real compile, streamed to
//! cargo as it runs (pipelining sees the `.rmeta` notice early).
//!
//! Display flags (`--diagnostic-width`, `--color`, `diagnostic-rendered-ansi`) are not in
//! the key, so artifacts are shared across terminals. An entry remembers the display it was
//! rendered for; when it holds diagnostics and the display differs, the request is a miss
//! that recompiles and replaces the entry, so a hit never replays another rendering.

pub mod args;
pub mod depinfo;
pub mod linker;
pub mod toolchain;

use std::ffi::OsString;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use cachet_jobserver::Jobserver;
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc::UnboundedSender;
use tokio_util::sync::CancellationToken;

use args::{CrateType, Emit, NativeLib, RustcArgs, Target};
use toolchain::Toolchain;

use super::basedir::{self, BaseDirs, Maps, Match};
use super::file_hashes::FileHashes;
use super::{CompileService, Outcome, observe, publish};
use crate::cache::{CacheEntry, CacheKey, StoredFile};
use crate::compiler::key::KeyHasher;
use crate::protocol::{CompileRequest, Exit, Response};
use crate::stats::millis;

pub const LANGUAGE: &str = "Rust";

/// Cargo variables that differ between identical builds and that rustc never reads.
const UNKEYED_CARGO_VARS: &[&[u8]] = &[b"CARGO_MAKEFLAGS"];

/// Variables that change what the linker does.
const LINK_VARS: &[&[u8]] = &[
    b"LIBRARY_PATH",
    b"LD_RUN_PATH",
    b"GCC_EXEC_PREFIX",
    b"COMPILER_PATH",
];

/// Where a linker finds libraries that no -L names.
const SYSTEM_LIB_DIRS: &[&str] = &[
    "/usr/local/lib",
    "/usr/lib/x86_64-linux-gnu",
    "/lib/x86_64-linux-gnu",
    "/usr/lib/aarch64-linux-gnu",
    "/lib/aarch64-linux-gnu",
    "/usr/lib64",
    "/lib64",
    "/usr/lib",
    "/lib",
];

/// Variants kept per manifest (different sources or env under one base key).
const MANIFEST_VARIANTS: usize = 8;

const META_DISPLAY: &str = "display";
const META_DIAGNOSTICS: &str = "diagnostics";
/// The out-dir the entry's dep-info and artifact notices name (see [`moved_out_dir`]).
const META_OUT_DIR: &str = "out_dir";
const MANIFEST_ROLE: &str = "manifest";

/// What the server keeps for rustc between requests.
#[derive(Default)]
pub struct RustState {
    pub toolchains: toolchain::Toolchains,
    pub linkers: linker::Linkers,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
struct Manifest {
    variants: Vec<Variant>,
}

/// What one earlier compile under a base key read: its sources (from dep-info, and every
/// other file its process tree was seen to read: files a proc macro opens, the programs
/// the link ran), the variables (`env!`, and those a proc macro or the linker read), and
/// the paths it looked up and did not find.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Variant {
    sources: Vec<(Vec<u8>, [u8; 32])>,
    env: Vec<(String, Option<Vec<u8>>)>,
    absent: Vec<Vec<u8>>,
}

/// File names rustc writes into the out-dir for these crate types and emit kinds (Linux).
pub fn output_names(args: &RustcArgs) -> Vec<String> {
    let stem = format!("{}{}", args.crate_name, args.extra_filename);
    let mut names = Vec::new();
    for emit in &args.emit {
        match emit {
            Emit::DepInfo => names.push(format!("{stem}.d")),
            Emit::Metadata => names.push(format!("lib{stem}.rmeta")),
            Emit::Link => {
                for crate_type in &args.crate_types {
                    names.push(match crate_type {
                        CrateType::Bin => stem.clone(),
                        CrateType::Lib | CrateType::Rlib => format!("lib{stem}.rlib"),
                        CrateType::Dylib | CrateType::Cdylib | CrateType::ProcMacro => {
                            format!("lib{stem}.so")
                        }
                        CrateType::Staticlib => format!("lib{stem}.a"),
                    });
                }
            }
        }
    }
    names.dedup();
    let mut seen = std::collections::HashSet::new();
    names.retain(|n| seen.insert(n.clone()));
    names
}

fn crate_types_label(types: &[CrateType]) -> String {
    if types.is_empty() {
        return "unknown".into();
    }
    types
        .iter()
        .map(|t| t.as_str())
        .collect::<Vec<_>>()
        .join(",")
}

fn display_key(args: &RustcArgs) -> Vec<u8> {
    let d = &args.display;
    let mut h = KeyHasher::new(b"display");
    h.field(d.diagnostic_width.as_deref().unwrap_or("").as_bytes());
    h.field(d.color.as_deref().unwrap_or("").as_bytes());
    h.field(&[d.rendered_ansi as u8]);
    h.finish().0.to_vec()
}

/// Whether stderr holds anything but artifact notices, whose text never depends on display.
fn has_diagnostics(stderr: &[u8]) -> bool {
    stderr
        .split(|b| *b == b'\n')
        .filter(|line| !line.is_empty())
        .any(|line| !line.starts_with(br#"{"$message_type":"artifact""#))
}

fn target_triple(args: &RustcArgs, toolchain: &Toolchain) -> String {
    match &args.target {
        Some(Target::Triple(t)) => t.clone(),
        Some(Target::JsonPath(p)) => p
            .file_stem()
            .unwrap_or_default()
            .to_string_lossy()
            .into_owned(),
        None => toolchain.host.clone(),
    }
}

/// The files a native library may be, or why the compile cannot be keyed.
fn native_lib_files(
    lib: &NativeLib,
    search: &[(String, PathBuf)],
    cwd: &Path,
    linked: bool,
) -> Result<Vec<PathBuf>, String> {
    let verbatim = lib
        .modifiers
        .as_deref()
        .is_some_and(|m| m.contains("+verbatim"));
    let names: Vec<String> = match lib.kind.as_deref() {
        _ if verbatim => vec![lib.name.clone()],
        Some("static") => vec![format!("lib{}.a", lib.name)],
        None | Some("dylib") => vec![format!("lib{}.so", lib.name), format!("lib{}.a", lib.name)],
        Some(other) => return Err(format!("native library kind {other}")),
    };
    let dirs = search
        .iter()
        .filter(|(kind, _)| kind == "native" || kind == "all")
        .map(|(_, dir)| cwd.join(dir));
    for dir in dirs {
        let found: Vec<PathBuf> = names
            .iter()
            .map(|n| dir.join(n))
            .filter(|p| p.is_file())
            .collect();
        if !found.is_empty() {
            return Ok(found);
        }
    }
    let is_static = lib.kind.as_deref() == Some("static");
    if !linked && !is_static {
        // An rlib records a dylib by name only; the final link finds it.
        return Ok(Vec::new());
    }
    for dir in SYSTEM_LIB_DIRS {
        let found: Vec<PathBuf> = names
            .iter()
            .map(|n| Path::new(dir).join(n))
            .filter(|p| p.is_file())
            .collect();
        if !found.is_empty() {
            return Ok(found);
        }
    }
    Err(format!("native library {} not found", lib.name))
}

/// Inputs of the base key that are files, and why a compile cannot be keyed.
struct FileInputs {
    files: Vec<(String, PathBuf)>,
}

fn file_inputs(args: &RustcArgs, cwd: &Path) -> Result<FileInputs, String> {
    let linked = args.crate_types.iter().any(|t| t.is_linked());
    let mut files = Vec::new();
    for ext in &args.externs {
        if let Some(path) = &ext.path {
            files.push((format!("extern {}", ext.name), cwd.join(path)));
        }
    }
    for lib in &args.native_libs {
        for path in native_lib_files(lib, &args.search_paths, cwd, linked)? {
            files.push((format!("native {}", lib.name), path));
        }
    }
    if let Some(Target::JsonPath(path)) = &args.target {
        files.push(("target spec".into(), cwd.join(path)));
    }
    if linked {
        for arg in &args.link_args {
            for path in linker::link_arg_inputs(arg, cwd)? {
                files.push((format!("link arg {arg}"), path));
            }
        }
    }
    Ok(FileInputs { files })
}

fn env_value<'a>(request: &'a CompileRequest, name: &str) -> Option<&'a [u8]> {
    request.env_var(name)
}

impl CompileService {
    /// One rustc request; `Ok(Outcome::Local)` hands it back to the client. Each outcome
    /// is logged with the crate's name, so a build's hits and misses can be traced.
    pub(super) async fn compile_rust(
        &self,
        request: &CompileRequest,
        toolchain: Arc<Toolchain>,
        build: Option<&Jobserver>,
        out: &UnboundedSender<Response>,
        cancel: &CancellationToken,
    ) -> io::Result<Outcome> {
        let outcome = self
            .compile_rust_inner(request, toolchain, build, out, cancel)
            .await;
        let crate_name = request
            .args
            .iter()
            .position(|a| a == b"--crate-name")
            .and_then(|i| request.args.get(i + 1))
            .map_or_else(|| "?".into(), |n| String::from_utf8_lossy(n).into_owned());
        match &outcome {
            Ok(o) => tracing::info!("outcome rustc crate={crate_name} {o:?}"),
            Err(e) => tracing::info!("outcome rustc crate={crate_name} error {e}"),
        }
        outcome
    }

    async fn compile_rust_inner(
        &self,
        request: &CompileRequest,
        toolchain: Arc<Toolchain>,
        build: Option<&Jobserver>,
        out: &UnboundedSender<Response>,
        cancel: &CancellationToken,
    ) -> io::Result<Outcome> {
        let started = Instant::now();
        let cwd = request.cwd_path();
        let argv = request.args_os();
        let args = match args::parse(&args::ParseInput {
            args: &argv,
            cwd: &cwd,
        }) {
            args::Parsed::Cacheable(args) => args,
            args::Parsed::NotCacheable {
                crate_types,
                reason,
            } => {
                return Ok(self.rust_local(&crate_types, reason));
            }
        };
        if !args.emit.contains(&Emit::DepInfo) {
            return Ok(self.rust_local(&args.crate_types, "no --emit=dep-info".into()));
        }
        // A proc macro may read any file or variable while it expands, and dep-info shows
        // none of it: only an observed compile can key that.
        if !self.observing() && uses_proc_macro(&args) {
            return Ok(self.rust_local(
                &args.crate_types,
                "a proc macro's inputs cannot be observed".into(),
            ));
        }
        let target = target_triple(&args, &toolchain);
        if !target.contains("linux") {
            return Ok(self.rust_local(&args.crate_types, format!("target {target} is not Linux")));
        }
        let (base, maps) = match self
            .rust_base_key(request, &toolchain, &args, &target)
            .await?
        {
            Ok(found) => found,
            Err(reason) => return Ok(self.rust_local(&args.crate_types, reason)),
        };
        let manifest_key = {
            let mut h = KeyHasher::new(b"cachet rustc manifest v2");
            h.field(&base.0);
            h.finish()
        };
        let display = display_key(&args);
        let outputs = output_names(&args);
        let out_dir = cwd.join(&args.out_dir);
        for name in &outputs {
            if let Err(reason) = super::regular_files::check_output_path(&out_dir.join(name)) {
                return Ok(self.rust_local(&args.crate_types, format!("{name}: {reason}")));
            }
        }
        let recache = request
            .env_var("CACHET_RECACHE")
            .is_some_and(|v| !v.is_empty() && v != b"0");

        if !recache
            && let Some(entry) = self
                .rust_lookup(request, &base, &maps, &manifest_key)
                .await?
        {
            let same_display = entry.meta(META_DISPLAY) == Some(display.as_slice());
            let display_free = entry.meta(META_DIAGNOSTICS) == Some(&[0]);
            if same_display || display_free {
                let restored = {
                    let (entry, out_dir, umask) = (entry.clone(), out_dir.clone(), request.umask);
                    tokio::task::spawn_blocking(move || restore(&entry, &out_dir, umask))
                        .await
                        .map_err(io::Error::other)?
                };
                match restored {
                    Ok(()) => {
                        if !entry.stdout.is_empty() {
                            let _ = out.send(Response::Stdout(entry.stdout.clone()));
                        }
                        if !entry.stderr.is_empty() {
                            let stderr = match moved_out_dir(&entry, &out_dir) {
                                Some(old) => rewrite_out_dir(&entry.stderr, old, &out_dir),
                                None => entry.stderr.clone(),
                            };
                            let _ = out.send(Response::Stderr(stderr));
                        }
                        let _ = out.send(Response::Finished(Exit::Code(entry.exit_code)));
                        let elapsed = millis(started.elapsed());
                        self.stats.update(|c| {
                            c.cache_hits += 1;
                            c.hit_time_ms += elapsed;
                            c.languages.entry(LANGUAGE.into()).or_default().hits += 1;
                        });
                        return Ok(Outcome::Hit);
                    }
                    Err(e) => tracing::debug!("restoring {} failed: {e}", args.crate_name),
                }
            }
        }

        // Identical requests in flight (same base key: same command, cwd, inputs) run once.
        let restore = {
            let (out_dir, umask) = (out_dir.clone(), request.umask);
            move |entry: &CacheEntry| restore(entry, &out_dir, umask)
        };
        // Base dirs make one base key serve several checkouts; only one checkout's compile
        // may be followed.
        let inflight = BaseDirs::of(request).inflight_key(&base, request);
        let mut leader = match self.lead_or_follow(inflight, restore, out, cancel).await? {
            Ok(leader) => leader,
            Err(replayed) => {
                self.stats
                    .update(|c| c.languages.entry(LANGUAGE.into()).or_default().hits += 1);
                return Ok(replayed);
            }
        };
        // As ccache does: a source stamped after this was edited while rustc read it.
        let compile_start = SystemTime::now();
        let watch = self.watch()?;
        let result = self
            .run_leading(
                leader.as_mut(),
                request,
                argv,
                watch.as_ref(),
                build,
                out,
                cancel,
            )
            .await?;
        if !result.exit.success() {
            let failed = self.finish_failed(leader, &result, out);
            self.stats
                .update(|c| c.languages.entry(LANGUAGE.into()).or_default().failures += 1);
            return Ok(failed);
        }
        // Read everything before the client hears back: cargo may move outputs right after.
        let collected = {
            let (out_dir, outputs, cwd) = (out_dir.clone(), outputs.clone(), cwd.clone());
            let hashes = self.hashes.clone();
            let depinfo_name = format!("{}{}.d", args.crate_name, args.extra_filename);
            let env = request.env.clone();
            let stats = self.stats.clone();
            tokio::task::spawn_blocking(move || {
                // Counted first, whatever else keeps the result from being stored.
                let observation = watch.map(|watch| {
                    let log = watch
                        .finish()
                        .map_err(|e| format!("the observation log: {e}"))?;
                    log.complete(std::process::id())?;
                    Ok::<_, String>(log)
                });
                if let Some(done) = &observation {
                    stats.update(|c| match done {
                        Ok(_) => c.observed_compiles += 1,
                        Err(_) => c.unobserved_compiles += 1,
                    });
                }
                let collected = collect(
                    &out_dir,
                    &outputs,
                    &depinfo_name,
                    &cwd,
                    &hashes,
                    compile_start,
                )?;
                let observed = match observation {
                    Some(log) => {
                        let log = log?;
                        let written: Vec<PathBuf> =
                            outputs.iter().map(|name| out_dir.join(name)).collect();
                        let written: Vec<&Path> = written.iter().map(PathBuf::as_path).collect();
                        Some(observed_inputs(
                            &log.inputs(&written, &cwd, &env),
                            &cwd,
                            &hashes,
                            compile_start,
                        )?)
                    }
                    None => None,
                };
                Ok::<_, String>((collected, observed))
            })
            .await
            .map_err(io::Error::other)?
        };
        let shared_entry = collected
            .as_ref()
            .ok()
            .map(|((files, _, _), _)| CacheEntry {
                exit_code: 0,
                stdout: result.stdout.clone(),
                stderr: result.stderr.clone(),
                files: files.clone(),
                meta: vec![],
            });
        publish(leader, &result, shared_entry);
        let _storing = self.cache.pending().reserve();
        let _ = out.send(Response::Finished(result.exit));
        self.count_miss(started, recache);
        self.stats
            .update(|c| c.languages.entry(LANGUAGE.into()).or_default().misses += 1);
        match collected {
            Ok(((files, depinfo, mut sources), observed)) => {
                let mut env: Vec<(String, Option<Vec<u8>>)> = depinfo
                    .env
                    .iter()
                    .map(|(name, _)| (name.clone(), env_value(request, name).map(<[u8]>::to_vec)))
                    .collect();
                let mut absent = Vec::new();
                if let Some(observed) = observed {
                    sources.extend(observed.files);
                    env.extend(observed.env);
                    absent = observed.absent;
                }
                sources.sort();
                sources.dedup_by(|a, b| a.0 == b.0);
                env.sort();
                env.dedup_by(|a, b| a.0 == b.0);
                let variant = Variant {
                    sources,
                    env,
                    absent,
                };
                let key = entry_key(&base, &variant, &maps);
                let entry = CacheEntry {
                    exit_code: 0,
                    stdout: result.stdout.clone(),
                    stderr: result.stderr.clone(),
                    files,
                    meta: vec![
                        (META_DISPLAY.into(), display),
                        (
                            META_DIAGNOSTICS.into(),
                            vec![has_diagnostics(&result.stderr) as u8],
                        ),
                        (META_OUT_DIR.into(), out_dir.as_os_str().as_bytes().to_vec()),
                    ],
                };
                self.cache.put_in_background(key, entry);
                self.cache
                    .update_in_background(manifest_key, true, move |old| {
                        let mut manifest = old
                            .and_then(|e| e.files.into_iter().find(|f| f.role == MANIFEST_ROLE))
                            .and_then(|f| postcard::from_bytes::<Manifest>(&f.data).ok())
                            .unwrap_or_default();
                        manifest.variants.retain(|v| *v != variant);
                        manifest.variants.insert(0, variant);
                        manifest.variants.truncate(MANIFEST_VARIANTS);
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
                    });
            }
            Err(why) => {
                tracing::info!("not storing {}: {why}", args.crate_name);
                let reason = super::not_stored_reason(&why);
                self.stats
                    .update(|c| *c.not_stored.entry(reason).or_default() += 1);
            }
        }
        Ok(Outcome::Miss)
    }

    fn rust_local(&self, crate_types: &[CrateType], reason: String) -> Outcome {
        self.stats
            .update(|c| c.languages.entry(LANGUAGE.into()).or_default().uncacheable += 1);
        Outcome::Local(format!(
            "rustc {}: {reason}",
            crate_types_label(crate_types)
        ))
    }

    /// Everything known before compiling, or why the compile cannot be keyed.
    async fn rust_base_key(
        &self,
        request: &CompileRequest,
        toolchain: &Toolchain,
        args: &RustcArgs,
        target: &str,
    ) -> io::Result<Result<(CacheKey, Maps), String>> {
        let cwd = request.cwd_path();
        let env = request.env_os();
        let libs = self
            .rust
            .toolchains
            .libs_digest(toolchain, target, self.hashes.clone())
            .await?;
        let linked = args.crate_types.iter().any(|t| t.is_linked());
        let linker_digest = if linked {
            let name: OsString = args.linker.clone().map_or_else(|| "cc".into(), Into::into);
            let Some(path) = linker::find_program(&name, &env, &cwd) else {
                return Ok(Err(format!("linker {} not found", name.to_string_lossy())));
            };
            Some(
                self.rust
                    .linkers
                    .digest(&self.launcher, &path, &env, &cwd, self.hashes.clone())
                    .await?,
            )
        } else {
            None
        };
        let inputs = match file_inputs(args, &cwd) {
            Ok(inputs) => inputs,
            Err(reason) => return Ok(Err(reason)),
        };
        let hashes = self.hashes.clone();
        let hashed = tokio::task::spawn_blocking(move || {
            inputs
                .files
                .into_iter()
                .map(|(label, path)| {
                    let digest = hashes
                        .hash(&path)
                        .map_err(|e| format!("{label}: {}: {e}", path.display()))?;
                    Ok((label, digest))
                })
                .collect::<Result<Vec<_>, String>>()
        })
        .await
        .map_err(io::Error::other)?;
        let hashed = match hashed {
            Ok(hashed) => hashed,
            Err(reason) => return Ok(Err(reason)),
        };

        let native_cpu = if args.native_cpu() {
            let compiler = request.compiler_path();
            Some(
                self.rust
                    .toolchains
                    .native_cpu(&self.launcher, &compiler, toolchain, target, &env, &cwd)
                    .await?,
            )
        } else {
            None
        };
        let base = BaseDirs::of(request);
        let mut h = KeyHasher::new(b"cachet rustc base v1");
        h.field(toolchain.version.as_bytes());
        h.field(&libs);
        if let Some(cpu) = native_cpu {
            h.field(b"native cpu");
            h.field(&cpu);
        }
        h.field(b"args");
        let (key_args, maps) = rust_key_args(&base, args);
        for arg in &key_args {
            h.field(arg);
        }
        h.field(b"cwd");
        h.field(&key_cwd(&base, args, &request.cwd));
        h.field(b"inputs");
        for (label, digest) in hashed {
            h.field(label.as_bytes());
            h.field(digest.as_bytes());
        }
        if let Some(digest) = linker_digest {
            h.field(b"linker");
            h.field(&digest);
        }
        // Observed compiles key exactly the variables their process tree read (in the
        // manifest variant), so a rotated CARGO_REGISTRY_TOKEN is no miss and no secret
        // enters a key. Without observation, every cargo variable is keyed here.
        let observing = self.observing();
        let mut vars: Vec<(&[u8], &[u8])> = request
            .env
            .iter()
            .filter(|_| !observing)
            .filter(|(k, _)| {
                (k.starts_with(b"CARGO_") && !UNKEYED_CARGO_VARS.contains(&k.as_slice()))
                    || k == b"RUSTC_BOOTSTRAP"
                    || (linked && LINK_VARS.contains(&k.as_slice()))
            })
            .map(|(k, v)| (k.as_slice(), v.as_slice()))
            .collect();
        vars.sort();
        // What the compile reads with env! is keyed literally in the manifest variant.
        h.field(b"env");
        for (name, value) in vars {
            h.field(name);
            if base.is_empty() {
                h.field(value);
            } else {
                h.field(&base.key_form(value));
            }
        }
        Ok(Ok((h.finish(), maps)))
    }

    /// The entry of the first manifest variant whose sources and env match now.
    async fn rust_lookup(
        &self,
        request: &CompileRequest,
        base: &CacheKey,
        maps: &Maps,
        manifest_key: &CacheKey,
    ) -> io::Result<Option<CacheEntry>> {
        let Some(stored) = self.cache.get(manifest_key).await else {
            return Ok(None);
        };
        let Some(manifest) = stored
            .files
            .iter()
            .find(|f| f.role == MANIFEST_ROLE)
            .and_then(|f| postcard::from_bytes::<Manifest>(&f.data).ok())
        else {
            return Ok(None);
        };
        let cwd = request.cwd_path();
        for variant in manifest.variants {
            let env_matches = variant.env.iter().all(|(name, value)| {
                observe::env_matches(name.as_bytes(), value.as_deref(), &cwd, &request.env)
            });
            if !env_matches {
                continue;
            }
            let (hashes, cwd2, sources, absent) = (
                self.hashes.clone(),
                cwd.clone(),
                variant.sources.clone(),
                variant.absent.clone(),
            );
            let sources_match = tokio::task::spawn_blocking(move || {
                let path = |p: &[u8]| cwd2.join(Path::new(std::ffi::OsStr::from_bytes(p)));
                absent
                    .iter()
                    .all(|p| std::fs::symlink_metadata(path(p)).is_err())
                    && sources.iter().all(|(p, digest)| {
                        hashes.hash(&path(p)).is_ok_and(|h| h.as_bytes() == digest)
                    })
            })
            .await
            .map_err(io::Error::other)?;
            if sources_match
                && let Some(entry) = self.cache.get(&entry_key(base, &variant, maps)).await
            {
                return Ok(Some(entry));
            }
        }
        Ok(None)
    }
}

/// `maps` are the remaps base dirs relativized; what they make of an absolute source path
/// is what the output records, so it is keyed with the path.
fn entry_key(base: &CacheKey, variant: &Variant, maps: &Maps) -> CacheKey {
    let mut h = KeyHasher::new(b"cachet rustc entry v2");
    h.field(&base.0);
    for (path, digest) in &variant.sources {
        h.field(path);
        h.field(digest);
        if path.starts_with(b"/") {
            for form in maps.mapped_forms(path) {
                h.field(b"mapped");
                h.field(&form);
            }
        }
    }
    h.field(b"absent");
    for path in &variant.absent {
        h.field(path);
    }
    h.field(b"env");
    for (name, value) in &variant.env {
        h.field(name.as_bytes());
        match value {
            Some(v) => {
                h.field(b"set");
                h.field(v);
            }
            None => h.field(b"unset"),
        }
    }
    h.finish()
}

type Collected = (Vec<StoredFile>, depinfo::DepInfo, Vec<(Vec<u8>, [u8; 32])>);

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

/// Whether the crate uses a proc macro (an `--extern` shared object).
fn uses_proc_macro(args: &RustcArgs) -> bool {
    args.externs.iter().any(|e| {
        e.path
            .as_ref()
            .is_some_and(|p| p.extension() == Some("so".as_ref()))
    })
}

/// What the observed compile read beyond its dep-info, as variant parts: files (and the
/// programs it ran) with content hashes, variables, absent paths; paths under `cwd`
/// relative. A file stamped after the compile started makes the result unsafe to store.
fn observed_inputs(
    observed: &observe::Observed,
    cwd: &Path,
    hashes: &FileHashes,
    compile_start: SystemTime,
) -> Result<ObservedParts, String> {
    let mut files = Vec::new();
    for path in observed
        .files
        .iter()
        .chain(&observed.found)
        .chain(&observed.programs)
    {
        let meta = std::fs::metadata(path).map_err(|e| format!("{}: {e}", path.display()))?;
        if !meta.is_file() {
            continue;
        }
        if meta.modified().map_err(|e| e.to_string())? >= compile_start {
            return Err(format!("{} changed during the compile", path.display()));
        }
        let digest = hashes
            .hash(path)
            .map_err(|e| format!("{}: {e}", path.display()))?;
        files.push((observe::variant_path(path, cwd), *digest.as_bytes()));
    }
    Ok(ObservedParts {
        files,
        env: observed
            .env
            .iter()
            .map(|(name, value)| (String::from_utf8_lossy(name).into_owned(), value.clone()))
            .collect(),
        absent: observed
            .absent
            .iter()
            .map(|p| observe::variant_path(p, cwd))
            .collect(),
    })
}

/// The parts of a [`Variant`] that observation adds.
struct ObservedParts {
    files: Vec<(Vec<u8>, [u8; 32])>,
    env: Vec<(String, Option<Vec<u8>>)>,
    absent: Vec<Vec<u8>>,
}

/// Reads a successful compile's outputs and the sources its dep-info names. Sources
/// modified since the compile started make the result unsafe to store.
fn collect(
    out_dir: &Path,
    outputs: &[String],
    depinfo_name: &str,
    cwd: &Path,
    hashes: &FileHashes,
    compile_start: SystemTime,
) -> Result<Collected, String> {
    let mut files = Vec::new();
    let mut depinfo_text = None;
    let stem = depinfo_name.trim_end_matches(".d");
    // A little slack: these are outputs, and a stale one is only one written just before.
    let since = compile_start - std::time::Duration::from_millis(50);
    let split = split_debuginfo_files(out_dir, stem, since);
    for name in outputs.iter().chain(&split) {
        let path = out_dir.join(name);
        let data = super::regular_files::read_regular(&path)
            .map_err(|e| format!("{}: {e}", path.display()))?;
        let mode = std::fs::metadata(&path)
            .map_err(|e| e.to_string())?
            .permissions()
            .mode();
        if name == depinfo_name {
            depinfo_text = Some(String::from_utf8_lossy(&data).into_owned());
        }
        files.push(StoredFile {
            role: name.clone(),
            executable: mode & 0o111 != 0,
            data,
        });
    }
    let depinfo = depinfo::parse(&depinfo_text.ok_or("no dep-info file")?);
    let mut sources = Vec::new();
    for source in &depinfo.sources {
        let path = cwd.join(source);
        let modified = std::fs::metadata(&path)
            .and_then(|m| m.modified())
            .map_err(|e| format!("{}: {e}", path.display()))?;
        if modified >= compile_start {
            return Err(format!("{} changed during the compile", path.display()));
        }
        let digest = hashes
            .hash(&path)
            .map_err(|e| format!("{}: {e}", path.display()))?;
        sources.push((source.as_os_str().as_bytes().to_vec(), *digest.as_bytes()));
    }
    Ok((files, depinfo, sources))
}

/// Writes a hit's files into the out-dir, each whole or not at all, with the modes the
/// client's umask gives.
fn restore(entry: &CacheEntry, out_dir: &Path, umask: u32) -> io::Result<()> {
    let moved = moved_out_dir(entry, out_dir);
    // A missing out-dir fails here, and the miss path lets rustc report it as it would.
    for file in &entry.files {
        // Names come from our own output_names; still, never leave the out-dir.
        if file.role.contains('/') || file.role.starts_with('.') {
            return Err(io::Error::other(format!("bad output name {}", file.role)));
        }
        let base = if file.executable { 0o777 } else { 0o666 };
        let data = match moved {
            Some(old) if file.role.ends_with(".d") => rewrite_out_dir(&file.data, old, out_dir),
            _ => file.data.clone(),
        };
        super::outputs::write_atomically(&out_dir.join(&file.role), &data, base & !umask)?;
    }
    Ok(())
}

/// Remaps are the only way an entry is shared between out-dirs (see [`rust_key_args`]);
/// rustc's dep-info and artifact notices name the out-dir as it was, so a hit from
/// elsewhere gets them rewritten. The out-dir it was compiled in, when that differs.
fn moved_out_dir<'a>(entry: &'a CacheEntry, out_dir: &Path) -> Option<&'a [u8]> {
    entry
        .meta(META_OUT_DIR)
        .filter(|old| *old != out_dir.as_os_str().as_bytes())
}

/// `old/` becomes `new/` on every line but comments (`# env-dep:` values are keyed
/// literally, so they are already right). Both are plain paths (see [`plain_path`]), so
/// make and JSON write them unescaped.
fn rewrite_out_dir(data: &[u8], old: &[u8], new: &Path) -> Vec<u8> {
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

/// A path that make-style dep files and JSON write as it is.
fn plain_path(path: &[u8]) -> bool {
    path.iter()
        .all(|b| b.is_ascii_alphanumeric() || b"/._-+@,~=%".contains(b))
}

/// The arguments as they enter the base key. Under base dirs, `--remap-path-prefix`'s FROM
/// becomes its relative form, and a path argument (the crate root, `--out-dir`, `-L`,
/// `--sysroot`) under a base dir that a remap covers enters as rustc records it: remapped.
/// Without a covering remap a path stays literal, since rustc embeds it in the rlib's
/// metadata, debug info and panic messages. The out-dir is remapped only when it is a
/// plain path, as the dep-info rewrite on a hit needs.
fn rust_key_args(base: &BaseDirs, args: &RustcArgs) -> (Vec<Vec<u8>>, Maps) {
    let tokens: Vec<Vec<u8>> = args
        .hashed_args
        .iter()
        .map(|a| a.as_bytes().to_vec())
        .collect();
    if base.is_empty() {
        return (tokens, Maps::default());
    }
    let remaps = &args.remap_path_prefixes;
    let (mut tokens, maps) = basedir::relativize_map_args(
        base,
        &tokens,
        &["--remap-path-prefix"],
        true,
        Match::Components,
    );
    const PATH_PREFIXES: &[&[u8]] = &[
        b"--out-dir=",
        b"--sysroot=",
        b"-Lnative=",
        b"-Lcrate=",
        b"-Lall=",
        b"-Lframework=",
        b"native=",
        b"crate=",
        b"all=",
        b"framework=",
        b"-L",
        b"",
    ];
    let mut previous: Vec<u8> = Vec::new();
    for token in tokens.iter_mut() {
        let after = std::mem::replace(&mut previous, token.clone());
        if token.first() == Some(&0) || after == b"--remap-path-prefix" {
            continue;
        }
        let Some(prefix) = PATH_PREFIXES
            .iter()
            .find(|p| token.starts_with(p) && token.get(p.len()) == Some(&b'/'))
        else {
            continue;
        };
        let path = &token[prefix.len()..];
        let is_out_dir = after == b"--out-dir" || *prefix == b"--out-dir=";
        if base.relativize(path).is_none() || (is_out_dir && !plain_path(path)) {
            continue;
        }
        if let Some(recorded) = basedir::remapped(Match::Components, remaps, path) {
            let mut keyed = [*prefix, b"\0remapped:"].concat();
            keyed.extend_from_slice(&recorded[0]);
            *token = keyed;
        }
    }
    (tokens, maps)
}

/// The cwd as the key has it: rustc records it in the rlib (and debug info), remapped if a
/// remap covers it. Under base dirs a covered cwd enters as its relative form plus what
/// rustc records; otherwise literally.
fn key_cwd(base: &BaseDirs, args: &RustcArgs, cwd: &[u8]) -> Vec<u8> {
    if base.is_empty() || base.relativize(cwd).is_none() {
        return cwd.to_vec();
    }
    match basedir::remapped(Match::Components, &args.remap_path_prefixes, cwd) {
        Some(recorded) => [base.key_form(cwd).as_slice(), b"\0remapped:", &recorded[0]].concat(),
        None => cwd.to_vec(),
    }
}

#[cfg(test)]
mod tests;
