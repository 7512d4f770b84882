//! The identity of the linker that a linked crate type (bin, proc-macro, dylib, cdylib)
//! goes through, and of the inputs it always pulls in.
//!
//! The linker is `-C linker` or `cc`. Its identity covers the driver (digest and
//! `--version`), the `ld` it drives, and the implicit inputs: crt objects, libc, libgcc and
//! friends as `cc -print-file-name=…` names them, by content. Probed once per linker file.

use std::ffi::{OsStr, OsString};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::compiler::file_hashes::FileHashes;
use crate::compiler::loader::LoadedObjects;
use crate::compiler::stamp::{FileStamp, Memo};
use crate::process::{CommandSpec, Launcher, helper_env};

/// Files every link on Linux may read without naming them.
pub(super) const IMPLICIT_INPUTS: &[&str] = &[
    "crt1.o",
    "Scrt1.o",
    "crti.o",
    "crtn.o",
    "crtbegin.o",
    "crtbeginS.o",
    "crtend.o",
    "crtendS.o",
    "libc.so",
    "libc.so.6",
    "libc_nonshared.a",
    "libgcc.a",
    "libgcc_eh.a",
    "libgcc_s.so",
    "libgcc_s.so.1",
    "libm.so",
    "libm.so.6",
    "libpthread.so.0",
    "libdl.so.2",
    "librt.so.1",
    "libutil.so.1",
    "ld-linux-x86-64.so.2",
];

/// A program by path and stamp, and the environment of its probes as a key: [`LINKER_VARS`]
/// and what starts it ([`LoadedObjects::key_env`]).
type ProgramKey = (PathBuf, FileStamp, Vec<(OsString, OsString)>);

/// Variables that change what the driver links in (`-print-file-name`, `-print-prog-name`).
const LINKER_VARS: &[&str] = &["GCC_EXEC_PREFIX", "COMPILER_PATH", "LIBRARY_PATH"];

/// How many `-print-file-name` probes run at once: the driver answers one name per run
/// (about 2 ms each, 22 names), and the first link of a build waits for them all.
const PROBE_LANES: usize = 4;

/// Linker identities, shared by clones.
#[derive(Default, Clone)]
pub struct Linkers {
    probes: Arc<Probes>,
}

#[derive(Default)]
struct Probes {
    /// What the driver answers alone, by the driver.
    drivers: Memo<ProgramKey, Arc<Driver>>,
    /// The whole identity, by the driver and the `ld` it drives (whose libraries an
    /// `LD_LIBRARY_PATH` could change apart from the driver's).
    digests: Memo<(ProgramKey, Option<ProgramKey>), [u8; 32]>,
    loaded: LoadedObjects,
}

/// A driver's own answers: `--version`, the `ld` it runs (`-print-prog-name=ld`, found
/// as a shell would) and the implicit inputs it finds (`-print-file-name`).
struct Driver {
    version: Vec<u8>,
    ld: Option<PathBuf>,
    inputs: Vec<PathBuf>,
}

/// Finds `name` the way a shell would: as a path if it has a slash, else on PATH.
pub fn find_program(name: &OsStr, env: &[(OsString, OsString)], cwd: &Path) -> Option<PathBuf> {
    let name_path = Path::new(name);
    if name_path.components().count() > 1 {
        let path = cwd.join(name_path);
        return path.is_file().then_some(path);
    }
    let search = env
        .iter()
        .rev()
        .find(|(k, _)| k == "PATH")
        .map(|(_, v)| v.clone())?;
    std::env::split_paths(&search)
        .map(|dir| cwd.join(dir).join(name))
        .find(|p| p.is_file())
}

impl Linkers {
    /// The digest of `linker` and everything it links in implicitly. Probed once per
    /// driver file and environment that changes it: `LD_LIBRARY_PATH` counts through the
    /// libraries it makes the driver and its `ld` load, so cargo's compiles, its probes and
    /// build scripts' compiles share one probe.
    pub async fn digest(
        &self,
        launcher: &Launcher,
        linker: &Path,
        env: &[(OsString, OsString)],
        cwd: &Path,
        hashes: Arc<FileHashes>,
    ) -> io::Result<[u8; 32]> {
        let probes = &self.probes;
        let run_env = helper_env(env, LINKER_VARS);
        let driver_key = probes.key(launcher, linker, &run_env).await?;
        let settled = driver_key.1.settled();
        // An `ld` removed since (a binutils upgrade) means asking the driver again.
        let ld_exists = |driver: &Arc<Driver>| driver.ld.as_ref().is_none_or(|ld| ld.is_file());
        let driver = probes
            .drivers
            .get(&driver_key, settled, ld_exists, || async {
                probe_driver(launcher, linker, &run_env, cwd)
                    .await
                    .map(Arc::new)
            })
            .await?;
        let ld_key = match &driver.ld {
            Some(ld) => Some(probes.key(launcher, ld, &run_env).await?),
            None => None,
        };
        let settled = settled && ld_key.as_ref().is_none_or(|(_, stamp, _)| stamp.settled());
        let key = (driver_key, ld_key);
        probes
            .digests
            .get(
                &key,
                settled,
                |_| true,
                || identity(launcher, linker, &driver, &run_env, cwd, hashes.clone()),
            )
            .await
    }

    /// Starts working out the [`digest`](Self::digest) of the default linker (`cc` on
    /// the request's PATH) in the background. cargo asks its wrapper for `rustc -vV` and a
    /// `--print` probe before a build's first compile, and the first compile that links
    /// (a build script, usually early on the build's longest path) would otherwise wait for
    /// about 25 runs of the driver. A build that links with another linker wastes the
    /// runs, at a moment the build leaves the cores idle.
    pub fn prewarm(
        &self,
        launcher: &Launcher,
        env: &[(OsString, OsString)],
        cwd: &Path,
        hashes: Arc<FileHashes>,
    ) {
        let Some(linker) = find_program(OsStr::new("cc"), env, cwd) else {
            return;
        };
        let (linkers, launcher, env, cwd) =
            (self.clone(), launcher.clone(), env.to_vec(), cwd.to_owned());
        tokio::spawn(async move {
            if let Err(e) = linkers.digest(&launcher, &linker, &env, &cwd, hashes).await {
                tracing::debug!("probing the linker {} ahead failed: {e}", linker.display());
            }
        });
    }
}

impl Probes {
    async fn key(
        &self,
        launcher: &Launcher,
        program: &Path,
        run_env: &[(OsString, OsString)],
    ) -> io::Result<ProgramKey> {
        let stamp = FileStamp::read(program)?;
        let env = self.loaded.key_env(launcher, program, stamp, run_env).await;
        Ok((program.to_owned(), stamp, env))
    }
}

async fn probe_driver(
    launcher: &Launcher,
    linker: &Path,
    env: &[(OsString, OsString)],
    cwd: &Path,
) -> io::Result<Driver> {
    let version = run(launcher, linker, "--version", env, cwd).await?;
    let ld = run(launcher, linker, "-print-prog-name=ld", env, cwd).await?;
    let ld = String::from_utf8_lossy(&ld.stdout).trim().to_owned();
    let ld = (!ld.is_empty())
        .then(|| find_program(OsStr::new(&ld), env, cwd))
        .flatten();
    Ok(Driver {
        version: version.stdout,
        ld,
        inputs: implicit_inputs(launcher, linker, env, cwd).await?,
    })
}

/// The identity digest: the driver's and `ld`'s `--version` and the content of the
/// driver, `ld` and the implicit inputs.
async fn identity(
    launcher: &Launcher,
    linker: &Path,
    driver: &Driver,
    env: &[(OsString, OsString)],
    cwd: &Path,
    hashes: Arc<FileHashes>,
) -> io::Result<[u8; 32]> {
    let mut hasher = blake3::Hasher::new();
    hasher.update(b"cachet linker identity v1\0");
    hasher.update(&driver.version);
    let mut files: Vec<PathBuf> = vec![linker.to_owned()];
    if let Some(ld) = &driver.ld {
        hasher.update(&run(launcher, ld, "--version", env, cwd).await?.stdout);
        files.push(ld.clone());
    }
    files.extend(driver.inputs.iter().cloned());
    let digests = tokio::task::spawn_blocking(move || {
        files
            .into_iter()
            .map(|f| Ok((f.clone(), hashes.hash(&f)?)))
            .collect::<io::Result<Vec<_>>>()
    })
    .await
    .map_err(io::Error::other)??;
    for (path, digest) in digests {
        hasher.update(path.as_os_str().as_encoded_bytes());
        hasher.update(digest.as_bytes());
    }
    Ok(*hasher.finalize().as_bytes())
}

/// One probe run of `program` with one argument.
async fn run(
    launcher: &Launcher,
    program: &Path,
    arg: &str,
    env: &[(OsString, OsString)],
    cwd: &Path,
) -> io::Result<crate::process::ProcessOutput> {
    let mut spec = CommandSpec::new(program, cwd);
    spec.args = vec![arg.into()];
    spec.env = env.to_vec();
    launcher.run_probe(spec).await
}

/// The files of [`IMPLICIT_INPUTS`] that `linker` finds, in that order, asked in
/// [`PROBE_LANES`] lanes at once.
async fn implicit_inputs(
    launcher: &Launcher,
    linker: &Path,
    env: &[(OsString, OsString)],
    cwd: &Path,
) -> io::Result<Vec<PathBuf>> {
    let mut lanes = tokio::task::JoinSet::new();
    let per_lane = IMPLICIT_INPUTS.len().div_ceil(PROBE_LANES);
    for (lane, names) in IMPLICIT_INPUTS.chunks(per_lane).enumerate() {
        let (launcher, linker, env, cwd) = (
            launcher.clone(),
            linker.to_owned(),
            env.to_vec(),
            cwd.to_owned(),
        );
        lanes.spawn(async move {
            let mut found = Vec::new();
            for name in names {
                let mut spec = CommandSpec::new(&linker, &cwd);
                spec.args = vec![format!("-print-file-name={name}").into()];
                spec.env = env.clone();
                let out = launcher.run_probe(spec).await?;
                let path = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
                // A name the driver cannot find comes back bare: nothing to hash.
                if path.is_absolute() && path.is_file() {
                    found.push(path);
                }
            }
            io::Result::Ok((lane, found))
        });
    }
    let mut by_lane = Vec::new();
    while let Some(joined) = lanes.join_next().await {
        by_lane.push(joined.map_err(io::Error::other)??);
    }
    by_lane.sort_by_key(|(lane, _)| *lane);
    Ok(by_lane.into_iter().flat_map(|(_, found)| found).collect())
}

/// A link argument that makes the compile uncacheable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UnkeyedLinkArg {
    /// `-fuse-ld`, `--ld-path`, `-B`: the linker's identity is no longer the one probed.
    #[error("link arg {0} picks another linker")]
    PicksLinker(String),
    /// It names a path that is neither a file nor a directory.
    #[error("link arg {0} names an input that cannot be identified")]
    UnknownInput(String),
}

/// What a link argument tells about inputs: the files it names (to hash), or why it makes
/// the compile uncacheable.
pub fn link_arg_inputs(arg: &str, cwd: &Path) -> Result<Vec<PathBuf>, UnkeyedLinkArg> {
    let pieces: Vec<&str> = match arg.strip_prefix("-Wl,") {
        Some(rest) => rest.split(',').collect(),
        None => vec![arg],
    };
    let mut files = Vec::new();
    let mut previous = "";
    for piece in pieces {
        let after = std::mem::replace(&mut previous, piece);
        if piece.starts_with("-fuse-ld")
            || piece.starts_with("--ld-path")
            || piece.starts_with("-B")
        {
            return Err(UnkeyedLinkArg::PicksLinker(arg.to_owned()));
        }
        // Values the linker records or matches, not files it reads.
        if matches!(
            after,
            "-rpath" | "-R" | "-soname" | "-h" | "-z" | "-e" | "--entry"
        ) || piece.starts_with("-L")
            || piece.starts_with("-rpath=")
            || piece.starts_with("--rpath=")
            || piece.starts_with("-soname=")
        {
            continue;
        }
        let value = piece.split_once('=').map_or(piece, |(_, v)| v);
        let looks_like_path = value.contains('/')
            || [".o", ".a", ".so", ".ld", ".lds", ".x", ".def", ".map"]
                .iter()
                .any(|ext| value.ends_with(ext));
        if !looks_like_path || value.starts_with("-l") {
            continue;
        }
        let path = cwd.join(value);
        if path.is_file() {
            files.push(path);
        } else if path.is_dir() {
            // A search directory: what it holds is named elsewhere (-l) or not at all.
            continue;
        } else {
            return Err(UnkeyedLinkArg::UnknownInput(arg.to_owned()));
        }
    }
    Ok(files)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::process::mock::{MockRunner, output};

    /// The driver's answers arrive in any order (the lanes run at once); the files come
    /// back in [`IMPLICIT_INPUTS`] order all the same, so the digest does not change.
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn implicit_inputs_are_asked_at_once_and_kept_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let lib = dir.path().join("lib");
        std::fs::create_dir_all(&lib).unwrap();
        // Every other name exists; the driver prints a bare name for the others.
        let present: Vec<PathBuf> = IMPLICIT_INPUTS
            .iter()
            .step_by(2)
            .map(|name| lib.join(name))
            .collect();
        for path in &present {
            std::fs::write(path, "x").unwrap();
        }
        let answers = lib.clone();
        let mock = MockRunner::new(move |spec| {
            let arg = spec.args[0].to_string_lossy().into_owned();
            let name = arg.strip_prefix("-print-file-name=").unwrap();
            let index = IMPLICIT_INPUTS.iter().position(|n| *n == name).unwrap();
            // The first names answer last.
            std::thread::sleep(std::time::Duration::from_millis(
                (IMPLICIT_INPUTS.len() - index) as u64,
            ));
            let path = answers.join(name);
            let printed = if path.exists() {
                path.display().to_string()
            } else {
                name.to_owned()
            };
            Ok(output(0, format!("{printed}\n").as_bytes(), b""))
        });
        let launcher = Launcher::new(
            Arc::new(mock.clone()),
            cachet_jobserver::Jobserver::new(2).unwrap(),
        );
        let env = vec![("LIBRARY_PATH".into(), "/x".into())];
        let found = implicit_inputs(&launcher, Path::new("/usr/bin/cc"), &env, dir.path())
            .await
            .unwrap();
        assert_eq!(found, present);
        let calls = mock.calls();
        assert_eq!(calls.len(), IMPLICIT_INPUTS.len());
        for call in &calls {
            assert_eq!(call.program, Path::new("/usr/bin/cc"));
            assert_eq!(call.cwd, dir.path());
            assert_eq!(call.env, env);
            assert_eq!(call.args.len(), 1);
        }
    }

    /// The `ld` a driver named, removed since (a binutils upgrade): the driver is asked
    /// again, rather than every link failing to stamp a file that is gone.
    #[tokio::test]
    async fn an_ld_removed_since_its_probe_means_asking_again() {
        let dir = tempfile::tempdir().unwrap();
        let (cc, ld) = (dir.path().join("cc"), dir.path().join("ld"));
        let old = std::time::SystemTime::now() - std::time::Duration::from_secs(60);
        for (path, text) in [(&cc, "#!/bin/false cc\n"), (&ld, "#!/bin/false ld\n")] {
            std::fs::write(path, text).unwrap();
            crate::compiler::stamp::tests::set_mtime(path, old);
        }
        let named = ld.clone();
        let mock = MockRunner::new(move |spec| {
            Ok(match spec.args[0].to_str().unwrap() {
                "-print-prog-name=ld" => {
                    output(0, format!("{}\n", named.display()).as_bytes(), b"")
                }
                "--version" => output(0, b"1.0\n", b""),
                _ => output(0, b"", b""),
            })
        });
        let launcher = Launcher::new(
            Arc::new(mock.clone()),
            cachet_jobserver::Jobserver::new(2).unwrap(),
        );
        let linkers = Linkers::default();
        let hashes = Arc::new(FileHashes::default());
        let digest = || linkers.digest(&launcher, &cc, &[], dir.path(), hashes.clone());
        let asked = || {
            mock.calls()
                .iter()
                .filter(|c| c.args[0] == "-print-prog-name=ld")
                .count()
        };
        let with_ld = digest().await.unwrap();
        assert_eq!(digest().await.unwrap(), with_ld);
        assert_eq!(asked(), 1);
        std::fs::remove_file(&ld).unwrap();
        let without = digest().await.unwrap();
        assert_ne!(without, with_ld);
        assert_eq!(asked(), 2);
    }

    #[test]
    fn link_args_name_inputs_or_refuse() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("script.ld"), "SECTIONS {}").unwrap();
        let cwd = dir.path();
        assert_eq!(link_arg_inputs("-Wl,--as-needed", cwd), Ok(vec![]));
        assert_eq!(link_arg_inputs("-nostartfiles", cwd), Ok(vec![]));
        assert_eq!(
            link_arg_inputs("-Wl,-T,script.ld", cwd),
            Ok(vec![cwd.join("script.ld")])
        );
        assert_eq!(
            link_arg_inputs(&format!("-L{}", cwd.display()), cwd),
            Ok(vec![])
        );
        assert_eq!(link_arg_inputs("-Wl,-rpath,/opt/lib", cwd), Ok(vec![]));
        assert!(link_arg_inputs("missing.o", cwd).is_err());
        assert!(link_arg_inputs("-fuse-ld=lld", cwd).is_err());
        assert!(link_arg_inputs("-Wl,--version-script=/nonexistent/v.map", cwd).is_err());
    }
}
