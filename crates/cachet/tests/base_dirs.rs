//! Base dirs end to end: one project at two absolute paths, each built with its parent as
//! base dir, shares cache entries where the outputs cannot tell the paths apart.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Output;

use common::*;

/// `<env>/one/<name>` and `<env>/two/<name>`, each a copy of `fixture`.
fn two_checkouts(env: &Env, fixture: &str, name: &str) -> [PathBuf; 2] {
    let from = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(fixture);
    ["one", "two"].map(|parent| {
        let dir = env.dir.path().join(parent).join(name);
        copy_dir(&from, &dir);
        dir
    })
}

fn parent(dir: &Path) -> String {
    dir.parent().unwrap().display().to_string()
}

fn make(env: &Env, dir: &Path, vars: &[(&str, &str)], args: &[String]) {
    let out = env
        .command("make")
        .current_dir(dir)
        .args(args)
        .envs(vars.iter().copied())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "make {args:?} failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        stderr(&out)
    );
}

fn same_files(got: &BTreeMap<String, Vec<u8>>, want: &BTreeMap<String, Vec<u8>>, what: &str) {
    assert_eq!(
        got.keys().collect::<Vec<_>>(),
        want.keys().collect::<Vec<_>>()
    );
    for (name, bytes) in want {
        assert!(
            got[name] == *bytes,
            "{what}: {name} differs from a plain build's"
        );
    }
}

/// Builds checkout one and then two through cachet, each with its parent as base dir, and
/// returns the second build's hit and miss counts.
fn build_both(
    env: &Env,
    dirs: &[PathBuf; 2],
    cc: &str,
    cflags: impl Fn(&Path) -> String,
    out: &str,
    extra: &[(&str, &str)],
) -> (u64, u64) {
    let mut counts = (0, 0);
    for (round, dir) in dirs.iter().enumerate() {
        env.zero();
        let base = parent(dir);
        let mut vars = vec![("CACHET_BASE_DIRS", base.as_str())];
        vars.extend_from_slice(extra);
        make(
            env,
            dir,
            &vars,
            &[
                format!("CC={CACHET} {cc}"),
                format!("CFLAGS={}", cflags(dir)),
                format!("OUT={out}"),
            ],
        );
        let stats = env.settle();
        let counters = &stats["counters"];
        if round == 0 {
            assert_eq!(counters["cache_hits"], 0, "{stats}");
        }
        counts = (
            counters["cache_hits"].as_u64().unwrap(),
            counters["cache_misses"].as_u64().unwrap(),
        );
    }
    counts
}

#[test]
fn a_c_project_at_another_path_hits_with_debug_info_mapped_and_matches_a_plain_build() {
    if !have("make") {
        return skip("make is not installed");
    }
    for cc in compilers() {
        let env = Env::new();
        let dirs = two_checkouts(&env, "cproject", "proj");
        let mapped = |dir: &Path| {
            format!(
                "-O2 -g -Wall -Wextra -MMD -MP -Iinclude -fdebug-prefix-map={}=.",
                dir.display()
            )
        };

        // What the compiler itself writes in checkout two.
        make(
            &env,
            &dirs[1],
            &[],
            &[format!("CC={cc}"), format!("CFLAGS={}", mapped(&dirs[1]))],
        );
        // Moved aside: the dep files name out/ as the objects' directory.
        std::fs::rename(dirs[1].join("out"), dirs[1].join("plain")).unwrap();
        let plain = build_outputs(&dirs[1].join("plain"));
        let objects = plain.keys().filter(|k| k.ends_with(".o")).count() as u64;
        assert_eq!(objects, 6);

        let (hits, misses) = build_both(&env, &dirs, cc, mapped, "out", &[]);
        assert_eq!(
            (hits, misses),
            (objects, 0),
            "{cc}: checkout two should hit"
        );
        same_files(&build_outputs(&dirs[1].join("out")), &plain, cc);

        // -g without a map records the absolute cwd: checkout two must not share.
        let unmapped = |_: &Path| "-O2 -g -MMD -MP -Iinclude".to_owned();
        let (hits, misses) = build_both(&env, &dirs, cc, unmapped, "nomap", &[]);
        assert_eq!((hits, misses), (0, objects), "{cc}: -g without a map");

        // No debug info: nothing records the path.
        let nodebug = |_: &Path| "-O2 -MMD -MP -Iinclude".to_owned();
        let (hits, misses) = build_both(&env, &dirs, cc, nodebug, "nodebug", &[]);
        assert_eq!((hits, misses), (objects, 0), "{cc}: no debug info");
    }
}

#[test]
fn direct_mode_checks_the_headers_of_the_checkout_that_asks() {
    if !have("make") {
        return skip("make is not installed");
    }
    let env = Env::new();
    let dirs = two_checkouts(&env, "cproject", "proj");
    let flags = |dir: &Path| {
        format!(
            "-O2 -g -MMD -MP -Iinclude -ffile-prefix-map={}=.",
            dir.display()
        )
    };
    // -MMD leaves system headers out of the dep list; depend mode trusts it anyway.
    let depend = [("CACHET_DEPEND_MODE", "1")];
    let (hits, misses) = build_both(&env, &dirs, "gcc", flags, "out", &depend);
    assert_eq!((hits, misses), (6, 0));
    assert_eq!(env.counter("direct_hits"), 6);

    // A header changed in checkout two only: what includes it misses there, though
    // checkout one still has the old header at the same relative path.
    let users = std::fs::read_dir(dirs[1].join("out"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "d"))
        .filter(|p| {
            std::fs::read_to_string(p)
                .unwrap()
                .contains("include/config.h")
        })
        .count() as u64;
    assert!(users > 0);
    let header = dirs[1].join("include/config.h");
    let text = std::fs::read_to_string(&header).unwrap();
    std::fs::write(&header, format!("{text}\n#define BASE_DIRS_TEST 1\n")).unwrap();
    let past = std::time::SystemTime::now() - std::time::Duration::from_secs(60);
    std::fs::File::options()
        .write(true)
        .open(&header)
        .unwrap()
        .set_modified(past)
        .unwrap();
    std::fs::remove_dir_all(dirs[1].join("out")).unwrap();
    env.zero();
    let base = parent(&dirs[1]);
    make(
        &env,
        &dirs[1],
        &[("CACHET_BASE_DIRS", &base), depend[0]],
        &[
            format!("CC={CACHET} gcc"),
            format!("CFLAGS={}", flags(&dirs[1])),
        ],
    );
    let stats = env.settle();
    assert_eq!(stats["counters"]["cache_misses"], users, "{stats}");
    assert_eq!(stats["counters"]["cache_hits"], 6 - users, "{stats}");
}

fn cargo(env: &Env, dir: &Path, vars: &[(&str, &str)], wrapped: bool) -> Output {
    let mut cmd = env.command("cargo");
    // The variables of the cargo that runs these tests are not the fixture's business.
    for (name, _) in std::env::vars_os() {
        let name = name.to_string_lossy();
        if (name.starts_with("CARGO_") && name != "CARGO_HOME") || name.starts_with("RUSTC") {
            cmd.env_remove(&*name);
        }
    }
    cmd.arg("build")
        .current_dir(dir)
        .env("CARGO_INCREMENTAL", "0")
        .env("CARGO_TERM_COLOR", "never")
        .env("FIXTURE_GREETING", "hello")
        .envs(vars.iter().copied());
    if wrapped {
        cmd.env("RUSTC_WRAPPER", CACHET);
    }
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "cargo build failed:\n{}",
        stderr(&out)
    );
    out
}

/// The last logged outcome per crate since `offset`; moves `offset` on.
fn outcomes(env: &Env, offset: &mut usize) -> BTreeMap<String, String> {
    let log = std::fs::read_to_string(env.runtime_dir.join("server.log")).unwrap_or_default();
    let fresh = &log[(*offset).min(log.len())..];
    *offset = log.len();
    fresh
        .lines()
        .filter_map(|l| l.split_once("outcome rustc crate=").map(|(_, rest)| rest))
        .filter_map(|rest| {
            let (name, outcome) = rest.split_once(' ')?;
            Some((name.to_owned(), outcome.to_owned()))
        })
        .filter(|(name, _)| CRATES.contains(&name.as_str()))
        .collect()
}

const CRATES: [&str; 6] = [
    "app",
    "build_script_build",
    "cdy",
    "envdep",
    "macros",
    "util",
];

fn rlibs(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    std::fs::read_dir(dir.join("target/debug/deps"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "rlib" || e == "rmeta"))
        .map(|p| {
            let name = p.file_name().unwrap().to_string_lossy().into_owned();
            (name, std::fs::read(&p).unwrap())
        })
        .collect()
}

#[test]
fn a_cargo_workspace_at_another_path_hits_with_its_paths_remapped() {
    let env = Env::new();
    let dirs = two_checkouts(&env, "cargo-ws", "ws");
    let vars = |dir: &Path| {
        [
            ("CACHET_BASE_DIRS", parent(dir)),
            (
                "RUSTFLAGS",
                format!("--remap-path-prefix={}=/ws", dir.display()),
            ),
        ]
    };
    let pairs = |v: &[(&'static str, String); 2]| -> Vec<(&'static str, String)> { v.to_vec() };

    // What rustc itself writes in checkout two.
    let two = pairs(&vars(&dirs[1]));
    let two_refs: Vec<(&str, &str)> = two.iter().map(|(k, v)| (*k, v.as_str())).collect();
    cargo(&env, &dirs[1], &[two_refs[1]], false);
    let plain = rlibs(&dirs[1]);
    assert_eq!(plain.len(), 4, "{:?}", plain.keys());
    std::fs::remove_dir_all(dirs[1].join("target")).unwrap();

    let mut offset = 0;
    let one = pairs(&vars(&dirs[0]));
    let one_refs: Vec<(&str, &str)> = one.iter().map(|(k, v)| (*k, v.as_str())).collect();
    cargo(&env, &dirs[0], &one_refs, true);
    let first = outcomes(&env, &mut offset);
    assert!(first.values().all(|o| o == "Miss"), "{first:?}");
    env.settle();

    cargo(&env, &dirs[1], &two_refs, true);
    let second = outcomes(&env, &mut offset);
    // app includes OUT_DIR code through env!("OUT_DIR"), whose value names the checkout
    // and is keyed as it is. util uses a derive whose proc macro is observed to read no
    // variable, so it is shared like the rest.
    for (name, outcome) in &second {
        let want = if name == "app" { "Miss" } else { "Hit" };
        assert_eq!(outcome, want, "{name}: {second:?}");
    }
    for name in CRATES {
        assert!(second.contains_key(name), "{name}: {second:?}");
    }
    same_files(&rlibs(&dirs[1]), &plain, "rustc");
    // The dep-info the hits restored names checkout two's out-dir, not one's.
    let deps = dirs[1].join("target/debug/deps");
    for entry in std::fs::read_dir(&deps).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "d") {
            let text = std::fs::read_to_string(&path).unwrap();
            assert!(
                !text.contains(&dirs[0].display().to_string()),
                "{}:\n{text}",
                path.display()
            );
        }
    }
    let run = std::process::Command::new(dirs[1].join("target/debug/app"))
        .stdin(no_input())
        .output()
        .unwrap();
    assert!(run.status.success());
}

/// Makes `<env>/<parent>/proj` with a CMake-style layout: `src/a.c`, `src/b.c` (which uses
/// `assert`, so its object names its own absolute path), `include/util.h` (with a warning),
/// and an empty `build/CMakeFiles/p.dir/src`.
fn cmake_checkout(env: &Env, parent: &str) -> PathBuf {
    let root = env.dir.path().join(parent).join("proj");
    let write = |name: &str, text: &str| {
        let path = root.join(name);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
    };
    write(
        "include/util.h",
        "static int util(void) { int unused; return 3; }\n",
    );
    write(
        "src/a.c",
        "#include \"util.h\"\nint a(void) { return util(); }\n",
    );
    write(
        "src/b.c",
        "#include <assert.h>\nint b(int x) { assert(x > 0); return x; }\n",
    );
    std::fs::create_dir_all(root.join("build/CMakeFiles/p.dir/src")).unwrap();
    let old = std::time::SystemTime::now() - std::time::Duration::from_secs(30);
    for name in ["include/util.h", "src/a.c", "src/b.c"] {
        std::fs::File::options()
            .write(true)
            .open(root.join(name))
            .unwrap()
            .set_modified(old)
            .unwrap();
    }
    root
}

/// A compile as CMake's Makefile and Ninja generators write it: absolute source and `-I`
/// paths, the `-o`/`-MF`/`-MT` paths relative to the build dir, run in the build dir.
fn cmake_compile(root: &Path, source: &str, extra: &[String]) -> Vec<String> {
    let object = format!("CMakeFiles/p.dir/src/{source}.o");
    let mut args: Vec<String> = vec![
        format!("-I{}/include", root.display()),
        "-O2".into(),
        "-Wall".into(),
    ];
    args.extend(extra.iter().cloned());
    args.extend([
        "-MD".into(),
        "-MT".into(),
        object.clone(),
        "-MF".into(),
        format!("{object}.d"),
        "-o".into(),
        object,
        "-c".into(),
        format!("{}/src/{source}", root.display()),
    ]);
    args
}

/// CMake builds in two checkouts, with base dirs covering both: the second gets direct
/// hits, its `.d` names its own absolute paths and its warnings its own files, byte for
/// byte as a plain compile there; an object that records its path (`assert`) misses;
/// `-g` misses unless a prefix map covers the checkout.
#[test]
fn a_cmake_build_in_a_second_checkout_hits_with_its_own_paths() {
    for cc in compilers() {
        let env = Env::new().with_env("CACHET_BASE_DIRS", "");
        let roots = [cmake_checkout(&env, "one"), cmake_checkout(&env, "two")];
        let base = env.dir.path().display().to_string();
        let run = |root: &Path, source: &str, extra: &[String], cached: bool| -> (String, Output) {
            let args = cmake_compile(root, source, extra);
            let mut cmd = match cached {
                true => {
                    let mut cmd = env.cachet();
                    cmd.arg(cc);
                    cmd
                }
                false => env.command(cc),
            };
            cmd.current_dir(root.join("build"))
                .args(&args)
                .env("CACHET_BASE_DIRS", &base);
            let (kind, out) = outcome_of_command(&env, &mut cmd);
            (kind.to_owned(), out)
        };
        let outputs = |root: &Path, source: &str| -> Vec<Vec<u8>> {
            let object = root.join(format!("build/CMakeFiles/p.dir/src/{source}.o"));
            let depfile = root.join(format!("build/CMakeFiles/p.dir/src/{source}.o.d"));
            [object, depfile]
                .iter()
                .map(|p| {
                    let data = std::fs::read(p).unwrap();
                    std::fs::remove_file(p).unwrap();
                    data
                })
                .collect()
        };
        let map = |root: &Path| vec![format!("-ffile-prefix-map={}=.", root.display())];
        let cases: [(&str, Vec<String>, &str); 4] = [
            ("a.c", vec![], "direct hit"),
            ("b.c", vec![], "miss"),
            ("a.c", vec!["-g".into()], "miss"),
            ("a.c", vec!["-g".into()], "direct hit"),
        ];
        for (i, (source, flags, second)) in cases.iter().enumerate() {
            // The last case maps each checkout to `.`: debug info no longer tells them apart.
            let extra = |root: &Path| match i {
                3 => [flags.clone(), map(root)].concat(),
                _ => flags.clone(),
            };
            let what = format!("{cc} {source} {flags:?} case {i}");
            let (first, _) = run(&roots[0], source, &extra(&roots[0]), true);
            assert_eq!(first, "miss", "{what} in one");
            outputs(&roots[0], source);
            let (_, plain) = run(&roots[1], source, &extra(&roots[1]), false);
            let want = outputs(&roots[1], source);
            let (kind, ours) = run(&roots[1], source, &extra(&roots[1]), true);
            assert_eq!(kind, *second, "{what} in two");
            let got = outputs(&roots[1], source);
            assert!(
                got[0] == want[0],
                "{what}: object differs from a plain compile in two"
            );
            assert_eq!(
                String::from_utf8_lossy(&got[1]),
                String::from_utf8_lossy(&want[1]),
                "{what}: .d"
            );
            assert_eq!(stderr(&ours), stderr(&plain), "{what}: diagnostics");
            if source == &"a.c" {
                assert!(
                    stderr(&ours).contains(&roots[1].display().to_string()),
                    "{what}"
                );
            }
        }
        // Each checkout's own headers are checked: another util.h in two is a miss there.
        let header = roots[1].join("include/util.h");
        std::fs::write(&header, "static int util(void) { return 4; }\n").unwrap();
        let old = std::time::SystemTime::now() - std::time::Duration::from_secs(30);
        let file = std::fs::File::options().write(true).open(&header).unwrap();
        file.set_modified(old).unwrap();
        assert_eq!(
            run(&roots[1], "a.c", &[], true).0,
            "miss",
            "{cc}: header of two"
        );
    }
}
