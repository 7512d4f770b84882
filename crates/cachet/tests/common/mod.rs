//! Shared set-up for the end-to-end tests: an isolated cachet (own cache, own runtime dir,
//! own server) driven through the real binary.
#![allow(dead_code)]

use std::ffi::OsStr;
use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

pub const CACHET: &str = env!("CARGO_BIN_EXE_cachet");

pub struct Env {
    pub dir: tempfile::TempDir,
    pub cache_dir: PathBuf,
    pub runtime_dir: PathBuf,
    pub work: PathBuf,
    pub extra_env: Vec<(String, String)>,
}

impl Env {
    pub fn new() -> Env {
        // Short paths: the socket lives in runtime_dir.
        let dir = tempfile::Builder::new()
            .prefix("cachet-e2e")
            .tempdir()
            .unwrap();
        let cache_dir = dir.path().join("cache");
        let runtime_dir = dir.path().join("run");
        let work = dir.path().join("work");
        std::fs::create_dir_all(&work).unwrap();
        Env {
            dir,
            cache_dir,
            runtime_dir,
            work,
            extra_env: vec![],
        }
    }

    pub fn with_env(mut self, name: &str, value: &str) -> Env {
        self.extra_env.push((name.into(), value.into()));
        self
    }

    /// A command with this environment's isolation applied, its stdin [`no_input`]
    /// (`.output()` would otherwise give the child the machine's /dev/null).
    pub fn command(&self, program: impl AsRef<OsStr>) -> Command {
        let mut cmd = Command::new(program);
        cmd.current_dir(&self.work)
            .stdin(no_input())
            .env_remove("MAKEFLAGS")
            .env_remove("MFLAGS")
            .env_remove("CARGO_MAKEFLAGS")
            .env_remove("CACHET_LOG")
            .env_remove("CACHET_DISABLE")
            .env_remove("CACHET_RECACHE")
            .env_remove("CACHET_CONFIG")
            .env("XDG_CONFIG_HOME", self.dir.path().join("config"))
            .env("CACHET_DIR", &self.cache_dir)
            .env("CACHET_RUNTIME_DIR", &self.runtime_dir)
            // A server a failed test leaves behind goes away by itself.
            .env("CACHET_IDLE_TIMEOUT", "120")
            // No memory cgroups in the machine's tree: the memory tests make their own.
            .env("CACHET_TEST_NO_CGROUPS", "1")
            .env("LANG", "C")
            .env("LC_ALL", "C");
        for (k, v) in &self.extra_env {
            cmd.env(k, v);
        }
        cmd
    }

    pub fn cachet(&self) -> Command {
        self.command(CACHET)
    }

    /// `cachet <args…>` to completion, stdin closed.
    pub fn run(&self, args: &[&str]) -> Output {
        self.cachet().args(args).output().unwrap()
    }

    /// Same as `run` but must succeed.
    pub fn ok(&self, args: &[&str]) -> Output {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "cachet {args:?} failed: {:?}\nstdout: {}\nstderr: {}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        out
    }

    pub fn stats(&self) -> serde_json::Value {
        let out = self.ok(&["--show-stats", "--json"]);
        serde_json::from_slice(&out.stdout).unwrap()
    }

    pub fn counter(&self, name: &str) -> u64 {
        self.stats()["counters"][name].as_u64().unwrap()
    }

    /// Waits until the server has no cache write in flight.
    pub fn settle(&self) -> serde_json::Value {
        let start = Instant::now();
        loop {
            let stats = self.stats();
            if stats["pending_writes"] == 0 || start.elapsed() > Duration::from_secs(30) {
                return stats;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn zero(&self) {
        self.ok(&["--zero-stats"]);
    }

    pub fn socket(&self) -> PathBuf {
        self.runtime_dir.join(cachet::paths::socket_name())
    }

    /// Writes a file stamped a minute ago, as a file is that was not edited this instant
    /// (direct mode does not trust files modified as the compile starts).
    pub fn write(&self, name: &str, text: &str) -> PathBuf {
        let path = self.work.join(name);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).unwrap();
        }
        std::fs::write(&path, text).unwrap();
        let past = std::time::SystemTime::now() - Duration::from_secs(60);
        std::fs::File::options()
            .write(true)
            .open(&path)
            .unwrap()
            .set_modified(past)
            .unwrap();
        path
    }

    pub fn stop(&self) {
        let _ = self.cachet().arg("--stop-server").output();
    }

    /// Every cache entry file (64 hex characters) under the cache dir.
    pub fn entries(&self) -> Vec<PathBuf> {
        let mut found = Vec::new();
        walk(&self.cache_dir, &mut found);
        found.retain(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.len() == 64 && n.bytes().all(|b| b.is_ascii_hexdigit()))
        });
        found
    }
}

impl Drop for Env {
    fn drop(&mut self) {
        self.stop();
    }
}

/// An empty stdin: a pipe whose writer is gone, so a read sees EOF at once. Not
/// `Stdio::null()`, which opens the machine's /dev/null.
pub fn no_input() -> Stdio {
    let (reader, writer) = std::io::pipe().unwrap();
    drop(writer);
    Stdio::from(reader)
}

/// Output a test throws away, kept in `dir/name` (created or truncated) inside the test's
/// own temp dir rather than sent to the machine's /dev/null.
pub fn discard(dir: &Path, name: &str) -> Stdio {
    Stdio::from(std::fs::File::create(dir.join(name)).unwrap())
}

fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            walk(&path, out);
        } else {
            out.push(path);
        }
    }
}

/// Every file of a build's output dir but the linked program (`prog`), by name.
pub fn build_outputs(dir: &Path) -> std::collections::BTreeMap<String, Vec<u8>> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap())
        .filter(|e| e.file_name() != "prog")
        .map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            (name, std::fs::read(e.path()).unwrap())
        })
        .collect()
}

pub fn have(tool: &str) -> bool {
    // `.output()` reads and drops what `command -v` prints.
    Command::new("sh")
        .args(["-c", &format!("command -v {tool}")])
        .stdin(no_input())
        .output()
        .is_ok_and(|o| o.status.success())
}

/// A test that cannot run here says so. Under CI every prerequisite is installed by
/// .ci/run, so a skip there is a failure rather than a silent pass.
pub fn skip(why: &str) {
    if std::env::var_os("CI").is_some() {
        panic!("prerequisite missing under CI: {why}");
    }
    eprintln!("SKIPPED: {why}");
}

/// Compilers to run the C tests with: gcc always, clang when installed.
pub fn compilers() -> Vec<&'static str> {
    let mut list = vec!["gcc"];
    if have("clang") {
        list.push("clang");
    } else {
        skip("clang is not installed; the clang half of this test did not run");
    }
    list
}

/// Each installed compiler with `CACHET_DIRECT_MODE` on and off, and what a second identical
/// compile is then: a direct hit, or a preprocessor-mode hit.
pub fn modes() -> Vec<(&'static str, &'static str, &'static str)> {
    compilers()
        .into_iter()
        .flat_map(|c| [(c, "1", "direct hit"), (c, "0", "hit")])
        .collect()
}

pub fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Writes an executable shell script.
///
/// Written by a child `sh`, not by this process: tests run in threads, and a child forked
/// by another test thread while we held the file open for writing would make exec of it
/// fail with "Text file busy" (ETXTBSY).
pub fn script(path: &Path, body: &str) {
    write_executable(path, format!("#!/bin/sh\n{body}").as_bytes());
}

/// Writes an executable file through a child process; see [`script`].
pub fn write_executable(path: &Path, bytes: &[u8]) {
    let mut child = Command::new("sh")
        .args(["-c", "cat > \"$1\" && chmod 755 \"$1\"", "sh"])
        .arg(path)
        .stdin(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(bytes).unwrap();
    assert!(child.wait().unwrap().success());
}

/// Copies a fixture tree, leaving out any `target` build directory.
pub fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            if entry.file_name() != "target" {
                copy_dir(&entry.path(), &target);
            }
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}

/// Keeps `fds` open across exec in `cmd`'s child, as make does for its jobserver.
pub fn inherit_fds(cmd: &mut Command, fds: [i32; 2]) {
    use std::os::unix::process::CommandExt;
    // SAFETY: only fcntl between fork and exec.
    unsafe {
        cmd.pre_exec(move || {
            for fd in fds {
                let flags = libc::fcntl(fd, libc::F_GETFD);
                if flags >= 0 {
                    libc::fcntl(fd, libc::F_SETFD, flags & !libc::FD_CLOEXEC);
                }
            }
            Ok(())
        });
    }
}

/// Copies an executable through `cp`, for the same reason as [`script`].
pub fn copy_executable(from: &Path, to: &Path) {
    assert!(
        Command::new("cp")
            .arg(from)
            .arg(to)
            .status()
            .unwrap()
            .success()
    );
}

/// Polls `cond` for up to 30 s.
pub fn wait_for(what: &str, mut cond: impl FnMut() -> bool) {
    let start = Instant::now();
    while !cond() {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "timed out waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Waits until a file appears in `dir` (a test compiler writes one named after its pid),
/// and returns the pid it names.
pub fn wait_for_pid_file(what: &str, dir: &Path) -> i32 {
    wait_for(what, || std::fs::read_dir(dir).unwrap().count() > 0);
    let entry = std::fs::read_dir(dir).unwrap().next().unwrap().unwrap();
    entry.file_name().to_str().unwrap().parse().unwrap()
}

pub fn process_alive(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => !stat.contains(") Z "),
        Err(_) => false,
    }
}

/// Raw socket access for protocol fault tests.
pub fn raw_connect(env: &Env) -> UnixStream {
    let stream = UnixStream::connect(env.socket()).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    stream
}

pub fn send_raw(stream: &mut UnixStream, bytes: &[u8]) {
    let _ = stream.write_all(bytes);
}

pub fn read_all(stream: &mut UnixStream) -> Vec<u8> {
    let mut buf = Vec::new();
    let _ = stream.read_to_end(&mut buf);
    buf
}

/// Makes every file under `dir` older than the timestamp resolution, as files are that
/// were not just edited (a file changed as a compile starts is not trusted in a manifest).
pub fn age_all(dir: &Path) {
    let when = std::time::SystemTime::now() - Duration::from_secs(30);
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let path = entry.path();
        if path.is_dir() {
            age_all(&path);
        } else {
            std::fs::File::options()
                .write(true)
                .open(&path)
                .unwrap()
                .set_modified(when)
                .unwrap();
        }
    }
}

/// Runs `cmd` (a cachet command of `env`) to success and says what the compile was by the
/// server's counters: "direct hit", "hit", "miss" or "other".
pub fn outcome_of_command(env: &Env, cmd: &mut Command) -> (&'static str, Output) {
    let before = env.stats()["counters"].clone();
    let out = cmd.output().unwrap();
    assert!(out.status.success(), "{cmd:?}: {}", stderr(&out));
    let after = env.settle()["counters"].clone();
    let delta = |k: &str| after[k].as_u64().unwrap() - before[k].as_u64().unwrap();
    let kind = match (
        delta("direct_hits"),
        delta("cache_hits"),
        delta("cache_misses"),
    ) {
        (1, 1, 0) => "direct hit",
        (0, 1, 0) => "hit",
        (0, 0, 1) => "miss",
        _ => "other",
    };
    (kind, out)
}

/// Builds the C program `tests/fixtures/<name>.c` into the test's temp dir; its path.
pub fn fixture_program(env: &Env, name: &str) -> String {
    let out = env.dir.path().join(name);
    let source = Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("tests/fixtures/{name}.c"));
    let status = Command::new("gcc")
        .args(["-O2", "-o"])
        .arg(&out)
        .arg(source)
        .stdin(no_input())
        .status()
        .unwrap();
    assert!(status.success(), "cannot build the fixture {name}");
    out.to_str().unwrap().to_owned()
}
