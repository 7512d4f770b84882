use super::*;

const CWD: &str = "/work/proj";

fn os(args: &[&str]) -> Vec<OsString> {
    args.iter().map(OsString::from).collect()
}

fn parse_in(args: &[&str], cwd: &Path) -> Parsed {
    let args = os(args);
    parse(&ParseInput { args: &args, cwd })
}

fn parse_strs(args: &[&str]) -> Parsed {
    parse_in(args, Path::new(CWD))
}

fn ok(args: &[&str]) -> RustcArgs {
    match parse_strs(args) {
        Parsed::Cacheable(a) => a,
        Parsed::NotCacheable { reason, .. } => panic!("not cacheable: {reason}: {args:?}"),
    }
}

fn reason(args: &[&str]) -> String {
    match parse_strs(args) {
        Parsed::Cacheable(a) => panic!("unexpectedly cacheable: {a:?}"),
        Parsed::NotCacheable { reason, .. } => reason.to_string(),
    }
}

fn hashed(a: &RustcArgs) -> Vec<String> {
    a.hashed_args
        .iter()
        .map(|s| s.to_str().unwrap().to_owned())
        .collect()
}

/// `cargo build -v` for a registry dependency lib (no -C incremental), with
/// pipelining and one dependency.
const LIB: &[&str] = &[
    "--crate-name",
    "cx",
    "--edition=2024",
    "src/lib.rs",
    "--error-format=json",
    "--json=diagnostic-rendered-ansi,artifacts,future-incompat",
    "--diagnostic-width=120",
    "--crate-type",
    "lib",
    "--emit=dep-info,metadata,link",
    "-C",
    "embed-bitcode=no",
    "-C",
    "debuginfo=2",
    "--check-cfg",
    "cfg(docsrs,test)",
    "--check-cfg",
    "cfg(feature, values(\"default\", \"std\"))",
    "-C",
    "metadata=0be5c64b0da83f19",
    "-C",
    "extra-filename=-878faf545f41f7a9",
    "--out-dir",
    "/tmp/cx/target/debug/deps",
    "-L",
    "dependency=/tmp/cx/target/debug/deps",
    "--extern",
    "serde=/tmp/cx/target/debug/deps/libserde-0123456789abcdef.rmeta",
    "--cap-lints",
    "allow",
    "--cfg",
    "feature=\"std\"",
    "--cfg",
    "feature=\"default\"",
];

#[test]
fn cargo_lib_pipelined() {
    let a = ok(LIB);
    assert_eq!(a.crate_name, "cx");
    assert_eq!(a.input, PathBuf::from("src/lib.rs"));
    assert_eq!(a.crate_types, vec![CrateType::Lib]);
    assert!(!a.test);
    assert_eq!(a.emit, vec![Emit::DepInfo, Emit::Metadata, Emit::Link]);
    assert_eq!(a.out_dir, PathBuf::from("/tmp/cx/target/debug/deps"));
    assert_eq!(a.extra_filename, "-878faf545f41f7a9");
    assert_eq!(a.edition.as_deref(), Some("2024"));
    assert_eq!(
        a.externs,
        vec![Extern {
            name: "serde".into(),
            path: Some("/tmp/cx/target/debug/deps/libserde-0123456789abcdef.rmeta".into()),
            options: vec![],
        }]
    );
    assert_eq!(
        a.search_paths,
        vec![("dependency".into(), "/tmp/cx/target/debug/deps".into())]
    );
    assert_eq!(a.cfgs, vec!["feature=\"std\"", "feature=\"default\""]);
    assert_eq!(a.check_cfgs.len(), 2);
    assert_eq!(
        a.codegen,
        vec![
            ("embed-bitcode".into(), Some("no".into())),
            ("debuginfo".into(), Some("2".into())),
            ("metadata".into(), Some("0be5c64b0da83f19".into())),
            ("extra-filename".into(), Some("-878faf545f41f7a9".into())),
        ]
    );
    assert_eq!(
        a.display,
        DisplayFlags {
            diagnostic_width: Some("120".into()),
            color: None,
            rendered_ansi: true,
        }
    );
    assert_eq!(a.target, None);
    assert_eq!(a.expanded, os(LIB));
}

#[test]
fn cargo_lib_hashed_args_exact() {
    let a = ok(LIB);
    assert_eq!(
        hashed(&a),
        vec![
            "--crate-name",
            "cx",
            "--edition=2024",
            "src/lib.rs",
            "--error-format=json",
            "--json=artifacts,future-incompat",
            "--crate-type",
            "lib",
            "--emit=dep-info,metadata,link",
            "-C",
            "embed-bitcode=no",
            "-C",
            "debuginfo=2",
            "--check-cfg",
            "cfg(docsrs,test)",
            "--check-cfg",
            "cfg(feature, values(\"default\", \"std\"))",
            "-C",
            "metadata=0be5c64b0da83f19",
            "-C",
            "extra-filename=-878faf545f41f7a9",
            "--out-dir",
            "/tmp/cx/target/debug/deps",
            "--extern",
            "serde",
            "--cap-lints",
            "allow",
            "--cfg",
            "feature=\"default\"",
            "--cfg",
            "feature=\"std\"",
        ]
    );
}

#[test]
fn cargo_bin() {
    let a = ok(&[
        "--crate-name",
        "cx",
        "--edition=2024",
        "src/main.rs",
        "--error-format=json",
        "--json=diagnostic-rendered-ansi,artifacts,future-incompat",
        "--crate-type",
        "bin",
        "--emit=dep-info,link",
        "-C",
        "opt-level=3",
        "-C",
        "embed-bitcode=no",
        "--check-cfg",
        "cfg(docsrs,test)",
        "--check-cfg",
        "cfg(feature, values())",
        "-C",
        "metadata=a78f579eb4b40c79",
        "-C",
        "extra-filename=-0d794db6f2a4d154",
        "--out-dir",
        "/tmp/cx/target/release/deps",
        "-C",
        "strip=debuginfo",
        "-L",
        "dependency=/tmp/cx/target/release/deps",
        "--extern",
        "cx=/tmp/cx/target/release/deps/libcx-878faf545f41f7a9.rlib",
    ]);
    assert_eq!(a.crate_types, vec![CrateType::Bin]);
    assert_eq!(a.emit, vec![Emit::DepInfo, Emit::Link]);
    assert_eq!(a.externs[0].name, "cx");
    assert!(a.crate_types[0].is_linked());
    assert_eq!(a.linker, None);
}

#[test]
fn cargo_build_script() {
    let a = ok(&[
        "--crate-name",
        "build_script_build",
        "--edition=2021",
        "build.rs",
        "--error-format=json",
        "--json=diagnostic-rendered-ansi,artifacts,future-incompat",
        "--crate-type",
        "bin",
        "--emit=dep-info,link",
        "-C",
        "embed-bitcode=no",
        "--check-cfg",
        "cfg(docsrs,test)",
        "--check-cfg",
        "cfg(feature, values())",
        "-C",
        "metadata=f4f18bae41ae7a3c",
        "-C",
        "extra-filename=-cdcf0a73c10c635d",
        "--out-dir",
        "/tmp/cx/target/debug/build/cx-cdcf0a73c10c635d",
        "-L",
        "dependency=/tmp/cx/target/debug/deps",
        "--cap-lints",
        "allow",
    ]);
    assert_eq!(a.crate_name, "build_script_build");
    assert_eq!(a.crate_types, vec![CrateType::Bin]);
    assert_eq!(a.input, PathBuf::from("build.rs"));
    assert_eq!(a.edition.as_deref(), Some("2021"));
}

#[test]
fn cargo_proc_macro() {
    let a = ok(&[
        "--crate-name",
        "pm",
        "--edition=2024",
        "src/lib.rs",
        "--error-format=json",
        "--json=diagnostic-rendered-ansi,artifacts,future-incompat",
        "--crate-type",
        "proc-macro",
        "--emit=dep-info,link",
        "-C",
        "prefer-dynamic",
        "-C",
        "embed-bitcode=no",
        "-C",
        "debuginfo=2",
        "--check-cfg",
        "cfg(docsrs,test)",
        "--check-cfg",
        "cfg(feature, values())",
        "-C",
        "metadata=c3becca09bedd17a",
        "-C",
        "extra-filename=-31799d259be1a0ef",
        "--out-dir",
        "/tmp/pm/target/debug/deps",
        "-L",
        "dependency=/tmp/pm/target/debug/deps",
        "--extern",
        "proc_macro",
        "--cap-lints",
        "allow",
    ]);
    assert_eq!(a.crate_types, vec![CrateType::ProcMacro]);
    assert!(CrateType::ProcMacro.is_linked());
    assert_eq!(
        a.externs,
        vec![Extern {
            name: "proc_macro".into(),
            path: None,
            options: vec![]
        }]
    );
    assert_eq!(a.codegen[0], ("prefer-dynamic".into(), None));
    let h = hashed(&a);
    let i = h.iter().position(|t| t == "--extern").unwrap();
    assert_eq!(h[i + 1], "proc_macro");
}

#[test]
fn cargo_cdylib_and_rlib() {
    let a = ok(&[
        "--crate-name",
        "cd",
        "--edition=2024",
        "src/lib.rs",
        "--error-format=json",
        "--json=diagnostic-rendered-ansi,artifacts,future-incompat",
        "--crate-type",
        "cdylib",
        "--crate-type",
        "rlib",
        "--emit=dep-info,link",
        "-C",
        "opt-level=3",
        "-C",
        "embed-bitcode=no",
        "-C",
        "metadata=c549550b6214de58",
        "--out-dir",
        "/tmp/cd/target/release/deps",
        "-C",
        "strip=debuginfo",
        "-L",
        "dependency=/tmp/cd/target/release/deps",
    ]);
    assert_eq!(a.crate_types, vec![CrateType::Cdylib, CrateType::Rlib]);
    // No -C extra-filename for a cdylib build.
    assert_eq!(a.extra_filename, "");
}

#[test]
fn cargo_test_harness() {
    let a = ok(&[
        "--crate-name",
        "cx",
        "--edition=2024",
        "src/lib.rs",
        "--error-format=json",
        "--json=diagnostic-rendered-ansi,artifacts,future-incompat",
        "--emit=dep-info,link",
        "-C",
        "embed-bitcode=no",
        "-C",
        "debuginfo=2",
        "--test",
        "--check-cfg",
        "cfg(docsrs,test)",
        "--check-cfg",
        "cfg(feature, values())",
        "-C",
        "metadata=3fd3ff639ad1587d",
        "-C",
        "extra-filename=-25ce498f394c270f",
        "--out-dir",
        "/tmp/cx/target/debug/deps",
        "-L",
        "dependency=/tmp/cx/target/debug/deps",
        "--cfg",
        "foo",
    ]);
    assert!(a.test);
    assert_eq!(a.crate_types, vec![CrateType::Bin]);
    assert!(hashed(&a).contains(&"--test".to_owned()));
}

#[test]
fn crate_type_lists_dedup_in_order() {
    let a = ok(&[
        "--crate-name=x",
        "--crate-type=rlib,dylib",
        "--crate-type",
        "rlib",
        "--crate-type",
        "staticlib,dylib",
        "--out-dir=out",
        "lib.rs",
    ]);
    assert_eq!(
        a.crate_types,
        vec![CrateType::Rlib, CrateType::Dylib, CrateType::Staticlib]
    );
    assert_eq!(a.emit, vec![Emit::Link]);
    assert_eq!(a.out_dir, PathBuf::from("out"));
}

#[test]
fn crate_type_strings() {
    for t in [
        CrateType::Bin,
        CrateType::Lib,
        CrateType::Rlib,
        CrateType::Dylib,
        CrateType::Cdylib,
        CrateType::Staticlib,
        CrateType::ProcMacro,
    ] {
        assert_eq!(CrateType::from_str(t.as_str()), Some(t));
    }
    assert!(!CrateType::Rlib.is_linked());
    assert!(!CrateType::Staticlib.is_linked());
    assert!(CrateType::Cdylib.is_linked());
}

/// Minimal cacheable command line, extended by tests.
fn base() -> Vec<&'static str> {
    vec![
        "--crate-name",
        "x",
        "--crate-type",
        "lib",
        "--out-dir",
        "out",
        "src/lib.rs",
    ]
}

fn with(extra: &[&'static str]) -> Vec<&'static str> {
    let mut v = base();
    v.extend_from_slice(extra);
    v
}

#[test]
fn cfg_order_does_not_matter() {
    let a = ok(&with(&["--cfg", "b", "-C", "opt-level=1", "--cfg", "a"]));
    let b = ok(&with(&["--cfg", "a", "-C", "opt-level=1", "--cfg=b"]));
    assert_eq!(a.hashed_args, b.hashed_args);
    assert_eq!(a.cfgs, vec!["b", "a"]);
    assert_eq!(b.cfgs, vec!["a", "b"]);
    let mut expect = base();
    expect.extend(["--cfg", "a", "--cfg", "b", "-C", "opt-level=1"]);
    assert_eq!(hashed(&a), expect);
}

#[test]
fn check_cfg_order_does_not_matter() {
    let a = ok(&with(&["--check-cfg", "cfg(b)", "--check-cfg", "cfg(a)"]));
    let b = ok(&with(&["--check-cfg=cfg(a)", "--check-cfg", "cfg(b)"]));
    assert_eq!(a.hashed_args, b.hashed_args);
    assert_eq!(a.check_cfgs, vec!["cfg(b)", "cfg(a)"]);
}

#[test]
fn cfg_values_matter() {
    let a = ok(&with(&["--cfg", "a"]));
    let b = ok(&with(&["--cfg", "b"]));
    assert_ne!(a.hashed_args, b.hashed_args);
}

#[test]
fn display_flags_only_change_display() {
    let plain = ok(&with(&["--error-format=json", "--json=artifacts"]));
    let variants: &[&[&str]] = &[
        &["--diagnostic-width=80"],
        &["--diagnostic-width", "200"],
        &["--color=always"],
        &["--color", "never"],
    ];
    for extra in variants {
        let mut v = with(&["--error-format=json", "--json=artifacts"]);
        v.extend_from_slice(extra);
        let a = ok(&v);
        assert_eq!(a.hashed_args, plain.hashed_args, "{extra:?}");
        assert_ne!(a.display, plain.display, "{extra:?}");
    }
    let ansi = ok(&with(&[
        "--error-format=json",
        "--json=diagnostic-rendered-ansi,artifacts",
    ]));
    assert_eq!(ansi.hashed_args, plain.hashed_args);
    assert!(ansi.display.rendered_ansi);
    assert!(!plain.display.rendered_ansi);

    let all = ok(&with(&[
        "--color",
        "always",
        "--diagnostic-width",
        "99",
        "--json",
        "diagnostic-rendered-ansi",
    ]));
    assert_eq!(hashed(&all), base());
    assert_eq!(
        all.display,
        DisplayFlags {
            diagnostic_width: Some("99".into()),
            color: Some("always".into()),
            rendered_ansi: true,
        }
    );
}

#[test]
fn json_items_sorted() {
    let a = ok(&with(&["--json=future-incompat,artifacts"]));
    let b = ok(&with(&["--json", "artifacts,future-incompat"]));
    assert_eq!(a.hashed_args, b.hashed_args);
    assert_eq!(
        hashed(&a).last().unwrap(),
        "--json=artifacts,future-incompat"
    );
}

#[test]
fn extern_forms() {
    let a = ok(&with(&[
        "--extern",
        "a=/t/liba-1.rlib",
        "--extern=noprelude:b=/t/libb.rmeta",
        "--extern",
        "priv,nounused:c",
        "--extern",
        "core",
    ]));
    assert_eq!(
        a.externs,
        vec![
            Extern {
                name: "a".into(),
                path: Some("/t/liba-1.rlib".into()),
                options: vec![]
            },
            Extern {
                name: "b".into(),
                path: Some("/t/libb.rmeta".into()),
                options: vec!["noprelude".into()]
            },
            Extern {
                name: "c".into(),
                path: None,
                options: vec!["priv".into(), "nounused".into()]
            },
            Extern {
                name: "core".into(),
                path: None,
                options: vec![]
            },
        ]
    );
    let mut expect = base();
    expect.extend([
        "--extern",
        "a",
        "--extern",
        "noprelude:b",
        "--extern",
        "priv,nounused:c",
        "--extern",
        "core",
    ]);
    assert_eq!(hashed(&a), expect);
}

#[test]
fn extern_path_not_in_key() {
    let a = ok(&with(&["--extern", "a=/one/target/deps/liba-1.rlib"]));
    let b = ok(&with(&["--extern", "a=/two/target/deps/liba-1.rlib"]));
    assert_eq!(a.hashed_args, b.hashed_args);
    assert_ne!(a.externs, b.externs);
}

#[test]
fn search_paths() {
    let a = ok(&with(&[
        "-L",
        "dependency=/t/deps",
        "-Lnative=/usr/lib/foo",
        "-L",
        "/plain",
        "-L",
        "crate=/c",
        "-L",
        "framework=/f",
        "-L",
        "all=/a",
        "-L",
        "weird=/w",
    ]));
    assert_eq!(
        a.search_paths,
        vec![
            ("dependency".into(), "/t/deps".into()),
            ("native".into(), "/usr/lib/foo".into()),
            ("all".into(), "/plain".into()),
            ("crate".into(), "/c".into()),
            ("framework".into(), "/f".into()),
            ("all".into(), "/a".into()),
            // Like rustc: an unknown prefix is part of the path.
            ("all".into(), "weird=/w".into()),
        ]
    );
    let mut expect = base();
    expect.extend([
        "-Lnative=/usr/lib/foo",
        "-L",
        "/plain",
        "-L",
        "crate=/c",
        "-L",
        "framework=/f",
        "-L",
        "all=/a",
        "-L",
        "weird=/w",
    ]);
    assert_eq!(hashed(&a), expect);
}

#[test]
fn dependency_dir_not_in_key() {
    let a = ok(&with(&["-L", "dependency=/one/deps"]));
    let b = ok(&with(&["-Ldependency=/two/deps"]));
    assert_eq!(a.hashed_args, b.hashed_args);
    assert_eq!(hashed(&a), base());
}

#[test]
fn native_libs() {
    let a = ok(&with(&[
        "-l",
        "z",
        "-lstatic=foo",
        "-l",
        "static:+whole-archive,-bundle=bar:baz",
        "-l",
        "dylib=ssl",
        "-l",
        "framework=Cocoa",
    ]));
    assert_eq!(
        a.native_libs,
        vec![
            NativeLib {
                kind: None,
                modifiers: None,
                name: "z".into(),
                rename: None
            },
            NativeLib {
                kind: Some("static".into()),
                modifiers: None,
                name: "foo".into(),
                rename: None
            },
            NativeLib {
                kind: Some("static".into()),
                modifiers: Some("+whole-archive,-bundle".into()),
                name: "bar".into(),
                rename: Some("baz".into())
            },
            NativeLib {
                kind: Some("dylib".into()),
                modifiers: None,
                name: "ssl".into(),
                rename: None
            },
            NativeLib {
                kind: Some("framework".into()),
                modifiers: None,
                name: "Cocoa".into(),
                rename: None
            },
        ]
    );
    let h = hashed(&a);
    assert!(h.contains(&"-lstatic=foo".to_owned()));
    assert!(h.contains(&"static:+whole-archive,-bundle=bar:baz".to_owned()));
}

#[test]
fn codegen_forms_and_linker() {
    let a = ok(&with(&[
        "-Copt-level=3",
        "--codegen",
        "debuginfo=1",
        "--codegen=panic=abort",
        "-C",
        "linker=/usr/bin/clang",
        "-C",
        "link-arg=-fuse-ld=lld",
        "-C",
        "link-args=-Wl,--as-needed  -lfoo",
        "-Clink-arg=-s",
        "-C",
        "overflow_checks=on",
        "-C",
        "split-debuginfo=off",
        "-C",
        "save-temps=no",
    ]));
    assert_eq!(
        a.codegen,
        vec![
            ("opt-level".into(), Some("3".into())),
            ("debuginfo".into(), Some("1".into())),
            ("panic".into(), Some("abort".into())),
            ("linker".into(), Some("/usr/bin/clang".into())),
            ("link-arg".into(), Some("-fuse-ld=lld".into())),
            ("link-args".into(), Some("-Wl,--as-needed  -lfoo".into())),
            ("link-arg".into(), Some("-s".into())),
            ("overflow-checks".into(), Some("on".into())),
            ("split-debuginfo".into(), Some("off".into())),
            ("save-temps".into(), Some("no".into())),
        ]
    );
    assert_eq!(a.linker, Some(PathBuf::from("/usr/bin/clang")));
    assert_eq!(
        a.link_args,
        vec!["-fuse-ld=lld", "-Wl,--as-needed", "-lfoo", "-s"]
    );
    // Codegen options are all kept in the key, as written.
    let h = hashed(&a);
    assert!(h.contains(&"-Copt-level=3".to_owned()));
    assert!(h.contains(&"--codegen=panic=abort".to_owned()));
    assert!(h.contains(&"overflow_checks=on".to_owned()));
}

#[test]
fn other_kept_flags() {
    let extra = [
        "-g",
        "-O",
        "--cap-lints=warn",
        "-A",
        "dead_code",
        "-Wunused",
        "-D",
        "warnings",
        "-Funsafe_code",
        "--allow=a",
        "--warn",
        "b",
        "--deny=c",
        "--forbid",
        "d",
        "--force-warn",
        "e",
        "--sysroot",
        "/sys",
        "--error-format",
        "short",
        "--edition",
        "2021",
        "--remap-path-prefix",
        "/home/me/src=/src",
        "--remap-path-prefix=/a=b=/c",
    ];
    let a = ok(&with(&extra));
    let mut expect = base();
    expect.extend(extra);
    assert_eq!(hashed(&a), expect);
    assert_eq!(
        a.remap_path_prefixes,
        vec![
            ("/home/me/src".into(), "/src".into()),
            // rustc splits at the last '='.
            ("/a=b".into(), "/c".into()),
        ]
    );
    assert_eq!(a.edition.as_deref(), Some("2021"));
}

#[test]
fn target_forms() {
    let a = ok(&with(&["--target", "x86_64-unknown-linux-musl"]));
    assert_eq!(
        a.target,
        Some(Target::Triple("x86_64-unknown-linux-musl".into()))
    );
    let b = ok(&with(&["--target=specs/my.json"]));
    assert_eq!(
        b.target,
        Some(Target::JsonPath(PathBuf::from(CWD).join("specs/my.json")))
    );
    assert_eq!(hashed(&b).last().unwrap(), "--target=specs/my.json");
    let c = ok(&with(&["--target", "/abs/t.json"]));
    assert_eq!(c.target, Some(Target::JsonPath("/abs/t.json".into())));
}

#[test]
fn argfile_expansion() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("sub")).unwrap();
    std::fs::write(
        dir.path().join("sub/args"),
        "--crate-type\nlib\r\n--cfg\nfeature=\"a b\"\n--out-dir\nout\n",
    )
    .unwrap();
    let Parsed::Cacheable(a) = parse_in(
        &["--crate-name", "x", "@sub/args", "src/lib.rs"],
        dir.path(),
    ) else {
        panic!("not cacheable");
    };
    assert_eq!(
        a.expanded,
        os(&[
            "--crate-name",
            "x",
            "--crate-type",
            "lib",
            "--cfg",
            "feature=\"a b\"",
            "--out-dir",
            "out",
            "src/lib.rs",
        ])
    );
    assert_eq!(a.cfgs, vec!["feature=\"a b\""]);
    assert_eq!(a.crate_types, vec![CrateType::Lib]);
    // Same key as the same args written inline.
    let b = ok(&[
        "--crate-name",
        "x",
        "--crate-type",
        "lib",
        "--cfg",
        "feature=\"a b\"",
        "--out-dir",
        "out",
        "src/lib.rs",
    ]);
    assert_eq!(a.hashed_args, b.hashed_args);
}

#[test]
fn argfile_absolute_path() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("args");
    std::fs::write(&file, "--crate-type\nbin\n").unwrap();
    let arg = format!("@{}", file.display());
    let mut v = vec!["--crate-name", "x", "--out-dir", "o", "main.rs"];
    v.push(&arg);
    let Parsed::Cacheable(a) = parse_in(&v, Path::new("/nonexistent")) else {
        panic!("not cacheable");
    };
    assert_eq!(a.crate_types, vec![CrateType::Bin]);
}

#[test]
fn argfile_problems() {
    let dir = tempfile::tempdir().unwrap();
    let r = |args: &[&str]| match parse_in(args, dir.path()) {
        Parsed::NotCacheable { reason, .. } => reason.to_string(),
        Parsed::Cacheable(_) => panic!("cacheable"),
    };
    assert_eq!(r(&with(&["@missing"])), "argfile unreadable");
    assert_eq!(r(&with(&["@shell:args"])), "shell argfile");
}

#[test]
fn not_cacheable_reasons() {
    let cases: &[(&[&str], &str)] = &[
        (&["-C", "incremental=/t/incremental"], "incremental"),
        (&["-Cincremental=/t/incremental"], "incremental"),
        (&["-o", "out/x.rlib"], "-o output"),
        (&["-oout/x"], "-o output"),
        (&["--print=cfg"], "--print"),
        (&["--print", "sysroot"], "--print"),
        (&["--emit=asm"], "emit kind asm"),
        (&["--emit", "link,llvm-ir"], "emit kind llvm-ir"),
        (&["--emit=llvm-bc"], "emit kind llvm-bc"),
        (&["--emit=obj"], "emit kind obj"),
        (&["--emit=mir"], "emit kind mir"),
        (&["--emit=link=out/x.rlib"], "emit to explicit path"),
        (&["-C", "save-temps"], "-C save-temps"),
        (&["-C", "save_temps=yes"], "-C save-temps"),
        (
            &["-C", "split-debuginfo=sideways"],
            "-C split-debuginfo=sideways",
        ),
        (&["-C", "profile-generate=/p"], "-C profile-generate"),
        (&["-C", "profile-use=/p.profdata"], "-C profile-use"),
        (&["-C", "bogus=1"], "unknown codegen option bogus"),
        (&["-C", "help"], "--help"),
        (&["-Z", "threads=8"], "unstable -Z option"),
        (&["-Zunstable-options"], "unstable -Z option"),
        (&["--frobnicate"], "unknown flag --frobnicate"),
        (&["--frobnicate=1"], "unknown flag --frobnicate"),
        (&["-q"], "unknown flag -q"),
        (&["--explain", "E0308"], "--explain"),
        (&["-V"], "--version"),
        (&["--version"], "--version"),
        (&["-vV"], "--version"),
        (&["-h"], "--help"),
        (&["--help"], "--help"),
        (&["-W", "help"], "--help"),
        (&["-v"], "-v"),
        (&["--verbose"], "-v"),
        (&["--env-set", "A=b"], "unstable option --env-set"),
        (&["-"], "stdin input"),
        (&["src/other.rs"], "multiple inputs"),
        (&["--crate-name", "y"], "repeated --crate-name"),
        (&["--out-dir", "o2"], "repeated --out-dir"),
        (&["--crate-type", "bogus"], "unknown crate type bogus"),
        (&["-C", "extra-filename=/../x"], "bad -C extra-filename"),
        (
            &["--remap-path-prefix", "noequals"],
            "bad --remap-path-prefix",
        ),
        (&["--cfg"], "missing value for --cfg"),
    ];
    for (extra, want) in cases {
        assert_eq!(reason(&with(extra)), *want, "{extra:?}");
    }
}

#[test]
fn missing_required_parts() {
    assert_eq!(
        reason(&["--crate-type", "lib", "--out-dir", "o", "--crate-name", "x"]),
        "no input"
    );
    assert_eq!(
        reason(&["--crate-type", "lib", "--out-dir", "o", "a.rs"]),
        "no --crate-name"
    );
    assert_eq!(
        reason(&["--crate-name", "x", "--out-dir", "o", "a.rs"]),
        "no --crate-type"
    );
    assert_eq!(
        reason(&["--crate-name", "x", "--crate-type", "lib", "a.rs"]),
        "no --out-dir"
    );
    assert_eq!(
        reason(&[
            "--crate-name",
            "../x",
            "--crate-type",
            "lib",
            "--out-dir",
            "o",
            "a.rs"
        ]),
        "bad --crate-name"
    );
    assert_eq!(reason(&[]), "no input");
}

#[test]
fn cargo_probes_not_cacheable() {
    // `rustc -vV` (version probe).
    assert_eq!(reason(&["-vV"]), "--version");
    // Target info probe.
    let probe = [
        "-",
        "--crate-name",
        "___",
        "--print=file-names",
        "--crate-type",
        "bin",
        "--crate-type",
        "rlib",
        "--crate-type",
        "dylib",
        "--crate-type",
        "cdylib",
        "--crate-type",
        "staticlib",
        "--crate-type",
        "proc-macro",
        "--print=sysroot",
        "--print=split-debuginfo",
        "--print=crate-name",
        "--print=cfg",
        "-Wwarnings",
    ];
    match parse_strs(&probe) {
        Parsed::NotCacheable {
            crate_types,
            reason,
        } => {
            assert_eq!(reason.to_string(), "stdin input");
            // Crate types are still reported for statistics.
            assert_eq!(crate_types.len(), 6);
        }
        Parsed::Cacheable(_) => panic!("probe cacheable"),
    }
}

#[test]
fn not_cacheable_reports_crate_types() {
    let mut v = with(&["-C", "incremental=/t/inc"]);
    v[3] = "proc-macro";
    match parse_strs(&v) {
        Parsed::NotCacheable {
            crate_types,
            reason,
        } => {
            assert_eq!(reason.to_string(), "incremental");
            assert_eq!(crate_types, vec![CrateType::ProcMacro]);
        }
        Parsed::Cacheable(_) => panic!("cacheable"),
    }
}

#[cfg(unix)]
#[test]
fn non_utf8_argument() {
    use std::os::unix::ffi::OsStringExt;
    let mut args = os(&base());
    args.push(OsString::from_vec(vec![b'a', 0xff]));
    let r = parse(&ParseInput {
        args: &args,
        cwd: Path::new(CWD),
    });
    assert!(
        matches!(r, Parsed::NotCacheable { reason, .. } if reason.to_string() == "non-UTF-8 argument")
    );
}

#[test]
fn input_kept_as_written() {
    let a = ok(&[
        "--crate-name",
        "x",
        "../other/src/lib.rs",
        "--crate-type",
        "lib",
        "--out-dir",
        "o",
    ]);
    assert_eq!(a.input, PathBuf::from("../other/src/lib.rs"));
    assert_eq!(hashed(&a)[2], "../other/src/lib.rs");
}

#[test]
fn target_cpu_native_is_cacheable_and_known() {
    assert!(ok(&with(&["-C", "target-cpu=native"])).native_cpu());
    assert!(!ok(&with(&["-C", "target-cpu=znver3"])).native_cpu());
    assert!(!ok(&base()).native_cpu());
}
