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
        max_rss: None,
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
