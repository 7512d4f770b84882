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
    /// Whether each compiler (by identity digest) takes `__DATE__`/`__TIME__` from
    /// `SOURCE_DATE_EPOCH`.
    fixed_dates: Memo<[u8; 32], bool>,
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

impl IdentityCache {
    /// Whether `identity` expands `__DATE__` and `__TIME__` from `SOURCE_DATE_EPOCH`
    /// (gcc 7 and later; clang from the release that added it): found by preprocessing
    /// them with the variable set to 0, not by version number; probed once per compiler.
    /// The probe's source is written in `probe_dir`; without one the answer is false.
    pub async fn honours_source_date_epoch(
        &self,
        launcher: &Launcher,
        compiler: &Path,
        env: &[(OsString, OsString)],
        identity: &Identity,
        probe_dir: Option<&Path>,
    ) -> io::Result<bool> {
        let Some(dir) = probe_dir else {
            return Ok(false);
        };
        let mut env = helper_env(env, IDENTITY_VARS);
        env.retain(|(name, _)| name != "SOURCE_DATE_EPOCH");
        env.push(("SOURCE_DATE_EPOCH".into(), "0".into()));
        self.fixed_dates
            .get(
                &identity.digest,
                true,
                |_| true,
                || async {
                    // One file per compiler: probes of two compilers may run at once.
                    let hex: String = identity.digest[..8]
                        .iter()
                        .map(|b| format!("{b:02x}"))
                        .collect();
                    let source = dir.join(format!("source-date-epoch-{hex}.c"));
                    std::fs::write(&source, "__DATE__ __TIME__\n")?;
                    let mut spec = CommandSpec::new(compiler, "/");
                    spec.args = vec!["-E".into(), "-P".into(), source.into_os_string()];
                    spec.env = env.clone();
                    let out = launcher.run_probe(spec).await?;
                    let text = String::from_utf8_lossy(&out.stdout);
                    Ok(out.exit.success() && text.contains("\"Jan  1 1970\" \"00:00:00\""))
                },
            )
            .await
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
mod tests;
