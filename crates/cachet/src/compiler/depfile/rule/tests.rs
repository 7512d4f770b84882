//! The fixtures are what gcc 12.2 and clang 14 wrote for one source with headers named
//! `a b.h`, `d$x.h` and `h#q.h`, once with `-MMD -MP -MT 'x y' -MQ 'out $#/t.o'` and once
//! with `-MMD -o 'build dir/very/long/path/to/the/object/file/t.o'`.

use super::*;

const GCC_SHORT: &str = "x y out\\ $$\\#/t.o: t.c a\\ b.h d$$x.h h\\#q.h \\\n a_rather_long_header_name_to_force_wrapping_of_the_line.h \\\n sub/another_long_header_name_for_wrapping.h\na\\ b.h:\nd$$x.h:\nh\\#q.h:\na_rather_long_header_name_to_force_wrapping_of_the_line.h:\nsub/another_long_header_name_for_wrapping.h:\n";
const GCC_LONG: &str = "build\\ dir/very/long/path/to/the/object/file/t.o: t.c a\\ b.h d$$x.h \\\n h\\#q.h a_rather_long_header_name_to_force_wrapping_of_the_line.h \\\n sub/another_long_header_name_for_wrapping.h\n";
const CLANG_SHORT: &str = "x y out\\ $$\\#/t.o: t.c a\\ b.h d$$x.h h\\#q.h \\\n  a_rather_long_header_name_to_force_wrapping_of_the_line.h \\\n  sub/another_long_header_name_for_wrapping.h\n\na\\ b.h:\n\nd$$x.h:\n\nh\\#q.h:\n\na_rather_long_header_name_to_force_wrapping_of_the_line.h:\n\nsub/another_long_header_name_for_wrapping.h:\n";
const CLANG_LONG: &str = "build\\ dir/very/long/path/to/the/object/file/t.o: t.c a\\ b.h d$$x.h h\\#q.h \\\n  a_rather_long_header_name_to_force_wrapping_of_the_line.h \\\n  sub/another_long_header_name_for_wrapping.h\n";

fn short_targets() -> Vec<Target> {
    vec![
        Target {
            text: b"out $#/t.o".to_vec(),
            quoted: true,
        },
        Target {
            text: b"x y".to_vec(),
            quoted: false,
        },
    ]
}

fn long_target() -> Vec<Target> {
    vec![Target {
        text: b"build dir/very/long/path/to/the/object/file/t.o".to_vec(),
        quoted: true,
    }]
}

/// Without the phony rules: what the same compile writes without -MP.
fn first_line_only(text: &str) -> String {
    let end = text.find(".h\n").expect("rule end") + 3;
    text[..end].to_owned()
}

#[test]
fn gcc_files_retarget_into_each_other_with_gccs_wrapping() {
    let short = target_tokens(Layout::Gcc, &short_targets());
    let long = target_tokens(Layout::Gcc, &long_target());
    // -MT targets go before -MQ ones, whatever the order on the command line.
    assert_eq!(short, vec![b"x y".to_vec(), b"out\\ $$\\#/t.o".to_vec()]);
    let from_long = retarget(Layout::Gcc, GCC_LONG.as_bytes(), &short).unwrap();
    assert_eq!(
        String::from_utf8(from_long).unwrap(),
        first_line_only(GCC_SHORT)
    );
    let from_short = retarget(Layout::Gcc, GCC_SHORT.as_bytes(), &long).unwrap();
    assert!(String::from_utf8(from_short).unwrap().starts_with(GCC_LONG));
    assert_eq!(
        retarget(Layout::Gcc, GCC_SHORT.as_bytes(), &short).unwrap(),
        GCC_SHORT.as_bytes()
    );
}

#[test]
fn clang_files_retarget_into_each_other_with_clangs_wrapping() {
    let short = target_tokens(Layout::Clang, &short_targets());
    // clang keeps the command line's order.
    assert_eq!(short, vec![b"out\\ $$\\#/t.o".to_vec(), b"x y".to_vec()]);
    let written = [b"x y".to_vec(), b"out\\ $$\\#/t.o".to_vec()];
    let long = target_tokens(Layout::Clang, &long_target());
    let from_long = retarget(Layout::Clang, CLANG_LONG.as_bytes(), &written).unwrap();
    assert_eq!(
        String::from_utf8(from_long).unwrap(),
        first_line_only(CLANG_SHORT)
    );
    let from_short = retarget(Layout::Clang, CLANG_SHORT.as_bytes(), &long).unwrap();
    assert!(
        String::from_utf8(from_short)
            .unwrap()
            .starts_with(CLANG_LONG)
    );
}

#[test]
fn one_layout_does_not_pass_for_the_other() {
    let long = target_tokens(Layout::Gcc, &long_target());
    assert_eq!(retarget(Layout::Gcc, CLANG_SHORT.as_bytes(), &long), None);
    assert_eq!(retarget(Layout::Clang, GCC_SHORT.as_bytes(), &long), None);
}

#[test]
fn files_not_written_by_a_compiler_are_never_rewritten() {
    let t = vec![b"a.o".to_vec()];
    for text in [
        "",
        "\n",
        "a.o:\n",
        "no rule\n",
        "a.o: x.c  y.h\n",
        "a.o: x.c\ty.h\n",
        "a.o: x.c \\\n\n",
        ": x.c\n",
        "a.o: x.c\nx.c:\n",
    ] {
        assert_eq!(retarget(Layout::Gcc, text.as_bytes(), &t), None, "{text:?}");
    }
    assert_eq!(
        retarget(Layout::Gcc, b"b.o: x.c\n", &t).unwrap(),
        b"a.o: x.c\n"
    );
}

#[test]
fn gcc_drops_a_leading_dot_slash_from_targets() {
    let targets = [Target {
        text: b"././/obj/a.o".to_vec(),
        quoted: true,
    }];
    assert_eq!(
        target_tokens(Layout::Gcc, &targets),
        vec![b"obj/a.o".to_vec()]
    );
    assert_eq!(
        target_tokens(Layout::Clang, &targets),
        vec![b"././/obj/a.o".to_vec()]
    );
}

#[test]
fn quoting_and_its_inverse_width() {
    for (raw, quoted) in [
        (&b"a b"[..], &b"a\\ b"[..]),
        (b"a\\ b", b"a\\\\\\ b"),
        (b"a\\b", b"a\\b"),
        (b"$x#", b"$$x\\#"),
        (b"tab\there", b"tab\\\there"),
    ] {
        assert_eq!(quote(raw), quoted, "{}", String::from_utf8_lossy(raw));
        assert_eq!(
            unquoted_len(quoted),
            raw.len(),
            "{}",
            String::from_utf8_lossy(raw)
        );
    }
}

mod properties {
    use proptest::prelude::*;

    use super::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        /// Any path, escaped as gcc and clang escape it, reads back as one name of a
        /// rule (make's escaping round-trips), and its unescaped length is its own.
        /// A path ending in a backslash is left out: make itself cannot tell it from an
        /// escaped space.
        #[test]
        fn make_escaping_round_trips_for_any_path(
            paths in prop::collection::vec("[a-zA-Z0-9 _#$.\\\\/%+=-]{1,24}", 1..5)
                .prop_filter("no trailing backslash", |ps| ps.iter().all(|p| !p.ends_with('\\')))
        ) {
            let quoted: Vec<Vec<u8>> = paths.iter().map(|p| quote(p.as_bytes())).collect();
            let mut text = b"out.o:".to_vec();
            for q in &quoted {
                text.push(b' ');
                text.extend_from_slice(q);
            }
            text.push(b'\n');
            let (targets, prerequisites) = first_rule(&text).unwrap();
            prop_assert_eq!(targets, vec![b"out.o".to_vec()]);
            prop_assert_eq!(&prerequisites, &quoted);
            for (q, p) in quoted.iter().zip(&paths) {
                prop_assert_eq!(unquoted_len(q), p.len());
            }
        }
    }
}

/// Found by `make_escaping_round_trips_for_any_path`: a backslash before `$$` (a file
/// named `\$`) was read as escaping the first `$`, and clang's line wrapping counted one
/// column too many.
#[test]
fn regression_backslash_dollar_counts_as_two_columns() {
    let quoted = quote(b"\\$");
    assert_eq!(quoted, b"\\$$");
    assert_eq!(unquoted_len(&quoted), 2);
    assert_eq!(unquoted_len(&quote(b"a\\\\$b")), 5);
}
