//! Direct mode for C: hits without the preprocessor, and every known trap turning a hit
//! into a miss (or a touch that changes nothing staying a hit).

mod common;

use std::path::Path;
use std::time::{Duration, SystemTime};

use common::*;

/// Makes every file in the work dir older than the timestamp resolution, as files are
/// that were not just edited.
fn age_all(dir: &Path) {
    let when = SystemTime::now() - Duration::from_secs(30);
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let path = entry.path();
        if path.is_dir() {
            age_all(&path);
        } else {
            std::fs::File::options()
                .write(true)
                .open(&path)
                .unwrap()
                .set_modified(when)
                .unwrap();
        }
    }
}

fn outcome(env: &Env, args: &[&str]) -> (&'static str, std::process::Output) {
    outcome_of(env, "gcc", args)
}

fn outcome_of(env: &Env, compiler: &str, args: &[&str]) -> (&'static str, std::process::Output) {
    let before = env.stats()["counters"].clone();
    let mut full = vec![compiler];
    full.extend(args);
    let out = env.ok(&full);
    let after = env.settle()["counters"].clone();
    let delta = |k: &str| after[k].as_u64().unwrap() - before[k].as_u64().unwrap();
    let kind = if delta("direct_hits") == 1 {
        "direct hit"
    } else if delta("cache_hits") == 1 {
        "hit"
    } else if delta("cache_misses") == 1 {
        "miss"
    } else {
        "other"
    };
    (kind, out)
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

#[test]
fn hits_need_no_preprocessor_and_a_touch_changes_nothing() {
    let env = Env::new();
    env.write("inc/x.h", "#define X 1\n");
    env.write("a.c", "#include \"x.h\"\nint a(void) { return X; }\n");
    age_all(&env.work);
    let args = ["-c", "a.c", "-Iinc", "-o", "a.o"];
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
    env.write("inc/x.h", "#define X 2\n");
    age_all(&env.work);
    assert_eq!(outcome(&env, &args).0, "miss");
    same_as_plain(&env, &["-c", "a.c", "-Iinc"], "a.o");
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

/// Each compiler in each mode: the compiler, `CACHET_DIRECT_MODE`, and what a second
/// identical compile is (a direct hit, or a preprocessor-mode hit).
fn modes() -> Vec<(&'static str, &'static str, &'static str)> {
    compilers()
        .into_iter()
        .flat_map(|c| [(c, "1", "direct hit"), (c, "0", "hit")])
        .collect()
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
    assert_eq!(second, hit, "{compiler}");
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
