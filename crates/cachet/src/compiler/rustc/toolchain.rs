//! Which Rust toolchain a `rustc` is, found from `rustc -vV` and its sysroot, never from
//! its path: a rustup proxy picks a toolchain from RUSTUP_TOOLCHAIN, the
//! `rust-toolchain(.toml)` that applies to the cwd and rustup's overrides, so for a proxy
//! exactly those inputs are the cache key of the answer. Either way the sysroot's mtime is
//! checked on every request, so a toolchain update is noticed without running `rustc -vV`.

use std::ffi::OsString;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::compiler::file_hashes::FileHashes;
use crate::compiler::loader::LoadedObjects;
use crate::compiler::stamp::{FileStamp, Memo};
use crate::process::Exit;
use crate::process::{CommandSpec, Launcher, helper_env};

/// Variables that pick a toolchain through a rustup proxy; `rustc -vV` gets only these
/// (and what starts it), and its answer is remembered under their values.
const TOOLCHAIN_VARS: &[&str] = &["RUSTUP_HOME", "RUSTUP_TOOLCHAIN", "HOME", "CARGO_HOME"];

/// How long "not rustc" from a `-vV` that exited with an error is believed (a transient
/// failure of a real rustc must not pass it through for the server's life).
const FAILED_PROBE_TTL: std::time::Duration = std::time::Duration::from_secs(60);

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Toolchain {
    /// The whole `rustc -vV` output: release, commit hash, host, LLVM version.
    pub version: String,
    pub host: String,
    pub sysroot: PathBuf,
    /// The sysroot directory's stamp: an update underneath us changes it.
    sysroot_stamp: FileStamp,
}

impl Toolchain {
    /// A toolchain as probing would find it, for tests that do not run rustc.
    #[cfg(test)]
    pub fn for_tests(version: &str, host: &str, sysroot: &Path) -> Toolchain {
        Toolchain {
            version: version.into(),
            host: host.into(),
            sysroot: sysroot.to_owned(),
            sysroot_stamp: FileStamp::read(sysroot).expect("the test's sysroot exists"),
        }
    }
}

/// Everything that decides which toolchain a path runs.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Selector {
    binary: PathBuf,
    stamp: FileStamp,
    /// Only for rustup proxies.
    rustup: Option<RustupInputs>,
    /// The probe's environment: what starts it, and for a proxy [`TOOLCHAIN_VARS`]. For a
    /// real rustc, [`Toolchains::resolve`] puts the objects the loader maps in place of
    /// `LD_LIBRARY_PATH` (a proxy passes the variable on to the rustc it runs).
    env: Vec<(OsString, OsString)>,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct RustupInputs {
    toolchain_env: Option<OsString>,
    rustup_home: Option<OsString>,
    /// The nearest rust-toolchain(.toml) above the cwd, with its mtime and size.
    toolchain_file: Option<(PathBuf, FileStamp)>,
    settings: Option<FileStamp>,
}

fn env_of<'a>(env: &'a [(OsString, OsString)], name: &str) -> Option<&'a OsString> {
    env.iter().rev().find(|(k, _)| k == name).map(|(_, v)| v)
}

fn nearest_toolchain_file(cwd: &Path) -> Option<(PathBuf, FileStamp)> {
    for dir in cwd.ancestors() {
        for name in ["rust-toolchain", "rust-toolchain.toml"] {
            let path = dir.join(name);
            if let Ok(meta) = std::fs::metadata(&path) {
                return Some((path, FileStamp::of(&meta)));
            }
        }
    }
    None
}

/// Whether `binary` is rustup's proxy: rustup itself under a symlink, or a hard link to
/// the `rustup` beside it (rustup installs its proxies as hard links where it can).
fn is_rustup_proxy(binary: &Path, meta: &std::fs::Metadata) -> bool {
    use std::os::unix::fs::MetadataExt;
    let Ok(real) = std::fs::canonicalize(binary) else {
        return false;
    };
    if real
        .file_name()
        .is_some_and(|n| n.to_string_lossy().starts_with("rustup"))
    {
        return true;
    }
    real.parent()
        .and_then(|dir| std::fs::metadata(dir.join("rustup")).ok())
        .is_some_and(|rustup| (rustup.dev(), rustup.ino()) == (meta.dev(), meta.ino()))
}

impl Selector {
    fn of(binary: &Path, env: &[(OsString, OsString)], cwd: &Path) -> io::Result<Selector> {
        let meta = std::fs::metadata(binary)?;
        let is_proxy = is_rustup_proxy(binary, &meta);
        let rustup = is_proxy.then(|| {
            let home = env_of(env, "RUSTUP_HOME")
                .map(PathBuf::from)
                .or_else(|| env_of(env, "HOME").map(|h| PathBuf::from(h).join(".rustup")));
            RustupInputs {
                toolchain_env: env_of(env, "RUSTUP_TOOLCHAIN").cloned(),
                rustup_home: env_of(env, "RUSTUP_HOME").cloned(),
                toolchain_file: nearest_toolchain_file(cwd),
                settings: home.and_then(|h| FileStamp::read(&h.join("settings.toml")).ok()),
            }
        });
        Ok(Selector {
            binary: binary.to_owned(),
            stamp: FileStamp::of(&meta),
            rustup,
            // A real rustc's answer depends on none of rustup's variables.
            env: helper_env(env, if is_proxy { TOOLCHAIN_VARS } else { &[] }),
        })
    }
}

/// A probe's answer, and until when "not rustc" holds (None: for the file's life).
type Probed = (Option<Arc<Toolchain>>, Option<std::time::Instant>);

#[derive(Default)]
pub struct Toolchains {
    toolchains: Memo<Selector, Probed>,
    /// Digest of a sysroot's libraries for one target (shared with [`Toolchains::prewarm_libs`]'s
    /// task).
    libs: Arc<Memo<(PathBuf, String), [u8; 32]>>,
    /// What `-C target-cpu=native` resolves to, by toolchain (`-vV`) and target.
    native: Memo<(String, String), [u8; 32]>,
    /// Which libraries a real rustc loads under each `LD_LIBRARY_PATH` cargo gives it.
    loaded: LoadedObjects,
}

impl Toolchains {
    /// The toolchain `binary` runs for this request, or None when it is not rustc.
    pub async fn resolve(
        &self,
        launcher: &Launcher,
        binary: &Path,
        env: &[(OsString, OsString)],
        cwd: &Path,
    ) -> io::Result<Option<Arc<Toolchain>>> {
        let mut selector = Selector::of(binary, env, cwd)?;
        let run_env = selector.env.clone();
        if selector.rustup.is_none() {
            selector.env = (self.loaded)
                .key_env(launcher, binary, selector.stamp, &run_env)
                .await;
        }
        // Kept while "not rustc" has not expired and the sysroot is as probed (an update
        // underneath us means asking again).
        let holds = |(found, expires): &Probed| match found {
            None => expires.is_none_or(|at| std::time::Instant::now() < at),
            Some(toolchain) => {
                FileStamp::read(&toolchain.sysroot).ok() == Some(toolchain.sysroot_stamp)
            }
        };
        let (found, _) = self
            .toolchains
            .get(&selector, selector.stamp.settled(), holds, || {
                probe(launcher, binary, &run_env, cwd)
            })
            .await?;
        Ok(found)
    }

    /// What `-C target-cpu=native` means on this machine for `target`: a digest of
    /// `rustc --print cfg --print target-cpus -C target-cpu=native` (the CPU's name and its
    /// target features), so two CPUs sharing a cache never serve each other's code.
    /// Resolved once per toolchain and target; `env` and `cwd` pick the toolchain as for
    /// the compile (a rustup proxy).
    pub async fn native_cpu(
        &self,
        launcher: &Launcher,
        binary: &Path,
        toolchain: &Toolchain,
        target: &str,
        env: &[(OsString, OsString)],
        cwd: &Path,
    ) -> io::Result<[u8; 32]> {
        let key = (toolchain.version.clone(), target.to_owned());
        self.native
            .get(
                &key,
                true,
                |_| true,
                || async {
                    let mut spec = CommandSpec::new(binary, cwd);
                    spec.args = [
                        "--print",
                        "cfg",
                        "--print",
                        "target-cpus",
                        "-C",
                        "target-cpu=native",
                        "--target",
                        target,
                    ]
                    .map(Into::into)
                    .to_vec();
                    spec.env = helper_env(env, TOOLCHAIN_VARS);
                    let out = launcher.run_probe(spec).await?;
                    if !out.exit.success() {
                        return Err(io::Error::other(
                            "rustc could not resolve -C target-cpu=native",
                        ));
                    }
                    Ok(*blake3::hash(&out.stdout).as_bytes())
                },
            )
            .await
    }

    /// A digest of the target's standard libraries and of the compiler's own library.
    pub async fn libs_digest(
        &self,
        toolchain: &Toolchain,
        target: &str,
        hashes: Arc<FileHashes>,
    ) -> io::Result<[u8; 32]> {
        libs_digest_in(&self.libs, &toolchain.sysroot, target, hashes).await
    }

    /// Starts working out [`libs_digest`](Self::libs_digest) for the toolchain's host in the
    /// background. cargo asks its wrapper for `rustc -vV` and a `--print` probe before the
    /// first compile of a build, and that compile would otherwise wait while the sysroot
    /// (about 500 MB) is hashed: 150-175 ms here, with nothing else for the build to do.
    /// The handle is for tests; dropping it leaves the work running.
    pub fn prewarm_libs(
        &self,
        toolchain: &Toolchain,
        hashes: Arc<FileHashes>,
    ) -> tokio::task::JoinHandle<()> {
        let (libs, sysroot, host) = (
            self.libs.clone(),
            toolchain.sysroot.clone(),
            toolchain.host.clone(),
        );
        tokio::spawn(async move {
            if let Err(e) = libs_digest_in(&libs, &sysroot, &host, hashes).await {
                tracing::debug!(
                    "hashing the sysroot {} ahead failed: {e}",
                    sysroot.display()
                );
            }
        })
    }
}

/// [`Toolchains::libs_digest`] from the memo `libs`: worked out once per sysroot and target.
async fn libs_digest_in(
    libs: &Memo<(PathBuf, String), [u8; 32]>,
    sysroot: &Path,
    target: &str,
    hashes: Arc<FileHashes>,
) -> io::Result<[u8; 32]> {
    let key = (sysroot.to_owned(), target.to_owned());
    libs.get(
        &key,
        true,
        |_| true,
        || {
            let (sysroot, target) = (sysroot.to_owned(), target.to_owned());
            let hashes = hashes.clone();
            async move {
                tokio::task::spawn_blocking(move || digest_libs(&sysroot, &target, &hashes))
                    .await
                    .map_err(io::Error::other)?
            }
        },
    )
    .await
}

fn digest_libs(sysroot: &Path, target: &str, hashes: &FileHashes) -> io::Result<[u8; 32]> {
    let mut files = Vec::new();
    for dir in [
        sysroot.join("lib/rustlib").join(target).join("lib"),
        sysroot.join("lib"),
    ] {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            if entry.file_type().is_ok_and(|t| t.is_file()) {
                files.push(entry.path());
            }
        }
    }
    files.sort();
    let digests = hash_in_parallel(&files, hashes)?;
    let mut hasher = blake3::Hasher::new();
    for (file, digest) in files.iter().zip(&digests) {
        hasher.update(file.file_name().unwrap_or_default().as_encoded_bytes());
        hasher.update(digest.as_bytes());
    }
    Ok(*hasher.finalize().as_bytes())
}

/// The content hashes of `files`, in their order, read on up to one thread per CPU: a
/// sysroot is about 500 MB (LLVM and rustc's driver alone 350 MB), and the first compile
/// of a build waits for it while the build's cores have nothing else to do.
fn hash_in_parallel(files: &[PathBuf], hashes: &FileHashes) -> io::Result<Vec<blake3::Hash>> {
    let threads = std::thread::available_parallelism()
        .map_or(1, usize::from)
        .min(files.len())
        .max(1);
    // Largest first, so that no thread is left with a big file at the end.
    let mut order: Vec<usize> = (0..files.len()).collect();
    let size = |i: &usize| std::fs::metadata(&files[*i]).map_or(0, |m| m.len());
    order.sort_by_key(|i| std::cmp::Reverse(size(i)));
    let next = std::sync::atomic::AtomicUsize::new(0);
    let found = std::sync::Mutex::new(vec![None; files.len()]);
    std::thread::scope(|scope| {
        let workers: Vec<_> = (0..threads)
            .map(|_| {
                scope.spawn(|| -> io::Result<()> {
                    loop {
                        let at = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        let Some(&i) = order.get(at) else {
                            return Ok(());
                        };
                        let digest = hashes.hash(&files[i])?;
                        found.lock().unwrap()[i] = Some(digest);
                    }
                })
            })
            .collect();
        workers
            .into_iter()
            .try_for_each(|w| w.join().map_err(|_| io::Error::other("hashing panicked"))?)
    })?;
    Ok(found
        .into_inner()
        .unwrap()
        .into_iter()
        .map(|d| d.expect("every file was hashed"))
        .collect())
}

async fn probe(
    launcher: &Launcher,
    binary: &Path,
    env: &[(OsString, OsString)],
    cwd: &Path,
) -> io::Result<(Option<Arc<Toolchain>>, Option<std::time::Instant>)> {
    let run = |args: &[&str]| {
        let mut spec = CommandSpec::new(binary, cwd);
        spec.args = args.iter().map(Into::into).collect();
        spec.env = env.to_vec();
        launcher.run_probe(spec)
    };
    let version = run(&["-vV"]).await?;
    let text = String::from_utf8_lossy(&version.stdout).into_owned();
    match version.exit {
        Exit::Code(0) => {}
        Exit::Code(_) => return Ok((None, Some(std::time::Instant::now() + FAILED_PROBE_TTL))),
        Exit::Signal(signal) => {
            return Err(io::Error::other(format!(
                "rustc -vV died of signal {signal}"
            )));
        }
    }
    if !text.starts_with("rustc ") {
        return Ok((None, None));
    }
    let Some(host) = text.lines().find_map(|l| l.strip_prefix("host: ")) else {
        return Err(io::Error::other("rustc -vV names no host"));
    };
    let sysroot = run(&["--print", "sysroot"]).await?;
    if !sysroot.exit.success() {
        return Err(io::Error::other("rustc --print sysroot failed"));
    }
    let sysroot = PathBuf::from(String::from_utf8_lossy(&sysroot.stdout).trim());
    let Ok(sysroot_stamp) = FileStamp::read(&sysroot) else {
        // Removed underneath us (a toolchain being uninstalled): not a rustc to use now.
        return Ok((None, Some(std::time::Instant::now() + FAILED_PROBE_TTL)));
    };
    let toolchain = Toolchain {
        host: host.trim().to_owned(),
        version: text,
        sysroot,
        sysroot_stamp,
    };
    Ok((Some(Arc::new(toolchain)), None))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Vec<(OsString, OsString)> {
        pairs.iter().map(|(k, v)| (k.into(), v.into())).collect()
    }

    #[test]
    fn a_proxy_is_selected_by_rustups_inputs_and_a_real_rustc_by_its_file() {
        let dir = tempfile::tempdir().unwrap();
        let home = dir.path().join("rustup-home");
        std::fs::create_dir_all(&home).unwrap();
        let rustup = dir.path().join("rustup");
        std::fs::write(&rustup, "proxy").unwrap();
        let proxy = dir.path().join("rustc");
        std::os::unix::fs::symlink(&rustup, &proxy).unwrap();
        let real = dir.path().join("real-rustc");
        std::fs::write(&real, "rustc").unwrap();
        let project = dir.path().join("project/src");
        std::fs::create_dir_all(&project).unwrap();
        let home_str = home.to_str().unwrap();

        let base = env(&[("RUSTUP_HOME", home_str)]);
        let a = Selector::of(&proxy, &base, &project).unwrap();
        assert!(a.rustup.is_some());
        assert_eq!(a, Selector::of(&proxy, &base, &project).unwrap());
        let nightly = env(&[("RUSTUP_HOME", home_str), ("RUSTUP_TOOLCHAIN", "nightly")]);
        assert_ne!(a, Selector::of(&proxy, &nightly, &project).unwrap());

        // A rust-toolchain.toml above the cwd, then an edit of it.
        let file = dir.path().join("project/rust-toolchain.toml");
        std::fs::write(&file, "[toolchain]\nchannel = \"stable\"\n").unwrap();
        let with_file = Selector::of(&proxy, &base, &project).unwrap();
        assert_ne!(a, with_file);
        std::fs::write(&file, "[toolchain]\nchannel = \"nightly-2026-01-01\"\n").unwrap();
        assert_ne!(with_file, Selector::of(&proxy, &base, &project).unwrap());

        // rustup's own settings (`rustup default`, overrides).
        std::fs::write(home.join("settings.toml"), "default_toolchain = \"beta\"\n").unwrap();
        let with_settings = Selector::of(&proxy, &base, &project).unwrap();
        assert_ne!(with_settings.rustup.as_ref().unwrap().settings, None);

        // rustup's hard-linked proxies are proxies too.
        let linked = dir.path().join("bin");
        std::fs::create_dir(&linked).unwrap();
        std::fs::write(linked.join("rustup"), "proxy").unwrap();
        std::fs::hard_link(linked.join("rustup"), linked.join("rustc")).unwrap();
        let hard = Selector::of(&linked.join("rustc"), &base, &project).unwrap();
        assert!(hard.rustup.is_some());
        assert_ne!(
            hard,
            Selector::of(&linked.join("rustc"), &nightly, &project).unwrap()
        );

        // A real rustc ignores all of that.
        let plain = Selector::of(&real, &base, &project).unwrap();
        assert!(plain.rustup.is_none());
        assert_eq!(plain, Selector::of(&real, &nightly, &project).unwrap());
    }

    /// cargo gives rustc another `LD_LIBRARY_PATH` for its probes, its compiles and build
    /// scripts' compiles; where the loader maps the same objects under each, rustc is
    /// probed once.
    #[tokio::test]
    async fn library_paths_that_change_no_loaded_object_share_one_probe() {
        use crate::process::mock::{MockRunner, output};
        let dir = tempfile::tempdir().unwrap();
        // A dynamically linked "rustc" (this test's own binary, never run: the mock answers).
        let rustc = dir.path().join("rustc");
        std::os::unix::fs::symlink(std::env::current_exe().unwrap(), &rustc).unwrap();
        let sysroot = dir.path().join("sysroot");
        std::fs::create_dir(&sysroot).unwrap();
        let printed = format!("{}\n", sysroot.display());
        let mock = MockRunner::new(move |spec| {
            if spec.env_var("LD_TRACE_LOADED_OBJECTS").is_some() {
                let path = spec.env_var("LD_LIBRARY_PATH").unwrap().to_string_lossy();
                let driver = if path.contains("/other-toolchain/") {
                    "/other-toolchain/lib/librustc_driver.so"
                } else {
                    "/toolchain/lib/librustc_driver.so"
                };
                return Ok(output(
                    0,
                    format!("\tlibrustc_driver.so => {driver} (0x7f0000001000)\n").as_bytes(),
                    b"",
                ));
            }
            Ok(match spec.args[0].to_str().unwrap() {
                "-vV" => output(
                    0,
                    b"rustc 1.95.0 (fake)\nhost: x86_64-unknown-linux-gnu\n",
                    b"",
                ),
                _ => output(0, printed.as_bytes(), b""),
            })
        });
        let launcher = Launcher::new(
            Arc::new(mock.clone()),
            cachet_jobserver::Jobserver::new(2).unwrap(),
        );
        let toolchains = Toolchains::default();
        let resolve = |library_path: &str| {
            let env = env(&[("PATH", "/usr/bin"), ("LD_LIBRARY_PATH", library_path)]);
            let (toolchains, launcher, rustc, cwd) = (&toolchains, &launcher, &rustc, dir.path());
            async move {
                toolchains
                    .resolve(launcher, rustc, &env, cwd)
                    .await
                    .unwrap()
                    .unwrap()
            }
        };
        let probes = || {
            mock.calls()
                .iter()
                .filter(|c| c.env_var("LD_TRACE_LOADED_OBJECTS").is_none())
                .count()
        };
        let first = resolve("/toolchain/lib").await;
        assert_eq!(first.sysroot, sysroot);
        assert_eq!(probes(), 2, "-vV and --print sysroot");
        // cargo's compiles, and the compiles of a build script.
        resolve("/t/debug/deps:/toolchain/lib").await;
        resolve("/t/debug:/t/debug/deps:/toolchain/lib/rustlib/x/lib:/toolchain/lib").await;
        assert_eq!(probes(), 2);
        // A directory with another rustc driver library in front: probed again.
        resolve("/other-toolchain/lib:/toolchain/lib").await;
        assert_eq!(probes(), 4);
        // The probe ran with the request's own variable, not the key's list.
        let last = mock.calls().pop().unwrap();
        assert_eq!(
            last.env,
            env(&[
                ("LD_LIBRARY_PATH", "/other-toolchain/lib:/toolchain/lib"),
                ("PATH", "/usr/bin")
            ])
        );
    }

    #[tokio::test]
    async fn the_sysroot_hashed_ahead_is_what_the_first_compile_gets() {
        let dir = tempfile::tempdir().unwrap();
        let host = "x86_64-unknown-linux-gnu";
        let lib = dir.path().join("lib/rustlib").join(host).join("lib");
        std::fs::create_dir_all(&lib).unwrap();
        std::fs::write(lib.join("libstd-1.rlib"), b"std").unwrap();
        let toolchain = Toolchain::for_tests("rustc 1.0.0", host, dir.path());
        let hashes = Arc::new(FileHashes::default());
        let before = Toolchains::default()
            .libs_digest(&toolchain, host, hashes.clone())
            .await
            .unwrap();

        let toolchains = Toolchains::default();
        toolchains
            .prewarm_libs(&toolchain, hashes.clone())
            .await
            .unwrap();
        // Worked out ahead: the compile gets that answer, not a fresh look at the files.
        std::fs::remove_file(lib.join("libstd-1.rlib")).unwrap();
        let after = toolchains
            .libs_digest(&toolchain, host, hashes.clone())
            .await
            .unwrap();
        assert_eq!(after, before);
        let fresh = Toolchains::default()
            .libs_digest(&toolchain, host, hashes)
            .await
            .unwrap();
        assert_ne!(fresh, before);
    }
}
