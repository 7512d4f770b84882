//! GNU make started as our child joins the pool: it never runs more recipes
//! at once than the pool allows, and gives every token back.

use std::path::Path;
use std::process::Stdio;

use cachet_jobserver::Jobserver;

const MAKEFILE: &str = "\
TARGETS := t1 t2 t3 t4 t5 t6
all: $(TARGETS)
$(TARGETS):
\t@echo \"start $$(date +%s%N)\" >> log
\t@sleep 0.2
\t@echo \"end $$(date +%s%N)\" >> log
.PHONY: all $(TARGETS)
";

/// Most recipes running at the same moment, from the start/end log.
fn max_concurrency(log: &str) -> usize {
    let mut events: Vec<(u128, i32)> = log
        .lines()
        .map(|line| {
            let (kind, ts) = line.split_once(' ').expect("kind and timestamp");
            let delta = if kind == "start" { 1 } else { -1 };
            (ts.trim().parse().expect("nanoseconds"), delta)
        })
        .collect();
    // On a tie, count the end first: touching intervals do not overlap.
    events.sort();
    let (mut now, mut max) = (0i32, 0i32);
    for (_, delta) in events {
        now += delta;
        max = max.max(now);
    }
    max as usize
}

async fn run_make(tokens: usize) {
    if !Path::new("/usr/bin/make").exists() {
        panic!("GNU make is needed at /usr/bin/make");
    }
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("Makefile"), MAKEFILE).unwrap();

    let pool = Jobserver::new(tokens).unwrap();
    // What cachet does for every child: hold a token for it. Make's own
    // implicit job uses it, so make may run 1 + (tokens - 1) recipes.
    let for_make = pool.acquire().await.unwrap();

    // An empty stdin that is not the machine's /dev/null.
    let (stdin, writer) = std::io::pipe().unwrap();
    drop(writer);
    let mut cmd = tokio::process::Command::new("/usr/bin/make");
    cmd.arg("-f")
        .arg(dir.path().join("Makefile"))
        .current_dir(dir.path())
        .env_remove("MAKEFLAGS")
        .env_remove("MFLAGS")
        .env_remove("CARGO_MAKEFLAGS")
        .env_remove("MAKELEVEL")
        .stdin(Stdio::from(stdin));
    pool.configure_command(&mut cmd, None);
    let out = cmd.output().await.unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "make failed: {stderr}");
    assert!(
        !stderr.contains("jobserver"),
        "make did not join the pool: {stderr}"
    );

    let log = std::fs::read_to_string(dir.path().join("log")).unwrap();
    assert_eq!(log.lines().count(), 12, "{log}");
    let max = max_concurrency(&log);
    assert!(
        max <= tokens,
        "{max} recipes at once with {tokens} tokens:\n{log}"
    );
    assert_eq!(max, tokens, "make ran no recipes in parallel:\n{log}");

    // Make has exited and returned what it took; only our token is out.
    assert_eq!(pool.stats().pool_in_use, 1);
    drop(for_make);
    assert_eq!(pool.stats().pool_in_use, 0);
    let all: Vec<_> = (0..tokens)
        .map(|_| pool.try_acquire().unwrap().expect("token back"))
        .collect();
    assert_eq!(all.len(), tokens);
}

#[tokio::test]
async fn make_runs_at_most_two_recipes_with_two_tokens() {
    run_make(2).await;
}

#[tokio::test]
async fn make_runs_at_most_three_recipes_with_three_tokens() {
    run_make(3).await;
}
