//! The first rule of a gcc or clang dependency file, laid out byte for byte as each
//! compiler writes it, so that a hit writes the `.d` its own compile would have written.
//!
//! Sources: gcc 12 `libcpp/mkdeps.cc` (`make_write`: a name that would pass column 72
//! starts a new line, `" \\\n "`; names escaped by `munge`; `-MQ` and default targets
//! quoted, `-MT` ones not and moved before them; a leading `./` dropped; `-MP` rules
//! `name:` on their own lines) and clang 14 `clang/lib/Frontend/DependencyFile.cpp`
//! (`outputDependencyFile`: 75 columns with room kept for `" \\"`, targets continued with
//! `" \\\n  "`, prerequisites with `" \\\n "` and counted unescaped; `-MP` rules each after
//! a blank line). Both were checked against gcc 12.2 and clang 14 over targets of every
//! length up to 90 bytes, with spaces, `$` and `#` (tests/direct_mode.rs).
//!
//! A file this module cannot reproduce exactly is never rewritten: [`retarget`] says so
//! and the caller serves it only to a compile with the same targets.

/// Whose layout a dependency file has.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layout {
    Gcc,
    Clang,
}

/// One target as the command line gives it: `-MT` text is written as it is; `-MQ` text and
/// the default target (the object) are quoted for make.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub text: Vec<u8>,
    pub quoted: bool,
}

/// The targets as `layout` writes them: escaped where quoted, in the compiler's order.
pub fn target_tokens(layout: Layout, targets: &[Target]) -> Vec<Vec<u8>> {
    match layout {
        Layout::Clang => targets
            .iter()
            .map(|t| match t.quoted {
                true => quote(&t.text),
                false => t.text.clone(),
            })
            .collect(),
        Layout::Gcc => {
            // deps_add_target: an unquoted target takes the place of the first quoted one,
            // which moves to the end; names from `quote_lwm` on are quoted when written.
            let mut names: Vec<Vec<u8>> = Vec::with_capacity(targets.len());
            let mut quote_lwm = 0;
            for target in targets {
                let mut name = strip_dot_slash(&target.text).to_vec();
                if !target.quoted {
                    if quote_lwm != names.len() {
                        std::mem::swap(&mut names[quote_lwm], &mut name);
                    }
                    quote_lwm += 1;
                }
                names.push(name);
            }
            names
                .into_iter()
                .enumerate()
                .map(|(i, name)| if i >= quote_lwm { quote(&name) } else { name })
                .collect()
        }
    }
}

/// `text` (a whole dependency file) with its first rule's targets replaced by `targets`
/// (as [`target_tokens`] gives them) and the lines re-wrapped as `layout` wraps them; None
/// when `text` is not exactly what `layout` writes (then it must not be rewritten).
pub fn retarget(layout: Layout, text: &[u8], targets: &[Vec<u8>]) -> Option<Vec<u8>> {
    rewrite(layout, text, targets, |_| None)
}

/// [`retarget`], with each prerequisite (as written, escaped) that `map` returns a new
/// form for replaced by it: a hit from another checkout names its own files.
pub fn rewrite(
    layout: Layout,
    text: &[u8],
    targets: &[Vec<u8>],
    map: impl Fn(&[u8]) -> Option<Vec<u8>>,
) -> Option<Vec<u8>> {
    let (old, prerequisites) = first_rule(text)?;
    let phony = [false, true]
        .into_iter()
        .find(|&phony| render(layout, &old, &prerequisites, phony) == text)?;
    let prerequisites: Vec<Vec<u8>> = prerequisites
        .into_iter()
        .map(|name| map(&name).unwrap_or(name))
        .collect();
    Some(render(layout, targets, &prerequisites, phony))
}

/// Whether the first rule of `text` names exactly `targets` (as [`target_tokens`] gives
/// them): a file that cannot be retargeted may still serve a compile with its own targets.
pub fn names_targets(text: &[u8], targets: &[Vec<u8>]) -> bool {
    let mut wanted = targets.join(&b' ');
    wanted.extend_from_slice(b": x\n");
    match (first_rule(text), first_rule(&wanted)) {
        (Some((old, _)), Some((new, _))) => old == new,
        _ => false,
    }
}

/// gcc's `munge` and clang's `QuoteTarget`: a space or tab gets a backslash (and the
/// backslashes before it are doubled), `$` becomes `$$`, `#` becomes `\#`.
pub fn quote(name: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(name.len() + 4);
    for (i, &b) in name.iter().enumerate() {
        match b {
            b' ' | b'\t' => {
                let slashes = name[..i].iter().rev().take_while(|&&c| c == b'\\').count();
                out.extend(std::iter::repeat_n(b'\\', slashes + 1));
            }
            b'$' => out.push(b'$'),
            b'#' => out.push(b'\\'),
            _ => {}
        }
        out.push(b);
    }
    out
}

/// gcc's `apply_vpath`: leading `./` (and the slashes after it) removed.
fn strip_dot_slash(mut name: &[u8]) -> &[u8] {
    while let Some(rest) = name.strip_prefix(b"./") {
        name = rest;
        while let Some(rest) = name.strip_prefix(b"/") {
            name = rest;
        }
    }
    name
}

/// How many bytes `token` had before [`quote`]: clang counts columns on those.
fn unquoted_len(token: &[u8]) -> usize {
    let mut len = 0;
    let mut i = 0;
    while i < token.len() {
        match token[i] {
            b'\\' => {
                let run = token[i..].iter().take_while(|&&c| c == b'\\').count();
                match token.get(i + run) {
                    // Escaped: the run stands for half as many backslashes and the blank.
                    Some(b' ' | b'\t') => {
                        len += (run - 1) / 2 + 1;
                        i += run + 1;
                    }
                    // `\#` is `#`, the run's other backslashes themselves.
                    Some(b'#') => {
                        len += run;
                        i += run + 1;
                    }
                    // Literal backslashes; what follows (a `$$`, say) is read on its own.
                    _ => {
                        len += run;
                        i += run;
                    }
                }
            }
            b'$' if token.get(i + 1) == Some(&b'$') => {
                len += 1;
                i += 2;
            }
            _ => {
                len += 1;
                i += 1;
            }
        }
    }
    len
}

/// Names as a dependency file writes them (escapes kept).
type Names = Vec<Vec<u8>>;

/// The first rule's targets and prerequisites.
fn first_rule(text: &[u8]) -> Option<(Names, Names)> {
    let (mut targets, mut prerequisites) = (Vec::new(), Vec::new());
    let mut in_prerequisites = false;
    let mut token = Vec::new();
    let mut i = 0;
    let mut finish = |token: &mut Vec<u8>, in_prerequisites: &mut bool| {
        if token.is_empty() {
            return;
        }
        if *in_prerequisites {
            prerequisites.push(std::mem::take(token));
        } else if token.last() == Some(&b':') {
            token.pop();
            if !token.is_empty() {
                targets.push(std::mem::take(token));
            }
            *in_prerequisites = true;
        } else {
            targets.push(std::mem::take(token));
        }
    };
    while i < text.len() {
        match text[i] {
            b'\\' if text.get(i + 1) == Some(&b'\n') => {
                finish(&mut token, &mut in_prerequisites);
                i += 2;
            }
            b'\\' if i + 1 < text.len() => {
                token.extend_from_slice(&text[i..i + 2]);
                i += 2;
            }
            b' ' | b'\t' => {
                finish(&mut token, &mut in_prerequisites);
                i += 1;
            }
            b'\n' => break,
            b => {
                token.push(b);
                i += 1;
            }
        }
    }
    finish(&mut token, &mut in_prerequisites);
    (in_prerequisites && !targets.is_empty() && !prerequisites.is_empty())
        .then_some((targets, prerequisites))
}

/// The whole file `layout` writes for these (escaped) names.
fn render(layout: Layout, targets: &[Vec<u8>], prerequisites: &[Vec<u8>], phony: bool) -> Vec<u8> {
    let mut out = Vec::with_capacity(64 * (targets.len() + prerequisites.len()));
    match layout {
        Layout::Gcc => {
            const LIMIT: usize = 72;
            let mut column = 0;
            let write = |out: &mut Vec<u8>, name: &[u8], column: &mut usize| {
                if *column > 0 {
                    if *column + name.len() > LIMIT {
                        out.extend_from_slice(b" \\\n");
                        *column = 0;
                    }
                    *column += 1;
                    out.push(b' ');
                }
                *column += name.len();
                out.extend_from_slice(name);
            };
            for target in targets {
                write(&mut out, target, &mut column);
            }
            out.push(b':');
            column += 1;
            for name in prerequisites {
                write(&mut out, name, &mut column);
            }
            out.push(b'\n');
            if phony {
                for name in prerequisites.iter().skip(1) {
                    out.extend_from_slice(name);
                    out.extend_from_slice(b":\n");
                }
            }
        }
        Layout::Clang => {
            const MAX_COLUMNS: usize = 75;
            let mut column = 0;
            for target in targets {
                let n = target.len();
                if column == 0 {
                    column = n;
                } else if column + n + 2 > MAX_COLUMNS {
                    column = n + 2;
                    out.extend_from_slice(b" \\\n  ");
                } else {
                    column += n + 1;
                    out.push(b' ');
                }
                out.extend_from_slice(target);
            }
            out.push(b':');
            column += 1;
            for name in prerequisites {
                let n = unquoted_len(name);
                if column + n + 1 + 2 > MAX_COLUMNS {
                    out.extend_from_slice(b" \\\n ");
                    column = 2;
                }
                out.push(b' ');
                out.extend_from_slice(name);
                column += n + 1;
            }
            out.push(b'\n');
            if phony {
                for name in prerequisites.iter().skip(1) {
                    out.push(b'\n');
                    out.extend_from_slice(name);
                    out.extend_from_slice(b":\n");
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod tests;
