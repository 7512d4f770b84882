use super::*;
use std::sync::atomic::{AtomicUsize, Ordering};

/// A scratch directory removed on drop.
struct TmpDir(PathBuf);

impl TmpDir {
    fn new() -> Self {
        static COUNTER: AtomicUsize = AtomicUsize::new(0);
        let dir = std::env::temp_dir().join(format!(
            "cachet-gccargs-{}-{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        TmpDir(dir)
    }

    fn write(&self, rel: &str, contents: &str) {
        let path = self.0.join(rel);
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(path, contents).unwrap();
    }
}

impl Drop for TmpDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

/// A directory holding the inputs most tests use.
fn fixture() -> TmpDir {
    let dir = TmpDir::new();
    for f in [
        "src/a.c", "a.c", "b.c", "x.cpp", "y.s", "z.S", "w.sx", "o.m", "o.mm", "h.h", "x.hpp",
        "p.i", "p.ii", "p.mi", "p.mii", "f.f90", "noext", "k.cu",
    ] {
        dir.write(f, "");
    }
    dir
}

fn os(args: &[&str]) -> Vec<OsString> {
    args.iter().map(OsString::from).collect()
}

fn run_os(dir: &TmpDir, family: Family, args: &[OsString]) -> Parsed {
    parse(&ParseInput {
        args,
        cwd: &dir.0,
        family,
    })
}

fn run(dir: &TmpDir, family: Family, args: &[&str]) -> Parsed {
    run_os(dir, family, &os(args))
}

fn ok_with(dir: &TmpDir, family: Family, args: &[&str]) -> CompileArgs {
    match run(dir, family, args) {
        Parsed::Cacheable(c) => *c,
        Parsed::NotCacheable(r) => panic!("{args:?} not cacheable: {r}"),
    }
}

/// A `-MQ` (or default) target.
fn quoted(text: &str) -> Target {
    Target {
        text: text.into(),
        quoted: true,
    }
}

/// A `-MT` target.
fn plain(text: &str) -> Target {
    Target {
        text: text.into(),
        quoted: false,
    }
}

fn ok(dir: &TmpDir, args: &[&str]) -> CompileArgs {
    ok_with(dir, Family::Gcc, args)
}

fn reason_with(dir: &TmpDir, family: Family, args: &[&str]) -> String {
    match run(dir, family, args) {
        Parsed::Cacheable(c) => panic!("{args:?} unexpectedly cacheable: {c:?}"),
        Parsed::NotCacheable(r) => r.to_string(),
    }
}

fn reason(dir: &TmpDir, args: &[&str]) -> String {
    reason_with(dir, Family::Gcc, args)
}

#[test]
fn typical_command() {
    let dir = fixture();
    let c = ok(
        &dir,
        &[
            "-DNDEBUG",
            "-I",
            "include",
            "-isystem",
            "/opt/inc",
            "-O2",
            "-g",
            "-Wall",
            "-std=c11",
            "-fPIC",
            "-MD",
            "-MT",
            "obj/a.o",
            "-MF",
            "obj/a.o.d",
            "-o",
            "obj/a.o",
            "-c",
            "src/a.c",
        ],
    );
    assert_eq!(
        c.preprocess_args,
        os(&[
            "-E", "-DNDEBUG", "-I", "include", "-isystem", "/opt/inc", "-O2", "-g", "-Wall",
            "-std=c11", "-fPIC", "src/a.c",
        ])
    );
    assert_eq!(
        c.hashed_args,
        os(&["-O2", "-g", "-Wall", "-std=c11", "-fPIC", "-MD", "-c",])
    );
    assert_eq!(c.input, PathBuf::from("src/a.c"));
    assert_eq!(c.language, Language::C);
    assert_eq!(c.output, PathBuf::from("obj/a.o"));
    assert_eq!(
        c.depfile,
        Some(DepFile {
            path: "obj/a.o.d".into(),
            targets: vec![plain("obj/a.o")],
            phony: false,
        })
    );
    assert!(c.debug_info);
    assert!(!c.preprocessed_input);
    assert_eq!(c.color, None);
    assert!(c.prefix_maps.is_empty());
    assert_eq!(c.expanded.len(), 19);
}

#[test]
fn hashed_args_drop_all_preprocessor_only_flags() {
    let dir = fixture();
    let c = ok(
        &dir,
        &[
            "-c",
            "-DA",
            "-D",
            "B=1",
            "-UC",
            "-U",
            "D",
            "-Iinc",
            "-I",
            "inc2",
            "-include",
            "cfg.h",
            "-imacros",
            "m.h",
            "-isystem",
            "s",
            "-isystems2",
            "-iquote",
            "q",
            "-idirafter",
            "d",
            "-iprefix",
            "p/",
            "-iwithprefix",
            "w",
            "-iwithprefixbefore",
            "wb",
            "-isysroot",
            "/sr",
            "--sysroot=/sr2",
            "--sysroot",
            "/sr3",
            "-imultilib",
            "ml",
            "a.c",
            "-O1",
        ],
    );
    assert_eq!(c.hashed_args, os(&["-c", "-O1"]));
    let mut expected = vec![OsString::from("-E")];
    expected.extend(c.expanded.iter().filter(|a| *a != "-c").cloned());
    assert_eq!(c.preprocess_args, expected);
}

#[test]
fn dependency_flags_are_kept_out_of_preprocessing() {
    let dir = fixture();
    let c = ok(
        &dir,
        &[
            "-c",
            "a.c",
            "-MMD",
            "-MP",
            "-MF",
            "deps/a.d",
            "-MT",
            "t1",
            "-MQ",
            "$t2",
            "-MTt3",
            "-MQt4",
            "-MFdeps/b.d",
        ],
    );
    assert_eq!(c.preprocess_args, os(&["-E", "a.c"]));
    assert_eq!(c.hashed_args, os(&["-c", "-MMD", "-MP"]));
    // Targets are not keyed in direct mode either: a hit writes its own.
    assert_eq!(c.direct_args, os(&["-c", "a.c", "-MMD", "-MP"]));
    // The last -MF wins.
    assert_eq!(
        c.depfile,
        Some(DepFile {
            path: "deps/b.d".into(),
            targets: vec![plain("t1"), quoted("$t2"), plain("t3"), quoted("t4")],
            phony: true,
        })
    );
}

#[test]
fn default_output_and_depfile() {
    let dir = fixture();
    let c = ok(&dir, &["-c", "src/a.c", "-MD"]);
    assert_eq!(c.output, PathBuf::from("a.o"));
    let dep = c.depfile.unwrap();
    assert_eq!(dep.path, PathBuf::from("a.d"));
    assert_eq!(dep.targets, vec![quoted("a.o")]);
    // -S still names the rule after the object the input would make.
    let c = ok(&dir, &["-S", "src/a.c", "-MD"]);
    assert_eq!(c.depfile.unwrap().targets, vec![quoted("a.o")]);

    let c = ok(&dir, &["-c", "src/a.c", "-o", "obj/a.o", "-MMD"]);
    assert_eq!(c.output, PathBuf::from("obj/a.o"));
    let dep = c.depfile.unwrap();
    assert_eq!(dep.path, PathBuf::from("obj/a.d"));
    assert_eq!(dep.targets, vec![quoted("obj/a.o")]);
    assert!(!dep.phony);

    let c = ok(&dir, &["-c", "src/a.c", "-o", "obj/a", "-MD"]);
    assert_eq!(c.depfile.unwrap().path, PathBuf::from("obj/a.d"));

    let c = ok(&dir, &["-c", "src/a.c", "-MD", "-MF", "x.d"]);
    assert_eq!(c.depfile.unwrap().path, PathBuf::from("x.d"));

    // -MF without -MD/-MMD does not produce a depfile.
    let c = ok(&dir, &["-c", "src/a.c", "-MF", "x.d"]);
    assert_eq!(c.depfile, None);

    // Only the last extension is replaced, like gcc.
    let c = ok(&dir, &["-c", "-x", "c", "noext"]);
    assert_eq!(c.output, PathBuf::from("noext.o"));
}

/// kbuild's forms: `-Wp,-MD,FILE` names the dependency file the preprocessor writes (kept
/// out of the `-E` run), and `-Wp,-D…`/`-Wp,-U…` are macros like `-D`/`-U`.
#[test]
fn preprocessor_options_for_dependencies_and_macros() {
    let dir = fixture();
    let c = ok(
        &dir,
        &[
            "-c",
            "src/a.c",
            "-o",
            "obj/a.o",
            "-Wp,-MMD,obj/.a.o.d",
            "-Wp,-DX=1,-UY",
        ],
    );
    let dep = c.depfile.unwrap();
    assert_eq!(dep.path, PathBuf::from("obj/.a.o.d"));
    // cpp names the rule after the input, not the -o path (gcc only).
    assert_eq!(dep.targets, vec![quoted("a.o")]);
    assert!(!dep.phony);
    assert!(!c.preprocess_args.iter().any(|a| a == "-Wp,-MMD,obj/.a.o.d"));
    // Keyed without the file's name, in both modes.
    assert!(c.hashed_args.iter().any(|a| a == "-Wp,-MMD"));
    assert!(c.direct_args.iter().any(|a| a == "-Wp,-MMD"));
    assert!(!c.direct_args.iter().any(|a| a == "-Wp,-MMD,obj/.a.o.d"));
    let clang = ok_with(
        &dir,
        Family::Clang,
        &["-c", "src/a.c", "-o", "obj/a.o", "-Wp,-MD,x.d"],
    );
    assert_eq!(clang.depfile.unwrap().targets, vec![quoted("obj/a.o")]);
    assert!(c.preprocess_args.iter().any(|a| a == "-Wp,-DX=1,-UY"));
    assert!(!c.hashed_args.iter().any(|a| a == "-Wp,-DX=1,-UY"));
    // Plain assembler runs no preprocessor: no dependency file.
    let c = ok(&dir, &["-c", "y.s", "-Wp,-MD,y.d"]);
    assert_eq!(c.depfile, None);
}

/// clang's `--`: every later argument is an input; gcc has no `--`.
#[test]
fn clang_ends_options_at_a_double_dash() {
    let dir = fixture();
    let c = ok_with(&dir, Family::Clang, &["-c", "-o", "b.o", "--", "a.c"]);
    assert_eq!(c.input, PathBuf::from("a.c"));
    assert_eq!(c.output, PathBuf::from("b.o"));
    assert!(c.preprocess_args.ends_with(&["--".into(), "a.c".into()]));
    dir.write("-odd.c", "");
    let c = ok_with(&dir, Family::Clang, &["-c", "--", "-odd.c"]);
    assert_eq!(c.input, PathBuf::from("-odd.c"));
    assert_eq!(
        reason_with(&dir, Family::Clang, &["-c", "--", "a.c", "b.c"]),
        "multiple inputs"
    );
    assert_eq!(
        reason_with(&dir, Family::Clang, &["-c", "--", "-"]),
        "input from stdin (-)"
    );
    assert_eq!(reason(&dir, &["-c", "--", "a.c"]), "unknown flag --");
}

/// `-S` compiles to assembler text: the `.s` is the output, named as gcc names it.
#[test]
fn assembler_text_output() {
    let dir = fixture();
    let c = ok(&dir, &["-S", "src/a.c", "-O2"]);
    assert_eq!(c.output, PathBuf::from("a.s"));
    assert!(!c.preprocess_args.iter().any(|a| a == "-S"));
    assert!(c.hashed_args.iter().any(|a| a == "-S"));
    let c = ok(&dir, &["-S", "src/a.c", "-o", "out/a.asm", "-MMD"]);
    assert_eq!(c.output, PathBuf::from("out/a.asm"));
    assert_eq!(c.depfile.unwrap().path, PathBuf::from("out/a.d"));
}

#[test]
fn joined_and_separate_forms() {
    let dir = fixture();
    let c = ok(&dir, &["-c", "a.c", "-oout.o"]);
    assert_eq!(c.output, PathBuf::from("out.o"));
    assert_eq!(c.preprocess_args, os(&["-E", "a.c"]));
    let c = ok(&dir, &["-c", "a.c", "-o", "out.o"]);
    assert_eq!(c.output, PathBuf::from("out.o"));
    // The last -o wins.
    let c = ok(&dir, &["-c", "a.c", "-o", "x.o", "-oy.o"]);
    assert_eq!(c.output, PathBuf::from("y.o"));

    let c = ok(&dir, &["-c", "-xc++", "a.c"]);
    assert_eq!(c.language, Language::Cxx);
    assert_eq!(c.hashed_args, os(&["-c", "-xc++"]));
    let c = ok(&dir, &["-c", "-x", "c++", "a.c"]);
    assert_eq!(c.language, Language::Cxx);
    assert_eq!(c.hashed_args, os(&["-c", "-x", "c++"]));

    let c = ok(
        &dir,
        &["-c", "a.c", "-DX", "-D", "Y", "-Iinc", "-I", "inc2"],
    );
    assert_eq!(c.hashed_args, os(&["-c"]));
    assert_eq!(
        c.preprocess_args,
        os(&["-E", "a.c", "-DX", "-D", "Y", "-Iinc", "-I", "inc2"])
    );

    let c = ok(
        &dir,
        &[
            "-c",
            "a.c",
            "--param",
            "max-inline-insns=5",
            "--param=l1-cache-size=8",
        ],
    );
    assert_eq!(
        c.hashed_args,
        os(&[
            "-c",
            "--param",
            "max-inline-insns=5",
            "--param=l1-cache-size=8"
        ])
    );

    // Linker flags are harmless with -c and are kept.
    let c = ok(
        &dir,
        &[
            "-c",
            "a.c",
            "-Xlinker",
            "--as-needed",
            "-L",
            "lib",
            "-lm",
            "-Wl,-z,now",
        ],
    );
    assert_eq!(
        c.hashed_args,
        os(&[
            "-c",
            "-Xlinker",
            "--as-needed",
            "-L",
            "lib",
            "-lm",
            "-Wl,-z,now"
        ])
    );

    // A separate value may itself start with '-'.
    let c = ok(&dir, &["-c", "a.c", "-D", "-weird"]);
    assert_eq!(c.hashed_args, os(&["-c"]));
}

#[test]
fn language_selection() {
    let dir = fixture();
    let cases: &[(&[&str], Language)] = &[
        (&["-c", "a.c"], Language::C),
        (&["-c", "x.cpp"], Language::Cxx),
        (&["-c", "o.m"], Language::ObjC),
        (&["-c", "o.mm"], Language::ObjCxx),
        (&["-c", "y.s"], Language::Asm),
        (&["-c", "z.S"], Language::AsmCpp),
        (&["-c", "w.sx"], Language::AsmCpp),
        (&["-c", "p.i"], Language::CPreprocessed),
        (&["-c", "p.ii"], Language::CxxPreprocessed),
        (&["-c", "p.mi"], Language::ObjCPreprocessed),
        (&["-c", "p.mii"], Language::ObjCxxPreprocessed),
        (&["-c", "-x", "c++", "a.c"], Language::Cxx),
        (&["-c", "-x", "c++", "-x", "none", "a.c"], Language::C),
        (&["-c", "-xnone", "x.cpp"], Language::Cxx),
        // -x only applies to inputs after it.
        (&["-c", "a.c", "-x", "c++"], Language::C),
        (&["-c", "-x", "c", "noext"], Language::C),
        (&["-c", "-x", "assembler-with-cpp", "y.s"], Language::AsmCpp),
        (&["-c", "-x", "cpp-output", "a.c"], Language::CPreprocessed),
    ];
    for (args, lang) in cases {
        assert_eq!(ok(&dir, args).language, *lang, "{args:?}");
    }
}

#[test]
fn preprocessed_inputs_need_no_cpp_run() {
    let dir = fixture();
    for input in ["p.i", "p.ii", "p.mi", "p.mii", "y.s"] {
        let c = ok(&dir, &["-c", input, "-Iinc", "-O2"]);
        assert!(c.preprocessed_input, "{input}");
        assert!(c.preprocess_args.is_empty(), "{input}");
        assert_eq!(c.hashed_args, os(&["-c", "-O2"]));
    }
    assert!(!ok(&dir, &["-c", "z.S"]).preprocessed_input);
}

#[test]
fn language_names() {
    let all = [
        Language::C,
        Language::Cxx,
        Language::ObjC,
        Language::ObjCxx,
        Language::Asm,
        Language::AsmCpp,
        Language::CPreprocessed,
        Language::CxxPreprocessed,
        Language::ObjCPreprocessed,
        Language::ObjCxxPreprocessed,
    ];
    for lang in all {
        assert_eq!(Language::from_x_arg(lang.as_x_arg()), Some(lang));
        assert!(lang.preprocessed().is_preprocessed());
    }
    assert_eq!(Language::C.as_x_arg(), "c");
    assert_eq!(Language::AsmCpp.as_x_arg(), "assembler-with-cpp");
    assert_eq!(Language::CxxPreprocessed.as_x_arg(), "c++-cpp-output");
    assert_eq!(Language::Cxx.preprocessed(), Language::CxxPreprocessed);
    assert_eq!(Language::AsmCpp.preprocessed(), Language::Asm);
}

#[test]
fn not_cacheable_reasons() {
    let dir = fixture();
    let cases: &[(&[&str], &str)] = &[
        (&["a.c"], "linking (no -c)"),
        (&["a.c", "-o", "a"], "linking (no -c)"),
        (&["-c", "-E", "a.c"], "-E"),
        (&["-c", "-M", "a.c"], "-M/-MM (dependencies only)"),
        (&["-c", "-MM", "a.c"], "-M/-MM (dependencies only)"),
        (&["-c", "-MD", "-MG", "a.c"], "-MG"),
        (&["-S", "-c", "a.c"], "both -c and -S"),
        (&["-S", "y.s"], "-S of assembler input"),
        (&["-c", "-save-temps", "a.c"], "-save-temps"),
        (&["-c", "-save-temps=obj", "a.c"], "-save-temps"),
        (&["-c", "-fsyntax-only", "a.c"], "-fsyntax-only (no object)"),
        (&["-c"], "no input file"),
        (&["-c", "a.c", "b.c"], "multiple inputs"),
        (&["-c", "-"], "input from stdin (-)"),
        (&["-c", "missing.c"], "input file missing.c missing"),
        (
            &["-c", "-x", "c", "/dev/zero"],
            "input /dev/zero is not a regular file",
        ),
        (&["-c", "-x", "c", "src"], "input src is not a regular file"),
        (&["-c", "f.f90"], "unknown language for f.f90"),
        (&["-c", "k.cu"], "unknown language for k.cu"),
        (&["-c", "noext"], "unknown language for noext"),
        (&["-c", "-x", "go", "a.c"], "unknown language go"),
        (&["-S", "a.c", "-gsplit-dwarf"], "-gsplit-dwarf with -S"),
        (
            &["-c", "a.c", "-o", "a.su", "-fstack-usage"],
            "a side output at the object's path",
        ),
        (&["-c", "a.c", "-fdump-tree-all"], "dump files"),
        (&["-c", "a.c", "-specs=x.specs"], "-specs"),
        (&["-c", "a.c", "-B/opt/bin"], "-B"),
        (&["-c", "a.c", "-B", "/opt/bin"], "-B"),
        (&["-c", "a.c", "-fplugin=foo.so"], "compiler plugin"),
        (&["-c", "a.c", "-Xclang", "-foo"], "-Xclang"),
        (&["-c", "a.c", "-Xpreprocessor", "-foo"], "-Xpreprocessor"),
        (&["-c", "a.c", "-Wp,-C"], "-Wp, (preprocessor options)"),
        (&["-c", "a.c", "-Wp,-MD"], "missing argument to -Wp,-MD"),
        (
            &["-c", "a.c", "-Wp,-MD,x.d,-DA"],
            "-Wp, (preprocessor options)",
        ),
        (
            &["-c", "a.c", "-Wp,-MD,x.d", "-Wp,-MMD,y.d"],
            "-Wp,-MD given twice",
        ),
        (
            &["-c", "a.c", "-Wp,-MD,x.d", "-MD"],
            "-Wp,-MD with the driver's dependency flags",
        ),
        (
            &["-c", "a.c", "-Wa,-adhln=a.lst"],
            "assembler option -adhln=a.lst",
        ),
        (&["-c", "a.c", "-Wa,-I,inc"], "assembler option -I"),
        (&["-c", "a.c", "-Wa,--MD,x.d"], "assembler option --MD"),
        (
            &["-c", "a.c", "-Xassembler", "file.inc"],
            "assembler option file.inc",
        ),
        (&["-c", "a.c", "-fmodules"], "modules"),
        (&["-c", "a.c", "-fmodules-ts"], "modules"),
        (&["-c", "a.c", "-fmodule-file=x.pcm"], "modules"),
        (
            &["-c", "a.c", "-include-pch", "x.pch"],
            "precompiled header",
        ),
        (&["-c", "a.c", "-emit-pch"], "precompiled header"),
        (&["-c", "a.c", "-fpch-preprocess"], "precompiled header"),
        (&["-S", "h.h"], "-S of a header"),
        (
            &["-c", "-x", "c++-system-header", "h.h"],
            "header units (C++ modules)",
        ),
        (&["-c", "a.c", "-v"], "-v"),
        (&["-c", "a.c", "-Q"], "-Q"),
        (&["-c", "a.c", "-print-search-dirs"], "query flag"),
        (&["--version"], "query flag"),
        (&["-dumpversion"], "query flag"),
        (&["-c", "a.c", "-dM"], "dump option -dM"),
        (&["-c", "a.c", "-aux-info", "x"], "-aux-info"),
        (
            &["-c", "a.c", "-frecord-gcc-switches"],
            "command line recorded in object",
        ),
        (
            &["-c", "a.c", "-unknown-thing"],
            "unknown flag -unknown-thing",
        ),
        (&["-c", "a.c", "-H"], "unknown flag -H"),
        (&["-c", "a.c", "--"], "unknown flag --"),
        (&["-c", "a.c", "-o"], "missing argument to -o"),
        (&["-c", "a.c", "-o", "-"], "output to stdout (-o -)"),
        (
            &["-c", "a.c", "-arch", "x86_64", "-arch", "arm64"],
            "multiple -arch",
        ),
        (
            &["-c", "a.c", "-ffile-prefix-map=nomapping"],
            "malformed -ffile-prefix-map=nomapping",
        ),
        (
            &["-c", "@missing.rsp"],
            "response file missing.rsp unreadable",
        ),
        // gcc does not know clang's -target.
        (
            &["-c", "a.c", "-target", "x86_64-linux-gnu"],
            "unknown flag -target",
        ),
    ];
    for (args, expected) in cases {
        let got = reason(&dir, args);
        assert!(
            got.starts_with(expected),
            "{args:?}: got {got:?}, want {expected:?}"
        );
    }
}

#[test]
fn include_without_pch_is_fine() {
    let dir = fixture();
    dir.write("cfg.h", "");
    let c = ok(&dir, &["-c", "a.c", "-include", "cfg.h"]);
    assert_eq!(c.preprocess_args, os(&["-E", "a.c", "-include", "cfg.h"]));
    assert_eq!(c.hashed_args, os(&["-c"]));
}

#[test]
fn harmless_assembler_options() {
    let dir = fixture();
    let c = ok(
        &dir,
        &[
            "-c",
            "a.c",
            "-Wa,--noexecstack",
            "-Wa,-mrelax-relocations=no,--gdwarf-5",
            "-Xassembler",
            "--noexecstack",
        ],
    );
    assert_eq!(c.hashed_args.len(), 5);
}

#[test]
fn known_flag_families_are_accepted() {
    let dir = fixture();
    let c = ok(
        &dir,
        &[
            "-c",
            "a.c",
            "-O3",
            "-Os",
            "-Ofast",
            "-march=native",
            "-mtune=generic",
            "-m64",
            "-Wextra",
            "-Wno-unused",
            "-Werror=format",
            "-W",
            "-w",
            "-ansi",
            "-pedantic",
            "-pedantic-errors",
            "-pipe",
            "-pthread",
            "-fPIC",
            "-fno-omit-frame-pointer",
            "-flto",
            "-frandom-seed=x",
            "-nostdinc",
            "-nostdlib",
            "-static",
            "-static-libgcc",
            "-shared",
            "-rdynamic",
            "-std=gnu++17",
            "-fno-modules",
            "-fmodulo-sched",
            "-P",
            "-C",
        ],
    );
    // -P only leaves the compile, never the -E run.
    assert!(!c.preprocess_args.contains(&OsString::from("-P")));
    assert!(c.hashed_args.contains(&OsString::from("-P")));
    assert!(c.preprocess_args.contains(&OsString::from("-C")));
}

#[test]
fn clang_specific_flags() {
    let dir = fixture();
    let c = ok_with(
        &dir,
        Family::Clang,
        &[
            "-c",
            "a.c",
            "-target",
            "aarch64-linux-gnu",
            "--target=x86_64-linux-gnu",
            "-mllvm",
            "-inline-threshold=100",
            "-Qunused-arguments",
            "-arch",
            "arm64",
            "--gcc-toolchain=/opt/gcc",
        ],
    );
    assert_eq!(
        c.hashed_args,
        os(&[
            "-c",
            "-target",
            "aarch64-linux-gnu",
            "--target=x86_64-linux-gnu",
            "-mllvm",
            "-inline-threshold=100",
            "-Qunused-arguments",
            "-arch",
            "arm64",
            "--gcc-toolchain=/opt/gcc",
        ])
    );
}

#[test]
fn color_gcc() {
    let dir = fixture();
    let color = |args: &[&str]| {
        let mut all = vec!["-c", "a.c"];
        all.extend_from_slice(args);
        ok_with(&dir, Family::Gcc, &all).color
    };
    assert_eq!(color(&[]), None);
    assert_eq!(color(&["-fdiagnostics-color"]), Some(true));
    assert_eq!(color(&["-fdiagnostics-color=always"]), Some(true));
    assert_eq!(color(&["-fdiagnostics-color=never"]), Some(false));
    assert_eq!(color(&["-fno-diagnostics-color"]), Some(false));
    assert_eq!(
        color(&["-fdiagnostics-color", "-fdiagnostics-color=auto"]),
        None
    );
    assert_eq!(
        color(&["-fno-diagnostics-color", "-fdiagnostics-color"]),
        Some(true)
    );
    // clang's spelling means nothing to gcc.
    assert_eq!(color(&["-fcolor-diagnostics"]), None);
}

#[test]
fn color_clang() {
    let dir = fixture();
    let color = |args: &[&str]| {
        let mut all = vec!["-c", "a.c"];
        all.extend_from_slice(args);
        ok_with(&dir, Family::Clang, &all).color
    };
    assert_eq!(color(&[]), None);
    assert_eq!(color(&["-fcolor-diagnostics"]), Some(true));
    assert_eq!(color(&["-fno-color-diagnostics"]), Some(false));
    assert_eq!(
        color(&["-fcolor-diagnostics", "-fno-color-diagnostics"]),
        Some(false)
    );
    // clang also accepts the gcc spellings.
    assert_eq!(color(&["-fdiagnostics-color=always"]), Some(true));
    assert_eq!(color(&["-fdiagnostics-color=never"]), Some(false));
}

#[test]
fn debug_info() {
    let dir = fixture();
    let debug = |args: &[&str]| {
        let mut all = vec!["-c", "a.c"];
        all.extend_from_slice(args);
        ok(&dir, &all).debug_info
    };
    assert!(!debug(&[]));
    assert!(debug(&["-g"]));
    assert!(debug(&["-g3"]));
    assert!(debug(&["-ggdb"]));
    assert!(debug(&["-gdwarf-4"]));
    assert!(debug(&["-gline-tables-only"]));
    assert!(!debug(&["-g", "-g0"]));
    assert!(debug(&["-g0", "-g"]));
    assert!(!debug(&["-ggdb3", "-ggdb0"]));
    // Modifiers alone do not turn debug info on, nor off.
    assert!(!debug(&["-gz"]));
    assert!(!debug(&["-gno-column-info"]));
    assert!(debug(&["-g", "-gz=zlib", "-gcolumn-info"]));
}

#[test]
fn prefix_maps() {
    let dir = fixture();
    let c = ok(
        &dir,
        &[
            "-c",
            "a.c",
            "-g",
            "-fdebug-prefix-map=/src=.",
            "-ffile-prefix-map=/build/x=/y=z",
            "-fmacro-prefix-map=/m=n",
        ],
    );
    assert_eq!(
        c.prefix_maps,
        vec![
            ("/src".to_owned(), ".".to_owned()),
            ("/build/x".to_owned(), "/y=z".to_owned()),
        ]
    );
    // They change the object, so they stay in the key.
    assert!(
        c.hashed_args
            .contains(&OsString::from("-fdebug-prefix-map=/src=."))
    );
}

#[test]
fn response_file_splitting() {
    let split = |s: &str| -> Vec<String> {
        split_response_file(s.as_bytes())
            .into_iter()
            .map(|w| String::from_utf8(w).unwrap())
            .collect()
    };
    assert_eq!(split("  -c\ta.c\n-O2 \r\n"), ["-c", "a.c", "-O2"]);
    assert_eq!(split(r#"-DX="a b" 'c d'e"#), ["-DX=a b", "c de"]);
    assert_eq!(
        split(r#"a\ b \"q\" 'it\'s' "x\"y""#),
        ["a b", "\"q\"", "it's", "x\"y"]
    );
    assert_eq!(split(r#"'' "" x"#), ["", "", "x"]);
    assert_eq!(split(r#"'"' "'""#), ["\"", "'"]);
    assert_eq!(split(""), Vec::<String>::new());
    assert_eq!(split("trailing\\"), ["trailing"]);
}

#[test]
fn response_files_expand_recursively() {
    let dir = fixture();
    dir.write(
        "rsp/outer.rsp",
        "-c \"-DMSG=hello world\" @rsp/inner.rsp -o 'out dir/a.o'\n",
    );
    dir.write("rsp/inner.rsp", "-O2\n-I inc\\ dir a.c\n");
    let c = ok(&dir, &["@rsp/outer.rsp", "-g"]);
    assert_eq!(
        c.expanded,
        os(&[
            "-c",
            "-DMSG=hello world",
            "-O2",
            "-I",
            "inc dir",
            "a.c",
            "-o",
            "out dir/a.o",
            "-g",
        ])
    );
    assert_eq!(c.output, PathBuf::from("out dir/a.o"));
    assert_eq!(c.hashed_args, os(&["-c", "-O2", "-g"]));
    assert_eq!(
        c.preprocess_args,
        os(&[
            "-E",
            "-DMSG=hello world",
            "-O2",
            "-I",
            "inc dir",
            "a.c",
            "-g"
        ])
    );
}

#[test]
fn response_file_depth_limit() {
    let dir = fixture();
    // r0 -> r1 -> ... -> r9: ten levels are fine.
    for n in 0..10 {
        let body = if n == 9 {
            "-c a.c".to_owned()
        } else {
            format!("@r{}", n + 1)
        };
        dir.write(&format!("r{n}"), &body);
    }
    assert_eq!(ok(&dir, &["@r0"]).input, PathBuf::from("a.c"));

    dir.write("loop", "@loop");
    assert_eq!(reason(&dir, &["@loop"]), "response files nested too deeply");
    assert_eq!(
        reason(&dir, &["-c", "a.c", "@nope"]),
        "response file nope unreadable"
    );
}

#[cfg(unix)]
#[test]
fn non_utf8_arguments() {
    use std::os::unix::ffi::OsStringExt;
    let dir = fixture();
    let name = OsString::from_vec(b"caf\xe9.c".to_vec());
    fs::write(dir.0.join(&name), "").unwrap();

    let args = vec![OsString::from("-c"), name.clone()];
    let Parsed::Cacheable(c) = run_os(&dir, Family::Gcc, &args) else {
        panic!("non-UTF-8 input should be fine");
    };
    assert_eq!(c.input, PathBuf::from(&name));
    assert_eq!(
        c.output,
        PathBuf::from(OsString::from_vec(b"caf\xe9.o".to_vec()))
    );

    // Separate values may be non-UTF-8 too.
    let args = vec![
        OsString::from("-c"),
        name.clone(),
        OsString::from("-I"),
        OsString::from_vec(b"inc\xff".to_vec()),
    ];
    assert!(matches!(
        run_os(&dir, Family::Gcc, &args),
        Parsed::Cacheable(_)
    ));

    let args = vec![
        OsString::from("-c"),
        name,
        OsString::from_vec(b"-f\xff".to_vec()),
    ];
    let Parsed::NotCacheable(r) = run_os(&dir, Family::Gcc, &args) else {
        panic!("non-UTF-8 flag should not be cacheable");
    };
    assert!(r.to_string().starts_with("non-UTF-8 flag"), "{r}");
}

/// The object records where its run-time profile goes, an absolute path from the cwd and
/// -o: both are keyed then.
#[test]
fn profile_instrumentation_keys_the_cwd_and_the_output() {
    for flag in [
        "-fprofile-arcs",
        "-fprofile-generate",
        "-fprofile-generate=dir",
        "-fprofile-instr-generate",
        "-fcoverage-mapping",
    ] {
        let dir = fixture();
        let c = ok(&dir, &["-c", "a.c", flag]);
        assert!(c.records_cwd && c.records_output, "{flag}");
    }
}

/// Side outputs are named after the object with its extension replaced (`.gcno`, `.dwo`,
/// `.su`, `.ci`), as gcc 12 and clang 14 name them; clang's `.dia` where it is asked for.
#[test]
fn side_outputs_are_named_as_the_compilers_name_them() {
    let dir = fixture();
    let names = |c: &CompileArgs| -> Vec<(&str, String)> {
        c.extra_outputs
            .iter()
            .map(|(role, path)| (*role, path.display().to_string()))
            .collect()
    };
    let c = ok(
        &dir,
        &[
            "-c",
            "src/a.c",
            "-o",
            "obj/a.x.o",
            "--coverage",
            "-fstack-usage",
        ],
    );
    assert_eq!(
        names(&c),
        [
            (COVERAGE_NOTES, "obj/a.x.gcno".into()),
            (STACK_USAGE, "obj/a.x.su".into())
        ]
    );
    assert!(c.records_output && c.records_cwd && !c.reads_flag_files);
    let c = ok(
        &dir,
        &["-c", "src/a.c", "-gsplit-dwarf", "-fcallgraph-info=su"],
    );
    assert_eq!(
        names(&c),
        [
            (SPLIT_DWARF, "a.dwo".into()),
            (CALLGRAPH_INFO, "a.ci".into())
        ]
    );
    assert!(c.records_output && !c.records_cwd);
    // clang: -gsplit-dwarf does not turn debug info on, and =single writes no .dwo.
    let clang = |args: &[&str]| ok_with(&dir, Family::Clang, args);
    assert!(
        clang(&["-c", "src/a.c", "-o", "obj/c", "-gsplit-dwarf"])
            .extra_outputs
            .is_empty()
    );
    assert_eq!(
        names(&clang(&[
            "-c",
            "src/a.c",
            "-o",
            "obj/c",
            "-gsplit-dwarf",
            "-g"
        ])),
        [(SPLIT_DWARF, "obj/c.dwo".into())]
    );
    assert!(
        clang(&["-c", "src/a.c", "-g", "-gsplit-dwarf=single"])
            .extra_outputs
            .is_empty()
    );
    let c = clang(&["-c", "src/a.c", "--serialize-diagnostics", "obj/a.dia"]);
    assert_eq!(names(&c), [(SERIALIZED_DIAGNOSTICS, "obj/a.dia".into())]);
    // Where it goes is not keyed; that it is written is.
    assert!(!c.direct_args.iter().any(|a| a == "obj/a.dia"));
    assert!(c.direct_args.iter().any(|a| a == SERIALIZED_DIAGNOSTICS));
    // Files named by flags are read: stored only when observed.
    for flag in [
        "-fprofile-use",
        "-fprofile-use=p",
        "-fsanitize-ignorelist=l.txt",
    ] {
        let c = ok(&dir, &["-c", "src/a.c", flag]);
        assert!(c.reads_flag_files && c.records_output, "{flag}");
    }
    let c = ok(&dir, &["-c", "src/a.c", "-fprofile-arcs"]);
    assert!(c.extra_outputs.is_empty() && c.records_output && c.records_cwd);
}

/// Compiling a header makes a precompiled header: beside the header without `-o` (also
/// from another cwd), and using one (`-include X` with `X.gch` beside it) is cached, the
/// `.gch` read being observed.
#[test]
fn precompiled_headers_are_made_and_used() {
    let dir = fixture();
    dir.write("inc/p.h", "");
    dir.write("pch.h", "");
    dir.write("pch.h.gch", "");
    let c = ok(&dir, &["-c", "inc/p.h"]);
    assert_eq!(
        (c.language, c.output),
        (Language::CHeader, PathBuf::from("inc/p.h.gch"))
    );
    let c = ok(
        &dir,
        &["-x", "c++-header", "-c", "a.c", "-o", "pch/a.h.gch", "-MD"],
    );
    assert_eq!(c.language, Language::CxxHeader);
    assert_eq!(c.depfile.unwrap().path, PathBuf::from("pch/a.h.d"));
    let c = ok(&dir, &["-c", "x.hpp"]);
    assert_eq!(c.language, Language::CxxHeader);
    for args in [
        &["-c", "a.c", "-include", "pch.h"][..],
        &["-c", "a.c", "-includepch.h"],
    ] {
        assert!(
            ok(&dir, args)
                .preprocess_args
                .iter()
                .any(|a| a.to_str().unwrap().contains("pch.h"))
        );
    }
}

/// kbuild's compiler probes compile `/dev/null`: an empty input, cached like any other.
#[test]
fn dev_null_is_an_empty_input() {
    let dir = fixture();
    let c = ok(
        &dir,
        &["-Werror", "-c", "-x", "c", "/dev/null", "-o", ".tmp_1.o"],
    );
    assert_eq!(c.input, PathBuf::from("/dev/null"));
    assert_eq!(c.output, PathBuf::from(".tmp_1.o"));
}
