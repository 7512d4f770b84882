use super::*;

fn bases(dirs: &[&str]) -> BaseDirs {
    BaseDirs::new(dirs.iter().map(|d| d.as_bytes().to_vec()).collect())
}

#[test]
fn relative_forms_follow_components() {
    let b = bases(&["/home/ci/work", "/root/.cargo"]);
    assert_eq!(
        b.relativize(b"/home/ci/work/p/a.c").unwrap(),
        b"<base 0>/p/a.c"
    );
    assert_eq!(b.relativize(b"/home/ci/work").unwrap(), b"<base 0>");
    assert_eq!(
        b.relativize(b"/root/.cargo/registry/src/x").unwrap(),
        b"<base 1>/registry/src/x"
    );
    // Outside every base dir: unchanged.
    assert_eq!(b.relativize(b"/home/ci/workshop/a.c"), None);
    assert_eq!(b.relativize(b"/usr/include/stdio.h"), None);
    assert_eq!(b.relativize(b"src/a.c"), None);
    assert_eq!(b.key_form(b"/usr/x"), b"abs:/usr/x");
    // Two checkouts under their own base dirs agree.
    let other = bases(&["/builds/7", "/opt/cargo"]);
    assert_eq!(
        b.key_form(b"/home/ci/work/p"),
        other.key_form(b"/builds/7/p")
    );
}

#[test]
fn map_arguments_are_relativized_on_the_old_side_only() {
    let b = bases(&["/home/a"]);
    let toks: Vec<Vec<u8>> = [
        "-g",
        "-fdebug-prefix-map=/home/a/p=.",
        "-ffile-prefix-map=/usr/src=/s",
        "-fmacro-prefix-map=/home/a/p/x=/home/a/q",
    ]
    .iter()
    .map(|t| t.as_bytes().to_vec())
    .collect();
    let flags = [
        "-fdebug-prefix-map=",
        "-ffile-prefix-map=",
        "-fmacro-prefix-map=",
    ];
    let (out, maps) = relativize_map_args(&b, None, &toks, &flags, false, Match::String);
    assert_eq!(out[0], b"-g");
    assert_eq!(out[1], b"-fdebug-prefix-map=\0<base 0>/p=.");
    assert_eq!(out[2], toks[2]);
    // NEW stays literal: it is what the object records.
    assert_eq!(out[3], b"-fmacro-prefix-map=\0<base 0>/p/x=/home/a/q");
    assert_eq!(
        maps.mapped_forms(b"/home/a/p/x/h.h"),
        vec![b"./x/h.h".to_vec(), b"/home/a/q/h.h".to_vec()]
    );
    assert!(maps.mapped_forms(b"/home/b/p/h.h").is_empty());

    let rust = [
        "--remap-path-prefix",
        "/home/a/ws=/ws",
        "--remap-path-prefix=/home/a/c=x=/c",
    ]
    .iter()
    .map(|t| t.as_bytes().to_vec())
    .collect::<Vec<_>>();
    let (out, maps) = relativize_map_args(
        &b,
        None,
        &rust,
        &["--remap-path-prefix"],
        true,
        Match::Components,
    );
    assert_eq!(out[0], b"--remap-path-prefix");
    assert_eq!(out[1], b"\0<base 0>/ws=/ws");
    assert_eq!(out[2], b"--remap-path-prefix=\0<base 0>/c=x=/c");
    assert_eq!(
        maps.mapped_forms(b"/home/a/ws/src/lib.rs"),
        vec![b"/ws/src/lib.rs".to_vec()]
    );
    assert!(maps.mapped_forms(b"/home/a/wsx/lib.rs").is_empty());
}

#[test]
fn remapping_follows_each_compiler() {
    let maps = vec![
        ("/p".to_owned(), "/a".to_owned()),
        ("/p/q".to_owned(), "/b".to_owned()),
    ];
    assert_eq!(
        remapped(Match::String, &maps, b"/p/q/r").unwrap(),
        vec![b"/a/q/r".to_vec(), b"/b/r".to_vec()]
    );
    assert_eq!(
        remapped(Match::Components, &maps, b"/p/q/r").unwrap(),
        vec![b"/b/r".to_vec()]
    );
    assert_eq!(
        remapped(Match::String, &maps, b"/pq").unwrap(),
        vec![b"/aq".to_vec()]
    );
    assert_eq!(remapped(Match::Components, &maps, b"/pq"), None);
    assert_eq!(remapped(Match::Components, &maps, b"/x"), None);
}

#[test]
fn line_markers_are_found() {
    let text = b"# 0 \"src/a.c\"\n# 1 \"/tmp/w//\"\nint x;\n#pragma once\n# 3 \"/i/x.h\" 1 3\n";
    let found: Vec<(usize, &[u8])> = line_markers(text).collect();
    assert_eq!(
        found,
        vec![
            (0, &b"src/a.c"[..]),
            (14, &b"/tmp/w//"[..]),
            (49, &b"/i/x.h"[..])
        ]
    );
}

#[test]
fn paths_relative_to_the_cwd_as_ccache_makes_them() {
    let b = bases(&["/home"]);
    let rel = |p: &str, cwd: &str| b.relative_to_cwd(p.as_bytes(), cwd.as_bytes());
    assert_eq!(
        rel("/home/a/proj/src/a.c", "/home/a/proj/build").unwrap(),
        b"../src/a.c"
    );
    assert_eq!(
        rel("/home/a/proj/build/gen", "/home/a/proj/build").unwrap(),
        b"gen"
    );
    assert_eq!(
        rel("/home/a/proj/build", "/home/a/proj/build").unwrap(),
        b"."
    );
    assert_eq!(
        rel("/home/a/./proj//x/../inc", "/home/a/proj/b").unwrap(),
        b"../inc"
    );
    assert_eq!(rel("/home/b/x.h", "/home/a/proj").unwrap(), b"../../b/x.h");
    // Outside the base dirs (either side), and relative paths: as they are.
    assert_eq!(rel("/usr/include", "/home/a"), None);
    assert_eq!(rel("/home/a/x", "/tmp/build"), None);
    assert_eq!(rel("src/a.c", "/home/a"), None);
    // Two checkouts agree.
    assert_eq!(
        rel("/home/a/proj/src/a.c", "/home/a/proj/build"),
        rel("/home/b/proj/src/a.c", "/home/b/proj/build")
    );
    assert_eq!(
        join_relative(b"/home/b/proj/build", b"../src/a.c"),
        b"/home/b/proj/src/a.c"
    );
    assert_eq!(join_relative(b"/home/b/proj", b"."), b"/home/b/proj");
}

#[test]
fn paths_are_rewritten_whole_and_longest_first() {
    let pairs = vec![
        (b"/home/a/proj/src".to_vec(), b"/home/bb/proj/src".to_vec()),
        (b"/home/a/proj".to_vec(), b"/home/bb/proj".to_vec()),
    ];
    let text = b"/home/a/proj/src/a.c:3: warning: x\nIn file included from /home/a/proj/inc/x.h:1,\n/home/a/project/y.h /x/home/a/proj/z.h";
    assert_eq!(
        String::from_utf8(rewrite_paths(text, &pairs)).unwrap(),
        "/home/bb/proj/src/a.c:3: warning: x\nIn file included from /home/bb/proj/inc/x.h:1,\n/home/a/project/y.h /x/home/a/proj/z.h"
    );
    assert_eq!(rewrite_paths(b"", &pairs), b"");
}

#[test]
fn paths_in_coloured_diagnostics_are_rewritten() {
    let pairs = vec![(b"/home/a/proj".to_vec(), b"/home/b/proj".to_vec())];
    let text = b"\x1b[01m\x1b[K/home/a/proj/x.h:1:\x1b[m\x1b[K warning";
    assert_eq!(
        rewrite_paths(text, &pairs),
        b"\x1b[01m\x1b[K/home/b/proj/x.h:1:\x1b[m\x1b[K warning"
    );
    assert_eq!(rewrite_paths(b"xK/home/a/proj", &pairs), b"xK/home/a/proj");
}
