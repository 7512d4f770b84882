//! Key and plan details for gcc and clang.

use std::path::Path;

use super::args::Family;
use super::key::recorded_cwds;
use super::*;
use crate::cache::CacheKey;
use crate::compiler::manifest;
use crate::protocol::{CompileRequest, to_bytes};
use crate::server::compile::invocation;

fn identity(family: Family) -> Identity {
    Identity {
        family,
        version: "12".into(),
        digest: [7; 32],
    }
}

fn request(cwd: &Path, args: &[&str]) -> CompileRequest {
    crate::compiler::tests::support::request(Path::new("/usr/bin/gcc"), cwd, args, &[])
}

fn key_in(cwd: &Path, args: &[&str]) -> CacheKey {
    let id = identity(Family::Gcc);
    let req = request(cwd, args);
    let plan = plan(&id, &invocation(req.clone())).unwrap();
    key(&id, &plan, &invocation(req), b"source")
}

#[test]
fn the_cwd_matters_only_with_debug_info_and_as_remapped() {
    let dir = tempfile::tempdir().unwrap();
    let (one, two) = (dir.path().join("one"), dir.path().join("two"));
    for d in [&one, &two] {
        std::fs::create_dir(d).unwrap();
        std::fs::write(d.join("a.c"), "int x;").unwrap();
    }
    assert_eq!(key_in(&one, &["-c", "a.c"]), key_in(&two, &["-c", "a.c"]));
    assert_ne!(
        key_in(&one, &["-c", "a.c", "-g"]),
        key_in(&two, &["-c", "a.c", "-g"])
    );
    let root = format!("-fdebug-prefix-map={}=/src", dir.path().display());
    // A map of the common parent still leaves /src/one and /src/two apart.
    assert_ne!(
        key_in(&one, &["-c", "a.c", "-g", &root]),
        key_in(&two, &["-c", "a.c", "-g", &root])
    );

    assert_eq!(
        recorded_cwds(b"/tmp/p1/x", &[]),
        vec![b"/tmp/p1/x".to_vec()]
    );
    let maps = vec![
        ("/tmp".to_owned(), "/R".to_owned()),
        ("/tmp/p1".to_owned(), "/S".to_owned()),
    ];
    assert_eq!(
        recorded_cwds(b"/tmp/p1/x", &maps),
        vec![b"/R/p1/x".to_vec(), b"/S/x".to_vec()]
    );
    assert_eq!(recorded_cwds(b"/srv", &maps), vec![b"/srv".to_vec()]);
}

#[test]
fn the_driver_name_is_part_of_the_key() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("a.c"), "int x;").unwrap();
    let id = identity(Family::Clang);
    let mut req = request(dir.path(), &["-c", "a.c"]);
    let p = plan(&id, &invocation(req.clone())).unwrap();
    let as_c = key(&id, &p, &invocation(req.clone()), b"source");
    req.compiler = b"/usr/bin/clang++".to_vec();
    assert_ne!(as_c, key(&id, &p, &invocation(req.clone()), b"source"));
}

/// Where the outputs go, the dependency file's targets included, is not keyed: a hit
/// writes its own targets into the stored `.d` (outputs.rs).
#[test]
fn the_dependency_target_is_not_part_of_the_key() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("a.c"), "int x;").unwrap();
    let cwd = dir.path();
    let base = key_in(cwd, &["-c", "a.c", "-o", "x.o", "-MD"]);
    for other in [
        &["-c", "a.c", "-o", "y.o", "-MD"][..],
        &["-c", "a.c", "-o", "x.o", "-MD", "-MT", "t"],
        &["-c", "a.c", "-o", "x.o", "-MD", "-MQ", "q", "-MF", "z.d"],
    ] {
        assert_eq!(base, key_in(cwd, other), "{other:?}");
    }
    // What the file lists does change it.
    assert_ne!(base, key_in(cwd, &["-c", "a.c", "-o", "x.o", "-MMD"]));
    assert_ne!(base, key_in(cwd, &["-c", "a.c", "-o", "x.o", "-MD", "-MP"]));
    assert_ne!(base, key_in(cwd, &["-c", "a.c", "-o", "x.o"]));
}

#[test]
fn plans_absolute_outputs() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("src")).unwrap();
    std::fs::write(dir.path().join("src/a.c"), "int x;").unwrap();
    let req = request(dir.path(), &["-c", "src/a.c", "-o", "obj/a.o", "-MMD"]);
    let p = plan(&identity(Family::Clang), &invocation(req.clone())).unwrap();
    assert_eq!(p.object, dir.path().join("obj/a.o"));
    assert_eq!(p.depfile, Some(dir.path().join("obj/a.d")));
    // Colour is left to the terminal: the compile runs coloured, the client (no
    // terminal) gets it without.
    assert_eq!(p.compile_args[0], "-fcolor-diagnostics");
    assert!(p.strip_colour);
}

/// Two checkouts of one project, `<tmp>/one/proj` and `<tmp>/two/proj`, each with its
/// parent as base dir.
struct Checkouts {
    _dir: tempfile::TempDir,
    dirs: [std::path::PathBuf; 2],
}

fn checkouts() -> Checkouts {
    let dir = tempfile::tempdir().unwrap();
    let dirs = ["one", "two"].map(|n| dir.path().join(n).join("proj"));
    for d in &dirs {
        std::fs::create_dir_all(d.join("src")).unwrap();
        std::fs::write(d.join("src/a.c"), "int x;").unwrap();
    }
    Checkouts { _dir: dir, dirs }
}

/// A request from `cwd` with its parent as base dir; `{}` in an argument is the cwd.
fn based_request(cwd: &Path, args: &[&str]) -> CompileRequest {
    let args: Vec<String> = args
        .iter()
        .map(|a| a.replace("{}", &cwd.display().to_string()))
        .collect();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let mut req = request(cwd, &args);
    req.base_dirs = vec![to_bytes(cwd.parent().unwrap().as_os_str())];
    req
}

/// The preprocessor-mode key, with text as gcc -E writes it (a cwd marker with -g).
fn based_key(cwd: &Path, args: &[&str]) -> CacheKey {
    let id = identity(Family::Gcc);
    let req = based_request(cwd, args);
    let p = plan(&id, &invocation(req.clone())).unwrap();
    let marker = if p.args.debug_info {
        format!("# 1 \"{}//\"\n", cwd.display())
    } else {
        String::new()
    };
    let text = format!("# 0 \"src/a.c\"\n{marker}# 1 \"src/a.c\"\nint x;\n");
    key(&id, &p, &invocation(req), text.as_bytes())
}

fn based_direct_key(cwd: &Path, args: &[&str]) -> CacheKey {
    let id = identity(Family::Gcc);
    let req = based_request(cwd, args);
    let p = plan(&id, &invocation(req.clone())).unwrap();
    direct::base_key(&id, &p, &invocation(req), &[1; 32]).0
}

#[test]
fn base_dirs_share_keys_between_checkouts_when_nothing_records_the_path() {
    let c = checkouts();
    let [one, two] = &c.dirs;
    for key_of in [based_key, based_direct_key] {
        // No debug info: the cwd is not in the object.
        let plain = ["-c", "src/a.c", "-O2", "-Iinclude"];
        assert_eq!(key_of(one, &plain), key_of(two, &plain));
        // Debug info with the checkout mapped away: the object records ".".
        for map in ["-fdebug-prefix-map={}=.", "-ffile-prefix-map={}=."] {
            let mapped = ["-c", "src/a.c", "-g", map];
            assert_eq!(key_of(one, &mapped), key_of(two, &mapped), "{map}");
        }
        // Debug info and no map: DW_AT_comp_dir is the absolute cwd.
        let debug = ["-c", "src/a.c", "-g"];
        assert_ne!(key_of(one, &debug), key_of(two, &debug));
        // A map that leaves the checkouts apart (their common parent's parent).
        let parent = format!(
            "-fdebug-prefix-map={}=/src",
            one.parent().unwrap().parent().unwrap().display()
        );
        let apart = ["-c", "src/a.c", "-g", &parent];
        assert_ne!(key_of(one, &apart), key_of(two, &apart));
        // A different map target is a different object.
        assert_ne!(
            key_of(one, &["-c", "src/a.c", "-g", "-fdebug-prefix-map={}=."]),
            key_of(two, &["-c", "src/a.c", "-g", "-fdebug-prefix-map={}=/x"])
        );
    }
}

/// Absolute paths under base dirs enter the direct key relative to the cwd (as CMake
/// builds in two checkouts need); an object that records them is told apart by its
/// manifest variant (`recorded_cwd`, tests/base_dirs.rs), not by the key.
#[test]
fn absolute_paths_under_base_dirs_are_keyed_relative_to_the_cwd() {
    let c = checkouts();
    let [one, two] = &c.dirs;
    let abs = ["-c", "{}/src/a.c", "-ffile-prefix-map={}=."];
    assert_eq!(based_direct_key(one, &abs), based_direct_key(two, &abs));
    let inc = ["-c", "src/a.c", "-I{}/include"];
    assert_eq!(based_direct_key(one, &inc), based_direct_key(two, &inc));
    // Another relative form is another key.
    let other = ["-c", "src/a.c", "-I{}/src"];
    assert_ne!(based_direct_key(one, &inc), based_direct_key(one, &other));
    // A map whose OLD lies outside every base dir stays literal.
    let out = ["-c", "src/a.c", "-g", "-fdebug-prefix-map=/usr/src=/s"];
    assert_ne!(based_key(one, &out), based_key(two, &out));
}

#[test]
fn literal_paths_are_keyed_as_a_relativized_map_rewrites_them() {
    // A header path of checkout one, read from checkout two: one's map rewrites it, two's
    // does not, so the objects differ though everything else is equal.
    let c = checkouts();
    let [one, two] = &c.dirs;
    let id = identity(Family::Gcc);
    let args = ["-c", "src/a.c", "-g", "-fdebug-prefix-map={}=."];
    let text = format!(
        "# 1 \"src/a.c\"\n# 1 \"{}/include/x.h\" 1\nint x;\n",
        one.display()
    );
    let keys: Vec<CacheKey> = [one, two]
        .iter()
        .map(|cwd| {
            let req = based_request(cwd, &args);
            let p = plan(&id, &invocation(req.clone())).unwrap();
            key(&id, &p, &invocation(req), text.as_bytes())
        })
        .collect();
    assert_ne!(keys[0], keys[1]);

    let header = format!("{}/include/x.h", one.display()).into_bytes();
    let variant = manifest::Variant {
        files: vec![(header, [3; 32])],
        ..Default::default()
    };
    let entry_keys: Vec<CacheKey> = [one, two]
        .iter()
        .map(|cwd| {
            let req = based_request(cwd, &args);
            let p = plan(&id, &invocation(req.clone())).unwrap();
            let (base, maps) = direct::base_key(&id, &p, &invocation(req), &[1; 32]);
            manifest::entry_key(&base, &variant, &maps)
        })
        .collect();
    assert_ne!(entry_keys[0], entry_keys[1]);
}

mod properties {
    //! What must hold for every command line, not only the ones written down.
    use proptest::prelude::*;

    use super::*;

    /// Flags whose order changes what gcc does: include directories are searched in
    /// order, a later `-D`/`-U` of one macro wins, a later `-f`/`-fno-` of one option wins.
    /// The flag says whether the pair acts through the preprocessor (then preprocessor
    /// mode's key holds its effect, the preprocessed text, rather than the flags).
    fn ordered_pair() -> impl Strategy<Value = (String, String, bool)> {
        prop_oneof![
            ("[a-z]{1,8}", "[a-z]{1,8}")
                .prop_filter("two directories", |(a, b)| a != b)
                .prop_map(|(a, b)| (format!("-I{a}"), format!("-I{b}"), true)),
            ("[A-Z]{1,8}", "[0-9]{1,3}").prop_map(|(m, v)| (
                format!("-D{m}={v}"),
                format!("-U{m}"),
                true
            )),
            ("[A-Z]{1,8}", "[0-9]{1,3}", "[0-9]{1,3}")
                .prop_filter("two values", |(_, a, b)| a != b)
                .prop_map(|(m, a, b)| (format!("-D{m}={a}"), format!("-D{m}={b}"), true)),
            prop::sample::select(vec![
                "strict-aliasing",
                "common",
                "pic",
                "wrapv",
                "exceptions"
            ])
            .prop_map(|f| (format!("-f{f}"), format!("-fno-{f}"), false)),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        /// Swapping two order-sensitive flags changes direct mode's key, and preprocessor
        /// mode's where the flags act after preprocessing, wherever they sit among others.
        #[test]
        fn reordering_order_sensitive_flags_changes_the_key(
            (first, second, preprocessed) in ordered_pair(),
            before in prop::collection::vec(prop::sample::select(vec!["-O2", "-g", "-Wall", "-std=c11"]), 0..3),
        ) {
            let dir = tempfile::tempdir().unwrap();
            std::fs::write(dir.path().join("a.c"), "int a;\n").unwrap();
            let cwd = dir.path();
            let args = |a: &str, b: &str| {
                let mut v: Vec<&str> = before.clone();
                v.extend([a, b, "-c", "a.c", "-o", "a.o"]);
                v.into_iter().map(str::to_owned).collect::<Vec<String>>()
            };
            let (one, two) = (args(&first, &second), args(&second, &first));
            fn refs(v: &[String]) -> Vec<&str> {
                v.iter().map(String::as_str).collect()
            }
            if !preprocessed {
                prop_assert_ne!(key_in(cwd, &refs(&one)), key_in(cwd, &refs(&two)));
            }
            let id = identity(Family::Gcc);
            let direct = |v: &[String]| {
                let req = request(cwd, &refs(v));
                let p = plan(&id, &invocation(req.clone())).unwrap();
                direct::base_key(&id, &p, &invocation(req), &[1; 32]).0
            };
            prop_assert_ne!(direct(&one), direct(&two));
            // The same command line is the same key.
            prop_assert_eq!(key_in(cwd, &refs(&one)), key_in(cwd, &refs(&one)));
        }

        /// Any words written as a response file (each byte escaped as libiberty reads
        /// it) come back as the same words.
        #[test]
        fn response_files_round_trip(words in prop::collection::vec(
            prop::collection::vec(1u8..=255, 1..12), 0..8)
        ) {
            let mut text = Vec::new();
            for word in &words {
                for &b in word {
                    text.extend_from_slice(&[b'\\', b]);
                }
                text.push(b' ');
            }
            prop_assert_eq!(args::split_response_file(&text), words);
        }

        /// A command line parses the same however often it is parsed: no state leaks
        /// between parses, and planning never panics on it.
        #[test]
        fn parsing_any_command_line_is_stable(
            words in prop::collection::vec("-?[-a-zA-Z0-9=_./,@]{0,12}", 0..10)
        ) {
            let args: Vec<std::ffi::OsString> = words.iter().map(Into::into).collect();
            let input = args::ParseInput { args: &args, cwd: Path::new("/src"), family: Family::Gcc };
            prop_assert_eq!(args::parse(&input), args::parse(&input));
        }
    }
}
