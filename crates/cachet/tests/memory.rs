//! Memory admission, end to end. The compiler is a memory-hungry fake
//! (tests/fixtures/memhog.c): for a compile or a link it starts a child that allocates and
//! touches a given number of MiB and holds them, logs its start and end, then runs the real
//! gcc. What ran at once is read from its own log, never from timings.
//!
//! The OOM tests need a memory cgroup the test can make (root, a memory controller): they
//! make one under their own with a limit, start the server inside it, and remove it after.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output};
use std::sync::atomic::{AtomicU32, Ordering};

use common::*;

/// A server with 8 tokens whose memory fits two compiles of the default prediction.
fn setup(budget: &str, default: &str) -> (Env, String) {
    let env = Env::new()
        .with_env("CACHET_JOBS", "8")
        .with_env("CACHET_MEMORY_LIMIT", budget)
        .with_env("CACHET_MEMORY_DEFAULT", default);
    let log = env.dir.path().join("memhog.log");
    let env = env.with_env("MEMHOG_LOG", log.to_str().unwrap());
    let hog = fixture_program(&env, "memhog");
    (env, hog)
}

/// One line of the fake compiler's log.
#[derive(Debug, Clone, Copy)]
struct Event {
    at: i128,
    pid: i32,
    what: &'static str,
}

fn events(env: &Env) -> Vec<Event> {
    let text = std::fs::read_to_string(env.dir.path().join("memhog.log")).unwrap_or_default();
    let mut events: Vec<Event> = text
        .lines()
        .map(|line| {
            let mut words = line.split(' ');
            let at = words.next().unwrap().parse().unwrap();
            let pid = words.next().unwrap().parse().unwrap();
            let what = match words.next().unwrap() {
                "start" => "start",
                "end" => "end",
                _ => "killed",
            };
            Event { at, pid, what }
        })
        .collect();
    events.sort_by_key(|e| e.at);
    events
}

/// The most fake compiles that ran at once, by their own log.
fn most_at_once(env: &Env) -> usize {
    let mut running = 0usize;
    let mut most = 0;
    for e in events(env) {
        if e.what == "start" {
            running += 1;
        } else {
            running -= 1;
        }
        most = most.max(running);
    }
    most
}

fn source(env: &Env, name: &str, n: usize) {
    env.write(name, &format!("int f{n}(void) {{ return {n}; }}\n"));
}

fn spawn(env: &Env, args: &[&str], out: &str) -> Child {
    env.cachet()
        .args(args)
        .stdout(discard(env.dir.path(), &format!("{out}.out")))
        .stderr(discard(env.dir.path(), &format!("{out}.err")))
        .spawn()
        .unwrap()
}

#[test]
fn eight_compiles_with_room_for_two_never_run_more_than_two_at_once() {
    let (env, hog) = setup("250M", "100M");
    let env = env
        .with_env("MEMHOG_MIB", "100")
        .with_env("MEMHOG_HOLD_MS", "1000");
    let mut children = Vec::new();
    for n in 0..8 {
        source(&env, &format!("f{n}.c"), n);
        let (c, o) = (format!("f{n}.c"), format!("f{n}.o"));
        children.push(spawn(&env, &[&hog, "-c", &c, "-o", &o], &format!("f{n}")));
    }
    for mut child in children {
        assert!(child.wait().unwrap().success());
    }
    for n in 0..8 {
        assert!(env.work.join(format!("f{n}.o")).exists());
    }
    assert_eq!(events(&env).len(), 16, "{:?}", events(&env));
    assert_eq!(most_at_once(&env), 2, "{:?}", events(&env));
    let stats = env.stats();
    assert!(stats["counters"]["memory_waits"].as_u64().unwrap() >= 1);
    assert_eq!(stats["memory"]["budget_bytes"], 250u64 << 20);
    assert!(
        stats["memory"]["measure"]
            .as_str()
            .unwrap()
            .contains("ru_maxrss"),
        "the tests' servers measure without cgroups: {}",
        stats["memory"]["measure"]
    );
}

#[test]
fn a_compile_larger_than_the_whole_budget_runs_alone_and_succeeds() {
    let (env, hog) = setup("250M", "50M");
    source(&env, "big.c", 1);
    // Learn its peak (alone: nothing else runs), then build it again beside small ones.
    let out = env
        .cachet()
        .args([&hog, "-c", "big.c", "-o", "big.o"])
        .env("MEMHOG_MIB", "400")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let largest = &env.stats()["memory"]["largest"][0];
    assert!(largest[2].as_u64().unwrap() >= 400 << 20, "{largest}");
    std::fs::remove_file(env.dir.path().join("memhog.log")).unwrap();

    let mut big = env.cachet();
    big.args([&hog, "-c", "big.c", "-o", "big.o"])
        .env("MEMHOG_MIB", "400")
        .env("MEMHOG_HOLD_MS", "1000")
        .env("CACHET_RECACHE", "1");
    let mut children = vec![big.spawn().unwrap()];
    for n in 0..3 {
        source(&env, &format!("s{n}.c"), n);
        let (c, o) = (format!("s{n}.c"), format!("s{n}.o"));
        let mut small = env.cachet();
        small
            .args([&hog, "-c", &c, "-o", &o])
            .env("MEMHOG_MIB", "20")
            .env("MEMHOG_HOLD_MS", "1000");
        children.push(small.spawn().unwrap());
    }
    for mut child in children {
        assert!(child.wait().unwrap().success());
    }
    let events = events(&env);
    assert_eq!(events.len(), 8, "{events:?}");
    // While the big one ran, nothing else did.
    let big_pid = {
        // The big one is the only compile that starts and ends with nothing in between.
        let starts: Vec<&Event> = events.iter().filter(|e| e.what == "start").collect();
        starts
            .iter()
            .find(|s| {
                let end = events
                    .iter()
                    .find(|e| e.pid == s.pid && e.what == "end")
                    .unwrap();
                events
                    .iter()
                    .filter(|e| e.at > s.at && e.at < end.at)
                    .count()
                    == 0
            })
            .map(|s| s.pid)
    };
    assert!(big_pid.is_some(), "no compile ran alone: {events:?}");
    assert_eq!(
        most_at_once(&env),
        3,
        "the three small ones fit together: {events:?}"
    );
}

#[test]
fn a_hit_completes_while_a_held_compile_is_still_waiting() {
    let (env, hog) = setup("250M", "100M");
    source(&env, "hit.c", 0);
    // The entry the hit will come from (plain gcc: no fake compiler needed).
    env.ok(&["gcc", "-c", "hit.c", "-o", "hit.o"]);
    env.settle();
    // They hold their memory until the test says so: no timing decides the order.
    let release = env.dir.path().join("release");
    let env = env
        .with_env("MEMHOG_MIB", "100")
        .with_env("MEMHOG_UNTIL", release.to_str().unwrap());
    let mut children = Vec::new();
    for n in 1..=3 {
        source(&env, &format!("w{n}.c"), n);
        let (c, o) = (format!("w{n}.c"), format!("w{n}.o"));
        children.push(spawn(&env, &[&hog, "-c", &c, "-o", &o], &format!("w{n}")));
    }
    // Two run and hold their memory; the third waits for one of them.
    wait_for("two fake compiles to start", || {
        events(&env).iter().filter(|e| e.what == "start").count() == 2
    });
    wait_for("the third to wait for memory", || {
        env.stats()["memory"]["waiting"].as_u64() == Some(1)
    });
    let before = env.counter("cache_hits");
    env.ok(&["gcc", "-c", "hit.c", "-o", "hit.o"]);
    assert_eq!(env.counter("cache_hits"), before + 1);
    let starts_at_hit = events(&env).iter().filter(|e| e.what == "start").count();
    assert_eq!(
        starts_at_hit, 2,
        "the held compile had not started when the hit was done"
    );
    std::fs::write(&release, "").unwrap();
    for mut child in children {
        assert!(child.wait().unwrap().success());
    }
    assert_eq!(most_at_once(&env), 2);
}

#[test]
fn a_link_waits_for_admission_like_a_compile() {
    let (env, hog) = setup("250M", "100M");
    let env = env
        .with_env("MEMHOG_MIB", "100")
        .with_env("MEMHOG_HOLD_MS", "1000");
    let mut children = Vec::new();
    for n in 0..4 {
        env.write(
            &format!("m{n}.c"),
            &format!("int main(void) {{ return {n}; }}\n"),
        );
        let status = env
            .command("gcc")
            .args(["-c", &format!("m{n}.c"), "-o", &format!("m{n}.o")])
            .status()
            .unwrap();
        assert!(status.success());
        let (o, app) = (format!("m{n}.o"), format!("app{n}"));
        children.push(spawn(&env, &[&hog, &o, "-o", &app], &format!("link{n}")));
    }
    for mut child in children {
        assert!(child.wait().unwrap().success());
    }
    for n in 0..4 {
        let status = Command::new(env.work.join(format!("app{n}")))
            .status()
            .unwrap();
        assert_eq!(status.code(), Some(n));
    }
    assert_eq!(most_at_once(&env), 2, "{:?}", events(&env));
    let counters = &env.stats()["counters"];
    assert_eq!(counters["local_runs_admitted"], 4);
    assert!(counters["memory_waits"].as_u64().unwrap() >= 1);
}

/// A memory cgroup of the test's own, under the one it runs in, removed on drop.
struct TestCgroup {
    dir: PathBuf,
}

impl TestCgroup {
    /// A group limited to `limit` bytes, or why none can be made here.
    fn new(limit: u64) -> Result<TestCgroup, String> {
        static N: AtomicU32 = AtomicU32::new(0);
        let own = std::fs::read_to_string("/proc/self/cgroup").map_err(|e| e.to_string())?;
        let path = own
            .lines()
            .find_map(|l| {
                let mut parts = l.splitn(3, ':');
                let (_, controllers, path) = (parts.next()?, parts.next()?, parts.next()?);
                controllers
                    .split(',')
                    .any(|c| c == "memory")
                    .then_some(path)
            })
            .ok_or("no cgroup v1 memory controller here")?;
        let parent = Path::new("/sys/fs/cgroup/memory").join(path.trim_start_matches('/'));
        let dir = parent.join(format!(
            "cachet-test-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir(&dir).map_err(|e| format!("cannot make {}: {e}", dir.display()))?;
        let group = TestCgroup { dir };
        std::fs::write(group.dir.join("memory.limit_in_bytes"), limit.to_string())
            .map_err(|e| format!("cannot limit {}: {e}", group.dir.display()))?;
        Ok(group)
    }

    /// Starts `env`'s server inside the group.
    fn start_server(&self, env: &Env) {
        let procs = self.dir.join("cgroup.procs");
        let out = env
            .command("sh")
            .args([
                "-c",
                "echo $$ > \"$1\" && exec \"$2\" --start-server",
                "sh",
                procs.to_str().unwrap(),
                CACHET,
            ])
            // The server makes its compiles' groups under this one.
            .env("CACHET_TEST_NO_CGROUPS", "")
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", stderr(&out));
        let measure = env.stats()["memory"]["measure"]
            .as_str()
            .unwrap()
            .to_owned();
        assert!(measure.contains("cgroup v1"), "{measure}");
    }
}

impl Drop for TestCgroup {
    fn drop(&mut self) {
        // The server in it has stopped (its Env dropped first); its groups went with it,
        // but a killed server would leave them.
        for _ in 0..100 {
            if let Ok(entries) = std::fs::read_dir(&self.dir) {
                for entry in entries.flatten() {
                    if entry.path().is_dir() {
                        let _ = std::fs::remove_dir(entry.path());
                    }
                }
            }
            if std::fs::remove_dir(&self.dir).is_ok() {
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        eprintln!("could not remove {}", self.dir.display());
    }
}

/// A server in a 300 MiB cgroup, and a fake compiler whose child takes `first` MiB on
/// its first attempt and `then` MiB after.
/// The group comes first, so it is dropped last: after the server in it has stopped.
fn oom_setup(first: u64, then: u64) -> Option<(TestCgroup, Env, String)> {
    let (env, hog) = setup("80%", "50M");
    let mark = env.dir.path().join("first-attempt-done");
    let env = env
        .with_env("MEMHOG_MARK", mark.to_str().unwrap())
        .with_env("MEMHOG_FIRST_MIB", &first.to_string())
        .with_env("MEMHOG_MIB", &then.to_string());
    let group = match TestCgroup::new(300 << 20) {
        Ok(group) => group,
        Err(why) => {
            skip(&format!("no memory cgroup for the OOM tests: {why}"));
            return None;
        }
    };
    group.start_server(&env);
    Some((group, env, hog))
}

fn run(env: &Env, args: &[&str]) -> Output {
    env.cachet().args(args).output().unwrap()
}

#[test]
fn a_compile_the_oom_killer_struck_runs_again_alone_and_the_build_succeeds() {
    let Some((_group, env, hog)) = oom_setup(400, 20) else {
        return;
    };
    source(&env, "a.c", 1);
    let out = run(&env, &[&hog, "-c", "a.c", "-o", "a.o"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        !stderr(&out).contains("Killed signal"),
        "the killed attempt's error reached the build: {}",
        stderr(&out)
    );
    let what: Vec<&str> = events(&env).iter().map(|e| e.what).collect();
    assert_eq!(what, ["start", "killed", "start", "end"]);
    let counters = &env.stats()["counters"];
    assert_eq!(counters["oom_kills"], 1);
    assert_eq!(counters["oom_retries_succeeded"], 1);
    // The object is gcc's own.
    let plain = env
        .command("gcc")
        .args(["-c", "a.c", "-o", "plain.o"])
        .status()
        .unwrap();
    assert!(plain.success());
    assert_eq!(
        std::fs::read(env.work.join("a.o")).unwrap(),
        std::fs::read(env.work.join("plain.o")).unwrap()
    );

    // A link the client runs itself is retried the same way.
    env.write("main.c", "int main(void) { return 0; }\n");
    let status = env
        .command("gcc")
        .args(["-c", "main.c", "-o", "main.o"])
        .status()
        .unwrap();
    assert!(status.success());
    std::fs::remove_file(env.dir.path().join("first-attempt-done")).unwrap();
    let out = run(&env, &[&hog, "main.o", "-o", "app"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        Command::new(env.work.join("app"))
            .status()
            .unwrap()
            .success()
    );
    let counters = &env.stats()["counters"];
    assert_eq!(counters["oom_kills"], 2);
    assert_eq!(counters["oom_retries_succeeded"], 2);
}

#[test]
fn a_compile_killed_twice_fails_as_the_compiler_did_after_exactly_one_retry() {
    let Some((_group, env, hog)) = oom_setup(400, 400) else {
        return;
    };
    source(&env, "a.c", 1);
    let out = run(&env, &[&hog, "-c", "a.c", "-o", "a.o"]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        stderr(&out)
            .matches("Killed signal terminated program cc1")
            .count(),
        1,
        "{}",
        stderr(&out)
    );
    let what: Vec<&str> = events(&env).iter().map(|e| e.what).collect();
    assert_eq!(what, ["start", "killed", "start", "killed"]);
    let counters = &env.stats()["counters"];
    assert_eq!(counters["oom_kills"], 2);
    assert_eq!(counters["oom_retries_failed"], 1);
    assert_eq!(counters["compile_failures"], 1);
}

/// A compiler the server runs that itself compiles through cachet (a wrapper script that
/// calls `cachet gcc`): the inner compile comes with the outer's proxy as its jobserver,
/// and takes neither a token nor memory (with one token, waiting for one would never end).
#[test]
fn a_compile_started_inside_a_compile_the_server_runs_waits_for_nothing() {
    let (env, _) = setup("1G", "600M");
    let env = env.with_env("CACHET_JOBS", "1");
    source(&env, "inner.c", 1);
    source(&env, "outer.c", 2);
    let wrapper = env.dir.path().join("bin/gcc-wrap");
    std::fs::create_dir_all(wrapper.parent().unwrap()).unwrap();
    script(
        &wrapper,
        &format!(
            "case \" $* \" in *\" -c outer.c \"*) \"{CACHET}\" gcc -c inner.c -o inner.o || exit 1;; esac\n\
             exec gcc \"$@\"\n"
        ),
    );
    let mut child = env
        .cachet()
        .args([wrapper.to_str().unwrap(), "-c", "outer.c", "-o", "outer.o"])
        .spawn()
        .unwrap();
    let started = std::time::Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if started.elapsed() > std::time::Duration::from_secs(60) {
            let _ = child.kill();
            panic!("the nested compile waited for the outer one's token");
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    assert!(status.success());
    assert!(env.work.join("inner.o").exists() && env.work.join("outer.o").exists());
    // Both went through the server: the inner one as a compile of its own.
    assert!(env.counter("cache_misses") >= 2);
}
