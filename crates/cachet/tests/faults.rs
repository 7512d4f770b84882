//! Faults that must never break a build: a server killed mid-compile, a corrupt entry, a
//! full or read-only cache, garbage on the socket, and a connection from another user.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use common::*;

#[test]
fn a_server_killed_mid_compile_still_gives_a_correct_build() {
    let env = Env::new();
    let marker = env.dir.path().join("compiling");
    let cc = env.dir.path().join("slowcc");
    script(
        &cc,
        &format!(
            "case \" $* \" in *\" -dM \"*|*\" -E \"*) exec gcc \"$@\";; esac\n\
             if [ ! -e {m} ]; then touch {m}; sleep 30; fi\nexec gcc \"$@\"\n",
            m = marker.display()
        ),
    );
    env.write("a.c", "int a(void) { return 1; }\n");
    env.ok(&["--start-server"]);
    let server_pid = env.stats()["server_pid"].as_u64().unwrap() as i32;
    let client = env
        .cachet()
        .args([cc.to_str().unwrap(), "-c", "a.c", "-o", "a.o"])
        .stdin(no_input())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_for("the compile to start", || marker.exists());
    // SAFETY: kill takes plain ints and touches no memory of ours.
    unsafe { libc::kill(server_pid, libc::SIGKILL) };
    let out = client.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("cachet: warning:"),
        "{}",
        stderr(&out)
    );
    assert_plain_object(&env);
}

/// `a.o` is the object gcc makes of `a.c`.
fn assert_plain_object(env: &Env) {
    let ours = std::fs::read(env.work.join("a.o")).unwrap();
    env.command("gcc")
        .args(["-c", "a.c", "-o", "plain.o"])
        .status()
        .unwrap();
    assert!(ours == std::fs::read(env.work.join("plain.o")).unwrap());
}

/// The server forwarded a line of its compiler's output, then died: the client's own
/// compile must not write that line again (cargo panics on a second artifact
/// notification of rustc's; found by `bench/chaos.sh` killing the server mid-build).
#[test]
fn output_forwarded_before_the_server_died_is_not_written_twice() {
    let env = Env::new();
    let marker = env.dir.path().join("compiling");
    let cc = env.dir.path().join("notecc");
    let note = r#"{"artifact":"/t/liba.rmeta","emit":"metadata"}"#;
    script(
        &cc,
        &format!(
            "case \" $* \" in *\" -dM \"*|*\" -E \"*) exec gcc \"$@\";; esac\n\
             echo '{note}' >&2\n\
             if [ ! -e {m} ]; then touch {m}; sleep 30; fi\nexec gcc \"$@\"\n",
            m = marker.display()
        ),
    );
    env.write("a.c", "int a(void) { return 1; }\n");
    env.ok(&["--start-server"]);
    let server_pid = env.stats()["server_pid"].as_u64().unwrap() as i32;
    let err_path = env.dir.path().join("client.stderr");
    let mut client = env
        .cachet()
        .args([cc.to_str().unwrap(), "-c", "a.c", "-o", "a.o"])
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(&err_path).unwrap())
        .spawn()
        .unwrap();
    wait_for("the client to write the note", || {
        std::fs::read_to_string(&err_path).is_ok_and(|e| e.contains(note))
    });
    // SAFETY: kill takes plain ints and touches no memory of ours.
    unsafe { libc::kill(server_pid, libc::SIGKILL) };
    assert!(client.wait().unwrap().success());
    let err = std::fs::read_to_string(&err_path).unwrap();
    assert_eq!(err.matches(note).count(), 1, "{err}");
    assert!(err.contains("cachet: warning:"), "{err}");
    assert_plain_object(&env);
}

#[test]
fn a_corrupt_entry_is_a_counted_miss_and_is_replaced() {
    let env = Env::new();
    env.write("a.c", "int a(void) { return 1; }\n");
    env.ok(&["gcc", "-c", "a.c"]);
    env.settle();
    // The entry and its direct-mode manifest: corrupt the entry (the larger one).
    let mut entries = env.entries();
    assert_eq!(entries.len(), 2);
    entries.sort_by_key(|p| std::cmp::Reverse(std::fs::metadata(p).unwrap().len()));
    let mut bytes = std::fs::read(&entries[0]).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x55;
    std::fs::write(&entries[0], bytes).unwrap();
    std::fs::remove_file(env.work.join("a.o")).unwrap();

    env.ok(&["gcc", "-c", "a.c"]);
    let stats = env.settle();
    assert_eq!(stats["counters"]["corrupt_entries"], 1, "{stats}");
    assert_eq!(stats["counters"]["cache_misses"], 2, "{stats}");
    let ours = std::fs::read(env.work.join("a.o")).unwrap();
    env.command("gcc")
        .args(["-c", "a.c", "-o", "plain.o"])
        .status()
        .unwrap();
    assert!(ours == std::fs::read(env.work.join("plain.o")).unwrap());

    env.ok(&["gcc", "-c", "a.c"]);
    assert_eq!(env.counter("cache_hits"), 1);
}

/// A mount made for one test, undone when dropped.
struct Mount(PathBuf);

impl Drop for Mount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

fn sh(cmd: &str) -> bool {
    // `.output()` reads and drops what the command prints.
    Command::new("sh")
        .args(["-c", cmd])
        .stdin(no_input())
        .output()
        .is_ok_and(|o| o.status.success())
}

/// A cache dir whose writes fail: a real mechanism when the machine allows it, else the
/// storage layer's fault-injection seam. Returns the env and the mount to keep alive.
fn broken_cache_env(kind: &str) -> (Env, Option<Mount>) {
    let env = Env::new();
    let dir = env.cache_dir.clone();
    std::fs::create_dir_all(&dir).unwrap();
    let mounted = match kind {
        // A tiny tmpfs, filled up.
        "disk-full" => {
            sh(&format!(
                "mount -t tmpfs -o size=64k cachet-full {}",
                dir.display()
            )) && {
                // Fill it completely (dd stops at ENOSPC).
                let _ = sh(&format!(
                    "dd if=/dev/zero of={}/filler bs=4k",
                    dir.display()
                ));
                true
            }
        }
        // A read-only bind mount of a real directory.
        _ => {
            let real = env.dir.path().join("real-cache");
            std::fs::create_dir_all(&real).unwrap();
            sh(&format!(
                "mount --bind {} {}",
                real.display(),
                dir.display()
            )) && (sh(&format!("mount -o remount,bind,ro {}", dir.display())) || {
                sh(&format!("umount {}", dir.display()));
                false
            })
        }
    };
    if mounted {
        eprintln!("{kind}: using a real mount at {}", dir.display());
        (env, Some(Mount(dir)))
    } else {
        eprintln!("{kind}: this machine refused the mount; using the storage fault seam");
        (env.with_env("CACHET_TEST_STORAGE_FAULT", kind), None)
    }
}

fn build_succeeds_and_write_error_is_counted(kind: &str) {
    let (env, _mount) = broken_cache_env(kind);
    env.write("a.c", "int a(void) { return 1; }\n");
    for _ in 0..2 {
        let out = env.run(&["gcc", "-c", "a.c"]);
        assert!(out.status.success(), "{kind}: {}", stderr(&out));
        assert!(env.work.join("a.o").exists());
        std::fs::remove_file(env.work.join("a.o")).unwrap();
        // The writes fail before the next compile: it cannot be served from the memory
        // that keeps entries readable while they are written.
        env.settle();
    }
    let stats = env.settle();
    // Each compile's entry and its direct-mode manifest failed to be written.
    assert_eq!(
        stats["counters"]["cache_write_errors"], 4,
        "{kind}: {stats}"
    );
    assert_eq!(stats["counters"]["cache_hits"], 0, "{kind}: {stats}");
    env.stop();
}

#[test]
fn a_full_cache_dir_does_not_break_the_build() {
    build_succeeds_and_write_error_is_counted("disk-full");
}

#[test]
fn a_read_only_cache_dir_does_not_break_the_build() {
    build_succeeds_and_write_error_is_counted("read-only");
}

#[test]
fn garbage_on_the_socket_does_not_kill_the_server() {
    let env = Env::new();
    env.ok(&["--start-server"]);
    let pid = env.stats()["server_pid"].clone();
    let version = cachet::protocol::PROTOCOL_VERSION.to_le_bytes();
    let handshake = [&10u32.to_le_bytes()[..], b"CACHET", &version].concat();
    let cases: Vec<Vec<u8>> = vec![
        // Not a handshake at all.
        b"GET / HTTP/1.1\r\nHost: x\r\n\r\n".to_vec(),
        // A length far over the limit.
        vec![0xff, 0xff, 0xff, 0x7f, 1, 2, 3],
        // A good handshake, then a frame of garbage.
        [&handshake[..], &5u32.to_le_bytes(), b"\xff\xfe\xfd\xfc\xfb"].concat(),
        // A good handshake, then a truncated frame.
        [&handshake[..], &100u32.to_le_bytes(), b"abc"].concat(),
        // A good handshake, then an oversized frame.
        [&handshake[..], &u32::MAX.to_le_bytes()].concat(),
    ];
    for case in &cases {
        let mut stream = raw_connect(&env);
        send_raw(&mut stream, case);
        let _ = stream.shutdown(std::net::Shutdown::Write);
        read_all(&mut stream);
    }
    let stats = env.stats();
    assert_eq!(stats["server_pid"], pid, "the server was replaced");
    assert_eq!(
        stats["counters"]["protocol_errors"],
        cases.len() as u64,
        "{stats}"
    );
    env.write("a.c", "int a;\n");
    env.ok(&["gcc", "-c", "a.c"]);
}

/// A client that says hello and then neither sends nor leaves must not keep a stopping
/// server alive: the socket is gone at once, and a server that waited forever would hold
/// the lock that keeps every later server from starting (each compile would then run
/// without the cache).
#[test]
fn a_silent_connection_does_not_keep_a_stopping_server_alive() {
    let env = Env::new();
    env.ok(&["--start-server"]);
    let pid = env.stats()["server_pid"].as_i64().unwrap() as i32;
    let version = cachet::protocol::PROTOCOL_VERSION.to_le_bytes();
    let handshake = [&10u32.to_le_bytes()[..], b"CACHET", &version].concat();
    let mut silent = raw_connect(&env);
    send_raw(&mut silent, &handshake);
    let mut answer = [0u8; 14];
    std::io::Read::read_exact(&mut silent, &mut answer).unwrap();
    let started = std::time::Instant::now();
    let _ = env.run(&["--stop-server"]);
    wait_for("the server to exit with a silent client connected", || {
        !process_alive(pid)
    });
    assert!(started.elapsed() < std::time::Duration::from_secs(30));
    // A new server starts and serves.
    env.write("a.c", "int a;\n");
    env.ok(&["gcc", "-c", "a.c"]);
    assert_ne!(env.stats()["server_pid"].as_i64().unwrap() as i32, pid);
    drop(silent);
}

/// Runs `args` as uid/gid 65534 through setpriv, with a copy of cachet that user can
/// reach wherever this checkout lives.
fn as_nobody(env: &Env, args: &[&str]) -> std::process::Output {
    let copy = env.dir.path().join("cachet-for-nobody");
    if !copy.exists() {
        copy_executable(Path::new(CACHET), &copy);
    }
    env.command("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups", "--"])
        .arg(&copy)
        .args(args)
        .env("HOME", env.dir.path())
        .stdin(no_input())
        .output()
        .unwrap()
}

#[test]
fn a_connection_from_another_user_is_refused() {
    if !have("setpriv") {
        return skip("setpriv is not installed");
    }
    let env = Env::new();
    // The server runs as nobody; its dirs are nobody's. We (root) are the other user.
    for dir in [&env.cache_dir, &env.runtime_dir] {
        std::fs::create_dir_all(dir).unwrap();
        chown_nobody(dir);
    }
    chown_nobody(env.dir.path());
    let out = as_nobody(&env, &["--start-server"]);
    if !out.status.success() {
        return skip(&format!(
            "setpriv cannot run a process as uid 65534 here: {}",
            stderr(&out)
        ));
    }
    struct StopAsNobody<'a>(&'a Env);
    impl Drop for StopAsNobody<'_> {
        fn drop(&mut self) {
            as_nobody(self.0, &["--stop-server"]);
        }
    }
    let _stop = StopAsNobody(&env);

    // Root may traverse the 0700 dir, so the socket check is what refuses us.
    let mut stream = raw_connect(&env);
    let version = cachet::protocol::PROTOCOL_VERSION.to_le_bytes();
    let handshake = [&10u32.to_le_bytes()[..], b"CACHET", &version].concat();
    send_raw(&mut stream, &handshake);
    assert!(
        read_all(&mut stream).is_empty(),
        "the server answered another user"
    );

    // A real client of another user is refused too, and still builds by itself.
    env.write("a.c", "int a;\n");
    let out = env.run(&["gcc", "-c", "a.c"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("cachet: warning:"),
        "{}",
        stderr(&out)
    );

    let out = as_nobody(&env, &["--show-stats", "--json"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let stats: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(
        stats["counters"]["connections_refused"].as_u64().unwrap() >= 1,
        "{stats}"
    );
    assert_eq!(stats["counters"]["compile_requests"], 0, "{stats}");
}

fn chown_nobody(path: &Path) {
    assert!(sh(&format!("chown 65534:65534 {}", path.display())));
}

/// Not a test by itself: `a_server_of_another_user_is_not_trusted` runs this test binary as
/// uid 65534 with CACHET_TEST_FOREIGN_SOCKET set, to play another user's server that
/// answers the handshake as a real one would.
#[test]
fn foreign_server_helper() {
    use std::io::{Read, Write};
    let Some(path) = std::env::var_os("CACHET_TEST_FOREIGN_SOCKET") else {
        return;
    };
    let listener = std::os::unix::net::UnixListener::bind(&path).unwrap();
    while let Ok((mut stream, _)) = listener.accept() {
        let mut hello = [0u8; 14];
        let _ = stream.read_exact(&mut hello);
        let version = cachet::protocol::PROTOCOL_VERSION.to_le_bytes();
        let _ = stream.write_all(&[&10u32.to_le_bytes()[..], b"CACHET", &version].concat());
    }
}

/// The client checks the server's uid itself: a socket in our runtime directory that
/// another user's process answers is not trusted, and the build goes on without it.
#[test]
fn a_server_of_another_user_is_not_trusted() {
    use std::os::unix::process::CommandExt;
    let env = Env::new();
    // Our runtime directory, left open just long enough for the other user to bind in it.
    std::fs::create_dir_all(&env.runtime_dir).unwrap();
    assert!(sh(&format!("chmod 0777 {}", env.runtime_dir.display())));
    chown_nobody(env.dir.path());
    let helper = env.dir.path().join("foreign-helper");
    copy_executable(&std::env::current_exe().unwrap(), &helper);
    let socket = env.socket();
    let mut foreign = match Command::new(&helper)
        .args([
            "--exact",
            "foreign_server_helper",
            "--nocapture",
            "--test-threads=1",
        ])
        .env("CACHET_TEST_FOREIGN_SOCKET", &socket)
        .uid(65534)
        .gid(65534)
        .stdout(discard(env.dir.path(), "foreign.stdout"))
        .stderr(discard(env.dir.path(), "foreign.stderr"))
        .spawn()
    {
        Ok(child) => child,
        Err(e) => return skip(&format!("cannot run a process as uid 65534 here: {e}")),
    };
    wait_for("the other user's server", || socket.exists());

    env.write("a.c", "int a;\n");
    let out = env.run(&["gcc", "-c", "a.c"]);
    let _ = foreign.kill();
    let _ = foreign.wait();
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stderr(&out).contains("uid 65534"), "{}", stderr(&out));
    assert!(env.work.join("a.o").exists());
}
