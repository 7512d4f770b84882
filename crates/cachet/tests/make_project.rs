//! The acceptance scenario: `make -j2` of a multi-file C project with -MMD -MP through
//! `CC="cachet gcc"`, twice, with the output dir deleted in between.

mod common;

use std::path::Path;

use common::*;

fn make(env: &Env, cc: &str) {
    let out = env
        .command("make")
        .args(["-j2", &format!("CC={cc}")])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "make CC={cc} failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        stderr(&out)
    );
}

#[test]
fn make_j2_twice_gives_all_hits_and_plain_outputs() {
    if !have("make") {
        return skip("make is not installed");
    }
    let env = Env::new();
    copy_dir(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/cproject"),
        &env.work,
    );
    let out_dir = env.work.join("out");

    make(&env, "gcc");
    let plain = build_outputs(&out_dir);
    let objects = plain.keys().filter(|k| k.ends_with(".o")).count();
    assert_eq!(objects, 6);
    assert!(
        plain
            .values()
            .any(|v| String::from_utf8_lossy(v).contains("warning"))
    );
    std::fs::remove_dir_all(&out_dir).unwrap();

    let cachet_cc = format!("{CACHET} gcc");
    for round in ["first", "second"] {
        env.zero();
        make(&env, &cachet_cc);
        let stats = env.settle();
        let counters = &stats["counters"];
        if round == "second" {
            assert_eq!(counters["cache_hits"], objects as u64, "{stats}");
            assert_eq!(counters["cache_misses"], 0, "{stats}");
        } else {
            assert_eq!(counters["cache_misses"], objects as u64, "{stats}");
        }
        // The link is passed through, never cached.
        assert_eq!(counters["uncacheable"]["linking (no -c)"], 1, "{stats}");

        let got = build_outputs(&out_dir);
        assert_eq!(
            got.keys().collect::<Vec<_>>(),
            plain.keys().collect::<Vec<_>>(),
            "{round}"
        );
        for (name, bytes) in &plain {
            // Objects, .d files and each object's own stderr (the per-object warnings).
            assert!(
                got[name] == *bytes,
                "{round} run: {name} differs from the plain build's"
            );
        }
        let run = std::process::Command::new(out_dir.join("prog"))
            .stdin(no_input())
            .output()
            .unwrap();
        assert!(run.status.success());
        std::fs::remove_dir_all(&out_dir).unwrap();
    }
}

/// make 4.3 with recursive `+` rules (make 4.3 hands its jobserver fds only to those)
/// drives compiles through cachet; the first compile
/// inside make starts the server. make must exit while the server still runs, and the
/// server must hold no fd on make's jobserver pipe afterwards.
#[test]
fn make_exits_while_the_server_runs_and_the_server_keeps_none_of_its_fds() {
    if !have("make") {
        return skip("make is not installed");
    }
    let env = Env::new().with_env("CACHET_IDLE_TIMEOUT", "600");
    env.write("Makefile", "all:\n\t+$(MAKE) -f sub.mk\n");
    env.write(
        "sub.mk",
        "OBJS = a.o b.o c.o d.o\n\
         all: $(OBJS) pipe-id.txt\n\
         %.o: %.c\n\t+$(CC) -c $< -o $@\n\
         pipe-id.txt:\n\
         \t+R=$$(echo \"$(MAKEFLAGS)\" | sed -n 's/.*--jobserver-auth=\\([0-9]*\\),.*/\\1/p'); \
         readlink /proc/self/fd/$$R > $@\n",
    );
    for name in ["a", "b", "c", "d"] {
        env.write(
            &format!("{name}.c"),
            &format!("int {name}(void) {{ return 1; }}\n"),
        );
    }
    assert!(!env.socket().exists(), "the server must not run beforehand");
    let out = env
        .command("make")
        .args(["-j4", &format!("CC={CACHET} gcc")])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let pipe = std::fs::read_to_string(env.work.join("pipe-id.txt")).unwrap();
    let pipe = pipe.trim();
    assert!(
        pipe.starts_with("pipe:["),
        "make gave no jobserver pipe: {pipe:?}"
    );

    let stats = env.stats();
    assert_eq!(stats["counters"]["compile_requests"], 4, "{stats}");
    assert_eq!(stats["counters"]["build_jobservers"], 4, "{stats}");
    let pid = stats["server_pid"].as_u64().unwrap();
    assert!(
        process_alive(pid as i32),
        "make exited only after the server did"
    );
    for fd in std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .flatten()
    {
        let link = std::fs::read_link(fd.path()).unwrap_or_default();
        assert_ne!(
            link.to_string_lossy(),
            pipe,
            "the server still holds make's jobserver pipe"
        );
    }
}

/// Depend mode (opt-in): a -MMD project hits without any preprocessor run, trusting the
/// compiler's dep list, with outputs identical to a plain build.
#[test]
fn depend_mode_serves_an_mmd_project_without_the_preprocessor() {
    if !have("make") {
        return skip("make is not installed");
    }
    let env = Env::new().with_env("CACHET_DEPEND_MODE", "1");
    copy_dir(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/cproject"),
        &env.work,
    );
    // Sources as they are when nobody is editing them.
    let past = std::time::SystemTime::now() - std::time::Duration::from_secs(60);
    for dir in ["src", "include"] {
        for entry in std::fs::read_dir(env.work.join(dir)).unwrap().flatten() {
            std::fs::File::options()
                .write(true)
                .open(entry.path())
                .unwrap()
                .set_modified(past)
                .unwrap();
        }
    }
    let out_dir = env.work.join("out");
    make(&env, "gcc");
    let plain = build_outputs(&out_dir);
    std::fs::remove_dir_all(&out_dir).unwrap();
    let cachet_cc = format!("{CACHET} gcc");
    for round in ["first", "second"] {
        env.zero();
        make(&env, &cachet_cc);
        let stats = env.settle();
        if round == "second" {
            assert_eq!(stats["counters"]["direct_hits"], 6, "{stats}");
        }
        let got = build_outputs(&out_dir);
        for (name, bytes) in &plain {
            assert!(
                got[name] == *bytes,
                "{round} run: {name} differs from the plain build's"
            );
        }
        std::fs::remove_dir_all(&out_dir).unwrap();
    }
}
