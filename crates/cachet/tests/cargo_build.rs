//! `RUSTC_WRAPPER=cachet cargo …` on a fixture workspace with every crate type: a lib, a
//! bin, a proc-macro, a build script that reads an env var and a file and writes OUT_DIR
//! code, a cdylib, and a crate that reads env vars with `env!`/`option_env!`.
//!
//! Each rustc outcome is read from the server's log ("outcome rustc crate=NAME Hit"), so
//! the tests can say which crate hit and which missed.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Output;

use common::*;

const CRATES: [&str; 6] = [
    "app",
    "build_script_build",
    "cdy",
    "envdep",
    "macros",
    "util",
];

struct Workspace {
    env: Env,
    dir: PathBuf,
    log_offset: usize,
    /// The crates whose outcomes [`Workspace::expect`] checks.
    crates: &'static [&'static str],
}

impl Workspace {
    fn new() -> Workspace {
        Workspace::of("cargo-ws", &CRATES)
    }

    /// A copy of the fixture workspace `name`, whose crates are `crates`.
    fn of(name: &str, crates: &'static [&'static str]) -> Workspace {
        let env = Env::new();
        let dir = env.work.join("ws");
        copy_dir(
            &Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("tests/fixtures")
                .join(name),
            &dir,
        );
        Workspace {
            env,
            dir,
            log_offset: 0,
            crates,
        }
    }

    /// `cargo ARGS` in the workspace; through cachet unless `plain`.
    fn cargo_with(&self, args: &[&str], vars: &[(&str, &str)], plain: bool) -> Output {
        let wrapper = if plain { None } else { Some("RUSTC_WRAPPER") };
        self.cargo_as(args, vars, wrapper)
    }

    /// `cargo ARGS` with cachet as `wrapper_var` (RUSTC_WRAPPER or RUSTC_WORKSPACE_WRAPPER).
    fn cargo_as(&self, args: &[&str], vars: &[(&str, &str)], wrapper_var: Option<&str>) -> Output {
        let mut cmd = self.env.command("cargo");
        // The variables of the cargo that runs these tests are not the fixture's business.
        for (name, _) in std::env::vars_os() {
            let name = name.to_string_lossy();
            if (name.starts_with("CARGO_") && name != "CARGO_HOME") || name.starts_with("RUSTC") {
                cmd.env_remove(&*name);
            }
        }
        cmd.args(args)
            .current_dir(&self.dir)
            .env("CARGO_INCREMENTAL", "0")
            .env("CARGO_TERM_COLOR", "never")
            .env("FIXTURE_GREETING", "hello");
        if let Some(var) = wrapper_var {
            cmd.env(var, CACHET);
        }
        for (k, v) in vars {
            cmd.env(k, v);
        }
        let out = cmd.output().unwrap();
        let err = stderr(&out);
        assert!(out.status.success(), "cargo {args:?} failed:\n{err}");
        assert!(!err.contains("jobserver"), "a jobserver complaint:\n{err}");
        out
    }

    fn cargo(&self, args: &[&str], vars: &[(&str, &str)]) -> Output {
        self.cargo_with(args, vars, false)
    }

    /// `cargo clean`, once the server's cache writes are done: they go on after each
    /// compile's answer, and a warm build that starts at once could outrun them (a large
    /// proc-macro's entry, on a slow disk).
    fn clean(&self) {
        self.env.settle();
        self.cargo_with(&["clean", "-q"], &[], true);
    }

    /// The outcome of each crate compiled since the last call (the last one per crate).
    fn outcomes(&mut self) -> BTreeMap<String, String> {
        let log =
            std::fs::read_to_string(self.env.runtime_dir.join("server.log")).unwrap_or_default();
        let fresh = &log[self.log_offset.min(log.len())..];
        self.log_offset = log.len();
        fresh
            .lines()
            .filter_map(|l| l.split_once("outcome rustc crate=").map(|(_, rest)| rest))
            .filter_map(|rest| {
                let (name, outcome) = rest.split_once(' ')?;
                Some((name.to_owned(), outcome.to_owned()))
            })
            .filter(|(name, _)| self.crates.contains(&name.as_str()) || name == "cli")
            .collect()
    }

    fn expect(&mut self, what: &str, misses: &[&str]) {
        let outcomes = self.outcomes();
        for &name in self.crates {
            let want = if misses.contains(&name) {
                "Miss"
            } else {
                "Hit"
            };
            assert_eq!(
                outcomes.get(name).map(String::as_str),
                Some(want),
                "{what}: {name} should be a {want}; all: {outcomes:?}"
            );
        }
    }

    fn deps(&self) -> PathBuf {
        self.dir.join("target/debug/deps")
    }
}

fn artifacts(deps: &Path) -> BTreeMap<String, Vec<u8>> {
    std::fs::read_dir(deps)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "rlib" || e == "rmeta"))
        .map(|p| {
            (
                p.file_name().unwrap().to_string_lossy().into_owned(),
                std::fs::read(&p).unwrap(),
            )
        })
        .collect()
}

#[test]
fn every_crate_type_hits_after_cargo_clean_and_outputs_match_a_plain_build() {
    let mut ws = Workspace::new();
    ws.cargo_with(&["build"], &[], true);
    let plain = artifacts(&ws.deps());
    // util and envdep, each an .rlib and an .rmeta.
    assert_eq!(plain.len(), 4, "{:?}", plain.keys());
    ws.clean();

    ws.cargo(&["build"], &[]);
    ws.expect("cold build", &CRATES);
    ws.clean();
    ws.cargo(&["build"], &[]);
    ws.expect("warm build after cargo clean", &[]);

    let warm = artifacts(&ws.deps());
    assert_eq!(
        warm.keys().collect::<Vec<_>>(),
        plain.keys().collect::<Vec<_>>()
    );
    for (name, bytes) in &plain {
        assert!(
            warm[name] == *bytes,
            "{name} of a hit differs from the plain build's"
        );
    }
    let run = std::process::Command::new(ws.dir.join("target/debug/app"))
        .stdin(no_input())
        .output()
        .unwrap();
    assert!(run.status.success());
    let text = String::from_utf8_lossy(&run.stdout);
    assert!(
        text.contains("Point (derived)") && text.contains("hello"),
        "{text}"
    );
    assert!(ws.dir.join("target/debug/libcdy.so").exists());

    // Test binaries too: cold, then warm after cargo clean, and they still pass.
    ws.clean();
    ws.cargo(&["test"], &[]);
    ws.outcomes();
    ws.clean();
    let out = ws.cargo(&["test"], &[]);
    let outcomes = ws.outcomes();
    assert!(outcomes.values().all(|o| o == "Hit"), "{outcomes:?}");
    assert!(outcomes.contains_key("cli"), "{outcomes:?}");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.matches("test result: ok. 1 passed").count() >= 3,
        "{text}"
    );
}

#[test]
fn each_change_misses_exactly_where_it_should() {
    let mut ws = Workspace::new();
    ws.cargo(&["build"], &[]);
    ws.expect("cold build", &CRATES);

    // A source file: its crate, and the crates that link it.
    let lib = ws.dir.join("util/src/lib.rs");
    let original = std::fs::read_to_string(&lib).unwrap();
    std::fs::write(&lib, format!("{original}\npub fn added() -> u8 {{ 7 }}\n")).unwrap();
    ws.clean();
    ws.cargo(&["build"], &[]);
    ws.expect("util source changed", &["util", "cdy", "app"]);
    std::fs::write(&lib, &original).unwrap();

    // A feature (a --cfg of the app and of its build script).
    ws.clean();
    ws.cargo(&["build", "--features", "app/extra"], &[]);
    ws.expect("feature extra", &["app", "build_script_build"]);

    // A variable read with env!, and one read with option_env!.
    ws.clean();
    ws.cargo(&["build"], &[("FIXTURE_GREETING", "bonjour")]);
    ws.expect("env! variable changed", &["envdep", "app"]);
    ws.clean();
    ws.cargo(&["build"], &[("FIXTURE_OPTIONAL", "set")]);
    ws.expect("option_env! variable set", &["envdep", "app"]);

    // A build-script input: a file it reads, then an env var it reads.
    std::fs::write(ws.dir.join("app/build-input.txt"), "second input\n").unwrap();
    ws.clean();
    ws.cargo(&["build"], &[]);
    ws.expect("build-script input file changed", &["app"]);
    ws.clean();
    ws.cargo(&["build"], &[("FIXTURE_FLAVOR", "spicy")]);
    ws.expect("build-script env var changed", &["app"]);

    // Everything back as it was at the start of this stage: all hits.
    ws.clean();
    ws.cargo(&["build"], &[]);
    ws.expect("nothing changed", &[]);
}

#[test]
fn incremental_builds_are_passed_through_and_succeed() {
    let mut ws = Workspace::new();
    ws.cargo(&["build"], &[("CARGO_INCREMENTAL", "1")]);
    let outcomes = ws.outcomes();
    assert!(!outcomes.is_empty());
    for (name, outcome) in &outcomes {
        assert!(outcome.contains("incremental"), "{name}: {outcome}");
    }
    let run = std::process::Command::new(ws.dir.join("target/debug/app"))
        .stdin(no_input())
        .output()
        .unwrap();
    assert!(run.status.success());
}

#[test]
fn a_warning_is_shown_on_a_hit_as_on_a_miss() {
    let mut ws = Workspace::new();
    let out = ws.cargo(&["build"], &[]);
    assert!(
        stderr(&out).contains("unused_on_purpose"),
        "{}",
        stderr(&out)
    );
    ws.outcomes();
    // cargo replays warnings of fresh crates itself, so make it rebuild everything.
    ws.clean();
    let out = ws.cargo(&["build"], &[]);
    assert_eq!(ws.outcomes().get("util").map(String::as_str), Some("Hit"));
    assert!(
        stderr(&out).contains("unused_on_purpose"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn the_workspace_wrapper_works_too() {
    let mut ws = Workspace::new();
    ws.cargo_as(&["build"], &[], Some("RUSTC_WORKSPACE_WRAPPER"));
    ws.expect("cold build", &CRATES);
    ws.clean();
    ws.cargo_as(&["build"], &[], Some("RUSTC_WORKSPACE_WRAPPER"));
    ws.expect("warm build", &[]);
}

/// `cachet rustc …` through rustup's proxy: the proxy's toolchain is found and remembered,
/// and the compile hits like any other.
#[test]
fn a_rustup_proxy_resolves_to_its_toolchain() {
    if !have("rustup") {
        return skip("rustup is not installed");
    }
    let env = Env::new();
    env.write("lib.rs", "pub fn answer() -> u32 { 42 }\n");
    let args = [
        "rustc",
        "--crate-name",
        "answer",
        "--edition=2021",
        "lib.rs",
        "--crate-type",
        "lib",
        "--emit=dep-info,metadata,link",
        "--out-dir",
        "out",
        "--error-format=json",
        "--json=artifacts",
    ];
    for round in ["miss", "hit"] {
        std::fs::create_dir_all(env.work.join("out")).unwrap();
        let out = env.run(&args);
        assert!(out.status.success(), "{round}: {}", stderr(&out));
        assert!(env.work.join("out/libanswer.rlib").exists());
        std::fs::remove_dir_all(env.work.join("out")).unwrap();
        env.settle();
    }
    let stats = env.stats();
    assert_eq!(stats["counters"]["languages"]["Rust"]["hits"], 1, "{stats}");
}

/// Split debuginfo: the .dwo files rustc writes per codegen unit come back on a hit.
#[test]
fn split_debuginfo_files_are_restored() {
    let mut ws = Workspace::new();
    let split = [("CARGO_PROFILE_DEV_SPLIT_DEBUGINFO", "unpacked")];
    ws.cargo(&["build"], &split);
    ws.expect("cold build", &CRATES);
    let dwo = |ws: &Workspace| {
        let mut names: Vec<String> = std::fs::read_dir(ws.deps())
            .unwrap()
            .filter_map(|e| e.ok()?.file_name().into_string().ok())
            .filter(|n| n.ends_with(".dwo"))
            .collect();
        names.sort();
        names
    };
    let cold = dwo(&ws);
    assert!(cold.iter().any(|n| n.starts_with("util-")), "{cold:?}");
    ws.clean();
    ws.cargo(&["build"], &split);
    ws.expect("warm build", &[]);
    assert_eq!(dwo(&ws), cold);
    let run = std::process::Command::new(ws.dir.join("target/debug/app"))
        .stdin(no_input())
        .output()
        .unwrap();
    assert!(run.status.success());
}

/// What `show` prints when run.
fn show_output(ws: &Workspace) -> String {
    let run = std::process::Command::new(ws.dir.join("target/debug/show"))
        .stdin(no_input())
        .output()
        .unwrap();
    assert!(run.status.success());
    String::from_utf8_lossy(&run.stdout).trim().to_owned()
}

/// A proc macro that reads `MY_LEVEL` and a file while it expands: rustc's dep-info names
/// neither, the observed compile does. Each change misses exactly where it should, and the
/// binary always says what a plain build would.
#[test]
fn what_a_proc_macro_reads_is_keyed() {
    let mut ws = Workspace::of("proc-env", &["level", "show"]);
    proc_macro_inputs(&mut ws, true);
}

/// Observation off: a crate that uses a proc macro is passed through, never served stale.
#[test]
fn without_observation_a_proc_macro_user_is_never_stale() {
    let mut ws = Workspace::of("proc-env", &["level", "show"]);
    ws.env.extra_env.push(("CACHET_OBSERVE".into(), "0".into()));
    proc_macro_inputs(&mut ws, false);
}

/// Builds `proc-env` through a series of changes to what its proc macro reads; the binary
/// must always print what a plain build prints. With `observed`, each build also misses
/// exactly where it should.
fn proc_macro_inputs(ws: &mut Workspace, observed: bool) {
    let check = |ws: &mut Workspace, what: &str, misses: &[&str]| {
        if observed {
            ws.expect(what, misses);
        }
    };
    ws.cargo(&["build"], &[("MY_LEVEL", "debug")]);
    check(ws, "cold build", &["level", "show"]);
    assert_eq!(show_output(ws), "level=debug banner=first banner");

    // Another value: the macro's user misses, the macro crate itself does not.
    ws.clean();
    ws.cargo(&["build"], &[("MY_LEVEL", "info")]);
    check(ws, "MY_LEVEL changed", &["show"]);
    assert_eq!(show_output(ws), "level=info banner=first banner");

    // Unset is a value too.
    ws.clean();
    ws.cargo(&["build"], &[]);
    check(ws, "MY_LEVEL unset", &["show"]);
    assert_eq!(show_output(ws), "level=unset banner=first banner");

    // Back to info: served from the cache.
    ws.clean();
    ws.cargo(&["build"], &[("MY_LEVEL", "info")]);
    check(ws, "MY_LEVEL as before", &[]);
    assert_eq!(show_output(ws), "level=info banner=first banner");

    // The file the macro reads.
    let banner = ws.dir.join("level/banner.txt");
    std::fs::write(&banner, "second banner\n").unwrap();
    let past = std::time::SystemTime::now() - std::time::Duration::from_secs(60);
    std::fs::File::options()
        .write(true)
        .open(&banner)
        .unwrap()
        .set_modified(past)
        .unwrap();
    ws.clean();
    ws.cargo(&["build"], &[("MY_LEVEL", "info")]);
    check(ws, "banner.txt changed", &["show"]);
    assert_eq!(show_output(ws), "level=info banner=second banner");
}

/// Cargo variables no compile reads are not keyed: a rotated registry token (CI) misses
/// nothing, and no secret's hash enters a key.
#[test]
fn a_rotated_registry_token_misses_nothing() {
    let mut ws = Workspace::new();
    ws.cargo(&["build"], &[("CARGO_REGISTRY_TOKEN", "secret-one")]);
    ws.expect("cold build", &CRATES);
    ws.clean();
    ws.cargo(&["build"], &[("CARGO_REGISTRY_TOKEN", "secret-two")]);
    ws.expect("token rotated", &[]);
}

/// `-C target-cpu=native` is cached, keyed by what it resolves to on this machine.
#[test]
fn native_cpu_crates_hit_after_cargo_clean() {
    let mut ws = Workspace::of("proc-env", &["level", "show"]);
    let flags = [("RUSTFLAGS", "-C target-cpu=native"), ("MY_LEVEL", "x")];
    ws.cargo(&["build"], &flags);
    ws.expect("cold build", &["level", "show"]);
    ws.clean();
    ws.cargo(&["build"], &flags);
    ws.expect("warm build", &[]);
    assert_eq!(show_output(&ws), "level=x banner=first banner");
}

/// The warnings in cargo's output, without its status lines (`Checking`, `Finished`, and
/// `Blocking waiting for file lock …` when a test beside this one holds cargo's package cache).
fn lints(out: &Output) -> String {
    stderr(out)
        .lines()
        .filter(|l| !is_cargo_status(l))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Whether `line` is one of cargo's status lines: a capitalised word right-aligned in a
/// 12-column field, then a space (cargo's `Shell::status`, `{:>12} {}`). A lint's own lines
/// never have that shape (`warning:`, ` --> `, `  |`, `  = help:`).
fn is_cargo_status(line: &str) -> bool {
    let Some((field, rest)) = line.split_at_checked(12) else {
        return false;
    };
    let word = field.trim_start();
    rest.starts_with(' ')
        && word.chars().next().is_some_and(|c| c.is_ascii_uppercase())
        && word.chars().all(|c| c.is_ascii_alphabetic())
}

#[test]
fn cargo_status_lines_are_told_from_lints() {
    for status in [
        "    Checking lintme v0.1.0 (/x)",
        "    Finished `dev` profile [unoptimized + debuginfo] target(s) in 0.31s",
        "    Blocking waiting for file lock on package cache",
        "   Compiling serde v1.0.0",
    ] {
        assert!(is_cargo_status(status), "{status}");
    }
    for lint in [
        "warning: unneeded `return` statement",
        " --> src/lib.rs:5:5",
        "  |",
        "5 |     return a + b;",
        "  = help: for further information visit https://x",
        "help: remove `return`",
        "",
    ] {
        assert!(!is_cargo_status(lint), "{lint}");
    }
}

/// `cargo clippy` (clippy-driver under cachet) hits after `cargo clean`, with its lints
/// replayed; a changed `clippy.toml` or `CLIPPY_ARGS` (`cargo clippy -- -A …`) misses.
#[test]
fn cargo_clippy_is_cached_with_its_lints() {
    if !have("clippy-driver") {
        return skip("clippy is not installed");
    }
    let mut ws = Workspace::of("clippy-ws", &["lintme"]);
    let first = ws.cargo(&["clippy"], &[]);
    assert!(
        lints(&first).contains("needless_return"),
        "{}",
        stderr(&first)
    );
    ws.expect("first clippy", &["lintme"]);
    ws.clean();
    let again = ws.cargo(&["clippy"], &[]);
    ws.expect("clippy after clean", &[]);
    assert_eq!(lints(&again), lints(&first));

    std::fs::write(
        ws.dir.join("clippy.toml"),
        "too-many-arguments-threshold = 1\n",
    )
    .unwrap();
    ws.clean();
    let configured = ws.cargo(&["clippy"], &[]);
    ws.expect("a new clippy.toml", &["lintme"]);
    assert!(
        lints(&configured).contains("too many arguments"),
        "{}",
        stderr(&configured)
    );
    ws.clean();
    ws.cargo(&["clippy"], &[]);
    ws.expect("the same clippy.toml", &[]);

    ws.clean();
    let allowed = ws.cargo(&["clippy", "--", "-A", "clippy::needless_return"], &[]);
    ws.expect("other CLIPPY_ARGS", &["lintme"]);
    assert!(
        !lints(&allowed).contains("needless_return"),
        "{}",
        stderr(&allowed)
    );
}

/// `cachet explain` of a crate's outputs names what the compile read that changed: a
/// variable a proc macro read, a variable `env!` read; and no secret shows.
#[test]
fn explain_names_the_variables_a_crate_read() {
    let ws = Workspace::of("proc-env", &["level", "show"]);
    let secret = "planted-secret-0815";
    let flags = format!("--cfg api_token=\"{secret}\"");
    ws.cargo(&["build"], &[("MY_LEVEL", "debug"), ("RUSTFLAGS", &flags)]);
    ws.clean();
    ws.cargo(&["build"], &[("MY_LEVEL", "info"), ("RUSTFLAGS", &flags)]);
    ws.env.ok(&["--flush"]);
    let show = ws.dir.join("target/debug/show");
    let out = ws.env.ok(&["explain", show.to_str().unwrap()]);
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        text.contains("/deps/show-"),
        "the binary resolves to deps/: {text}"
    );
    assert!(text.contains("(Rust: crate show (bin) for "), "{text}");
    assert!(
        text.contains("changed: MY_LEVEL (its value is not shown)"),
        "{text}"
    );
    let last = ws.env.ok(&["explain", "--last", "20", "--json"]);
    let all = text + &String::from_utf8_lossy(&last.stdout);
    assert!(!all.contains(secret), "{all}");

    // A crate that reads a variable with env!.
    let ws = Workspace::new();
    ws.cargo(&["build"], &[]);
    ws.clean();
    ws.cargo(&["build"], &[("FIXTURE_GREETING", "bye")]);
    ws.env.ok(&["--flush"]);
    let rlib = std::fs::read_dir(ws.dir.join("target/debug/deps"))
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .find(|p| {
            let name = p.file_name().unwrap().to_string_lossy();
            name.starts_with("libenvdep-") && name.ends_with(".rlib")
        })
        .unwrap();
    let out = ws.env.ok(&["explain", rlib.to_str().unwrap()]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("changed: FIXTURE_GREETING"), "{text}");
}
