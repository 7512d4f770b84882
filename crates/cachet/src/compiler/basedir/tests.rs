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
    let (out, maps) = relativize_map_args(&b, &toks, &flags, false, Match::String);
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
    let (out, maps) =
        relativize_map_args(&b, &rust, &["--remap-path-prefix"], true, Match::Components);
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
