//! gcc and clang through the real binary: miss, hit, warnings, dependency files,
//! passthrough, errors, signals, response files, symlink mode.

mod common;

use std::os::unix::process::ExitStatusExt;

use common::*;

const WARNS: &str = "#include \"util.h\"\nint f(int x) { int unused; return x + UTIL; }\n";

/// Plain compile, then cachet miss, then cachet hit: same object, same stderr each time.
#[test]
fn miss_then_hit_matches_a_plain_compile() {
    for cc in compilers() {
        let env = Env::new();
        env.write("util.h", "#define UTIL 3\n");
        env.write("a.c", WARNS);
        let args = ["-c", "a.c", "-o", "a.o", "-O2", "-Wall", "-g"];

        let plain = env.command(cc).args(args).output().unwrap();
        assert!(plain.status.success(), "{cc}: {}", stderr(&plain));
        assert!(
            stderr(&plain).contains("unused"),
            "{cc} gave no warning: {}",
            stderr(&plain)
        );
        let plain_obj = std::fs::read(env.work.join("a.o")).unwrap();
        std::fs::remove_file(env.work.join("a.o")).unwrap();

        let mut cachet_args = vec![cc];
        cachet_args.extend(args);
        for round in ["miss", "hit"] {
            let out = env.ok(&cachet_args);
            assert_eq!(
                stderr(&out),
                stderr(&plain),
                "{cc} {round}: warnings differ"
            );
            let obj = std::fs::read(env.work.join("a.o")).unwrap();
            assert!(
                obj == plain_obj,
                "{cc} {round}: object differs from a plain compile"
            );
            std::fs::remove_file(env.work.join("a.o")).unwrap();
            env.settle();
        }
        let stats = env.stats();
        assert_eq!(stats["counters"]["cache_misses"], 1, "{cc}: {stats}");
        assert_eq!(stats["counters"]["cache_hits"], 1, "{cc}: {stats}");
        // The entry, and its direct-mode manifest.
        assert_eq!(stats["cache"]["entries"], 2, "{cc}: {stats}");

        // A header change is a miss.
        env.write("util.h", "#define UTIL 4\n");
        env.ok(&cachet_args);
        assert_eq!(env.counter("cache_misses"), 2, "{cc}");
    }
}

/// -MD / -MMD / -MF / -MT / -MQ: the dependency file of a hit is the plain one.
#[test]
fn dependency_files_are_right_on_a_hit() {
    for cc in compilers() {
        let env = Env::new();
        env.write("inc/util.h", "#define UTIL 3\n");
        env.write(
            "src/a.c",
            "#include \"util.h\"\nint f(void) { return UTIL; }\n",
        );
        std::fs::create_dir_all(env.work.join("obj")).unwrap();
        let variants: [&[&str]; 4] = [
            &["-c", "src/a.c", "-Iinc", "-o", "obj/a.o", "-MMD", "-MP"],
            &[
                "-c",
                "src/a.c",
                "-Iinc",
                "-o",
                "obj/a.o",
                "-MD",
                "-MF",
                "obj/deps.d",
            ],
            &[
                "-c",
                "src/a.c",
                "-Iinc",
                "-o",
                "obj/a.o",
                "-MD",
                "-MT",
                "custom$target",
                "-MQ",
                "q$t",
            ],
            &["-c", "src/a.c", "-Iinc", "-MMD"],
        ];
        for args in variants {
            let dep = if args.contains(&"-MF") {
                "obj/deps.d"
            } else if args.contains(&"-o") {
                "obj/a.d"
            } else {
                "a.d"
            };
            let obj = if args.contains(&"-o") {
                "obj/a.o"
            } else {
                "a.o"
            };
            let plain = env.command(cc).args(args).output().unwrap();
            assert!(plain.status.success(), "{cc} {args:?}: {}", stderr(&plain));
            let plain_dep = std::fs::read_to_string(env.work.join(dep)).unwrap();
            let plain_obj = std::fs::read(env.work.join(obj)).unwrap();
            for round in ["miss", "hit"] {
                std::fs::remove_file(env.work.join(dep)).unwrap();
                std::fs::remove_file(env.work.join(obj)).unwrap();
                let mut cmd = vec![cc];
                cmd.extend(args);
                env.ok(&cmd);
                env.settle();
                assert_eq!(
                    std::fs::read_to_string(env.work.join(dep)).unwrap(),
                    plain_dep,
                    "{cc} {args:?} {round}"
                );
                assert!(
                    std::fs::read(env.work.join(obj)).unwrap() == plain_obj,
                    "{cc} {args:?} {round}"
                );
            }
        }
        // Targets and the .d's name are not keyed: the -MT/-MQ compile's first round is
        // a hit on the -MF compile's entry, with its own targets written.
        let stats = env.stats();
        assert_eq!(stats["counters"]["cache_hits"], 5, "{cc}: {stats}");
        assert_eq!(stats["counters"]["cache_misses"], 3, "{cc}: {stats}");
    }
}

#[test]
fn uncacheable_compiles_pass_through_and_are_counted() {
    let env = Env::new();
    env.write("main.c", "int main(void) { return 7; }\n");
    // Linking, -E and two inputs all still work.
    env.ok(&["gcc", "main.c", "-o", "prog"]);
    let status = std::process::Command::new(env.work.join("prog"))
        .status()
        .unwrap();
    assert_eq!(status.code(), Some(7));
    let pre = env.ok(&["gcc", "-E", "main.c"]);
    assert!(String::from_utf8_lossy(&pre.stdout).contains("return 7"));
    env.write("b.c", "int b;\n");
    env.ok(&["gcc", "-c", "main.c", "b.c"]);
    assert!(env.work.join("b.o").exists());

    let stats = env.stats();
    let reasons = stats["counters"]["uncacheable"].as_object().unwrap();
    assert_eq!(
        reasons.values().map(|v| v.as_u64().unwrap()).sum::<u64>(),
        3,
        "{stats}"
    );
    assert!(reasons.keys().any(|r| r.contains("link")), "{stats}");
}

#[test]
fn compile_errors_are_reported_and_not_cached() {
    for cc in compilers() {
        let env = Env::new();
        env.write("bad.c", "int f(void) { return nope; }\n");
        let plain = env.command(cc).args(["-c", "bad.c"]).output().unwrap();
        for _ in 0..2 {
            let out = env.run(&[cc, "-c", "bad.c"]);
            assert_eq!(out.status.code(), plain.status.code(), "{cc}");
            assert_eq!(stderr(&out), stderr(&plain), "{cc}");
        }
        // A missing header fails in the preprocessor: the same error, too.
        env.write("hdr.c", "#include \"missing.h\"\n");
        let plain = env.command(cc).args(["-c", "hdr.c"]).output().unwrap();
        let out = env.run(&[cc, "-c", "hdr.c"]);
        assert_eq!(out.status.code(), plain.status.code(), "{cc}");
        assert_eq!(stderr(&out), stderr(&plain), "{cc}");
        let stats = env.stats();
        assert_eq!(stats["counters"]["compile_failures"], 3, "{cc}: {stats}");
        assert_eq!(stats["counters"]["cache_hits"], 0, "{cc}: {stats}");
    }
}

#[test]
fn response_files_and_language_flags() {
    let env = Env::new();
    env.write("code.txt", "int g(void) { return 1; }\n");
    env.write("args.rsp", "-c -x c code.txt -o \"out dir/code.o\"\n");
    std::fs::create_dir_all(env.work.join("out dir")).unwrap();
    for _ in 0..2 {
        env.ok(&["gcc", "@args.rsp"]);
        env.settle();
        std::fs::remove_file(env.work.join("out dir/code.o")).unwrap();
    }
    assert_eq!(env.counter("cache_hits"), 1);
}

#[test]
fn outputs_get_the_clients_umask() {
    let env = Env::new();
    env.write("a.c", "int a;\n");
    for (round, mask) in [("miss", "077"), ("hit", "027")] {
        let script = format!("umask {mask} && exec \"$@\"");
        let out = env
            .command("sh")
            .args(["-c", &script, "sh", CACHET, "gcc", "-c", "a.c"])
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", stderr(&out));
        env.settle();
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(env.work.join("a.o"))
            .unwrap()
            .permissions()
            .mode()
            & 0o777;
        let expected = 0o666 & !u32::from_str_radix(mask, 8).unwrap();
        assert_eq!(mode, expected, "{round}");
        std::fs::remove_file(env.work.join("a.o")).unwrap();
    }
    assert_eq!(env.counter("cache_hits"), 1);
}

/// A compiler killed by a signal: the client dies of the same signal.
#[test]
fn a_compiler_signal_is_the_clients_signal() {
    let env = Env::new();
    let fake = env.dir.path().join("fakecc");
    script(
        &fake,
        "for a in \"$@\"; do case $a in -dM|-E) exec gcc \"$@\";; esac; done\nkill -SEGV $$\n",
    );
    env.write("a.c", "int a;\n");
    let out = env.run(&[fake.to_str().unwrap(), "-c", "a.c"]);
    assert_eq!(
        out.status.signal(),
        Some(11),
        "{:?} {}",
        out.status,
        stderr(&out)
    );
}

/// `gcc -> cachet` on PATH: the symlink is skipped when looking for the real gcc.
#[test]
fn symlink_mode_finds_the_real_compiler() {
    let env = Env::new();
    let bin = env.dir.path().join("bin");
    std::fs::create_dir(&bin).unwrap();
    std::os::unix::fs::symlink(CACHET, bin.join("gcc")).unwrap();
    env.write("a.c", "int a;\n");
    let path = format!("{}:{}", bin.display(), std::env::var("PATH").unwrap());
    for _ in 0..2 {
        let out = env
            .command(bin.join("gcc"))
            .args(["-c", "a.c"])
            .env("PATH", &path)
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", stderr(&out));
        env.settle();
    }
    assert_eq!(env.counter("cache_hits"), 1);
}

#[test]
fn disable_and_recache() {
    let env = Env::new();
    env.write("a.c", "int a;\n");
    let out = env
        .cachet()
        .args(["gcc", "-c", "a.c"])
        .env("CACHET_DISABLE", "1")
        .output()
        .unwrap();
    assert!(out.status.success());
    assert!(
        !env.socket().exists(),
        "CACHET_DISABLE must not even start a server"
    );
    env.ok(&["gcc", "-c", "a.c"]);
    env.settle();
    let out = env
        .cachet()
        .args(["gcc", "-c", "a.c"])
        .env("CACHET_RECACHE", "1")
        .stdin(no_input())
        .output()
        .unwrap();
    assert!(out.status.success());
    env.settle();
    let stats = env.stats();
    assert_eq!(stats["counters"]["cache_misses"], 2, "{stats}");
    assert_eq!(stats["counters"]["forced_recaches"], 1, "{stats}");
    assert_eq!(stats["counters"]["cache_hits"], 0, "{stats}");
}

/// In preprocessor mode, with -g the object records the working directory (as rewritten
/// by prefix maps), so another directory is another entry; without -g it is the same
/// entry. Every object is compared with a plain compile in the same place. (Direct mode
/// keys on the cwd always, since relative include paths resolve against it.)
#[test]
fn debug_info_keys_on_the_recorded_working_directory() {
    for cc in compilers() {
        let env = Env::new().with_env("CACHET_DIRECT_MODE", "0");
        let (one, two) = (env.work.join("one"), env.work.join("two"));
        for dir in [&one, &two] {
            std::fs::create_dir_all(dir).unwrap();
            std::fs::write(dir.join("a.c"), "int a(void) { return 2; }\n").unwrap();
        }
        let map = format!("-fdebug-prefix-map={}=/W", env.work.display());
        let compile = |dir: &std::path::Path, args: &[&str]| {
            let out = env
                .cachet()
                .arg(cc)
                .args(args)
                .current_dir(dir)
                .output()
                .unwrap();
            assert!(out.status.success(), "{}", stderr(&out));
            env.settle();
            let mut plain_args = args.to_vec();
            plain_args.extend(["-o", "plain.o"]);
            let plain = env
                .command(cc)
                .args(&plain_args)
                .current_dir(dir)
                .output()
                .unwrap();
            assert!(plain.status.success());
            assert!(
                std::fs::read(dir.join("a.o")).unwrap()
                    == std::fs::read(dir.join("plain.o")).unwrap(),
                "{cc} {args:?} in {}: the object differs from a plain compile",
                dir.display()
            );
        };
        for args in [&["-c", "a.c", "-g"][..], &["-c", "a.c", "-g", &map]] {
            compile(&one, args);
            compile(&two, args);
            assert_eq!(
                env.counter("cache_hits"),
                0,
                "{cc} {args:?}: two directories shared an entry"
            );
        }
        compile(&one, &["-c", "a.c", "-O1"]);
        compile(&two, &["-c", "a.c", "-O1"]);
        assert_eq!(
            env.counter("cache_hits"),
            1,
            "{cc}: without -g the directory does not matter"
        );
    }
}

/// gcc writes no dependency file for plain assembler input, even with `-MD`: a stale `.d`
/// lying there is neither stored nor restored, and the object is still cached.
#[test]
fn assembler_input_with_md_writes_no_depfile() {
    let env = Env::new();
    env.write("t.s", ".text\n.globl f\nf:\n\tret\n");
    env.write("t.d", "stale: dependencies\n");
    let args = ["-c", "t.s", "-o", "t.o", "-MD"];
    assert!(env.command("gcc").args(args).status().unwrap().success());
    let plain = std::fs::read(env.work.join("t.o")).unwrap();
    for round in ["miss", "hit"] {
        std::fs::remove_file(env.work.join("t.o")).unwrap();
        let stale = format!("stale: {round}\n");
        env.write("t.d", &stale);
        let mut full = vec!["gcc"];
        full.extend(args);
        env.ok(&full);
        assert_eq!(
            std::fs::read(env.work.join("t.o")).unwrap(),
            plain,
            "{round}"
        );
        assert_eq!(
            std::fs::read_to_string(env.work.join("t.d")).unwrap(),
            stale,
            "{round}: the .d was written"
        );
        env.settle();
    }
    assert_eq!(env.counter("cache_hits"), 1);
}

/// With `DEPENDENCIES_OUTPUT` set, the server's first compile (which probes the compiler)
/// leaves the user's dependency file exactly as a plain compile writes it: the probe
/// never writes into the user's tree.
#[test]
fn helper_runs_never_write_the_users_dependency_file() {
    for cc in compilers() {
        let plain_env = Env::new().with_env("DEPENDENCIES_OUTPUT", "one.d");
        plain_env.write("t.c", "int t(void) { return 1; }\n");
        let plain = plain_env.command(cc).args(["-c", "t.c"]).status().unwrap();
        assert!(plain.success());
        // gcc honours the variable; clang 14 does not and writes nothing.
        let expected = std::fs::read(plain_env.work.join("one.d")).ok();

        let env = Env::new().with_env("DEPENDENCIES_OUTPUT", "one.d");
        env.write("t.c", "int t(void) { return 1; }\n");
        env.ok(&[cc, "-c", "t.c"]);
        let written = std::fs::read(env.work.join("one.d")).ok();
        assert_eq!(
            written.as_deref().map(String::from_utf8_lossy),
            expected.as_deref().map(String::from_utf8_lossy),
            "{cc}"
        );
    }
}

/// `-march=native` compiles are cached (keyed by what the driver resolves them to) and
/// give the plain compiler's object.
#[test]
fn native_cpu_flags_are_cached_like_the_plain_compile() {
    for cc in compilers() {
        let env = Env::new();
        env.write("t.c", "int sum(int *v, int n) { int s = 0; for (int i = 0; i < n; i++) s += v[i]; return s; }\n");
        let args = [
            "-c",
            "t.c",
            "-O3",
            "-march=native",
            "-mtune=native",
            "-o",
            "t.o",
        ];
        assert!(env.command(cc).args(args).status().unwrap().success());
        let plain = std::fs::read(env.work.join("t.o")).unwrap();
        for round in ["miss", "hit"] {
            std::fs::remove_file(env.work.join("t.o")).unwrap();
            let mut full = vec![cc];
            full.extend(args);
            env.ok(&full);
            assert_eq!(
                std::fs::read(env.work.join("t.o")).unwrap(),
                plain,
                "{cc} {round}"
            );
            env.settle();
        }
        assert_eq!(env.counter("cache_hits"), 1, "{cc}");
    }
}

/// Runs `command` (a shell command line) on a terminal made by `script`, returning what
/// the terminal showed. None where `script` is not installed.
fn on_a_terminal(env: &Env, command: &str) -> Option<Vec<u8>> {
    if !have("script") {
        return None;
    }
    let out = env
        .command("script")
        .args(["-qec", command, "typescript"])
        .env("TERM", "xterm")
        .env("CACHET", CACHET)
        .output()
        .unwrap();
    assert!(out.status.success(), "{command}: {}", stderr(&out));
    Some(out.stdout)
}

/// One entry serves a terminal and a pipe: the compile runs coloured, a terminal gets the
/// colours (as the compiler would have shown them there), a pipe gets the plain text (the
/// colour taken out is all that differs), on a miss as on a hit; also a failed compile.
#[test]
fn one_entry_serves_a_terminal_and_a_pipe() {
    for cc in compilers() {
        let env = Env::new();
        env.write(
            "w.c",
            "#include <stdio.h>\nint f(long x) { int unused; printf(\"%d\", x); return 0; }\n",
        );
        env.write("e.c", "int g(void) { return missing; }\n");
        let args = ["-Wall", "-c", "w.c", "-o", "w.o"];
        let plain = env.command(cc).args(args).output().unwrap();
        assert!(plain.status.success() && !plain.stderr.is_empty());
        let mut with_cachet = vec![cc];
        with_cachet.extend(args);
        let miss = env.ok(&with_cachet);
        assert_eq!(stderr(&miss), stderr(&plain), "{cc} miss, piped");
        env.settle();
        let hit = env.ok(&with_cachet);
        assert_eq!(stderr(&hit), stderr(&plain), "{cc} hit, piped");
        assert_eq!(env.counter("cache_hits"), 1, "{cc}");

        let line = format!("{cc} {}", args.join(" "));
        let Some(terminal) = on_a_terminal(&env, &line) else {
            return skip("script is not installed");
        };
        assert!(terminal.contains(&0x1b), "{cc} colours a terminal");
        let through = on_a_terminal(&env, &format!("\"$CACHET\" {line}")).unwrap();
        assert_eq!(
            String::from_utf8_lossy(&through),
            String::from_utf8_lossy(&terminal),
            "{cc} hit on a terminal"
        );
        let stats = env.settle();
        assert_eq!(
            stats["counters"]["cache_hits"], 2,
            "{cc}: the terminal shares the entry: {stats}"
        );

        let failing = env.command(cc).args(["-c", "e.c"]).output().unwrap();
        let ours = env.run(&[cc, "-c", "e.c"]);
        assert!(!failing.status.success() && !ours.status.success());
        assert_eq!(
            stderr(&ours),
            stderr(&failing),
            "{cc} failed compile, piped"
        );
    }
}
