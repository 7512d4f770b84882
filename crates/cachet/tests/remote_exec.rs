//! Remote execution of C compiles against a real REAPI service on loopback: each test
//! starts its own BuildGrid (tests/reapi/grid.py) and workers (tests/reapi/worker.py, a
//! small Bots API worker that runs each action chrooted into its input root, so a file
//! missing from the upload fails the action) in its temp dir, with the BuildGrid venv's
//! python that `scripts/services` installs (`CACHET_TEST_BUILDGRID_PYTHON`).

mod common;

use std::collections::BTreeMap;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use common::*;
use serde_json::Value;

/// The venv's python, or a skip.
fn python() -> Option<String> {
    match std::env::var("CACHET_TEST_BUILDGRID_PYTHON") {
        Ok(p) if Path::new(&p).exists() => Some(p),
        _ => {
            skip(
                "CACHET_TEST_BUILDGRID_PYTHON is not set: run `scripts/services start` and source target/services/env",
            );
            None
        }
    }
}

/// The venv's python and a temp dir for the grid, when remote execution can be tested
/// here (see [`python`] and [`root`]).
fn prerequisites() -> Option<(String, tempfile::TempDir)> {
    let python = python()?;
    root().then(|| (python, tempfile::tempdir().unwrap()))
}

/// Remote execution chroots: root only.
fn root() -> bool {
    if rustix::process::geteuid().is_root() {
        return true;
    }
    skip("the test worker chroots into input roots: run as root");
    false
}

fn tool(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/reapi")
        .join(name)
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A process of the test's own, killed when dropped.
struct Owned(Child);

impl Drop for Owned {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// One BuildGrid with its workers, all in `dir`.
struct Grid {
    python: String,
    dir: PathBuf,
    port: u16,
    tls: Option<Tls>,
    server: Option<Owned>,
    workers: Vec<(String, Owned)>,
}

#[derive(Clone)]
struct Tls {
    ca: String,
    cert: String,
    key: String,
    secret: PathBuf,
    token: PathBuf,
}

impl Grid {
    fn start(python: &str, dir: &Path, tls: Option<Tls>) -> Grid {
        let dir = dir.join("grid");
        std::fs::create_dir_all(&dir).unwrap();
        let mut grid = Grid {
            python: python.to_owned(),
            dir,
            port: free_port(),
            tls,
            server: None,
            workers: Vec::new(),
        };
        grid.start_server();
        grid
    }

    fn start_server(&mut self) {
        let _ = std::fs::remove_file(self.dir.join("bgd.pid"));
        let mut cmd = Command::new(&self.python);
        cmd.arg(tool("grid.py"))
            .args(["--port", &self.port.to_string(), "--dir"])
            .arg(&self.dir)
            .stdin(no_input())
            .stdout(discard(&self.dir, "bgd.out"))
            .stderr(discard(&self.dir, "bgd.err"));
        if let Some(tls) = &self.tls {
            cmd.args([
                "--tls-cert",
                &tls.cert,
                "--tls-key",
                &tls.key,
                "--jwt-secret",
            ])
            .arg(&tls.secret);
        }
        self.server = Some(Owned(cmd.spawn().unwrap()));
        let pid_file = self.dir.join("bgd.pid");
        let start = Instant::now();
        while !pid_file.exists() {
            assert!(
                start.elapsed() < Duration::from_secs(60),
                "BuildGrid did not start: {}",
                std::fs::read_to_string(self.dir.join("bgd.err")).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn endpoint(&self) -> String {
        match self.tls {
            Some(_) => format!("grpcs://127.0.0.1:{}", self.port),
            None => format!("grpc://127.0.0.1:{}", self.port),
        }
    }

    fn log(&self) -> PathBuf {
        self.dir.join("actions.log")
    }

    /// Starts worker `name`; with `start_when`, it joins only once that file exists.
    fn worker(&mut self, name: &str, start_when: Option<&Path>) {
        let mut cmd = Command::new(&self.python);
        cmd.arg(tool("worker.py"))
            .args(["--endpoint", &self.endpoint(), "--name", name, "--dir"])
            .arg(self.dir.join("workers"))
            .arg("--log")
            .arg(self.log())
            .stdin(no_input())
            .stdout(discard(&self.dir, &format!("{name}.out")))
            .stderr(discard(&self.dir, &format!("{name}.err")));
        if let Some(file) = start_when {
            cmd.arg("--start-when").arg(file);
        }
        if let Some(tls) = &self.tls {
            cmd.args(["--ca", &tls.ca, "--token"]).arg(&tls.token);
        }
        self.workers
            .push((name.to_owned(), Owned(cmd.spawn().unwrap())));
    }

    fn kill_worker(&mut self, name: &str) {
        self.workers.retain(|(n, _)| n != name);
    }

    fn stop_server(&mut self) {
        self.server = None;
    }

    /// The actions the workers ran, one JSON object each.
    fn actions(&self) -> Vec<Value> {
        std::fs::read_to_string(self.log())
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }

    /// The settings that send misses to this grid.
    fn settings(&self) -> Vec<(String, String)> {
        let mut s = vec![
            ("CACHET_EXECUTION_ENDPOINT".into(), self.endpoint()),
            ("CACHET_EXECUTION_INSTANCE_NAME".into(), "main".into()),
        ];
        if let Some(tls) = &self.tls {
            s.push(("CACHET_EXECUTION_CA_FILE".into(), tls.ca.clone()));
            let token = std::fs::read_to_string(&tls.token).unwrap();
            s.push(("CACHET_EXECUTION_BEARER_TOKEN".into(), token.trim().into()));
        }
        s
    }
}

fn with_settings(mut env: Env, settings: &[(String, String)]) -> Env {
    for (k, v) in settings {
        env = env.with_env(k, v);
    }
    env
}

fn copy_project(env: &Env) {
    copy_dir(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/cproject"),
        &env.work,
    );
}

/// `make -j2` of the C fixture with `cc` (`-O2 -g -MMD -MP`); its outputs by name.
fn make(env: &Env, cc: &str, extra: &[(&str, &str)]) -> BTreeMap<String, Vec<u8>> {
    let mut cmd = env.command("make");
    cmd.args(["-j2", &format!("CC={cc}")]);
    for (k, v) in extra {
        cmd.env(k, v);
    }
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "make CC={cc} failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        stderr(&out)
    );
    build_outputs(&env.work.join("out"))
}

fn same_outputs(got: &BTreeMap<String, Vec<u8>>, plain: &BTreeMap<String, Vec<u8>>, what: &str) {
    assert_eq!(
        got.keys().collect::<Vec<_>>(),
        plain.keys().collect::<Vec<_>>(),
        "{what}"
    );
    for (name, bytes) in plain {
        assert!(
            got[name] == *bytes,
            "{what}: {name} differs from the plain build's"
        );
    }
}

fn execution(stats: &Value) -> &Value {
    &stats["counters"]["execution"]
}

/// The acceptance scenario: the fixture built twice with `-g`; after each slot's first
/// (local) compile, every miss runs on the workers, byte-identical to a local build.
#[test]
fn every_miss_after_a_slots_first_compile_runs_on_the_workers_byte_identical() {
    let Some((python, tmp)) = prerequisites() else {
        return;
    };
    if !have("make") {
        return skip("make is not installed");
    }
    let mut grid = Grid::start(&python, tmp.path(), None);
    grid.worker("w1", None);
    grid.worker("w2", None);
    let env = with_settings(Env::new(), &grid.settings())
        .with_env("CACHET_EXECUTION_FORBID_LOCAL", "true")
        .with_env("CACHET_EXECUTION_MAX_IN_FLIGHT", "4")
        .with_env("CACHET_JOBS", "2");
    copy_project(&env);
    let plain = make(&env, "gcc", &[]);
    let objects = plain.keys().filter(|k| k.ends_with(".o")).count();
    assert_eq!(objects, 6);
    std::fs::remove_dir_all(env.work.join("out")).unwrap();

    let cc = format!("{CACHET} gcc");
    // First build: every slot compiles here first (what it reads is not known yet).
    same_outputs(&make(&env, &cc, &[]), &plain, "first build");
    let stats = env.settle();
    assert_eq!(execution(&stats)["first_compiles_local"], 6, "{stats}");
    // The pool counts the remote places too (make joining it runs wider).
    assert_eq!(stats["jobserver"]["tokens"], 2 + 4, "{stats}");
    assert_eq!(execution(&stats)["remote_compiles"], 0, "{stats}");
    assert!(grid.actions().is_empty());
    std::fs::remove_dir_all(env.work.join("out")).unwrap();

    // Second build, every compile forced to miss: all six run remotely (a local compile
    // is forbidden: a fallback would fail the build).
    env.zero();
    same_outputs(
        &make(&env, &cc, &[("CACHET_RECACHE", "1")]),
        &plain,
        "remote build",
    );
    let stats = env.settle();
    let e = execution(&stats);
    assert_eq!(e["remote_compiles"], 6, "{stats}");
    assert_eq!(e["fallbacks"], serde_json::json!({}), "{stats}");
    let actions = grid.actions();
    let ran = actions.iter().filter(|a| a["exit_code"] == 0).count();
    assert_eq!(ran, 6, "{actions:?}");
    // Both workers took part? Not asserted: one may be quicker to every lease.
    // One toolchain, uploaded with the first remote compile.
    assert_eq!(e["toolchain_uploads"], 1, "{stats}");

    // A header change: the compiles that include it miss and run remotely, with the new
    // header uploaded; the others hit.
    let header = env.work.join("include/config.h");
    let text = std::fs::read_to_string(&header).unwrap();
    std::fs::write(&header, format!("{text}\n#define REMOTE_TEST 1\n")).unwrap();
    std::fs::remove_dir_all(env.work.join("out")).unwrap();
    let plain2 = make(&env, "gcc", &[]);
    std::fs::remove_dir_all(env.work.join("out")).unwrap();
    env.zero();
    same_outputs(&make(&env, &cc, &[]), &plain2, "after a header change");
    let stats = env.settle();
    let e = execution(&stats);
    let misses = stats["counters"]["cache_misses"].as_u64().unwrap();
    assert!(misses > 0, "{stats}");
    assert_eq!(e["remote_compiles"].as_u64().unwrap(), misses, "{stats}");
    assert_eq!(e["toolchain_uploads"], 0, "{stats}");
    assert_eq!(grid.actions().len() as u64, 6 + misses);
}

/// Compiles `a.c` into `a.o` through cachet with `flags`, and waits until the server has
/// recorded what the compile read (after the client's answer); the object.
fn compile_a(env: &Env, flags: &[&str]) -> Vec<u8> {
    let out = env
        .cachet()
        .arg("gcc")
        .args(flags)
        .args(["-c", "a.c", "-o", "a.o"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    env.settle();
    std::fs::read(env.work.join("a.o")).unwrap()
}

/// Writes `a.c` returning `n`, and compiles it (see [`compile_a`]).
fn compile_returning(env: &Env, n: u32) {
    env.write("a.c", &format!("int a(void) {{ return {n}; }}\n"));
    compile_a(env, &[]);
}

/// A compile that now reads a file the upload lacks (a header newly included) fails on
/// the worker, where only the upload exists, and compiles locally: the build is green,
/// its outputs those of a local build, and the fallback is counted.
#[test]
fn a_file_missing_from_the_upload_fails_remotely_and_compiles_locally() {
    let Some((python, tmp)) = prerequisites() else {
        return;
    };
    let mut grid = Grid::start(&python, tmp.path(), None);
    grid.worker("w1", None);
    let env = with_settings(Env::new(), &grid.settings());
    env.write("extra.h", "#define EXTRA 2\n");
    env.write("a.c", "int a(void) { return 1; }\n");
    let compile = |env: &Env| compile_a(env, &["-g"]);
    compile(&env);
    // The source now includes a header its slot never read: not in the upload.
    env.write(
        "a.c",
        "#include \"extra.h\"\nint a(void) { return EXTRA; }\n",
    );
    let got = compile(&env);
    let stats = env.settle();
    let e = execution(&stats);
    assert_eq!(e["fallbacks"]["remote compile failed"], 1, "{stats}");
    assert_eq!(e["remote_compiles"], 0, "{stats}");
    let actions = grid.actions();
    assert_eq!(actions.len(), 1, "{actions:?}");
    assert_ne!(actions[0]["exit_code"], 0, "{actions:?}");
    let plain = env
        .command("gcc")
        .args(["-g", "-c", "a.c", "-o", "plain.o"])
        .status()
        .unwrap();
    assert!(plain.success());
    assert!(got == std::fs::read(env.work.join("plain.o")).unwrap());
    // Its local compile recorded the new header: the next miss of the slot runs remotely.
    env.write("extra.h", "#define EXTRA 3\n");
    compile(&env);
    let stats = env.settle();
    assert_eq!(execution(&stats)["remote_compiles"], 1, "{stats}");
}

/// TLS and a bearer token against a service that requires both: compiles run remotely
/// with the token; without it the service refuses, and the build compiles locally.
#[test]
fn execution_over_tls_with_a_bearer_token_and_without_one_never_fails_a_build() {
    let Some((python, tmp)) = prerequisites() else {
        return;
    };
    let var = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
    let (Some(ca), Some(cert), Some(key)) = (
        var("CACHET_TEST_TLS_CA"),
        var("CACHET_TEST_TLS_CERT"),
        var("CACHET_TEST_TLS_KEY"),
    ) else {
        return skip("CACHET_TEST_TLS_CA/_CERT/_KEY are not set: run `scripts/services start`");
    };
    let secret = tmp.path().join("jwt.secret");
    std::fs::write(&secret, "a test secret of more than thirty-two bytes").unwrap();
    let token = tmp.path().join("token");
    let made = Command::new(&python)
        .args([
            "-c",
            "import sys, time, jwt; print(jwt.encode({'sub': 'test', 'exp': int(time.time()) + 3600}, open(sys.argv[1]).read(), algorithm='HS256'))",
        ])
        .arg(&secret)
        .stdin(no_input())
        .output()
        .unwrap();
    assert!(made.status.success(), "{}", stderr(&made));
    std::fs::write(&token, &made.stdout).unwrap();
    let tls = Tls {
        ca,
        cert,
        key,
        secret,
        token,
    };
    let mut grid = Grid::start(&python, tmp.path(), Some(tls));
    grid.worker("w1", None);
    let settings = grid.settings();
    assert!(
        settings
            .iter()
            .any(|(k, _)| k == "CACHET_EXECUTION_BEARER_TOKEN")
    );
    let env = with_settings(Env::new(), &settings);
    env.write("a.c", "int a(void) { return 1; }\n");
    compile_returning(&env, 1);
    compile_returning(&env, 2);
    let stats = env.settle();
    assert_eq!(execution(&stats)["remote_compiles"], 1, "{stats}");

    // No token: refused by the service, compiled here.
    let unauthorised: Vec<(String, String)> = settings
        .into_iter()
        .filter(|(k, _)| k != "CACHET_EXECUTION_BEARER_TOKEN")
        .collect();
    let env = with_settings(Env::new(), &unauthorised);
    compile_returning(&env, 1);
    compile_returning(&env, 2);
    let stats = env.settle();
    let e = execution(&stats);
    assert_eq!(e["remote_compiles"], 0, "{stats}");
    assert_eq!(e["fallbacks"]["toolchain not uploaded"], 1, "{stats}");
}

/// A source gcc takes a moment over at `-O2 -g` (thousands of small functions), so that
/// a test can act while a worker runs it; `n` changes its text.
fn slow_source(n: u32) -> String {
    let mut text = String::new();
    for i in 0..500 {
        text.push_str(&format!(
            "int f{i}(int x) {{ int y = x * {i} + {n}; for (int k = 0; k < x; k++) y ^= y << 3; return y; }}\n"
        ));
    }
    text
}

/// Starts a compile of `slow.c` through cachet; it runs on while the test acts.
fn start_slow_compile(env: &Env, n: u32) -> std::thread::JoinHandle<std::process::Output> {
    env.write("slow.c", &slow_source(n));
    let mut cmd = env.cachet();
    cmd.args(["gcc", "-O2", "-g", "-c", "slow.c", "-o", "slow.o"]);
    std::thread::spawn(move || cmd.output().unwrap())
}

/// Waits until a worker has staged an action (it runs it now), while `compile` runs.
fn wait_for_staging(
    grid: &Grid,
    env: &Env,
    compile: &std::thread::JoinHandle<std::process::Output>,
) {
    let stage = grid.dir.join("workers/stage");
    let staged = || {
        std::fs::read_dir(&stage)
            .into_iter()
            .flatten()
            .flatten()
            .any(|worker| {
                std::fs::read_dir(worker.path())
                    .map(|mut leases| leases.next().is_some())
                    .unwrap_or(false)
            })
    };
    let start = Instant::now();
    while !staged() {
        if compile.is_finished() || start.elapsed() > Duration::from_secs(60) {
            panic!(
                "no action was staged: {:?}\n{}\n{}",
                grid.actions(),
                std::fs::read_to_string(grid.dir.join("w1.err")).unwrap_or_default(),
                env.stats()
            );
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Compiles `slow.c` plainly; the object.
fn plain_slow(env: &Env) -> Vec<u8> {
    let status = env
        .command("gcc")
        .args(["-O2", "-g", "-c", "slow.c", "-o", "plain.o"])
        .status()
        .unwrap();
    assert!(status.success());
    std::fs::read(env.work.join("plain.o")).unwrap()
}

/// Compiles `slow.c` twice through one worker of a fresh grid (execution timeout
/// `timeout`): the first locally, the second remotely, with `interrupt` done to the grid
/// while the worker runs it. The second compile must succeed with a plain build's object;
/// the server's stats after it, with the grid and the env for more.
fn interrupted_remote_compile(
    python: &str,
    tmp: &Path,
    timeout: &str,
    interrupt: impl FnOnce(&mut Grid),
) -> (Value, Grid, Env) {
    let mut grid = Grid::start(python, tmp, None);
    grid.worker("w1", None);
    let env =
        with_settings(Env::new(), &grid.settings()).with_env("CACHET_EXECUTION_TIMEOUT", timeout);
    let first = start_slow_compile(&env, 1).join().unwrap();
    assert!(first.status.success(), "{}", stderr(&first));
    env.settle();
    let compile = start_slow_compile(&env, 2);
    wait_for_staging(&grid, &env, &compile);
    interrupt(&mut grid);
    let out = compile.join().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(std::fs::read(env.work.join("slow.o")).unwrap() == plain_slow(&env));
    let stats = env.settle();
    assert_eq!(execution(&stats)["remote_compiles"], 0, "{stats}");
    (stats, grid, env)
}

/// A worker SIGKILLed while it runs the action: nothing comes back before the action's
/// deadline, and the compile runs locally, green and byte-identical.
#[test]
fn a_worker_killed_mid_action_leaves_the_compile_green_through_a_local_one() {
    let Some((python, tmp)) = prerequisites() else {
        return;
    };
    let (stats, _grid, _env) =
        interrupted_remote_compile(&python, tmp.path(), "6s", |grid| grid.kill_worker("w1"));
    assert_eq!(execution(&stats)["fallbacks"]["timeout"], 1, "{stats}");
}

/// The service stopped while a worker runs the action: the operation's stream breaks,
/// and the compile runs locally, green and byte-identical; later ones find it gone.
#[test]
fn the_service_stopped_mid_action_leaves_the_build_green_through_local_compiles() {
    let Some((python, tmp)) = prerequisites() else {
        return;
    };
    let (stats, _grid, env) =
        interrupted_remote_compile(&python, tmp.path(), "20s", Grid::stop_server);
    assert_eq!(execution(&stats)["fallbacks"]["server error"], 1, "{stats}");
    // Later misses find the service gone, compile locally, and open the breaker.
    for n in 3..7 {
        let out = start_slow_compile(&env, n).join().unwrap();
        assert!(out.status.success(), "{}", stderr(&out));
        env.settle();
    }
    let stats = env.settle();
    let e = execution(&stats);
    assert_eq!(e["fallbacks"]["breaker open"], 2, "{stats}");
    assert_eq!(stats["counters"]["cache_misses"], 6, "{stats}");
}

/// Two cachet servers submit the same cold build's actions at once, before any worker
/// runs: how many times did each action run? BuildGrid merges an Execute into an
/// unfinished job of the same action digest, but its lookup and its new job are two
/// transactions, so two submissions at the same moment can make two jobs (see
/// docs/remote-execution.md). Both builds are green and identical either way; the counts
/// are printed for the record.
#[test]
fn two_servers_submitting_the_same_actions_at_once_both_get_results() {
    let Some((python, tmp)) = prerequisites() else {
        return;
    };
    if !have("make") {
        return skip("make is not installed");
    }
    let gate = tmp.path().join("go");
    let mut grid = Grid::start(&python, tmp.path(), None);
    grid.worker("w1", Some(&gate));
    grid.worker("w2", Some(&gate));
    let a = with_settings(Env::new(), &grid.settings());
    let b = with_settings(Env::new(), &grid.settings());
    // One checkout, built by both servers: the same actions, digest for digest.
    copy_project(&a);
    let objects =
        ["circle", "main", "noisy", "square", "strutil", "table"].map(|o| format!("out/{o}.o"));
    let make_objects = |env: &Env, extra: &[(&str, &str)]| {
        let mut cmd = env.command("make");
        cmd.current_dir(&a.work)
            .args(["-j6", &format!("CC={CACHET} gcc")])
            .args(&objects);
        for (k, v) in extra {
            cmd.env(k, v);
        }
        cmd
    };
    let plain = {
        let out = a
            .command("make")
            .args(["-j2", "CC=gcc"])
            .args(&objects)
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", stderr(&out));
        build_outputs(&a.work.join("out"))
    };
    // Each server's first compiles of the slots, locally.
    for env in [&a, &b] {
        std::fs::remove_dir_all(a.work.join("out")).unwrap();
        let out = make_objects(env, &[]).output().unwrap();
        assert!(out.status.success(), "{}", stderr(&out));
        env.settle();
    }
    std::fs::remove_dir_all(a.work.join("out")).unwrap();
    std::fs::create_dir(a.work.join("out")).unwrap();
    // Both at once, every compile a miss; the workers start once both wait on all six.
    let builds: Vec<_> = [&a, &b]
        .iter()
        .map(|env| {
            let mut cmd = make_objects(env, &[("CACHET_RECACHE", "1")]);
            std::thread::spawn(move || cmd.output().unwrap())
        })
        .collect();
    for env in [&a, &b] {
        wait_for("six compiles waiting on the service", || {
            env.stats()["compiles_running"] == 6
        });
    }
    std::thread::sleep(Duration::from_millis(500));
    std::fs::write(&gate, "").unwrap();
    for build in builds {
        let out = build.join().unwrap();
        assert!(out.status.success(), "{}", stderr(&out));
    }
    let got = build_outputs(&a.work.join("out"));
    for (name, bytes) in plain
        .iter()
        .filter(|(n, _)| n.ends_with(".o") || n.ends_with(".d"))
    {
        assert!(got[name] == *bytes, "{name} differs from the plain build's");
    }
    let mut runs: BTreeMap<String, u32> = BTreeMap::new();
    for action in grid.actions() {
        if action["exit_code"] == 0 {
            *runs
                .entry(action["action"].as_str().unwrap().to_owned())
                .or_default() += 1;
        }
    }
    let remote: u64 = [&a, &b]
        .iter()
        .map(|env| {
            execution(&env.settle())["remote_compiles"]
                .as_u64()
                .unwrap()
        })
        .sum();
    eprintln!(
        "two servers, 6 identical actions each: {} distinct actions ran {} times ({:?}); {remote} remote compiles counted",
        runs.len(),
        runs.values().sum::<u32>(),
        runs.values().collect::<Vec<_>>()
    );
    assert_eq!(runs.len(), 6, "{runs:?}");
    assert!(runs.values().all(|n| (1..=2).contains(n)), "{runs:?}");
    assert_eq!(remote, 12);
}

/// The service restarted with an empty CAS (an in-memory one): the blobs the server took
/// for uploaded are gone, the service says so, and the next remote compile uploads them
/// again and runs remotely.
#[test]
fn a_service_that_lost_its_blobs_gets_them_again() {
    let Some((python, tmp)) = prerequisites() else {
        return;
    };
    let mut grid = Grid::start(&python, tmp.path(), None);
    grid.worker("w1", None);
    let env = with_settings(Env::new(), &grid.settings())
        .with_env("CACHET_EXECUTION_FORBID_LOCAL", "true");
    compile_returning(&env, 1);
    compile_returning(&env, 2);
    grid.kill_worker("w1");
    grid.stop_server();
    grid.start_server();
    grid.worker("w1b", None);
    compile_returning(&env, 3);
    let stats = env.settle();
    let e = execution(&stats);
    assert_eq!(e["remote_compiles"], 2, "{stats}");
    assert_eq!(e["fallbacks"], serde_json::json!({}), "{stats}");
}
