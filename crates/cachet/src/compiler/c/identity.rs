//! Which compiler a path is, found by probing rather than by its name, and remembered.

use std::ffi::{OsStr, OsString};
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use std::time::{Duration, Instant};

use super::args::Family;
use crate::compiler::file_hashes::hash_file;
use crate::compiler::stamp::{FileStamp, Memo};
use crate::process::Exit;
use crate::process::{CommandSpec, Launcher, helper_env};

/// A compiler's identity: its family and a digest of everything that makes it this compiler.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    pub family: Family,
    /// `__VERSION__` as the compiler reports it.
    pub version: String,
    /// blake3 over the binary's bytes and the predefined macros (version, target, defaults).
    pub digest: [u8; 32],
}

/// Variables that change a gcc or clang driver's identity (which cc1 it runs, its
/// predefined macros); the probe gets only these (and what starts it), and its answer is
/// remembered under their values.
const IDENTITY_VARS: &[&str] = &[
    "GCC_EXEC_PREFIX",
    "COMPILER_PATH",
    "CCC_OVERRIDE_OPTIONS",
    "QA_OVERRIDE_GCC3_OPTIONS",
];

/// How long "not gcc or clang" from a probe that exited with an error is believed: a real
/// gcc whose cc1 could not start (a full process table) exits 1 too, and must not be
/// passed through for the server's whole life.
const FAILED_PROBE_TTL: Duration = Duration::from_secs(60);

/// What a probe found, and until when it holds.
#[derive(Debug, Clone)]
struct Verdict {
    identity: Option<Identity>,
    /// None: for as long as the file is unchanged.
    expires: Option<Instant>,
}

type Env = Vec<(OsString, OsString)>;
/// A compiler's identity digest and its native flags, as written.
type NativeKey = ([u8; 32], Vec<OsString>);

/// Identities by file and identity variables, probed once even when many requests arrive
/// together; and what `-march=native` and its kin resolve to, per compiler.
#[derive(Default)]
pub struct IdentityCache {
    /// By the compiler's path and stamp (a rebuilt or replaced compiler is probed again).
    verdicts: Memo<(PathBuf, FileStamp, Env), Verdict>,
    native: Memo<NativeKey, [u8; 32]>,
}

impl IdentityCache {
    /// `Ok(None)` means "not a compiler we cache". That answer is remembered only after a
    /// normal exit: for the file's life when the output parsed and showed another
    /// compiler, for [`FAILED_PROBE_TTL`] after an error exit. A signal, a spawn error or
    /// output that does not parse is an `Err`, and the next request probes again.
    pub async fn identify(
        &self,
        launcher: &Launcher,
        compiler: &Path,
        env: &[(OsString, OsString)],
    ) -> io::Result<Option<Identity>> {
        let env = helper_env(env, IDENTITY_VARS);
        let stamp = FileStamp::read(compiler)?;
        let key = (compiler.to_owned(), stamp, env);
        let verdict = self
            .verdicts
            .get(
                &key,
                stamp.settled(),
                |v| v.expires.is_none_or(|at| Instant::now() < at),
                || probe(launcher, compiler, &key.2),
            )
            .await?;
        Ok(verdict.identity)
    }

    /// `identity` with what the native CPU flags among `args` resolve to folded into its
    /// digest: `-march=native` is another target on another machine, so two CPUs sharing
    /// a cache never serve each other's code. Resolved once per compiler and flag set from
    /// the driver's `-###` output (the cc1 command line names the CPU and its features).
    pub async fn with_native(
        &self,
        launcher: &Launcher,
        compiler: &Path,
        env: &[(OsString, OsString)],
        identity: Identity,
        args: &[OsString],
    ) -> io::Result<Identity> {
        let flags: Vec<OsString> = args.iter().filter(|a| is_native_flag(a)).cloned().collect();
        if flags.is_empty() {
            return Ok(identity);
        }
        let env = helper_env(env, IDENTITY_VARS);
        let key = (identity.digest, flags.clone());
        let resolved = self
            .native
            .get(
                &key,
                true,
                |_| true,
                || async {
                    let mut spec = CommandSpec::new(compiler, "/");
                    spec.args = ["-###", "-E", "-x", "c", "-"].map(Into::into).to_vec();
                    spec.args.extend(flags.iter().cloned());
                    spec.env = env.clone();
                    let out = launcher.run_probe(spec).await?;
                    if !out.exit.success() {
                        return Err(io::Error::other(
                            "the driver refused -### with native flags",
                        ));
                    }
                    Ok(*blake3::hash(&out.stderr).as_bytes())
                },
            )
            .await?;
        let mut hasher = blake3::Hasher::new();
        hasher.update(&identity.digest);
        hasher.update(b"native");
        hasher.update(&resolved);
        Ok(Identity {
            digest: *hasher.finalize().as_bytes(),
            ..identity
        })
    }
}

/// `-march=native`, `-mtune=native`, `-mcpu=native`: flags whose meaning is this machine.
pub fn is_native_flag(arg: &OsStr) -> bool {
    let bytes = arg.as_bytes();
    [&b"-march="[..], b"-mtune=", b"-mcpu="]
        .iter()
        .any(|prefix| bytes.strip_prefix(*prefix) == Some(b"native"))
}

async fn probe(launcher: &Launcher, compiler: &Path, env: &Env) -> io::Result<Verdict> {
    // At `/` and with only the identity variables: a helper run never writes into the
    // user's tree, and its answer depends on nothing but its key.
    let mut spec = CommandSpec::new(compiler, "/");
    spec.args = ["-dM", "-E", "-x", "c", "/dev/null"]
        .map(Into::into)
        .to_vec();
    spec.env = env.clone();
    let out = launcher.run_probe(spec).await?;
    match out.exit {
        Exit::Signal(signal) => {
            return Err(io::Error::other(format!(
                "the identity probe died of signal {signal}"
            )));
        }
        Exit::Code(0) => {}
        Exit::Code(_) => {
            return Ok(Verdict {
                identity: None,
                expires: Some(Instant::now() + FAILED_PROBE_TTL),
            });
        }
    }
    let macros = String::from_utf8_lossy(&out.stdout);
    if !macros.lines().all(|l| l.starts_with("#define ")) {
        return Err(io::Error::other(
            "the identity probe's output does not parse",
        ));
    }
    let defined = |name: &str| {
        macros
            .lines()
            .any(|l| l.starts_with(&format!("#define {name} ")))
    };
    let family = if defined("__clang__") {
        Family::Clang
    } else if defined("__GNUC__") {
        Family::Gcc
    } else {
        return Ok(Verdict {
            identity: None,
            expires: None,
        });
    };
    let version = macros
        .lines()
        .find_map(|l| l.strip_prefix("#define __VERSION__ "))
        .unwrap_or("unknown")
        .trim_matches('"')
        .to_owned();

    let path = compiler.to_owned();
    let binary = tokio::task::spawn_blocking(move || hash_file(&path))
        .await
        .map_err(io::Error::other)??;
    let mut hasher = blake3::Hasher::new();
    hasher.update(b"cachet compiler identity v1\0");
    hasher.update(binary.as_bytes());
    // Sorted so that an order change in the compiler's output is no new identity.
    let mut lines: Vec<&str> = macros.lines().collect();
    lines.sort_unstable();
    for line in lines {
        hasher.update(line.as_bytes());
        hasher.update(b"\n");
    }
    Ok(Verdict {
        identity: Some(Identity {
            family,
            version,
            digest: *hasher.finalize().as_bytes(),
        }),
        expires: None,
    })
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;
    use crate::process::ProcessOutput;
    use crate::process::mock::{MockRunner, output};

    const GCC_MACROS: &[u8] = b"#define __GNUC__ 12\n#define __VERSION__ \"12.2.0\"\n";

    fn env(pairs: &[(&str, &str)]) -> Env {
        pairs.iter().map(|(k, v)| (k.into(), v.into())).collect()
    }

    /// A launcher whose n-th child (from 0) answers `script(n)`.
    fn scripted(
        script: impl Fn(usize) -> io::Result<ProcessOutput> + Send + Sync + 'static,
    ) -> (Launcher, MockRunner, Arc<AtomicUsize>) {
        let calls = Arc::new(AtomicUsize::new(0));
        let counter = calls.clone();
        let mock = MockRunner::new(move |_| script(counter.fetch_add(1, Ordering::SeqCst)));
        let jobserver = cachet_jobserver::Jobserver::new(1).unwrap();
        (
            Launcher::new(Arc::new(mock.clone()), jobserver),
            mock,
            calls,
        )
    }

    /// A launcher whose children answer, call by call, from `answers` (the last repeats).
    fn answering(answers: Vec<ProcessOutput>) -> (Launcher, MockRunner, Arc<AtomicUsize>) {
        scripted(move |n| Ok(answers[n.min(answers.len() - 1)].clone()))
    }

    fn compiler() -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("gcc");
        std::fs::write(&path, b"not really gcc").unwrap();
        // Settled: what is probed from a file changed just now is not remembered.
        std::fs::File::options()
            .write(true)
            .open(&path)
            .unwrap()
            .set_modified(std::time::SystemTime::now() - Duration::from_secs(10))
            .unwrap();
        (dir, path)
    }

    #[tokio::test]
    async fn the_probe_gets_only_identity_variables_and_runs_at_the_root() {
        let (_dir, gcc) = compiler();
        let (launcher, mock, _) = answering(vec![output(0, GCC_MACROS, b"")]);
        let cache = IdentityCache::default();
        let request_env = env(&[
            ("DEPENDENCIES_OUTPUT", "one.d"),
            ("SUNPRO_DEPENDENCIES", "two.d"),
            ("PATH", "/usr/bin"),
            ("GCC_EXEC_PREFIX", "/opt/gcc/"),
            ("HOME", "/root"),
        ]);
        let found = cache.identify(&launcher, &gcc, &request_env).await.unwrap();
        assert_eq!(found.unwrap().family, Family::Gcc);
        let calls = mock.calls();
        assert_eq!(calls.len(), 1);
        assert_eq!(calls[0].program, gcc);
        assert_eq!(calls[0].cwd, Path::new("/"));
        assert_eq!(calls[0].args, ["-dM", "-E", "-x", "c", "/dev/null"]);
        assert_eq!(
            calls[0].env,
            env(&[("GCC_EXEC_PREFIX", "/opt/gcc/"), ("PATH", "/usr/bin")])
        );
        // Another identity variable is another identity; other variables are not.
        let mut other = request_env.clone();
        other.push(("HOME".into(), "/home/x".into()));
        cache.identify(&launcher, &gcc, &other).await.unwrap();
        assert_eq!(mock.calls().len(), 1);
        other.push(("GCC_EXEC_PREFIX".into(), "/elsewhere/".into()));
        cache.identify(&launcher, &gcc, &other).await.unwrap();
        assert_eq!(mock.calls().len(), 2);
    }

    #[tokio::test]
    async fn a_probe_killed_by_a_signal_is_asked_again() {
        let (_dir, gcc) = compiler();
        let killed = ProcessOutput {
            exit: Exit::Signal(9),
            stdout: vec![],
            stderr: vec![],
        };
        let (launcher, _, calls) = answering(vec![killed, output(0, GCC_MACROS, b"")]);
        let cache = IdentityCache::default();
        assert!(cache.identify(&launcher, &gcc, &[]).await.is_err());
        let found = cache.identify(&launcher, &gcc, &[]).await.unwrap();
        assert_eq!(found.unwrap().family, Family::Gcc);
        assert_eq!(calls.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn a_probe_that_could_not_spawn_is_asked_again() {
        let (_dir, gcc) = compiler();
        let (launcher, _, calls) = scripted(|n| match n {
            0 => Err(io::Error::from_raw_os_error(libc::EAGAIN)),
            1 => Err(io::Error::from_raw_os_error(libc::ETXTBSY)),
            _ => Ok(output(0, GCC_MACROS, b"")),
        });
        let cache = IdentityCache::default();
        assert!(cache.identify(&launcher, &gcc, &[]).await.is_err());
        assert!(cache.identify(&launcher, &gcc, &[]).await.is_err());
        assert!(
            cache
                .identify(&launcher, &gcc, &[])
                .await
                .unwrap()
                .is_some()
        );
        assert_eq!(calls.load(Ordering::SeqCst), 3);
    }

    #[tokio::test]
    async fn output_that_does_not_parse_is_asked_again() {
        let (_dir, gcc) = compiler();
        let garbage = output(0, b"\x7fELF garbage from a replaced /dev/null\n", b"");
        let (launcher, _, calls) = answering(vec![garbage, output(0, GCC_MACROS, b"")]);
        let cache = IdentityCache::default();
        assert!(cache.identify(&launcher, &gcc, &[]).await.is_err());
        assert!(
            cache
                .identify(&launcher, &gcc, &[])
                .await
                .unwrap()
                .is_some()
        );
        assert_eq!(calls.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn another_compiler_is_remembered_and_an_error_exit_only_for_a_while() {
        let (_dir, tool) = compiler();
        let (launcher, _, calls) = answering(vec![output(0, b"#define __STDC__ 1\n", b"")]);
        let cache = IdentityCache::default();
        for _ in 0..3 {
            assert!(
                cache
                    .identify(&launcher, &tool, &[])
                    .await
                    .unwrap()
                    .is_none()
            );
        }
        assert_eq!(calls.load(Ordering::SeqCst), 1);

        let (failing, _, _) = answering(vec![output(1, b"", b"error: no such flag -dM\n")]);
        let verdict = probe(&failing, &tool, &vec![]).await.unwrap();
        assert!(verdict.identity.is_none());
        assert!(
            verdict.expires.is_some(),
            "an error exit is not believed forever"
        );
    }

    #[tokio::test]
    async fn native_cpu_flags_key_what_the_driver_resolves_them_to() {
        let (_dir, gcc) = compiler();
        let base = Identity {
            family: Family::Gcc,
            version: "12".into(),
            digest: [7; 32],
        };
        let args: Vec<OsString> = ["-c", "t.c", "-O2", "-march=native"]
            .map(Into::into)
            .to_vec();
        let resolved_on = |cpu: &str| {
            let line = format!(" cc1 -E -quiet - \"-march={cpu}\" -mavx2\n");
            answering(vec![output(0, b"", line.as_bytes())])
        };
        let (zen, zen_mock, _) = resolved_on("znver3");
        let (sky, _, _) = resolved_on("skylake");
        let cache = IdentityCache::default();
        let on_zen = cache
            .with_native(&zen, &gcc, &[], base.clone(), &args)
            .await
            .unwrap();
        assert_ne!(on_zen.digest, base.digest);
        assert_eq!(
            zen_mock.calls()[0].args,
            ["-###", "-E", "-x", "c", "-", "-march=native"]
        );
        let on_sky = IdentityCache::default()
            .with_native(&sky, &gcc, &[], base.clone(), &args)
            .await
            .unwrap();
        assert_ne!(on_zen.digest, on_sky.digest);
        // Without a native flag nothing runs and nothing changes.
        let plain: Vec<OsString> = ["-c", "t.c", "-march=x86-64-v3"].map(Into::into).to_vec();
        let same = cache
            .with_native(&zen, &gcc, &[], base.clone(), &plain)
            .await
            .unwrap();
        assert_eq!(same, base);
        assert_eq!(zen_mock.calls().len(), 1);
    }
}
