//! The server's own limits: however many clients come at once, it stays within its
//! open-file limit, serving them in turn (the rest wait in the listen backlog) rather
//! than failing their compiles.

mod common;

use std::os::fd::AsRawFd;
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};

use common::*;

/// Small enough that [`CLIENTS`] clients at once, each handing the server its build's
/// jobserver pipe (3 fds a connection), would run the server out of fds.
const FD_LIMIT: u64 = 128;
const CLIENTS: usize = 48;

/// Runs `cmd` with an open-file limit of [`FD_LIMIT`], hard and soft, so the server it
/// starts cannot raise it.
fn with_fd_limit(cmd: &mut Command) -> &mut Command {
    // SAFETY: setrlimit is async-signal-safe and reads a struct on the stack.
    unsafe {
        cmd.pre_exec(|| {
            let limit = libc::rlimit {
                rlim_cur: FD_LIMIT as libc::rlim_t,
                rlim_max: FD_LIMIT as libc::rlim_t,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &limit) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        })
    }
}

/// Compiles every `f{i}.c` at once, each through its own client under a make-style
/// jobserver pipe of 2 tokens; all must succeed.
fn compile_all_at_once(env: &Env) {
    let (read, mut write) = std::io::pipe().unwrap();
    std::io::Write::write_all(&mut write, b"+").unwrap();
    let (r, w) = (read.as_raw_fd(), write.as_raw_fd());
    let children: Vec<_> = (0..CLIENTS)
        .map(|i| {
            let mut cmd = env.cachet();
            cmd.env("MAKEFLAGS", format!(" -j2 --jobserver-auth={r},{w}"));
            inherit_fds(&mut cmd, [r, w]);
            cmd.args(["gcc", "-c", &format!("f{i}.c")])
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    for (i, child) in children.into_iter().enumerate() {
        let out = child.wait_with_output().unwrap();
        assert!(out.status.success(), "f{i}.c: {}", stderr(&out));
        assert!(out.stderr.is_empty(), "f{i}.c: {}", stderr(&out));
        assert!(env.work.join(format!("f{i}.o")).exists());
    }
}

#[test]
fn many_clients_at_once_are_served_in_turn_within_a_small_fd_limit() {
    if !have("gcc") {
        return skip("gcc is not installed");
    }
    let env = Env::new().with_env("CACHET_JOBS", "2");
    let started = with_fd_limit(env.cachet().arg("--start-server"))
        .output()
        .unwrap();
    assert!(started.status.success(), "{}", stderr(&started));
    let stats = env.stats();
    assert_eq!(stats["fd_limit"], FD_LIMIT);
    assert_eq!(
        stats["connection_limit"], 12,
        "(128 - 64 reserved - 2 tokens x 8) / 4 per connection"
    );
    for i in 0..CLIENTS {
        env.write(
            &format!("f{i}.c"),
            &format!("int f{i}(void) {{ return {i}; }}\n"),
        );
    }

    compile_all_at_once(&env);
    let stats = env.settle();
    // Every client was served by the server: none fell back to compiling by itself.
    assert_eq!(stats["counters"]["cache_misses"], CLIENTS as u64);
    assert_eq!(stats["counters"]["accept_errors"], 0);
    assert_eq!(stats["counters"]["protocol_errors"], 0);
    assert_eq!(stats["counters"]["build_jobservers"], CLIENTS as u64);

    for i in 0..CLIENTS {
        std::fs::remove_file(env.work.join(format!("f{i}.o"))).unwrap();
    }
    compile_all_at_once(&env);
    let stats = env.stats();
    assert_eq!(stats["counters"]["cache_hits"], CLIENTS as u64);
    assert_eq!(stats["counters"]["accept_errors"], 0);
}
