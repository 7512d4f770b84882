//! The management commands and configuration, through the real binary.

mod common;

use std::process::{Child, Stdio};
use std::time::Duration;

use common::*;

#[test]
fn version_and_help() {
    let env = Env::new();
    let out = env.ok(&["--version"]);
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("cachet "));
    let out = env.ok(&["--help"]);
    let text = String::from_utf8_lossy(&out.stdout);
    for flag in [
        "--show-stats",
        "--zero-stats",
        "--start-server",
        "--stop-server",
        "--clear",
        "--cleanup",
    ] {
        assert!(text.contains(flag), "{flag} missing from --help");
    }
    let out = env.run(&["--no-such-flag"]);
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn stats_text_json_and_zero() {
    let env = Env::new().with_env("CACHET_JOBS", "3");
    env.write("a.c", "int a;\n");
    env.ok(&["gcc", "-c", "a.c"]);
    env.settle();
    let text = String::from_utf8_lossy(&env.ok(&["-s"]).stdout).into_owned();
    for row in [
        "Cache misses",
        "Jobserver tokens (N)",
        "Peak tokens held",
        "Token waits",
        "Token wait time",
        "Cache size",
        "Cache entries",
        "Server CPU time",
    ] {
        assert!(text.contains(row), "{row} missing:\n{text}");
    }
    let stats = env.stats();
    // gcc's driver, cc1 and as ran under the server and were reaped by it.
    let compilers_ms = stats["compilers_cpu_ms"].as_u64().unwrap();
    assert!(compilers_ms > 0, "{stats}");
    assert!(stats["server_cpu_ms"].as_u64().is_some(), "{stats}");
    assert_eq!(stats["jobserver"]["tokens"], 3);
    assert_eq!(stats["jobserver"]["peak_tokens_held"], 1);
    assert_eq!(stats["counters"]["cache_misses"], 1);
    // The entry and its direct-mode manifest.
    assert_eq!(stats["cache"]["entries"], 2);
    assert!(stats["cache"]["size_bytes"].as_u64().unwrap() > 0);
    env.ok(&["-z"]);
    let stats = env.stats();
    assert_eq!(stats["counters"]["cache_misses"], 0);
    assert!(
        stats["compilers_cpu_ms"].as_u64().unwrap() < compilers_ms,
        "zeroing restarts the CPU times: {stats}"
    );
    assert_eq!(
        stats["cache"]["entries"], 2,
        "zeroing stats keeps the cache"
    );
}

#[test]
fn clear_and_cleanup() {
    let env = Env::new();
    for i in 0..3 {
        env.write(&format!("f{i}.c"), &format!("int f{i};\n"));
        env.ok(&["gcc", "-c", &format!("f{i}.c")]);
    }
    env.settle();
    // Three entries, and a direct-mode manifest for each.
    assert_eq!(env.stats()["cache"]["entries"], 6);
    env.ok(&["--cleanup"]);
    assert_eq!(
        env.stats()["cache"]["entries"],
        6,
        "under the limit, cleanup keeps everything"
    );
    env.ok(&["--clear"]);
    let stats = env.stats();
    assert_eq!(stats["cache"]["entries"], 0);
    assert_eq!(env.entries().len(), 0);
}

#[test]
fn start_and_stop_server() {
    let env = Env::new();
    env.ok(&["--start-server"]);
    let pid = env.stats()["server_pid"].clone();
    env.ok(&["--start-server"]);
    assert_eq!(
        env.stats()["server_pid"],
        pid,
        "a second start must reuse the server"
    );
    let out = env.ok(&["--stop-server"]);
    assert!(String::from_utf8_lossy(&out.stdout).contains("stopped"));
    assert!(!env.socket().exists());
    let out = env.ok(&["--stop-server"]);
    assert!(String::from_utf8_lossy(&out.stdout).contains("no server"));
}

#[test]
fn racing_clients_start_exactly_one_server() {
    let env = Env::new();
    let children: Vec<Child> = (0..8)
        .map(|i| {
            env.write(&format!("r{i}.c"), &format!("int r{i};\n"));
            env.cachet()
                .args(["gcc", "-c", &format!("r{i}.c")])
                .stdin(no_input())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    for child in children {
        let out = child.wait_with_output().unwrap();
        assert!(out.status.success());
        assert!(
            stderr(&out).is_empty(),
            "a client fell back: {}",
            stderr(&out)
        );
    }
    assert_eq!(
        env.counter("compile_requests"),
        8,
        "all clients reached the one server"
    );
    let log = std::fs::read_to_string(env.runtime_dir.join("server.log")).unwrap();
    assert_eq!(log.matches("listening on").count(), 1, "{log}");
}

#[test]
fn the_server_exits_when_idle() {
    let env = Env::new().with_env("CACHET_IDLE_TIMEOUT", "1");
    env.ok(&["--start-server"]);
    assert!(env.socket().exists());
    wait_for("the idle server to exit", || !env.socket().exists());
    std::thread::sleep(Duration::from_millis(100));
    // And a client starts a new one.
    env.write("a.c", "int a;\n");
    env.ok(&["gcc", "-c", "a.c"]);
}

#[test]
fn bad_configuration_is_a_clear_error() {
    let env = Env::new();
    let config = env.dir.path().join("bad.toml");
    std::fs::write(&config, "jobs = \"lots\"\n").unwrap();
    let out = env
        .cachet()
        .arg("-s")
        .env("CACHET_CONFIG", &config)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let text = stderr(&out);
    assert!(
        text.contains("`jobs`") && text.contains(config.to_str().unwrap()),
        "{text}"
    );

    // A compile with a bad config still builds, with one warning line.
    env.write("a.c", "int a;\n");
    let out = env
        .cachet()
        .args(["gcc", "-c", "a.c"])
        .env("CACHET_CONFIG", &config)
        .output()
        .unwrap();
    assert!(out.status.success());
    assert_eq!(stderr(&out).lines().count(), 1, "{}", stderr(&out));
    assert!(stderr(&out).starts_with("cachet: warning:"));

    let out = env
        .cachet()
        .arg("-s")
        .env("CACHET_CACHE_SIZE", "huge")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("CACHET_CACHE_SIZE"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn config_file_is_read() {
    let env = Env::new();
    let dir = env.dir.path().join("config/cachet");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("config.toml"), "jobs = 5\ncache_size = \"1G\"\n").unwrap();
    let stats = env.stats();
    assert_eq!(stats["jobserver"]["tokens"], 5);
    assert_eq!(stats["cache"]["max_size_bytes"], 1u64 << 30);
    let out = env.ok(&["--show-config"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("config.toml"), "{text}");
    assert!(text.contains("base_dirs     = (none)"), "{text}");
    let out = env
        .cachet()
        .arg("--show-config")
        .env("CACHET_BASE_DIRS", "/srv/ci/:/opt/cargo")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("base_dirs     = /srv/ci:/opt/cargo")
            && text.contains("environment variable CACHET_BASE_DIRS"),
        "{text}"
    );
    let out = env
        .cachet()
        .arg("--show-config")
        .env("CACHET_BASE_DIRS", "relative")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("`base_dirs`"), "{}", stderr(&out));
}

#[test]
fn a_server_of_another_protocol_version_means_a_direct_compile() {
    use std::io::{Read, Write};
    use std::os::unix::net::UnixListener;
    let env = Env::new();
    std::fs::create_dir_all(&env.runtime_dir).unwrap();
    let listener = UnixListener::bind(env.socket()).unwrap();
    let fake = std::thread::spawn(move || {
        for round in 0..2 {
            let (mut stream, _) = listener.accept().unwrap();
            let mut buf = [0u8; 14];
            let _ = stream.read_exact(&mut buf);
            // Version 999 for the first client, garbage for the second.
            let reply = if round == 0 {
                [&10u32.to_le_bytes()[..], b"CACHET", &999u32.to_le_bytes()].concat()
            } else {
                b"\x05\x00\x00\x00junk!".to_vec()
            };
            let _ = stream.write_all(&reply);
        }
    });
    env.write("a.c", "int a;\n");
    for expected in ["protocol 999", "garbage"] {
        let _ = std::fs::remove_file(env.work.join("a.o"));
        let out = env.run(&["gcc", "-c", "a.c"]);
        assert!(out.status.success());
        assert_eq!(stderr(&out).lines().count(), 1, "{}", stderr(&out));
        assert!(stderr(&out).contains(expected), "{}", stderr(&out));
        assert!(env.work.join("a.o").exists());
    }
    fake.join().unwrap();
}

/// The server never exits on idle while a compile is still running.
#[test]
fn idle_timeout_waits_for_running_compiles() {
    let env = Env::new().with_env("CACHET_IDLE_TIMEOUT", "1");
    let cc = env.dir.path().join("slowcc");
    script(
        &cc,
        "case \" $* \" in *\" -dM \"*|*\" -E \"*) exec gcc \"$@\";; esac\nsleep 3\nexec gcc \"$@\"\n",
    );
    env.write("a.c", "int a;\n");
    let out = env.run(&[cc.to_str().unwrap(), "-c", "a.c"]);
    assert!(out.status.success());
    assert!(
        stderr(&out).is_empty(),
        "the client fell back: {}",
        stderr(&out)
    );
    assert!(env.work.join("a.o").exists());
}

/// A server started from a process holding extra descriptors (a build's jobserver pipe,
/// a `| tee`) keeps none of them: whoever waits for EOF on that pipe is not held up.
#[test]
fn the_server_keeps_no_inherited_descriptor() {
    use std::io::Read;
    use std::os::fd::FromRawFd;
    use std::os::unix::process::CommandExt;
    let env = Env::new();
    let mut fds = [0i32; 2];
    // SAFETY: pipe2 fills the two ints of `fds`.
    assert_eq!(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) }, 0);
    // SAFETY: a fresh fd from pipe2, owned by nothing else.
    let mut reader = unsafe { std::fs::File::from_raw_fd(fds[0]) };
    let write_end = fds[1];
    // Only this child gets the write end, as fd 50 without CLOEXEC, as make would hand it.
    let mut start = env.cachet();
    start.arg("--start-server");
    // SAFETY: between fork and exec the hook makes one dup2 system call (async-signal-safe)
    // and allocates nothing.
    unsafe {
        start.pre_exec(move || {
            if libc::dup2(write_end, 50) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let out = start.output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    // SAFETY: `write_end` is ours from pipe2 and has no other owner.
    unsafe { libc::close(write_end) };
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = reader.read_to_end(&mut buf);
        let _ = tx.send(());
    });
    assert!(
        rx.recv_timeout(Duration::from_secs(10)).is_ok(),
        "the server kept an inherited pipe open"
    );
    assert!(env.socket().exists(), "the server is still running");
}

/// `cachet cachet gcc …` (a launcher in front of `CC="cachet gcc"`) and `cachet /x/gcc …`
/// where `/x/gcc` is a cachet masquerade link (CMake's launcher with such a `CC`) both
/// compile with the real gcc, as a plain compile would.
#[test]
fn words_that_name_cachet_itself_are_skipped() {
    let env = Env::new();
    env.write("t.c", "int t(void) { return 1; }\n");
    assert!(
        env.command("gcc")
            .args(["-c", "t.c", "-o", "plain.o"])
            .status()
            .unwrap()
            .success()
    );
    let plain = std::fs::read(env.work.join("plain.o")).unwrap();
    let masquerade = env.dir.path().join("bin/gcc");
    std::fs::create_dir_all(masquerade.parent().unwrap()).unwrap();
    std::os::unix::fs::symlink(CACHET, &masquerade).unwrap();
    let masquerade = masquerade.to_str().unwrap();
    let forms: [&[&str]; 4] = [
        &["cachet", "gcc"],
        &["cachet", "cachet", "gcc"],
        &[CACHET, "gcc"],
        &[masquerade],
    ];
    for form in forms {
        let mut args = form.to_vec();
        args.extend(["-c", "t.c", "-o", "t.o"]);
        let out = env.run(&args);
        assert!(out.status.success(), "{form:?}: {}", stderr(&out));
        assert_eq!(
            std::fs::read(env.work.join("t.o")).unwrap(),
            plain,
            "{form:?}"
        );
        std::fs::remove_file(env.work.join("t.o")).unwrap();
    }
    let stats = env.settle();
    assert_eq!(stats["counters"]["compile_requests"], 4, "{stats}");
}

/// `cachet --show-stats | head -3`: a reader that goes away ends the output quietly.
#[test]
fn a_closed_stdout_ends_the_output_quietly() {
    let env = Env::new();
    for args in [
        &["--show-stats"][..],
        &["--show-config"],
        &["--show-stats", "--json"],
    ] {
        let (reader, writer) = std::io::pipe().unwrap();
        drop(reader);
        let out = env
            .cachet()
            .args(args)
            .stdout(writer)
            .stderr(Stdio::piped())
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(0), "{args:?}: {}", stderr(&out));
        assert!(out.stderr.is_empty(), "{args:?}: {}", stderr(&out));
    }
}

/// The server's lock file in the runtime dir (`server-v<protocol>.lock`), made by a server.
fn server_lock(env: &Env) -> std::path::PathBuf {
    std::fs::read_dir(&env.runtime_dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| {
            let name = p.file_name().unwrap().to_string_lossy();
            name.starts_with("server-v") && name.ends_with(".lock")
        })
        .expect("a server lock in the runtime dir")
}

/// A stopping server answers `--stop-server` before it has exited and holds the runtime
/// dir's lock until then (the test holds the lock as such a server would): `--stop-server`
/// returns only once the lock is free, and a server started meanwhile waits for it instead
/// of exiting at once (which failed `--start-server` right after `--stop-server`).
#[test]
fn stop_waits_for_the_server_to_exit_and_a_start_waits_for_a_stopping_server() {
    let env = Env::new();
    env.ok(&["--start-server"]);
    let lock = server_lock(&env);
    env.ok(&["--stop-server"]);
    let stopping = std::fs::File::options().write(true).open(&lock).unwrap();
    assert!(
        stopping.try_lock().is_ok(),
        "--stop-server returned before the server exited"
    );

    let released = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let stop = {
        let (released, mut command) = (released.clone(), env.cachet());
        std::thread::spawn(move || {
            let out = command.arg("--stop-server").output().unwrap();
            (out, released.load(std::sync::atomic::Ordering::SeqCst))
        })
    };
    std::thread::sleep(Duration::from_millis(300));
    released.store(true, std::sync::atomic::Ordering::SeqCst);
    stopping.unlock().unwrap();
    let (out, after_release) = stop.join().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        after_release,
        "--stop-server returned while a server held the lock"
    );

    stopping.lock().unwrap();
    let start = {
        let mut command = env.cachet();
        std::thread::spawn(move || command.arg("--start-server").output().unwrap())
    };
    std::thread::sleep(Duration::from_millis(300));
    stopping.unlock().unwrap();
    let out = start.join().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let stats = env.stats();
    assert!(stats["server_pid"].as_u64().is_some(), "{stats}");
    env.ok(&["--stop-server"]);
}

/// `--stop-server --show-stats` shows the running server's stats, then stops it: no new
/// server is started to show them.
#[test]
fn stop_server_with_show_stats_leaves_no_server() {
    let env = Env::new();
    env.write("t.c", "int t(void) { return 1; }\n");
    env.ok(&["gcc", "-c", "t.c"]);
    let out = env.ok(&["--stop-server", "--show-stats", "--json"]);
    let text = String::from_utf8_lossy(&out.stdout);
    let stats: serde_json::Value = serde_json::Deserializer::from_str(&text)
        .into_iter()
        .next()
        .expect("stats first")
        .unwrap();
    assert_eq!(stats["counters"]["compile_requests"], 1, "{text}");
    wait_for("the server to exit", || !env.socket().exists());
    std::thread::sleep(std::time::Duration::from_millis(300));
    assert!(!env.socket().exists(), "a server was started again");
}

/// A server whose socket was removed (by hand, or by a process that took it for a stale
/// one) stops, so that the next client starts a server rather than falling back to direct
/// compiles for as long as the old one would hold the lock.
#[test]
fn a_server_whose_socket_was_removed_stops_and_the_next_client_starts_one() {
    let env = Env::new();
    env.ok(&["--start-server"]);
    let old = env.stats()["server_pid"].as_u64().unwrap();
    let socket = std::fs::read_dir(&env.runtime_dir)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|x| x == "sock"))
        .expect("the server's socket");
    std::fs::remove_file(&socket).unwrap();
    // Gone, or a zombie nobody reaps (the server runs detached).
    wait_for("the old server to stop", || {
        std::fs::read_to_string(format!("/proc/{old}/stat")).map_or(true, |s| {
            s.rsplit(") ").next().is_some_and(|r| r.starts_with('Z'))
        })
    });
    env.write("a.c", "int a(void) { return 1; }\n");
    env.ok(&["gcc", "-c", "a.c", "-o", "a.o"]);
    let stats = env.stats();
    assert_ne!(stats["server_pid"].as_u64().unwrap(), old);
    assert_eq!(stats["counters"]["cache_misses"], 1, "{stats}");
    env.ok(&["--stop-server"]);
}
