//! `cachet trace`: the timeline of a small parallel build, read back with a JSON parser.
//! The compiler is the greedy jobserver client (tests/fixtures/greedy.c), so compilers
//! ask for every extra token they can get.

mod common;

use std::path::Path;

use common::*;
use serde_json::Value;

fn make(env: &Env, dir: &Path, cc: &str, out: &str) {
    let status = env
        .command("make")
        .current_dir(dir)
        .args(["-j3", &format!("CC={cc}"), &format!("OUT={out}")])
        .stdout(discard(env.dir.path(), "make.out"))
        .status()
        .unwrap();
    assert!(status.success());
}

/// Slices of category `cat`: (name, start, end, args).
fn slices<'a>(events: &'a [Value], cat: &str) -> Vec<(&'a str, u64, u64, &'a Value)> {
    events
        .iter()
        .filter(|e| e["ph"] == "X" && e["cat"] == cat)
        .map(|e| {
            let ts = e["ts"].as_u64().unwrap();
            (
                e["name"].as_str().unwrap(),
                ts,
                ts + e["dur"].as_u64().unwrap(),
                &e["args"],
            )
        })
        .collect()
}

#[test]
fn the_trace_of_a_parallel_build_holds_every_compile_and_the_token_counts() {
    let env = Env::new()
        .with_env("CACHET_JOBS", "4")
        .with_env("GREEDY_HOLD_MS", "100")
        .with_env("GREEDY_WAIT_MS", "50");
    let greedy = fixture_program(&env, "greedy");
    let dir = env.work.join("proj");
    copy_dir(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/cproject"),
        &dir,
    );
    // Recipes marked recursive (`+`): make 4.3 passes its jobserver only to those.
    let makefile = std::fs::read_to_string(dir.join("Makefile")).unwrap();
    std::fs::write(
        dir.join("Makefile"),
        makefile.replace("\t$(CC)", "\t+$(CC)"),
    )
    .unwrap();
    let cc = format!("{CACHET} {greedy}");
    make(&env, &dir, &cc, "out1");
    env.ok(&["--flush"]);
    // A second build dir: every compile is a hit.
    make(&env, &dir, &cc, "out2");
    // One compile alone under make -j3: its build's pool has two tokens to spare, which
    // the greedy compiler takes (through the proxy, each also holding a server token).
    env.write("proj/src/extra.c", "int extra(void) { return 7; }\n");
    let status = env
        .command("make")
        .current_dir(&dir)
        .args(["-j3", &format!("CC={cc}"), "OUT=out3", "out3/extra.o"])
        .stdout(discard(env.dir.path(), "make3.out"))
        .status()
        .unwrap();
    assert!(status.success());
    let file = env.dir.path().join("trace.json");
    let out = env.ok(&["trace", "--output", file.to_str().unwrap()]);
    assert!(String::from_utf8_lossy(&out.stdout).contains("wrote "));

    let trace: Value = serde_json::from_slice(&std::fs::read(&file).unwrap()).unwrap();
    let events = trace["traceEvents"].as_array().unwrap();

    // One request slice per compile, with its outcome.
    let requests = slices(events, "request");
    let outcome = |what: &str| {
        requests
            .iter()
            .filter(|(_, _, _, args)| args["outcome"].as_str().unwrap().starts_with(what))
            .count()
    };
    assert_eq!(outcome("miss"), 7, "{requests:?}");
    assert_eq!(outcome("hit"), 6, "{requests:?}");
    assert_eq!(outcome("uncacheable: linking"), 2, "{requests:?}");
    assert_eq!(requests.len(), 15);

    // Concurrency of compilers from their own slices: never above N = 4, and equal to
    // the "compilers running" track wherever that track moves.
    let runs = slices(events, "compiler");
    assert_eq!(runs.len(), 9, "7 misses and 2 links: {runs:?}");
    let running_at = |t: u64| runs.iter().filter(|(_, s, e, _)| *s <= t && t < *e).count();
    let mut most = 0;
    for (_, start, _, _) in &runs {
        most = most.max(running_at(*start));
    }
    assert!(
        (1..=3).contains(&most),
        "{most} compilers at once (make -j3, 4 tokens)"
    );
    let mut moves = 0;
    for counter in events
        .iter()
        .filter(|e| e["ph"] == "C" && e["name"] == "compilers running")
    {
        let t = counter["ts"].as_u64().unwrap();
        let value = counter["args"]["value"].as_u64().unwrap();
        assert_eq!(value as usize, running_at(t), "at {t} µs");
        moves += 1;
    }
    assert_eq!(moves, 18, "the track moves at each start and end");

    // Each build's extra tokens stay within its -j (make -j3: at most 2 beyond the
    // compiler's own), and the lone compile got some.
    let mut most_extra = 0;
    for track in events
        .iter()
        .filter(|e| e["ph"] == "C" && e["name"].as_str().unwrap().starts_with("extra tokens"))
    {
        let name = track["name"].as_str().unwrap();
        assert!(name.ends_with("(-j3)"), "{name}");
        let value = track["args"]["value"].as_i64().unwrap();
        assert!(value <= 2, "{track}");
        most_extra = most_extra.max(value);
    }
    assert!(most_extra >= 1, "no extra token was ever granted");
    // The builds are named, and every slice sits in one of them.
    assert!(events.iter().any(|e| {
        e["ph"] == "M"
            && e["args"]["name"]
                .as_str()
                .unwrap_or("")
                .starts_with("build pipe:[")
    }));
}

#[test]
fn trace_says_what_it_wants() {
    let env = Env::new();
    let out = env.run(&["trace"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("--output is required"),
        "{}",
        stderr(&out)
    );
    let out = env.run(&["trace", "--output", "x.json", "--since", "soon"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("`soon` is not a duration"));
}
