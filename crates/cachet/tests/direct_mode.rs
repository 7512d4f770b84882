//! Direct mode for C: hits without the preprocessor, and every known trap turning a hit
//! into a miss (or a touch that changes nothing staying a hit).

mod common;

use std::time::{Duration, SystemTime};

use common::*;

fn outcome(env: &Env, args: &[&str]) -> (&'static str, std::process::Output) {
    outcome_of(env, "gcc", args)
}

fn outcome_of(env: &Env, compiler: &str, args: &[&str]) -> (&'static str, std::process::Output) {
    let mut cmd = env.cachet();
    cmd.arg(compiler).args(args);
    outcome_of_command(env, &mut cmd)
}

fn same_as_plain(env: &Env, args: &[&str], object: &str) {
    let ours = std::fs::read(env.work.join(object)).unwrap();
    let mut plain_args = args.to_vec();
    plain_args.extend(["-o", "plain.o"]);
    let out = env.command("gcc").args(&plain_args).output().unwrap();
    assert!(out.status.success());
    assert!(
        ours == std::fs::read(env.work.join("plain.o")).unwrap(),
        "{object} differs from plain gcc"
    );
}

/// `a.c` including `inc/x.h`, both settled; the arguments that compile it to `a.o`.
fn source_with_a_header(env: &Env) -> [&'static str; 5] {
    env.write("inc/x.h", "#define X 1\n");
    env.write("a.c", "#include \"x.h\"\nint a(void) { return X; }\n");
    age_all(&env.work);
    ["-c", "a.c", "-Iinc", "-o", "a.o"]
}

/// Edits the header of [`source_with_a_header`]: a miss that gives gcc's object.
fn edit_the_header(env: &Env, args: &[&str]) {
    env.write("inc/x.h", "#define X 2\n");
    age_all(&env.work);
    assert_eq!(outcome(env, args).0, "miss");
    same_as_plain(env, &["-c", "a.c", "-Iinc"], "a.o");
}

#[test]
fn hits_need_no_preprocessor_and_a_touch_changes_nothing() {
    let env = Env::new();
    let args = source_with_a_header(&env);
    assert_eq!(outcome(&env, &args).0, "miss");
    assert_eq!(outcome(&env, &args).0, "direct hit");
    // A touch that changes no content stays a hit.
    std::fs::File::options()
        .write(true)
        .open(env.work.join("inc/x.h"))
        .unwrap()
        .set_modified(SystemTime::now())
        .unwrap();
    assert_eq!(outcome(&env, &args).0, "direct hit");
    // An edit is a miss, and gives gcc's object.
    edit_the_header(&env, &args);
}

#[test]
fn a_restarted_server_starts_from_the_file_hashes_the_last_one_saved() {
    let env = Env::new();
    let args = source_with_a_header(&env);
    assert_eq!(outcome(&env, &args).0, "miss");
    env.stop();
    // The next server remembers the source and the header without hashing them.
    let stats = env.stats();
    assert!(
        stats["cache"]["file_hashes_remembered"].as_u64().unwrap() >= 2,
        "{stats}"
    );
    assert_eq!(outcome(&env, &args).0, "direct hit");
    let stats = env.stats();
    assert!(
        stats["cache"]["file_hash_hits"].as_u64().unwrap() >= 2,
        "{stats}"
    );
    // An edit meanwhile is seen: the saved hash no longer holds.
    env.stop();
    edit_the_header(&env, &args);
}

#[test]
fn time_macros_go_to_preprocessor_mode() {
    let env = Env::new();
    env.write("d.c", "const char *built = __DATE__ \" \" __TIME__;\n");
    age_all(&env.work);
    let args = ["-c", "d.c"];
    assert_eq!(outcome(&env, &args).0, "miss");
    // Never a direct hit: __TIME__ moves on, and preprocessor mode sees it.
    std::thread::sleep(Duration::from_millis(1100));
    assert_eq!(outcome(&env, &args).0, "miss");
    assert_eq!(env.counter("direct_hits"), 0);
}

#[test]
fn a_header_too_new_to_trust_is_not_stored() {
    let env = Env::new();
    env.write("a.c", "#include \"fresh.h\"\nint a(void) { return F; }\n");
    env.write("fresh.h", "#define F 1\n");
    // Stamped as if edited while the compile ran (or by a clock ahead of ours).
    let ahead = SystemTime::now() + Duration::from_secs(3);
    std::fs::File::options()
        .write(true)
        .open(env.work.join("fresh.h"))
        .unwrap()
        .set_modified(ahead)
        .unwrap();
    let args = ["-c", "a.c"];
    assert_eq!(outcome(&env, &args).0, "miss");
    // Not trusted, so not stored: the next request misses too.
    assert_eq!(outcome(&env, &args).0, "miss");
    age_all(&env.work);
    assert_eq!(outcome(&env, &args).0, "miss");
    assert_eq!(outcome(&env, &args).0, "direct hit");
}

#[test]
fn a_new_header_that_shadows_an_old_one_is_a_miss() {
    let env = Env::new();
    env.write("inc/x.h", "#define X 1\n");
    env.write("a.c", "#include \"x.h\"\nint a(void) { return X; }\n");
    age_all(&env.work);
    let args = ["-c", "a.c", "-Iinc"];
    assert_eq!(outcome(&env, &args).0, "miss");
    assert_eq!(outcome(&env, &args).0, "direct hit");
    // A quote include looks next to the source first: this x.h now wins.
    env.write("x.h", "#define X 7\n");
    age_all(&env.work);
    assert_eq!(outcome(&env, &args).0, "miss");
    same_as_plain(&env, &args, "a.o");
}

#[test]
fn an_include_flag_file_is_tracked() {
    let env = Env::new();
    env.write("pre.h", "#define P 1\n");
    env.write("a.c", "int a(void) { return P; }\n");
    age_all(&env.work);
    let args = ["-c", "a.c", "-include", "pre.h"];
    assert_eq!(outcome(&env, &args).0, "miss");
    assert_eq!(outcome(&env, &args).0, "direct hit");
    env.write("pre.h", "#define P 2\n");
    age_all(&env.work);
    assert_eq!(outcome(&env, &args).0, "miss");
    same_as_plain(&env, &args, "a.o");
}

/// Direct-mode hits give the outputs, warnings and .d file of preprocessor-mode hits.
#[test]
fn direct_hits_equal_preprocessor_hits() {
    let mut results = Vec::new();
    for direct in ["1", "0"] {
        let env = Env::new().with_env("CACHET_DIRECT_MODE", direct);
        env.write("inc/w.h", "static int unused_static;\n");
        env.write(
            "src/a.c",
            "#include \"w.h\"\nint a(void) { int u; return 1; }\n",
        );
        std::fs::create_dir_all(env.work.join("obj")).unwrap();
        age_all(&env.work);
        let args = [
            "-c", "src/a.c", "-Iinc", "-Wall", "-o", "obj/a.o", "-MD", "-MT", "obj/a.o",
        ];
        outcome(&env, &args);
        std::fs::remove_file(env.work.join("obj/a.o")).unwrap();
        std::fs::remove_file(env.work.join("obj/a.d")).unwrap();
        let (kind, out) = outcome(&env, &args);
        assert_eq!(kind, if direct == "1" { "direct hit" } else { "hit" });
        results.push((
            std::fs::read(env.work.join("obj/a.o")).unwrap(),
            std::fs::read_to_string(env.work.join("obj/a.d")).unwrap(),
            stderr(&out),
        ));
    }
    assert!(results[0].0 == results[1].0, "objects differ");
    assert_eq!(results[0].1, results[1].1, ".d files differ");
    assert_eq!(results[0].2, results[1].2, "warnings differ");
    assert!(results[0].2.contains("unused"), "{}", results[0].2);
}

/// `-MMD` leaves system headers out of the dependency list; the observed compile does
/// not, so such compiles get direct hits, with gcc's own `.d` file.
#[test]
fn mmd_compiles_get_direct_hits_with_gccs_dep_file() {
    let env = Env::new();
    env.write("inc/x.h", "#include <stdio.h>\n#define X 1\n");
    env.write("a.c", "#include \"x.h\"\nint a(void) { return X; }\n");
    age_all(&env.work);
    let args = ["-c", "a.c", "-Iinc", "-o", "a.o", "-MMD", "-MP"];
    let plain = env
        .command("gcc")
        .args(["-c", "a.c", "-Iinc", "-o", "a.o", "-MMD", "-MP"])
        .output()
        .unwrap();
    assert!(plain.status.success());
    let plain_dep = std::fs::read(env.work.join("a.d")).unwrap();
    std::fs::remove_file(env.work.join("a.d")).unwrap();
    assert_eq!(outcome(&env, &args).0, "miss");
    std::fs::remove_file(env.work.join("a.d")).unwrap();
    assert_eq!(outcome(&env, &args).0, "direct hit");
    assert_eq!(std::fs::read(env.work.join("a.d")).unwrap(), plain_dep);
    same_as_plain(&env, &["-c", "a.c", "-Iinc"], "a.o");
}

/// Compiles `args` plainly, then twice through cachet, with `outputs` removed before each
/// run: a miss, then `hit`, and each output byte-identical to the plain compile's. Returns
/// the plain compile, the miss and the hit, for checks of their output.
fn cached_like_plain(
    env: &Env,
    compiler: &str,
    args: &[&str],
    outputs: &[&str],
    hit: &str,
) -> [std::process::Output; 3] {
    let plain = env.command(compiler).args(args).output().unwrap();
    assert!(plain.status.success(), "{compiler}: {plain:?}");
    let read = |file: &str| std::fs::read(env.work.join(file)).unwrap();
    let remove = || {
        for file in outputs {
            std::fs::remove_file(env.work.join(file)).unwrap();
        }
    };
    let expected: Vec<Vec<u8>> = outputs.iter().map(|f| read(f)).collect();
    remove();
    let (first, miss) = outcome_of(env, compiler, args);
    assert_eq!(first, "miss", "{compiler}");
    remove();
    let (second, out) = outcome_of(env, compiler, args);
    assert_eq!(second, hit, "{compiler}: {}", env.stats()["counters"]);
    for (file, expected) in outputs.iter().zip(&expected) {
        assert!(
            read(file) == *expected,
            "{compiler}: {file} differs from a plain compile:\n{}\n---\n{}",
            String::from_utf8_lossy(&read(file)),
            String::from_utf8_lossy(expected)
        );
    }
    [plain, miss, out]
}

/// kbuild's dependency flags: `-Wp,-MD,FILE` (gcc names the target after the input, clang
/// after the object) and `-Wp,-D…` get direct hits (and preprocessor-mode hits, the `-E`
/// run writing no `.d`), with the compiler's own `.d` file.
#[test]
fn kbuild_dep_flags_get_direct_hits_with_the_compilers_dep_file() {
    for (compiler, direct, hit) in modes() {
        let env = Env::new().with_env("CACHET_DIRECT_MODE", direct);
        env.write("inc/x.h", "#define X 1\n");
        env.write(
            "src/a.c",
            "#include \"x.h\"\nint a(void) { return X + Y; }\n",
        );
        std::fs::create_dir_all(env.work.join("out")).unwrap();
        age_all(&env.work);
        let args = [
            "-c",
            "src/a.c",
            "-Iinc",
            "-o",
            "out/a.o",
            "-Wp,-MMD,out/.a.o.d",
            "-Wp,-DY=2",
        ];
        cached_like_plain(&env, compiler, &args, &["out/.a.o.d", "out/a.o"], hit);
    }
}

/// `-S` (assembler text as the output) is cached like an object: a hit writes the `.s`
/// the compiler would have, and replays its warnings.
#[test]
fn assembler_text_output_is_cached() {
    for (compiler, direct, hit) in modes() {
        let env = Env::new().with_env("CACHET_DIRECT_MODE", direct);
        env.write("a.c", "int a(int x) { int unused; return x * 3; }\n");
        std::fs::create_dir_all(env.work.join("out")).unwrap();
        age_all(&env.work);
        let args = ["-S", "a.c", "-O2", "-Wall", "-o", "out/a.s"];
        let [plain, miss, out] = cached_like_plain(&env, compiler, &args, &["out/a.s"], hit);
        assert_eq!(stderr(&out), stderr(&miss), "{compiler}");
        assert_eq!(
            stderr(&out),
            String::from_utf8_lossy(&plain.stderr),
            "{compiler}"
        );
        assert!(
            stderr(&out).contains("unused"),
            "{compiler}: {}",
            stderr(&out)
        );
    }
}

/// clang's `--` before the input: cached, the object as clang writes it.
#[test]
fn clang_double_dash_before_the_input_is_cached() {
    if !have("clang") {
        return skip("clang is not installed");
    }
    let env = Env::new();
    env.write("a.c", "int a(int x) { return x * 5; }\n");
    std::fs::create_dir_all(env.work.join("out")).unwrap();
    age_all(&env.work);
    let args = ["-c", "-O2", "-o", "out/a.o", "--", "a.c"];
    cached_like_plain(&env, "clang", &args, &["out/a.o"], "direct hit");
}

/// The side outputs ccache caches: coverage notes (`.gcno`; gcc's carry a stamp from the
/// clock unless `-frandom-seed` is given, as here), split DWARF (`.dwo`), stack usage
/// (`.su`), gcc's call graph (`.ci`), clang's serialized diagnostics (`.dia`): each hits the
/// second time with every output byte-identical to a plain compile's.
#[test]
fn side_outputs_are_cached_byte_for_byte() {
    for (compiler, direct, hit) in modes() {
        let gcc = compiler == "gcc";
        let mut cases: Vec<(Vec<&str>, Vec<&str>)> = vec![
            (
                vec!["--coverage", "-frandom-seed=a"],
                vec!["out/a.o", "out/a.gcno"],
            ),
            (vec!["-g", "-gsplit-dwarf"], vec!["out/a.o", "out/a.dwo"]),
            (vec!["-fstack-usage"], vec!["out/a.o", "out/a.su"]),
        ];
        if gcc {
            cases.push((vec!["-fcallgraph-info"], vec!["out/a.o", "out/a.ci"]));
        } else {
            cases.push((
                vec!["--serialize-diagnostics", "out/diag.dia"],
                vec!["out/a.o", "out/diag.dia"],
            ));
        }
        for (flags, outputs) in cases {
            let env = Env::new().with_env("CACHET_DIRECT_MODE", direct);
            env.write(
                "src/a.c",
                "int f(int x) { int unused; return x * 2; }\nint main(void) { return f(1); }\n",
            );
            std::fs::create_dir_all(env.work.join("out")).unwrap();
            age_all(&env.work);
            let mut args = vec!["-c", "src/a.c", "-O1", "-Wall", "-o", "out/a.o"];
            args.extend(&flags);
            let [plain, _, out] = cached_like_plain(&env, compiler, &args, &outputs, hit);
            assert_eq!(
                stderr(&out),
                String::from_utf8_lossy(&plain.stderr),
                "{compiler} {flags:?}"
            );
        }
    }
}

/// Coverage records the cwd (in the `.gcno`) and the object's path (its `.gcda`): another
/// build dir or another `-o` misses, as it must; the same one hits.
#[test]
fn coverage_misses_in_another_build_dir() {
    for (compiler, direct, hit) in modes() {
        let env = Env::new().with_env("CACHET_DIRECT_MODE", direct);
        env.write("src/a.c", "int f(int x) { return x * 2; }\n");
        for dir in ["b1", "b2"] {
            std::fs::create_dir_all(env.work.join(dir).join("o")).unwrap();
        }
        age_all(&env.work);
        let args = ["-c", "../src/a.c", "--coverage", "-o", "o/a.o"];
        let run = |dir: &str, args: &[&str]| {
            let mut cmd = env.cachet();
            cmd.current_dir(env.work.join(dir)).arg(compiler).args(args);
            outcome_of_command(&env, &mut cmd).0
        };
        assert_eq!(run("b1", &args), "miss", "{compiler}");
        assert_eq!(run("b1", &args), hit, "{compiler}");
        assert_eq!(run("b2", &args), "miss", "{compiler}");
        let other_output = ["-c", "../src/a.c", "--coverage", "-o", "o/b.o"];
        assert_eq!(run("b1", &other_output), "miss", "{compiler}");
    }
}

/// Files named by flags are keyed through the manifest of what the compile read: a changed
/// sanitizer ignore list or profile is a miss, an unchanged one a hit.
#[test]
fn files_named_by_flags_are_keyed() {
    for (compiler, direct, hit) in modes() {
        let env = Env::new().with_env("CACHET_DIRECT_MODE", direct);
        env.write("a.c", "int f(int *p) { return p[3]; }\n");
        env.write("ignore.txt", "fun:g\n");
        age_all(&env.work);
        let args = [
            "-c",
            "a.c",
            "-fsanitize=address",
            "-fsanitize-ignorelist=ignore.txt",
            "-o",
            "a.o",
        ];
        if compiler == "gcc" {
            // gcc 12 has no ignore lists; its error passes through.
            let out = env.run(&["gcc", "-c", "a.c", "-fsanitize-ignorelist=ignore.txt"]);
            assert!(!out.status.success());
            continue;
        }
        let [_, _, _] = cached_like_plain(&env, compiler, &args, &["a.o"], hit);
        env.write("ignore.txt", "fun:f\n");
        age_all(&env.work);
        let (again, _) = outcome_of(&env, compiler, &args);
        assert_eq!(again, "miss", "{compiler} direct={direct}");
    }
}

/// `-fprofile-use` reads the `.gcda` named after the object: observed, so a hit needs the
/// same profile, and a profile from another run is a miss.
#[test]
fn profile_use_is_keyed_on_the_profile() {
    for (_, direct, hit) in modes().into_iter().filter(|(c, ..)| *c == "gcc") {
        let env = Env::new().with_env("CACHET_DIRECT_MODE", direct);
        env.write(
            "a.c",
            "int main(int argc, char **argv) { int s = 0; for (int i = 0; i < argc * 1000; i++) s += i % 7; return s == 3; }\n",
        );
        // A profile from an instrumented run, made without cachet.
        let profile = |runs: usize| {
            let generate = ["-c", "a.c", "-O2", "-fprofile-generate", "-o", "a.o"];
            assert!(
                env.command("gcc")
                    .args(generate)
                    .status()
                    .unwrap()
                    .success()
            );
            let link = ["a.o", "-fprofile-generate", "-o", "prog"];
            assert!(env.command("gcc").args(link).status().unwrap().success());
            let _ = std::fs::remove_file(env.work.join("a.gcda"));
            for _ in 0..runs {
                let mut run = env.command(env.work.join("prog"));
                run.args(vec!["x"; runs]).status().unwrap();
            }
            std::fs::remove_file(env.work.join("a.o")).unwrap();
            age_all(&env.work);
        };
        profile(1);
        let args = ["-c", "a.c", "-O2", "-fprofile-use", "-o", "a.o"];
        cached_like_plain(&env, "gcc", &args, &["a.o"], hit);
        profile(3);
        assert_eq!(outcome(&env, &args).0, "miss", "direct={direct}");
        assert_eq!(outcome(&env, &args).0, hit, "direct={direct}");
    }
}

/// Precompiled headers: making one (`-x c-header`, or a `.h` input) hits the second time,
/// and using one (`-include p.h` with `p.h.gch` beside it) is keyed on the `.gch` itself:
/// a new `.gch` under the same header is a miss whose object is the plain compile's.
#[test]
fn precompiled_headers_are_made_and_used() {
    for (compiler, direct, hit) in modes() {
        let env = Env::new().with_env("CACHET_DIRECT_MODE", direct);
        env.write("p.h", "#include <stdio.h>\n#define V 1\n");
        env.write("v2/p.h", "#include <stdio.h>\n#define V 2\n");
        env.write("a.c", "int f(void) { return V; }\n");
        std::fs::create_dir_all(env.work.join("pch")).unwrap();
        age_all(&env.work);
        let pch = if compiler == "gcc" {
            "p.h.gch"
        } else {
            "p.h.pch"
        };
        let make = ["-x", "c-header", "-c", "p.h", "-o", pch];
        // gcc's .gch is not the same twice (it holds addresses); clang's is.
        let (first, _) = outcome_of(&env, compiler, &make);
        assert_eq!(first, "miss", "{compiler}");
        let made = std::fs::read(env.work.join(pch)).unwrap();
        std::fs::remove_file(env.work.join(pch)).unwrap();
        assert_eq!(outcome_of(&env, compiler, &make).0, hit, "{compiler}");
        assert!(
            std::fs::read(env.work.join(pch)).unwrap() == made,
            "{compiler}"
        );
        if compiler != "gcc" {
            let plain = env
                .command(compiler)
                .args(["-x", "c-header", "-c", "p.h", "-o", "plain.pch"])
                .output()
                .unwrap();
            assert!(plain.status.success());
            assert!(std::fs::read(env.work.join("plain.pch")).unwrap() == made);
        }

        let use_it = ["-c", "a.c", "-include", "p.h", "-o", "a.o"];
        cached_like_plain(&env, compiler, &use_it, &["a.o"], hit);
        if compiler == "gcc" {
            // Another .gch for the same header: gcc uses it, and so must the key.
            let other = ["-x", "c-header", "-c", "v2/p.h", "-o", "p.h.gch"];
            assert!(env.command("gcc").args(other).status().unwrap().success());
            age_all(&env.work);
            let plain = env
                .command("gcc")
                .args(["-c", "a.c", "-include", "p.h", "-o", "plain.o"])
                .output()
                .unwrap();
            assert!(plain.status.success());
            assert_eq!(outcome(&env, &use_it).0, "miss", "direct={direct}");
            assert!(
                std::fs::read(env.work.join("a.o")).unwrap()
                    == std::fs::read(env.work.join("plain.o")).unwrap()
            );
        }
    }
}

/// Whether `compiler` itself takes `__DATE__` from `SOURCE_DATE_EPOCH` (asked here
/// independently of cachet's probe).
fn honours_source_date_epoch(env: &Env, compiler: &str) -> bool {
    env.write("probe.c", "__DATE__\n");
    let out = env
        .command(compiler)
        .args(["-E", "-P", "probe.c"])
        .env("SOURCE_DATE_EPOCH", "0")
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).contains("Jan  1 1970")
}

/// `__DATE__`/`__TIME__` with `SOURCE_DATE_EPOCH`: direct hits where the compiler honours
/// the variable (gcc 7 and later), the object the plain compile's; another epoch is a
/// miss. Where it does not (clang before 16), and for `__TIMESTAMP__` (the file's mtime)
/// always, preprocessor mode serves them.
#[test]
fn source_date_epoch_makes_time_macros_cacheable() {
    for compiler in compilers() {
        let env = Env::new().with_env("SOURCE_DATE_EPOCH", "1700000000");
        env.write("a.c", "const char *when = __DATE__ \" \" __TIME__;\n");
        env.write("s.c", "const char *when = __TIMESTAMP__;\n");
        age_all(&env.work);
        let honoured = honours_source_date_epoch(&env, compiler);
        assert_eq!(
            honoured,
            compiler == "gcc",
            "gcc 12 honours it, clang 14 does not"
        );
        let args = ["-c", "a.c", "-o", "a.o"];
        if honoured {
            cached_like_plain(&env, compiler, &args, &["a.o"], "direct hit");
        } else {
            // The time of day is in the object: preprocessor mode, whose key has the
            // expanded text, serves it (a hit only within the same second).
            assert_eq!(outcome_of(&env, compiler, &args).0, "miss");
            assert_ne!(outcome_of(&env, compiler, &args).0, "direct hit");
        }
        // The first compile finds __TIMESTAMP__ and stores nothing in direct mode; from
        // then on preprocessor mode serves the source.
        let stamp = ["-c", "s.c", "-o", "s.o"];
        assert_eq!(outcome_of(&env, compiler, &stamp).0, "miss");
        cached_like_plain(&env, compiler, &stamp, &["s.o"], "hit");

        let other = Env::new().with_env("SOURCE_DATE_EPOCH", "1800000000");
        other.write("a.c", "const char *when = __DATE__ \" \" __TIME__;\n");
        age_all(&other.work);
        assert_eq!(outcome_of(&other, compiler, &args).0, "miss");
    }
}

/// kbuild's compiler probes (`$(CC) -Werror FLAG -c -x c /dev/null -o .tmp.o`), a hundred
/// per kernel build: `/dev/null` is an empty input, cached like any other.
#[test]
fn compiler_probes_of_dev_null_are_cached() {
    for (compiler, direct, hit) in modes() {
        let env = Env::new().with_env("CACHET_DIRECT_MODE", direct);
        let args = [
            "-Werror",
            "-fno-stack-protector",
            "-c",
            "-x",
            "c",
            "/dev/null",
            "-o",
            ".tmp_7.o",
        ];
        cached_like_plain(&env, compiler, &args, &[".tmp_7.o"], hit);
    }
}
