//! The server's jobserver, seen from outside: with N tokens no more than N compiler
//! processes run at once, and a client killed mid-compile gives its token back.
//!
//! The compiler is a fake that logs its own start and end and then runs gcc, so that the
//! evidence does not come from cachet itself.

mod common;

use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Stdio};

use common::*;

/// A fake compiler: logs "start/end <ns>" around a real gcc run, sleeping first for
/// compile steps so that overlaps would show.
fn fake_compiler(env: &Env, sleep: &str) -> String {
    let path = env.dir.path().join("logcc");
    script(
        &path,
        &format!(
            r#"case " $* " in *" -dM "*) exec gcc "$@";; esac
echo "start $$ $(date +%s%N)" >> "$FAKE_CC_LOG"
case " $* " in *" -E "*) ;; *) echo $$ > "$FAKE_CC_PIDS/$$"; sleep {sleep};; esac
gcc "$@"; rc=$?
echo "end $$ $(date +%s%N)" >> "$FAKE_CC_LOG"
exit $rc
"#
        ),
    );
    path.to_str().unwrap().to_owned()
}

struct Interval {
    start: u128,
    end: u128,
}

fn intervals(log: &Path) -> Vec<Interval> {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let mut starts = std::collections::HashMap::new();
    let mut done = Vec::new();
    for line in text.lines() {
        let parts: Vec<&str> = line.split_whitespace().collect();
        let (kind, pid, at) = (parts[0], parts[1], parts[2].parse::<u128>().unwrap());
        if kind == "start" {
            starts.insert(pid.to_owned(), at);
        } else {
            done.push(Interval {
                start: starts.remove(pid).unwrap(),
                end: at,
            });
        }
    }
    assert!(starts.is_empty(), "a compiler never finished: {text}");
    done
}

/// The most intervals that were open at one instant.
fn max_overlap(intervals: &[Interval]) -> usize {
    let mut events: Vec<(u128, i32)> = intervals
        .iter()
        .flat_map(|i| [(i.start, 1), (i.end, -1)])
        .collect();
    // Ends sort before starts at the same instant.
    events.sort();
    let (mut open, mut most) = (0i32, 0i32);
    for (_, delta) in events {
        open += delta;
        most = most.max(open);
    }
    most as usize
}

/// An env with N tokens whose fake compiler logs to `cc.log` and leaves pids in `pids/`.
fn setup(jobs: &str) -> Env {
    let env = Env::new().with_env("CACHET_JOBS", jobs);
    let log = env.dir.path().join("cc.log");
    let pids = env.dir.path().join("pids");
    std::fs::create_dir(&pids).unwrap();
    env.with_env("FAKE_CC_LOG", log.to_str().unwrap())
        .with_env("FAKE_CC_PIDS", pids.to_str().unwrap())
}

fn spawn_compile(env: &Env, cc: &str, file: &str) -> Child {
    env.cachet()
        .args([cc, "-c", file])
        .stdin(no_input())
        .stdout(discard(env.dir.path(), &format!("{file}.stdout")))
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

#[test]
fn with_one_token_no_two_compilers_overlap() {
    let env = setup("1");
    let cc = fake_compiler(&env, "0.3");
    let log = env.dir.path().join("cc.log");
    env.write("warm.c", "int warm;\n");
    env.ok(&[&cc, "-c", "warm.c"]);
    std::fs::remove_file(&log).unwrap();

    let count = 6;
    let children: Vec<Child> = (0..count)
        .map(|i| {
            env.write(
                &format!("f{i}.c"),
                &format!("int f{i}(void) {{ return {i}; }}\n"),
            );
            spawn_compile(&env, &cc, &format!("f{i}.c"))
        })
        .collect();
    for child in children {
        let out = child.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let runs = intervals(&log);
    // Each miss runs the compiler once (direct mode), or a preprocessor and a compiler.
    assert!(
        runs.len() == count || runs.len() == 2 * count,
        "{}",
        runs.len()
    );
    assert_eq!(
        max_overlap(&runs),
        1,
        "two compiler processes ran at once with N=1"
    );
    let stats = env.stats();
    assert_eq!(stats["jobserver"]["tokens"], 1);
    assert_eq!(stats["jobserver"]["peak_tokens_held"], 1, "{stats}");
    assert!(
        stats["jobserver"]["token_waits"].as_u64().unwrap() > 0,
        "{stats}"
    );
    assert_eq!(stats["jobserver"]["tokens_held"], 0, "{stats}");
}

#[test]
fn a_client_killed_mid_compile_kills_its_compiler_and_returns_the_token() {
    let env = setup("2");
    let cc = fake_compiler(&env, "30");
    let pids = env.dir.path().join("pids");
    env.write("slow.c", "int slow;\n");
    // Start the server first so that the client we kill is only a client.
    env.ok(&["--start-server"]);

    let mut client = env
        .cachet()
        .args([&cc, "-c", "slow.c"])
        .stdin(no_input())
        .stdout(discard(env.dir.path(), "client.stdout"))
        .stderr(discard(env.dir.path(), "client.stderr"))
        .process_group(0)
        .spawn()
        .unwrap();
    let compiler_pid = wait_for_pid_file("the compiler to start", &pids);
    assert!(process_alive(compiler_pid));
    client.kill().unwrap(); // SIGKILL
    client.wait().unwrap();
    wait_for("the compiler to die", || !process_alive(compiler_pid));
    wait_for("the token to come back", || {
        env.stats()["jobserver"]["tokens_held"] == 0
    });
    assert_eq!(env.stats()["counters"]["cancelled"], 1);

    // Both tokens work: two compiles run side by side.
    let fast = fake_compiler(&env, "1");
    let log = env.dir.path().join("cc.log");
    let _ = std::fs::remove_file(&log);
    let children: Vec<Child> = (0..2)
        .map(|i| {
            env.write(&format!("p{i}.c"), &format!("int p{i};\n"));
            spawn_compile(&env, &fast, &format!("p{i}.c"))
        })
        .collect();
    for child in children {
        assert!(child.wait_with_output().unwrap().status.success());
    }
    let runs = intervals(&log);
    assert_eq!(max_overlap(&runs), 2, "the pool lost a token");
}
