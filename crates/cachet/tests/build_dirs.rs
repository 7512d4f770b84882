//! Any build directory: objects of one source in another output dir (a second `OUT` of a
//! hand-written Makefile), or the same command in another working directory (a second
//! Meson or CMake build dir), share one entry; the `.d` a hit writes names its own target,
//! wrapped as the compiler wraps it, byte for byte; paths with spaces, `$` and `#` round-trip.
//! Where an output records the working directory, the other directory misses, as it must.

mod common;

use std::path::Path;

use common::*;

/// Runs `compiler args` in `cwd` through cachet; says what it was by the counters.
fn outcome_in(env: &Env, cwd: &Path, compiler: &str, args: &[&str]) -> &'static str {
    let mut cmd = env.cachet();
    cmd.current_dir(cwd).arg(compiler).args(args);
    outcome_of_command(env, &mut cmd).0
}

/// The outputs `compiler args` writes in `cwd` without cachet (removed again).
fn plain_outputs(
    env: &Env,
    cwd: &Path,
    compiler: &str,
    args: &[&str],
    outputs: &[&str],
) -> Vec<Vec<u8>> {
    let out = env
        .command(compiler)
        .current_dir(cwd)
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{compiler} {args:?}: {}",
        stderr(&out)
    );
    outputs
        .iter()
        .map(|file| {
            let data = std::fs::read(cwd.join(file)).unwrap();
            std::fs::remove_file(cwd.join(file)).unwrap();
            data
        })
        .collect()
}

fn assert_same(cwd: &Path, outputs: &[&str], expected: &[Vec<u8>], what: &str) {
    for (file, expected) in outputs.iter().zip(expected) {
        let ours = std::fs::read(cwd.join(file)).unwrap();
        assert!(
            ours == *expected,
            "{what}: {file} differs from a plain compile:\n{}\n--- plain:\n{}",
            String::from_utf8_lossy(&ours),
            String::from_utf8_lossy(expected)
        );
    }
}

/// A hand-written Makefile's `-MMD -MP` compile into output dirs of many lengths (so the
/// `.d`'s first line wraps at different places), some with spaces, `$` and `#` in their
/// names, from headers with such names: one miss, then hits, each `.d` naming its own
/// object exactly as the compiler would.
#[test]
fn another_output_dir_hits_with_its_own_dependency_file() {
    let dirs = [
        "out",
        "o",
        "out2/with/a/rather/long/path/for/the/objects/of/this/build",
        "build dir/$x#y",
        "abcdefghijklmnopqrstuvwxyzabcdefghijklmnopq",
        "abcdefghijklmnopqrstuvwxyzabcdefghijklmnopqrstuv",
    ];
    for (compiler, direct, hit) in modes() {
        let env = Env::new().with_env("CACHET_DIRECT_MODE", direct);
        env.write("src/inc dir/a b.h", "#include \"d$x.h\"\n#define A 1\n");
        env.write("src/inc dir/d$x.h", "#include <stdio.h>\n#define D 2\n");
        env.write("src/h#q.h", "#define Q 3\n");
        env.write(
            "src/lapi.c",
            "#include \"a b.h\"\n#include \"h#q.h\"\nint f(void) { return A + D + Q; }\n",
        );
        for dir in dirs {
            std::fs::create_dir_all(env.work.join(dir)).unwrap();
        }
        age_all(&env.work);
        for (i, dir) in dirs.iter().enumerate() {
            let (object, depfile) = (format!("{dir}/lapi.o"), format!("{dir}/lapi.d"));
            let args = [
                "-O2",
                "-MMD",
                "-MP",
                "-Isrc/inc dir",
                "-c",
                "src/lapi.c",
                "-o",
                &object,
            ];
            let outputs = [object.as_str(), depfile.as_str()];
            let plain = plain_outputs(&env, &env.work, compiler, &args, &outputs);
            let expected = if i == 0 { "miss" } else { hit };
            let what = format!("{compiler} direct={direct} into {dir}");
            assert_eq!(
                outcome_in(&env, &env.work, compiler, &args),
                expected,
                "{what}"
            );
            assert_same(&env.work, &outputs, &plain, &what);
        }
        // -MT and -MQ name other targets; the entry is still the same one.
        let args = [
            "-O2",
            "-MMD",
            "-MP",
            "-Isrc/inc dir",
            "-c",
            "src/lapi.c",
            "-o",
            "o/lapi.o",
            "-MT",
            "x y",
            "-MQ",
            "$(OUT)/lapi.o",
            "-MF",
            "o/custom.d",
        ];
        let outputs = ["o/lapi.o", "o/custom.d"];
        let plain = plain_outputs(&env, &env.work, compiler, &args, &outputs);
        assert_eq!(
            outcome_in(&env, &env.work, compiler, &args),
            hit,
            "{compiler} -MT"
        );
        assert_same(&env.work, &outputs, &plain, &format!("{compiler} -MT"));
    }
}

/// Meson and CMake builds run each compile in the build dir, with paths relative to it: a
/// second build dir beside the first gets hits, the `.d` identical to a plain compile's.
/// With `-g` (no prefix map) the object records the build dir, and the second one misses.
#[test]
fn another_working_directory_hits_unless_the_object_records_it() {
    for (compiler, direct, hit) in modes() {
        let env = Env::new().with_env("CACHET_DIRECT_MODE", direct);
        env.write("src/config.h", "#define LEVEL 2\n");
        env.write(
            "src/a.c",
            "#include \"config.h\"\n#include \"gen.h\"\nint f(void) { return LEVEL + GEN; }\n",
        );
        for b in ["b1", "b2", "b3"] {
            // A header each build dir generates for itself, the same in b1 and b2.
            let value = if b == "b3" { 7 } else { 5 };
            env.write(&format!("{b}/gen.h"), &format!("#define GEN {value}\n"));
        }
        age_all(&env.work);
        let args = [
            "-Isrc",
            "-I.",
            "-I../src",
            "-O2",
            "-MD",
            "-MQ",
            "src/a.o",
            "-MF",
            "a.o.d",
            "-o",
            "a.o",
            "-c",
            "../src/a.c",
        ];
        let outputs = ["a.o", "a.o.d"];
        let what = |b: &str| format!("{compiler} direct={direct} in {b}");
        for (b, expected) in [("b1", "miss"), ("b2", hit), ("b3", "miss")] {
            let cwd = env.work.join(b);
            let plain = plain_outputs(&env, &cwd, compiler, &args, &outputs);
            assert_eq!(
                outcome_in(&env, &cwd, compiler, &args),
                expected,
                "{}",
                what(b)
            );
            assert_same(&cwd, &outputs, &plain, &what(b));
        }

        // Debug info records the build dir: each one misses once, then hits.
        let mut debug = args.to_vec();
        debug.push("-g");
        for (b, expected) in [("b1", "miss"), ("b2", "miss"), ("b2", hit)] {
            let cwd = env.work.join(b);
            let plain = plain_outputs(&env, &cwd, compiler, &debug, &outputs);
            assert_eq!(
                outcome_in(&env, &cwd, compiler, &debug),
                expected,
                "-g {}",
                what(b)
            );
            assert_same(&cwd, &outputs, &plain, &format!("-g {}", what(b)));
        }
    }
}

/// Paths with spaces, `$` and `#` everywhere (source, include dir, header, output dir, the
/// cwd itself) get direct hits, and make's escaping in the `.d` round-trips.
#[test]
fn paths_with_spaces_dollars_and_hashes_get_direct_hits() {
    for compiler in compilers() {
        let env = Env::new();
        let cwd = env.work.join("my build $dir #1");
        env.write(
            "my build $dir #1/src dir/a $b#c.c",
            "#include \"x #y$.h\"\nint f(void) { return X; }\n",
        );
        env.write("my build $dir #1/inc $d/x #y$.h", "#define X 1\n");
        std::fs::create_dir_all(cwd.join("out #dir $o")).unwrap();
        age_all(&env.work);
        let args = [
            "-Iinc $d",
            "-MMD",
            "-MP",
            "-c",
            "src dir/a $b#c.c",
            "-o",
            "out #dir $o/a $b#c.o",
        ];
        let outputs = ["out #dir $o/a $b#c.o", "out #dir $o/a $b#c.d"];
        let plain = plain_outputs(&env, &cwd, compiler, &args, &outputs);
        assert_eq!(
            outcome_in(&env, &cwd, compiler, &args),
            "miss",
            "{compiler}"
        );
        for file in outputs {
            std::fs::remove_file(cwd.join(file)).unwrap();
        }
        assert_eq!(
            outcome_in(&env, &cwd, compiler, &args),
            "direct hit",
            "{compiler}"
        );
        assert_same(&cwd, &outputs, &plain, compiler);
        let dep = String::from_utf8(plain[1].clone()).unwrap();
        assert!(
            dep.contains("\\ ") && dep.contains("$$") && dep.contains("\\#"),
            "{dep}"
        );
    }
}

/// Split DWARF: the object names its `.dwo` (after the `-o` path), so another output dir
/// misses, as it must, and the same one hits.
#[test]
fn split_dwarf_misses_in_another_output_dir() {
    for compiler in compilers() {
        let env = Env::new();
        env.write("a.c", "int f(int x) { return x + 1; }\n");
        for dir in ["o1", "o2"] {
            std::fs::create_dir_all(env.work.join(dir)).unwrap();
        }
        age_all(&env.work);
        let args = |dir: &'static str| {
            let object: &'static str = if dir == "o1" { "o1/a.o" } else { "o2/a.o" };
            ["-g", "-gsplit-dwarf", "-c", "a.c", "-o", object]
        };
        assert_eq!(
            outcome_in(&env, &env.work, compiler, &args("o1")),
            "miss",
            "{compiler}"
        );
        assert_eq!(
            outcome_in(&env, &env.work, compiler, &args("o1")),
            "direct hit",
            "{compiler}"
        );
        assert_eq!(
            outcome_in(&env, &env.work, compiler, &args("o2")),
            "miss",
            "{compiler}"
        );
    }
}

/// clang's `-ivfsoverlay FILE`: the overlay is read by the compile, so a changed overlay
/// (here one that maps the header dir elsewhere) is a miss with the right object.
#[test]
fn a_changed_vfs_overlay_misses() {
    if !have("clang") {
        return skip("clang is not installed");
    }
    let env = Env::new();
    env.write("real1/v.h", "#define V 1\n");
    env.write("real2/v.h", "#define V 2\n");
    env.write("a.c", "#include \"v.h\"\nint f(void) { return V; }\n");
    let overlay = |real: &str| {
        format!(
            "{{ 'version': 0, 'roots': [ {{ 'name': '{}/virtual', 'type': 'directory', \
             'contents': [ {{ 'name': 'v.h', 'type': 'file', 'external-contents': '{}/{real}/v.h' }} ] }} ] }}\n",
            env.work.display(),
            env.work.display()
        )
    };
    env.write("overlay.yaml", &overlay("real1"));
    age_all(&env.work);
    let virtual_dir = format!("-I{}/virtual", env.work.display());
    let args = [
        "-ivfsoverlay",
        "overlay.yaml",
        &virtual_dir,
        "-c",
        "a.c",
        "-o",
        "a.o",
    ];
    assert_eq!(outcome_in(&env, &env.work, "clang", &args), "miss");
    assert_eq!(outcome_in(&env, &env.work, "clang", &args), "direct hit");
    env.write("overlay.yaml", &overlay("real2"));
    age_all(&env.work);
    let plain = plain_outputs(&env, &env.work, "clang", &args, &["a.o"]);
    assert_eq!(outcome_in(&env, &env.work, "clang", &args), "miss");
    assert_same(&env.work, &["a.o"], &plain, "overlay to real2");
}
