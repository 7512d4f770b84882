//! Make-style dependency files (`.d`): rustc's dep-info (the sources a crate read and, in
//! `# env-dep:` comments, the variables it looked at), and gcc's and clang's `-MD`/`-MMD`
//! files, whose first rule a hit rewrites for its own target ([`retarget`]): the target is
//! the only part of such a file that names the output, so it stays out of the key.

use std::path::PathBuf;

mod rule;

pub use rule::{Layout, Target, names_targets, quote, retarget, rewrite, target_tokens};

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DepFile {
    /// Every file of the first rule's prerequisites, as written (relative to the cwd or
    /// absolute), in order and without duplicates.
    pub sources: Vec<PathBuf>,
    /// `# env-dep:NAME=value` lines: what `env!`/`option_env!` read (None: was unset).
    pub env: Vec<(String, Option<String>)>,
}

/// Splits a make prerequisite list, honouring `\ ` escapes for spaces.
fn split_paths(list: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut current = String::new();
    let mut chars = list.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\\' if chars.peek() == Some(&' ') => {
                current.push(' ');
                chars.next();
            }
            ' ' | '\t' => {
                if !current.is_empty() {
                    out.push(std::mem::take(&mut current));
                }
            }
            _ => current.push(c),
        }
    }
    if !current.is_empty() {
        out.push(current);
    }
    out
}

/// Finds the `target: prerequisites` separator: the first `: ` not escaped.
fn rule_split(line: &str) -> Option<(&str, &str)> {
    let bytes = line.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\' {
            i += 2;
            continue;
        }
        if bytes[i] == b':' && (i + 1 == bytes.len() || bytes[i + 1] == b' ') {
            return Some((&line[..i], &line[i + 1..]));
        }
        i += 1;
    }
    None
}

/// The first rule's prerequisites and the `# env-dep:` lines of `text`; lines that are
/// neither are ignored (a malformed file yields what could be read).
pub fn parse(text: &str) -> DepFile {
    let mut info = DepFile::default();
    let mut first_rule = true;
    for line in text.lines() {
        if let Some(dep) = line.strip_prefix("# env-dep:") {
            let (name, value) = match dep.split_once('=') {
                Some((name, value)) => (name, Some(value.to_owned())),
                None => (dep, None),
            };
            info.env.push((name.to_owned(), value));
            continue;
        }
        if line.starts_with('#') || line.trim().is_empty() {
            continue;
        }
        if first_rule && let Some((_, prerequisites)) = rule_split(line) {
            first_rule = false;
            for path in split_paths(prerequisites) {
                let path = PathBuf::from(path);
                if !info.sources.contains(&path) {
                    info.sources.push(path);
                }
            }
        }
    }
    info
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_sources_and_env_deps() {
        let text = "/t/deps/libfoo-1.rmeta: src/lib.rs src/a\\ b.rs /o/out/gen.rs\n\n\
                    /t/deps/foo-1.d: src/lib.rs src/a\\ b.rs /o/out/gen.rs\n\n\
                    src/lib.rs:\nsrc/a\\ b.rs:\n/o/out/gen.rs:\n\n\
                    # env-dep:CARGO_PKG_NAME=foo\n# env-dep:MAYBE\n# env-dep:EQ=a=b\n";
        let info = parse(text);
        assert_eq!(
            info.sources,
            vec![
                PathBuf::from("src/lib.rs"),
                PathBuf::from("src/a b.rs"),
                PathBuf::from("/o/out/gen.rs")
            ]
        );
        assert_eq!(
            info.env,
            vec![
                ("CARGO_PKG_NAME".to_owned(), Some("foo".to_owned())),
                ("MAYBE".to_owned(), None),
                ("EQ".to_owned(), Some("a=b".to_owned())),
            ]
        );
    }

    #[test]
    fn empty_and_garbage_inputs() {
        assert_eq!(parse(""), DepFile::default());
        assert_eq!(parse("no rule here\n").sources.len(), 0);
    }
}
