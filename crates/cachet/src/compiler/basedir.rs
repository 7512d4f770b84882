//! Base dirs: keys that do not depend on where a checkout (or CARGO_HOME) lives.
//!
//! A path under base dir number `i` enters a key as `<base i>/rest`. That form is used only
//! where the output cannot depend on the location: the cwd when no debug info records it
//! (or when a prefix map rewrites what it records), and the OLD side of prefix maps. Paths
//! the output embeds as they are (dependency files, `__FILE__`, debug info without a map)
//! stay literal; see docs/config.md for the rules per compiler.
//!
//! Relativizing the OLD side of a map drops where it points, so a literal path in the same
//! key could be rewritten by the map in one checkout and not in another. Every such path is
//! therefore keyed with what the map turns it into as well ([`Maps::mapped_forms`]).

use std::os::unix::ffi::OsStrExt;

use crate::cache::CacheKey;
use crate::compiler::key::KeyHasher;

/// The client's base dirs, as normalized by its config (absolute, no trailing slash).
#[derive(Debug, Clone, Default)]
pub struct BaseDirs {
    dirs: Vec<Vec<u8>>,
}

impl BaseDirs {
    pub fn new(dirs: Vec<Vec<u8>>) -> BaseDirs {
        // Defensive: the protocol carries whatever a client sends.
        let dirs = dirs
            .into_iter()
            .filter(|d| d.len() > 1 && d.starts_with(b"/") && !d.ends_with(b"/"))
            .collect();
        BaseDirs { dirs }
    }

    pub fn is_empty(&self) -> bool {
        self.dirs.is_empty()
    }

    /// `<base i>/rest` for a path equal to or under base dir `i`, by whole components.
    pub fn relativize(&self, path: &[u8]) -> Option<Vec<u8>> {
        self.dirs.iter().enumerate().find_map(|(i, dir)| {
            let rest = path.strip_prefix(dir.as_slice())?;
            (rest.is_empty() || rest.starts_with(b"/"))
                .then(|| [format!("<base {i}>").as_bytes(), rest].concat())
        })
    }

    /// The relativized form, or the path itself, tagged so the two can never collide.
    pub fn key_form(&self, path: &[u8]) -> Vec<u8> {
        match self.relativize(path) {
            Some(rel) => [b"rel:".as_slice(), &rel].concat(),
            None => [b"abs:".as_slice(), path].concat(),
        }
    }

    /// Whether `path` is a base dir or under one (by whole components).
    pub fn covers(&self, path: &[u8]) -> bool {
        self.relativize(path).is_some()
    }

    /// `path` relative to `cwd` (`../src/a.c`), when both lie under base dirs: how C
    /// compiles of two checkouts name the same file alike (ccache's `base_dir` rule). Both
    /// are taken as written, component by component, with no file system access.
    pub fn relative_to_cwd(&self, path: &[u8], cwd: &[u8]) -> Option<Vec<u8>> {
        if !(path.starts_with(b"/") && self.covers(path) && self.covers(cwd)) {
            return None;
        }
        let (path, cwd) = (normalize(path), normalize(cwd));
        let common = path.iter().zip(&cwd).take_while(|(a, b)| a == b).count();
        let mut out: Vec<&[u8]> = vec![b".."; cwd.len() - common];
        out.extend(&path[common..]);
        Some(match out.is_empty() {
            true => b".".to_vec(),
            false => out.join(&b'/'),
        })
    }

    /// A key for "the same compile running now": unlike a key that leaves the cwd out (C
    /// direct mode) or relativizes it (base dirs), it tells build dirs and checkouts apart,
    /// so a compile never follows one that reads another directory's files.
    pub fn inflight_key(&self, key: &CacheKey, cwd: &[u8]) -> CacheKey {
        let mut h = KeyHasher::new(b"cachet in-flight v1");
        h.field(&key.0);
        h.field(cwd);
        for dir in &self.dirs {
            h.field(dir);
        }
        h.finish()
    }
}

/// The components of an absolute path, with `.` and empty ones dropped and `..` applied.
fn normalize(path: &[u8]) -> Vec<&[u8]> {
    let mut parts: Vec<&[u8]> = Vec::new();
    for part in path.split(|&b| b == b'/') {
        match part {
            b"" | b"." => {}
            b".." => {
                parts.pop();
            }
            _ => parts.push(part),
        }
    }
    parts
}

/// `text` with every path that starts with one of `pairs`' stored forms (at a path
/// boundary: not inside a longer name) starting with its requester form instead. `pairs`
/// are tried longest first. Used on a hit's dependency file and diagnostics.
pub fn rewrite_paths(text: &[u8], pairs: &[(Vec<u8>, Vec<u8>)]) -> Vec<u8> {
    let name_byte = |b: u8| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.');
    let mut ordered: Vec<&(Vec<u8>, Vec<u8>)> =
        pairs.iter().filter(|(a, _)| !a.is_empty()).collect();
    ordered.sort_by_key(|(stored, _)| std::cmp::Reverse(stored.len()));
    let mut out = Vec::with_capacity(text.len());
    let mut i = 0;
    while i < text.len() {
        let starts_name =
            i == 0 || !name_byte(text[i - 1]) && text[i - 1] != b'/' || ends_colour(&text[..i]);
        let found = starts_name
            .then(|| {
                ordered.iter().find(|(stored, _)| {
                    text[i..].starts_with(stored)
                        && text.get(i + stored.len()).is_none_or(|&b| !name_byte(b))
                })
            })
            .flatten();
        match found {
            Some((stored, requester)) => {
                out.extend_from_slice(requester);
                i += stored.len();
            }
            None => {
                out.push(text[i]);
                i += 1;
            }
        }
    }
    out
}

/// Whether `text` ends with a colour or erase-line escape (`ESC [ 01 m`, `ESC [ K`): a
/// coloured diagnostic's path follows one directly.
fn ends_colour(text: &[u8]) -> bool {
    let Some((&last, rest)) = text.split_last() else {
        return false;
    };
    let params = rest
        .iter()
        .rev()
        .take_while(|b| b.is_ascii_digit() || **b == b';')
        .count();
    matches!(last, b'm' | b'K') && rest[..rest.len() - params].ends_with(b"\x1b[")
}

/// `cwd` joined with `relative` (a [`BaseDirs::relative_to_cwd`] form), normalized.
pub fn join_relative(cwd: &[u8], relative: &[u8]) -> Vec<u8> {
    let joined = [cwd, b"/", relative].concat();
    let parts = normalize(&joined);
    [b"/".as_slice(), &parts.join(&b'/')].concat()
}

/// The absolute paths among C `args` that a key names relative to the cwd: where the
/// outputs record one of them (or the cwd), a variant serves only its own cwd; where the
/// dependency file or a diagnostic names one, a hit rewrites it for the requester.
pub fn rebased_paths(base: &BaseDirs, cwd: &[u8], args: &[std::ffi::OsString]) -> Vec<Vec<u8>> {
    if base.is_empty() {
        return Vec::new();
    }
    args.iter()
        .filter_map(|arg| {
            let token = arg.as_bytes();
            let (at, _) = rebase_token(base, cwd, token)?;
            Some(token[at..].to_vec())
        })
        .collect()
}

/// Where the path in `token` starts and its form relative to `cwd`, when it is absolute
/// and under a base dir: the whole token (`/abs/a.c`) or what follows a flag (`-I/abs`,
/// `--sysroot=/abs`). Prefix-map arguments (already rewritten, with a NUL) are left alone.
pub fn rebase_token(base: &BaseDirs, cwd: &[u8], token: &[u8]) -> Option<(usize, Vec<u8>)> {
    if token.contains(&0) {
        return None;
    }
    let at = match token.first()? {
        b'/' => 0,
        b'-' => token.iter().position(|&b| b == b'/')?,
        _ => return None,
    };
    Some((at, base.relative_to_cwd(&token[at..], cwd)?))
}

/// How a compiler matches a prefix map's OLD against a path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Match {
    /// gcc and clang: plain string prefix.
    String,
    /// rustc: whole path components (`Path::strip_prefix`).
    Components,
}

/// The prefix maps whose OLD side was relativized in a key.
#[derive(Debug, Clone, Default)]
pub struct Maps {
    maps: Vec<(Vec<u8>, Vec<u8>)>,
    rule: Option<Match>,
}

impl Maps {
    pub fn is_empty(&self) -> bool {
        self.maps.is_empty()
    }

    /// What each relativized map turns an absolute `path` into, in map order; empty when
    /// none applies.
    pub fn mapped_forms(&self, path: &[u8]) -> Vec<Vec<u8>> {
        let rule = self.rule.unwrap_or(Match::String);
        self.maps
            .iter()
            .filter_map(|(old, new)| apply(rule, old, new, path))
            .collect()
    }
}

fn apply(rule: Match, old: &[u8], new: &[u8], path: &[u8]) -> Option<Vec<u8>> {
    if old.is_empty() {
        return None;
    }
    let rest = path.strip_prefix(old)?;
    match rule {
        Match::String => Some([new, rest].concat()),
        Match::Components => {
            let old_is_dir = old.ends_with(b"/");
            if !(rest.is_empty() || old_is_dir || rest.starts_with(b"/")) {
                return None;
            }
            let rest = rest.strip_prefix(b"/").unwrap_or(rest);
            Some(if rest.is_empty() {
                new.to_vec()
            } else if new.ends_with(b"/") || new.is_empty() {
                [new, rest].concat()
            } else {
                [new, b"/", rest].concat()
            })
        }
    }
}

/// What a compiler records for `path` under `maps` (OLD, NEW), as it does: rustc takes the
/// last matching map; gcc and clang differ, so for them every matching map's result is a
/// candidate. None when no map applies.
pub fn remapped(rule: Match, maps: &[(String, String)], path: &[u8]) -> Option<Vec<Vec<u8>>> {
    let found: Vec<Vec<u8>> = maps
        .iter()
        .filter_map(|(old, new)| apply(rule, old.as_bytes(), new.as_bytes(), path))
        .collect();
    match rule {
        _ if found.is_empty() => None,
        Match::Components => found.last().map(|last| vec![last.clone()]),
        Match::String => Some(found),
    }
}

/// Rewrites the key form of prefix-map arguments: in `FLAG` + `OLD=NEW`, an OLD under a
/// base dir becomes its relative form: relative to `cwd` when given and both lie under
/// base dirs (C), else `<base i>/rest`. `split_last` says whether OLD ends at the last `=`
/// (rustc) or the first (gcc, clang). Returns the rewritten tokens and the maps rewritten.
pub fn relativize_map_args(
    base: &BaseDirs,
    cwd: Option<&[u8]>,
    tokens: &[Vec<u8>],
    flags: &[&str],
    split_last: bool,
    rule: Match,
) -> (Vec<Vec<u8>>, Maps) {
    let relative = |old: &[u8]| match cwd.and_then(|cwd| base.relative_to_cwd(old, cwd)) {
        Some(rel) => Some([b"rel:".as_slice(), &rel].concat()),
        None => base.relativize(old),
    };
    let mut maps = Maps {
        maps: Vec::new(),
        rule: Some(rule),
    };
    let mut out = Vec::with_capacity(tokens.len());
    let mut value_next = false;
    for token in tokens {
        let (head, value): (&[u8], &[u8]) = if value_next {
            value_next = false;
            (b"", token)
        } else if let Some(flag) = flags.iter().find(|f| token.as_slice() == f.as_bytes()) {
            // The map is the next token (`--remap-path-prefix FROM=TO`).
            value_next = !flag.ends_with('=');
            out.push(token.clone());
            continue;
        } else if let Some(flag) = flags.iter().find(|f| {
            let f = f.as_bytes();
            token.starts_with(f) && token.len() > f.len()
        }) {
            let head_len = flag.len() + usize::from(!flag.ends_with('='));
            if !flag.ends_with('=') && token.get(flag.len()) != Some(&b'=') {
                out.push(token.clone());
                continue;
            }
            (&token[..head_len], &token[head_len..])
        } else {
            out.push(token.clone());
            continue;
        };
        let split = if split_last {
            value.iter().rposition(|&b| b == b'=')
        } else {
            value.iter().position(|&b| b == b'=')
        };
        match split.and_then(|at| Some((at, relative(&value[..at])?))) {
            Some((at, rel)) => {
                maps.maps
                    .push((value[..at].to_vec(), value[at + 1..].to_vec()));
                out.push([head, b"\0", &rel, &value[at..]].concat());
            }
            None => out.push(token.clone()),
        }
    }
    (out, maps)
}

/// Line markers (`# 12 "path" flags`) of preprocessed text: (start of the line, the path).
pub fn line_markers(text: &[u8]) -> impl Iterator<Item = (usize, &[u8])> {
    let mut at = 0;
    std::iter::from_fn(move || {
        while at < text.len() {
            let start = at;
            let end = text[at..]
                .iter()
                .position(|&b| b == b'\n')
                .map_or(text.len(), |n| at + n);
            at = end + 1;
            let line = &text[start..end];
            let Some(rest) = line.strip_prefix(b"# ") else {
                continue;
            };
            let digits = rest.iter().take_while(|b| b.is_ascii_digit()).count();
            let Some(quoted) = rest[digits..].strip_prefix(b" \"").filter(|_| digits > 0) else {
                continue;
            };
            // Escaped quotes would need unescaping; such a marker is simply left alone.
            if let Some(close) = quoted.iter().position(|&b| b == b'"' || b == b'\\')
                && quoted[close] == b'"'
            {
                return Some((start, &quoted[..close]));
            }
        }
        None
    })
}

#[cfg(test)]
mod tests;
