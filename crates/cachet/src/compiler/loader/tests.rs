use std::sync::Arc;

use super::*;
use crate::process::mock::{MockRunner, output};
use crate::process::{ProcessRunner, TokioRunner};

fn env(pairs: &[(&str, &str)]) -> Vec<(OsString, OsString)> {
    pairs.iter().map(|(k, v)| (k.into(), v.into())).collect()
}

fn launcher(runner: Arc<dyn ProcessRunner>) -> Launcher {
    Launcher::new(runner, cachet_jobserver::Jobserver::new(2).unwrap())
}

/// This test binary: a dynamically linked ELF executable run by glibc's loader.
fn dynamic_program() -> PathBuf {
    std::env::current_exe().unwrap()
}

/// What glibc's loader prints for a program like rustc (addresses differ at every run).
fn trace_output(driver: &str, base: u64) -> Vec<u8> {
    format!(
        "\tlinux-vdso.so.1 (0x{:x})\n\
         \tlibrustc_driver.so => {driver} (0x{:x})\n\
         \tlibc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x{:x})\n\
         \t/lib64/ld-linux-x86-64.so.2 (0x{:x})\n",
        base,
        base + 0x1000,
        base + 0x2000,
        base + 0x3000
    )
    .into_bytes()
}

#[tokio::test]
async fn library_paths_that_load_the_same_objects_give_one_key() {
    let program = dynamic_program();
    let stamp = FileStamp::read(&program).unwrap();
    let mock = MockRunner::new(|spec| {
        let path = spec.env_var("LD_LIBRARY_PATH").unwrap().to_string_lossy();
        // The other toolchain's directory holds another driver library.
        let driver = if path.starts_with("/other") {
            "/other/lib/librustc_driver.so"
        } else {
            "/toolchain/lib/librustc_driver.so"
        };
        Ok(output(
            0,
            &trace_output(driver, 0x7f00_0000 + path.len() as u64),
            b"",
        ))
    });
    let launcher = launcher(Arc::new(mock.clone()));
    let loaded = LoadedObjects::default();
    let probe_env = env(&[("PATH", "/usr/bin"), ("LD_LIBRARY_PATH", "/toolchain/lib")]);
    let compile_env = env(&[
        ("PATH", "/usr/bin"),
        ("LD_LIBRARY_PATH", "/work/target/debug/deps:/toolchain/lib"),
    ]);
    let a = loaded.key_env(&launcher, &program, stamp, &probe_env).await;
    let b = loaded
        .key_env(&launcher, &program, stamp, &compile_env)
        .await;
    assert_eq!(a, b);
    let expected_objects = "linux-vdso.so.1\n\
        librustc_driver.so => /toolchain/lib/librustc_driver.so\n\
        libc.so.6 => /lib/x86_64-linux-gnu/libc.so.6\n\
        /lib64/ld-linux-x86-64.so.2\n";
    assert_eq!(
        a,
        env(&[("PATH", "/usr/bin"), (LOADED_OBJECTS_KEY, expected_objects)])
    );

    // A directory that does hold a library the program loads makes another key.
    let other = env(&[
        ("PATH", "/usr/bin"),
        ("LD_LIBRARY_PATH", "/other/lib:/toolchain/lib"),
    ]);
    assert_ne!(loaded.key_env(&launcher, &program, stamp, &other).await, a);

    // One trace per value, each exactly: the program, no arguments, at `/`, the helper
    // environment and the loader's switch.
    loaded
        .key_env(&launcher, &program, stamp, &compile_env)
        .await;
    let calls = mock.calls();
    assert_eq!(calls.len(), 3);
    for (call, env) in calls.iter().zip([&probe_env, &compile_env, &other]) {
        assert_eq!(call.program, program);
        assert!(call.args.is_empty());
        assert_eq!(call.cwd, Path::new("/"));
        let mut expected = env.clone();
        expected.push(("LD_TRACE_LOADED_OBJECTS".into(), "1".into()));
        assert_eq!(call.env, expected);
    }
}

#[tokio::test]
async fn where_the_trace_does_not_apply_the_key_keeps_the_variable() {
    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("rustc");
    std::fs::write(&script, "#!/bin/sh\nexec /somewhere/rustc \"$@\"\n").unwrap();
    let program = dynamic_program();
    let mock = MockRunner::new(|spec| {
        if spec.program.ends_with("failing") {
            return Ok(output(127, b"", b"error while loading shared libraries"));
        }
        if spec.program.ends_with("ran") {
            // A loader that ignored the switch: the program ran, and said something.
            return Ok(output(0, b"Usage: rustc [OPTIONS] INPUT\n", b""));
        }
        Ok(output(
            0,
            &trace_output("/toolchain/lib/librustc_driver.so", 0x7f00_0000),
            b"",
        ))
    });
    let launcher = launcher(Arc::new(mock.clone()));
    let loaded = LoadedObjects::default();
    let check = |env: Vec<(OsString, OsString)>, program: PathBuf| {
        let (loaded, launcher) = (&loaded, &launcher);
        async move {
            let stamp = FileStamp::read(&program).unwrap();
            assert_eq!(loaded.key_env(launcher, &program, stamp, &env).await, env);
        }
    };
    // No LD_LIBRARY_PATH: nothing to trace.
    check(env(&[("PATH", "/usr/bin")]), program.clone()).await;
    // A relative or empty entry resolves against the cwd.
    for value in [
        "lib:/toolchain/lib",
        "/toolchain/lib:",
        "::/toolchain/lib",
        "",
    ] {
        check(env(&[("LD_LIBRARY_PATH", value)]), program.clone()).await;
    }
    // A script: the loader would trace its interpreter, not what it runs.
    check(
        env(&[("LD_LIBRARY_PATH", "/toolchain/lib")]),
        script.clone(),
    )
    .await;
    // A launcher: what it runs loads its own libraries.
    let ccache = dir.path().join("ccache");
    std::os::unix::fs::symlink(&program, &ccache).unwrap();
    let launched = dir.path().join("cc");
    std::os::unix::fs::symlink(&ccache, &launched).unwrap();
    check(env(&[("LD_LIBRARY_PATH", "/toolchain/lib")]), launched).await;
    // Setuid: the loader ignores the variable there.
    let setuid = dir.path().join("setuid-program");
    std::fs::copy(&program, &setuid).unwrap();
    std::fs::set_permissions(&setuid, std::fs::Permissions::from_mode(0o4755)).unwrap();
    check(env(&[("LD_LIBRARY_PATH", "/toolchain/lib")]), setuid).await;
    assert!(mock.calls().is_empty(), "{:?}", mock.calls());

    // A trace that fails.
    let failing = dir.path().join("failing");
    std::fs::copy(&program, &failing).unwrap();
    check(env(&[("LD_LIBRARY_PATH", "/toolchain/lib")]), failing).await;
    assert_eq!(mock.calls().len(), 1);
    // Output that is not a trace.
    let ran = dir.path().join("ran");
    std::fs::copy(&program, &ran).unwrap();
    check(env(&[("LD_LIBRARY_PATH", "/toolchain/lib")]), ran).await;
    assert_eq!(mock.calls().len(), 2);
}

/// The real loader: a directory holding only files the program does not load changes
/// nothing; one holding a copy of a library it loads changes the key.
#[cfg(target_env = "gnu")]
#[tokio::test]
async fn the_real_loader_tells_which_directories_matter() {
    let program = dynamic_program();
    let stamp = FileStamp::read(&program).unwrap();
    let launcher = launcher(Arc::new(TokioRunner));
    let loaded = LoadedObjects::default();
    let base = loaded
        .key_env(
            &launcher,
            &program,
            stamp,
            &env(&[("LD_LIBRARY_PATH", "/nonexistent")]),
        )
        .await;
    let objects = base
        .iter()
        .find(|(k, _)| k == LOADED_OBJECTS_KEY)
        .map(|(_, v)| v.to_string_lossy().into_owned())
        .expect("the loader traced this test's binary");
    assert!(objects.contains("libc.so.6 => /"), "{objects}");
    assert!(!objects.contains("(0x"), "{objects}");

    let dir = tempfile::tempdir().unwrap();
    let unrelated = dir.path().join("unrelated");
    std::fs::create_dir(&unrelated).unwrap();
    std::fs::write(unrelated.join("libserde_derive-0123.so"), b"not loaded").unwrap();
    let with_unrelated = env(&[(
        "LD_LIBRARY_PATH",
        &format!("{}:/nonexistent", unrelated.display()),
    )]);
    assert_eq!(
        loaded
            .key_env(&launcher, &program, stamp, &with_unrelated)
            .await,
        base
    );

    // A copy of a library the program loads, found first.
    let line = objects
        .lines()
        .find(|l| l.starts_with("libc.so.6 => "))
        .unwrap();
    let libc = line.split(" => ").nth(1).unwrap();
    let shadow = dir.path().join("shadow");
    std::fs::create_dir(&shadow).unwrap();
    std::fs::copy(libc, shadow.join("libc.so.6")).unwrap();
    let shadowed = env(&[("LD_LIBRARY_PATH", shadow.to_str().unwrap())]);
    let key = loaded.key_env(&launcher, &program, stamp, &shadowed).await;
    assert_ne!(key, base);
    let text = format!("{key:?}");
    assert!(text.contains(shadow.to_str().unwrap()), "{text}");
}

#[test]
fn only_the_loaders_shapes_are_a_trace() {
    assert!(objects(
        b"\tlinux-vdso.so.1 (0x00007ffd8a5f2000)\n\tlibfoo.so => not found\n\
          \tlibc.so.6 => /lib/libc.so.6 (0x00007f14c10aa000)\n\t/lib64/ld-linux-x86-64.so.2 (0x7f)\n"
    )
    .is_some());
    for not_a_trace in [
        &b""[..],
        b"\n\n",
        b"Usage: rustc [OPTIONS] INPUT\n",
        b"libc.so.6 => /lib/libc.so.6 (0x00007f14c10aa000)\nrustc 1.95.0\n",
        b"x (0x",
        b"x (0x)",
        b"x (0xzz)",
    ] {
        assert!(
            objects(not_a_trace).is_none(),
            "{}",
            String::from_utf8_lossy(not_a_trace)
        );
    }
}

#[test]
fn trace_lines_lose_their_addresses_only() {
    let out = objects(
        b"\tlinux-vdso.so.1 (0x00007ffd8a5f2000)\n\
          \tlibfoo.so => not found\n\
          \tlib (0x1).so => /odd/lib (0x1).so (0x00007f14c10aa000)\n\n",
    )
    .unwrap();
    assert_eq!(
        out,
        b"linux-vdso.so.1\nlibfoo.so => not found\nlib (0x1).so => /odd/lib (0x1).so\n"
    );
}
