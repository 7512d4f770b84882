//! Compiles that arrive with their build's own jobserver (a pipe, or a fifo made with
//! mkfifo) holding K tokens. The compiler is a greedy jobserver client
//! (tests/fixtures/greedy.c) that takes every token it can and logs each one, so these
//! tests see real extra-token use, not just a compiler that never asks.

mod common;

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use common::*;

/// A jobserver owned by the test, standing in for make's or cargo's.
struct Pool {
    read: OwnedFd,
    write: OwnedFd,
    fifo: Option<PathBuf>,
    tokens: usize,
}

impl Pool {
    fn pipe(tokens: usize) -> Pool {
        let mut fds = [0; 2];
        // SAFETY: pipe2 fills the two ints of `fds`.
        assert_eq!(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) }, 0);
        // SAFETY: pipe2 succeeded: two fresh fds that nothing else owns.
        let pool = unsafe {
            Pool {
                read: OwnedFd::from_raw_fd(fds[0]),
                write: OwnedFd::from_raw_fd(fds[1]),
                fifo: None,
                tokens,
            }
        };
        pool.fill();
        pool
    }

    fn fifo(dir: &Path, tokens: usize) -> Pool {
        let path = dir.join("jobserver.fifo");
        let c = std::ffi::CString::new(path.to_str().unwrap()).unwrap();
        // SAFETY: mkfifo reads a valid C string.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
        // SAFETY: a valid C string; the fd open returns is fresh and owned here (a failed
        // open gives -1, which from_raw_fd rejects with a panic in debug builds).
        let open = |flags| unsafe {
            OwnedFd::from_raw_fd(libc::open(c.as_ptr(), flags | libc::O_CLOEXEC))
        };
        let read = open(libc::O_RDWR);
        let write = open(libc::O_RDWR);
        let pool = Pool {
            read,
            write,
            fifo: Some(path),
            tokens,
        };
        pool.fill();
        pool
    }

    fn fill(&self) {
        let bytes = vec![b'+'; self.tokens];
        assert_eq!(
            // SAFETY: writes from a live buffer of `bytes.len()` bytes.
            unsafe { libc::write(self.write.as_raw_fd(), bytes.as_ptr().cast(), bytes.len()) },
            self.tokens as isize
        );
    }

    fn available(&self) -> usize {
        let mut n: libc::c_int = 0;
        assert_eq!(
            // SAFETY: FIONREAD writes one int through the pointer.
            unsafe { libc::ioctl(self.read.as_raw_fd(), libc::FIONREAD, &mut n) },
            0
        );
        n as usize
    }

    /// Gives `cmd` this pool the way make would.
    fn hand_to(&self, cmd: &mut Command) {
        match &self.fifo {
            Some(path) => {
                cmd.env(
                    "MAKEFLAGS",
                    format!(
                        " -j{} --jobserver-auth=fifo:{}",
                        self.tokens + 1,
                        path.display()
                    ),
                );
            }
            None => {
                let (r, w) = (self.read.as_raw_fd(), self.write.as_raw_fd());
                cmd.env(
                    "MAKEFLAGS",
                    format!(" -j{} --jobserver-auth={r},{w}", self.tokens + 1),
                );
                inherit_fds(cmd, [r, w]);
            }
        }
    }
}

/// Builds the greedy client next to the test's files.
fn greedy(env: &Env) -> String {
    fixture_program(env, "greedy")
}

fn setup(jobs: &str) -> Env {
    let env = Env::new().with_env("CACHET_JOBS", jobs);
    let log = env.dir.path().join("greedy.log");
    let pids = env.dir.path().join("pids");
    std::fs::create_dir(&pids).unwrap();
    env.with_env("GREEDY_LOG", log.to_str().unwrap())
        .with_env("GREEDY_PIDS", pids.to_str().unwrap())
}

/// The most extra tokens the greedy compilers held at once, and whether any held one.
fn peak_extra(env: &Env) -> (i64, bool) {
    let text = std::fs::read_to_string(env.dir.path().join("greedy.log")).unwrap_or_default();
    let mut events: Vec<(i128, i64)> = text
        .lines()
        .map(|l| {
            let parts: Vec<&str> = l.split_whitespace().collect();
            (parts[0].parse().unwrap(), parts[2].parse().unwrap())
        })
        .collect();
    events.sort();
    let (mut now, mut peak) = (0i64, 0i64);
    for (_, delta) in &events {
        now += delta;
        peak = peak.max(now);
    }
    (peak, events.iter().any(|(_, d)| *d > 0))
}

fn compile(env: &Env, cc: &str, file: &str, pool: Option<&Pool>) -> Child {
    env.write(
        file,
        &format!("int f_{}(void) {{ return 1; }}\n", file.replace('.', "_")),
    );
    let mut cmd = env.cachet();
    cmd.args([cc, "-c", file])
        .stdin(no_input())
        .stdout(discard(env.dir.path(), &format!("{file}.stdout")))
        .stderr(Stdio::piped());
    if let Some(pool) = pool {
        pool.hand_to(&mut cmd);
    }
    cmd.spawn().unwrap()
}

fn server_pool_is_whole(env: &Env) {
    wait_for("the server's pool to be whole", || {
        let stats = env.stats();
        stats["jobserver"]["tokens_held"] == 0 && stats["jobserver"]["pool_in_use"] == 0
    });
}

fn extra_tokens_stay_within_the_build_pool(pool: Pool, env: Env) {
    let cc = greedy(&env);
    let k = pool.tokens as i64;
    let children: Vec<Child> = (0..3)
        .map(|i| compile(&env, &cc, &format!("g{i}.c"), Some(&pool)))
        .collect();
    for child in children {
        let out = child.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let (peak, used) = peak_extra(&env);
    assert!(
        used,
        "the greedy compilers never got an extra token: the test proves nothing"
    );
    assert!(
        peak <= k,
        "the compilers held {peak} extra tokens at once from a pool of {k}"
    );
    assert_eq!(
        pool.available(),
        pool.tokens,
        "the build's pool is not whole again"
    );
    server_pool_is_whole(&env);
    let stats = env.stats();
    assert_eq!(stats["counters"]["build_jobservers"], 3, "{stats}");
    assert!(
        stats["counters"]["proxy_grants"].as_u64().unwrap() >= 1,
        "{stats}"
    );
}

#[test]
fn extra_tokens_stay_within_a_pipe_pool() {
    extra_tokens_stay_within_the_build_pool(Pool::pipe(2), setup("8"));
}

#[test]
fn extra_tokens_stay_within_a_fifo_pool() {
    let env = setup("8");
    let pool = Pool::fifo(env.dir.path(), 2);
    extra_tokens_stay_within_the_build_pool(pool, env);
}

#[test]
fn the_server_pool_bounds_extra_tokens_too() {
    // The build allows 6 extra, the server 2 in all (one is the compile's own).
    let env = setup("2");
    let pool = Pool::pipe(6);
    let cc = greedy(&env);
    let out = compile(&env, &cc, "one.c", Some(&pool))
        .wait_with_output()
        .unwrap();
    assert!(out.status.success());
    let (peak, used) = peak_extra(&env);
    assert!(used && peak <= 1, "peak {peak} with a server pool of 2");
    assert_eq!(pool.available(), 6);
    server_pool_is_whole(&env);
}

#[test]
fn a_compiler_killed_holding_pipe_tokens_costs_no_pool_a_token() {
    a_compiler_killed_holding_tokens_costs_no_pool_a_token(false);
}

#[test]
fn a_compiler_killed_holding_fifo_tokens_costs_no_pool_a_token() {
    a_compiler_killed_holding_tokens_costs_no_pool_a_token(true);
}

fn a_compiler_killed_holding_tokens_costs_no_pool_a_token(fifo: bool) {
    let env = setup("8").with_env("GREEDY_HOLD_MS", "30000");
    let pool = if fifo {
        Pool::fifo(env.dir.path(), 3)
    } else {
        Pool::pipe(3)
    };
    let cc = greedy(&env);
    let pids = env.dir.path().join("pids");
    let child = compile(&env, &cc, "victim.c", Some(&pool));
    let pid = wait_for_pid_file("the compiler to hold tokens", &pids);
    assert!(pool.available() < 3, "the compiler holds nothing");
    // SAFETY: kill takes plain ints and touches no memory of ours.
    unsafe { libc::kill(pid, libc::SIGKILL) };
    let out = child.wait_with_output().unwrap();
    assert_eq!(
        out.status.signal(),
        Some(libc::SIGKILL),
        "the client dies as its compiler did"
    );
    wait_for("the build's pool to be whole", || pool.available() == 3);
    server_pool_is_whole(&env);
    assert!(
        env.stats()["counters"]["tokens_recovered"]
            .as_u64()
            .unwrap()
            >= 1
    );
}

#[test]
fn a_server_killed_holding_pipe_tokens_leaves_the_build_pool_whole() {
    a_server_killed_holding_tokens_leaves_the_build_pool_whole(false);
}

#[test]
fn a_server_killed_holding_fifo_tokens_leaves_the_build_pool_whole() {
    a_server_killed_holding_tokens_leaves_the_build_pool_whole(true);
}

/// The server took tokens of the build's pool for its compiler and was killed holding
/// them: the client gives them back, so that make finds every token at its exit (found by
/// `bench/chaos.sh`: "make: INTERNAL: Exiting with 3 jobserver tokens available; should
/// be 4!").
fn a_server_killed_holding_tokens_leaves_the_build_pool_whole(fifo: bool) {
    let env = setup("8");
    let pool = if fifo {
        Pool::fifo(env.dir.path(), 3)
    } else {
        Pool::pipe(3)
    };
    // The server's compile holds its tokens; the client's own compile afterwards does not.
    let cc = env.dir.path().join("holdcc");
    let marker = env.dir.path().join("held");
    script(
        &cc,
        &format!(
            "case \" $* \" in *\" -dM \"*|*\" -E \"*) exec {g} \"$@\";; esac\n\
             if [ -e {m} ]; then exec {g} \"$@\"; fi\n\
             touch {m}; GREEDY_HOLD_MS=30000 exec {g} \"$@\"\n",
            g = greedy(&env),
            m = marker.display()
        ),
    );
    env.ok(&["--start-server"]);
    let server_pid = env.stats()["server_pid"].as_u64().unwrap() as i32;
    let pids = env.dir.path().join("pids");
    let child = compile(&env, cc.to_str().unwrap(), "victim.c", Some(&pool));
    wait_for_pid_file("the compiler to hold tokens", &pids);
    assert!(
        pool.available() < 3,
        "the server holds none of the build's tokens"
    );
    // SAFETY: kill takes plain ints and touches no memory of ours.
    unsafe { libc::kill(server_pid, libc::SIGKILL) };
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    wait_for("the build's pool to be whole", || pool.available() == 3);
}

/// Stale settings in MAKEFLAGS: nothing is passed on, no byte of anybody's data is read,
/// nothing hangs.
#[test]
fn stale_jobserver_fds_are_never_used() {
    let env = setup("4").with_env("GREEDY_WAIT_MS", "100");
    let cc = greedy(&env);
    // Another program's pipe with data in it, and an unrelated pipe.
    let data = Pool::pipe(5);
    let other = Pool::pipe(0);
    let file = tempfile::tempfile().unwrap();
    let cases = [
        (file.as_raw_fd(), file.as_raw_fd(), "a regular file"),
        (
            data.read.as_raw_fd(),
            other.write.as_raw_fd(),
            "two different pipes",
        ),
        (
            other.read.as_raw_fd(),
            data.write.as_raw_fd(),
            "two different pipes, the other way",
        ),
        (900, 901, "closed fds"),
    ];
    for (i, (r, w, what)) in cases.iter().enumerate() {
        let (r, w) = (*r, *w);
        env.write(&format!("s{i}.c"), "int s;\n");
        let mut cmd = env.cachet();
        cmd.args([cc.as_str(), "-c", &format!("s{i}.c")])
            .env("MAKEFLAGS", format!(" -j4 --jobserver-auth={r},{w}"))
            .stdin(no_input());
        inherit_fds(&mut cmd, [r, w]);
        let out = cmd.output().unwrap();
        assert!(out.status.success(), "{what}: {}", stderr(&out));
        assert_eq!(
            data.available(),
            5,
            "{what}: another program's bytes were eaten"
        );
    }
    let stats = env.stats();
    assert_eq!(
        stats["counters"]["stale_jobservers"],
        cases.len() as u64,
        "{stats}"
    );
    assert_eq!(stats["counters"]["build_jobservers"], 0, "{stats}");
}

/// rustc under a stale CARGO_MAKEFLAGS never warns about the jobserver: it gets ours.
#[test]
fn rustc_never_warns_about_a_stale_jobserver() {
    let env = Env::new();
    env.write("lib.rs", "pub fn x() -> u8 { 1 }\n");
    std::fs::create_dir_all(env.work.join("out")).unwrap();
    let file = tempfile::tempfile().unwrap();
    let fd = file.as_raw_fd();
    let mut cmd = env.cachet();
    cmd.args([
        "rustc",
        "--crate-name",
        "x",
        "--edition=2021",
        "lib.rs",
        "--crate-type",
        "lib",
        "--emit=dep-info,metadata,link",
        "--out-dir",
        "out",
        "-C",
        "codegen-units=4",
    ])
    .env(
        "CARGO_MAKEFLAGS",
        format!("-j --jobserver-fds={fd},{fd} --jobserver-auth={fd},{fd}"),
    );
    inherit_fds(&mut cmd, [fd, fd]);
    let out = cmd.output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(!stderr(&out).contains("jobserver"), "{}", stderr(&out));
}

/// Two builds with their own jobservers share a server of one token: no two compiler
/// processes run at once.
#[test]
fn two_builds_and_one_server_token_never_overlap() {
    let env = Env::new().with_env("CACHET_JOBS", "1");
    let log = env.dir.path().join("runs.log");
    let cc = env.dir.path().join("logcc");
    script(
        &cc,
        &format!(
            "case \" $* \" in *\" -dM \"*) exec gcc \"$@\";; esac\n\
             echo \"$(date +%s%N) 1\" >> {log}\nsleep 0.2\ngcc \"$@\"; rc=$?\n\
             echo \"$(date +%s%N) -1\" >> {log}\nexit $rc\n",
            log = log.display()
        ),
    );
    let cc = cc.to_str().unwrap();
    env.write("warm.c", "int w;\n");
    env.ok(&[cc, "-c", "warm.c"]);
    std::fs::remove_file(&log).unwrap();
    let (a, b) = (Pool::pipe(3), Pool::pipe(3));
    let mut children = Vec::new();
    for i in 0..3 {
        children.push(compile(&env, cc, &format!("a{i}.c"), Some(&a)));
        children.push(compile(&env, cc, &format!("b{i}.c"), Some(&b)));
    }
    for child in children {
        assert!(child.wait_with_output().unwrap().status.success());
    }
    let text = std::fs::read_to_string(&log).unwrap();
    let mut events: Vec<(u128, i32)> = text
        .lines()
        .map(|l| {
            let (t, d) = l.split_once(' ').unwrap();
            (t.parse().unwrap(), d.parse().unwrap())
        })
        .collect();
    events.sort();
    let (mut now, mut peak) = (0, 0);
    for (_, d) in &events {
        now += d;
        peak = peak.max(now);
    }
    // One compile each (direct mode), or a preprocessor run and a compile.
    assert!(events.len() == 12 || events.len() == 24, "{text}");
    assert_eq!(peak, 1, "two compiler processes overlapped");
    assert_eq!((a.available(), b.available()), (3, 3));
}

/// Two builds compete for a server of one token: each gets a fair share of the token-time,
/// and the stats say how it was shared.
#[test]
fn two_builds_share_a_small_pool_fairly() {
    let env = Env::new().with_env("CACHET_JOBS", "1");
    let cc = env.dir.path().join("slowcc");
    script(
        &cc,
        "case \" $* \" in *\" -dM \"*|*\" -E \"*) exec gcc \"$@\";; esac\nsleep 0.3\nexec gcc \"$@\"\n",
    );
    let cc = cc.to_str().unwrap();
    env.write("warm.c", "int w;\n");
    env.ok(&[cc, "-c", "warm.c"]);
    env.zero();
    let (a, b) = (Pool::pipe(4), Pool::pipe(4));
    let mut children = Vec::new();
    for i in 0..4 {
        children.push(compile(&env, cc, &format!("fa{i}.c"), Some(&a)));
        children.push(compile(&env, cc, &format!("fb{i}.c"), Some(&b)));
    }
    for child in children {
        assert!(child.wait_with_output().unwrap().status.success());
    }
    let stats = env.stats();
    let shares = stats["counters"]["token_ms_by_build"]
        .as_object()
        .unwrap()
        .clone();
    assert_eq!(shares.len(), 2, "{stats}");
    let total: u64 = shares.values().map(|v| v.as_u64().unwrap()).sum();
    for (build, ms) in &shares {
        let share = ms.as_u64().unwrap() as f64 / total as f64;
        eprintln!("build {build}: {share:.2} of the token-time");
        assert!(
            (0.3..=0.7).contains(&share),
            "{build} got {share:.2} of the token-time: {stats}"
        );
    }
    let text = String::from_utf8_lossy(&env.ok(&["-s"]).stdout).into_owned();
    assert!(text.contains("Token time, build pipe:["), "{text}");
}
