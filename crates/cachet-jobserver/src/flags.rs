//! Reading and rewriting `MAKEFLAGS`-style values.
//!
//! GNU make writes `MAKEFLAGS` as an optional leading word of single-letter
//! flags without a dash (`ks`), then dashed options, then ` -- ` and variable
//! definitions. Spaces inside a word are escaped with a backslash.

use std::path::PathBuf;

/// Where a `MAKEFLAGS`-style value says the jobserver is (the two Unix styles of the GNU
/// make jobserver protocol).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JobserverAuth {
    /// `--jobserver-auth=R,W` (or `--jobserver-fds=R,W` before make 4.2): two file
    /// descriptors the process should have inherited. Only parsed: nothing says they are
    /// open, nor that they are a pipe (see [`inherited`](crate::inherited)).
    Pipe {
        /// The fd number to read tokens from; never negative.
        read: i32,
        /// The fd number to write tokens back to; never negative.
        write: i32,
    },
    /// `--jobserver-auth=fifo:PATH`: a named pipe (make 4.4 and later), opened by path.
    Fifo(PathBuf),
}

/// The build's `-jN` in `value` (GNU make writes ` -j8 --jobserver-auth=…` into MAKEFLAGS
/// of its children); the last one wins. None for a bare `-j` (cargo's CARGO_MAKEFLAGS) or
/// when there is none.
pub fn jobs(value: &str) -> Option<u32> {
    value
        .split_whitespace()
        .filter_map(|w| w.strip_prefix("-j"))
        .filter_map(|n| n.parse().ok())
        .next_back()
}

/// Finds the jobserver named by `value`. The last `--jobserver-auth=` or
/// `--jobserver-fds=` word wins, as in GNU make; `None` if there is none, it is
/// malformed, or it has negative fds (make's way of saying "no jobserver").
pub fn parse(value: &str) -> Option<JobserverAuth> {
    let mut last = None;
    for word in words(value) {
        // Past `--` come variable definitions, not options.
        if word == "--" {
            break;
        }
        if let Some(v) = word
            .strip_prefix("--jobserver-auth=")
            .or_else(|| word.strip_prefix("--jobserver-fds="))
        {
            last = Some(v);
        }
    }
    let value = last?;
    if let Some(path) = value.strip_prefix("fifo:") {
        let path = unescape(path);
        return (!path.is_empty()).then(|| JobserverAuth::Fifo(path.into()));
    }
    let (r, w) = value.split_once(',')?;
    let read: i32 = r.parse().ok()?;
    let write: i32 = w.parse().ok()?;
    // Make uses negative numbers to mean "no jobserver".
    (read >= 0 && write >= 0).then_some(JobserverAuth::Pipe { read, write })
}

/// `value` with every jobserver word (`--jobserver-auth=…`, `--jobserver-fds=…`,
/// `--jobserver-style=…`) and every job count (`-j`, `-jN`, `-j N`, `--jobs=N`)
/// removed; other flags and variable definitions are kept in order.
pub fn strip(value: &str) -> String {
    strip_words(value).join(" ")
}

/// The `MAKEFLAGS` and `MFLAGS` values that point a child at the pipe pool
/// `read,write`, keeping the non-jobserver words of `inherited`.
pub(crate) fn compose(inherited: Option<&str>, read: i32, write: i32) -> (String, String) {
    let kept = inherited.map(strip_words).unwrap_or_default();
    let (flags, vars) = match kept.iter().position(|w| w == "--") {
        Some(i) => (&kept[..i], &kept[i + 1..]),
        None => (&kept[..], &[][..]),
    };
    let pool = pool_words(read, write);

    let mut makeflags: Vec<&str> = flags.iter().map(String::as_str).collect();
    makeflags.push(&pool);
    if !vars.is_empty() {
        makeflags.push("--");
        makeflags.extend(vars.iter().map(String::as_str));
    }

    // MFLAGS has no variables and its first word always starts with a dash.
    let mut mflags: Vec<String> = Vec::new();
    for (i, w) in flags.iter().enumerate() {
        if w.starts_with('-') {
            mflags.push(w.clone());
        } else if i == 0 && !w.contains('=') {
            mflags.push(format!("-{w}"));
        }
    }
    mflags.push(pool.clone());

    (makeflags.join(" "), mflags.join(" "))
}

/// The words that name a pipe pool, both spellings so that make older than
/// 4.2 (`--jobserver-fds`) and newer tools (`--jobserver-auth`) find it.
pub(crate) fn pool_words(read: i32, write: i32) -> String {
    format!("-j --jobserver-fds={read},{write} --jobserver-auth={read},{write}")
}

/// What to do with the word after the current one.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Next {
    Normal,
    /// Drop it if it is a job count (`-j 4`, `--jobs 4`).
    DropCount,
    /// Drop it whatever it is (`--jobserver-auth 3,4`).
    DropAny,
    /// Keep it untouched: it is an option's argument (`-C dir`).
    KeepAny,
}

fn strip_words(value: &str) -> Vec<String> {
    let mut kept = Vec::new();
    let mut next = Next::Normal;
    let mut in_vars = false;
    for (idx, word) in words(value).into_iter().enumerate() {
        let this = std::mem::replace(&mut next, Next::Normal);
        if in_vars {
            kept.push(word.to_owned());
            continue;
        }
        match this {
            Next::DropAny => continue,
            Next::DropCount if is_count(word) => continue,
            Next::KeepAny => {
                kept.push(word.to_owned());
                continue;
            }
            _ => {}
        }
        if word == "--" {
            in_vars = true;
            kept.push(word.to_owned());
        } else if let Some(long) = word.strip_prefix("--") {
            match long {
                "jobserver-auth" | "jobserver-fds" | "jobserver-style" => next = Next::DropAny,
                "jobs" => next = Next::DropCount,
                _ if long.starts_with("jobserver-auth=")
                    || long.starts_with("jobserver-fds=")
                    || long.starts_with("jobserver-style=")
                    || long.starts_with("jobs=") => {}
                _ => kept.push(word.to_owned()),
            }
        } else if let Some(cluster) = word.strip_prefix('-') {
            let (rest, after) = strip_cluster(cluster);
            next = after;
            if !rest.is_empty() {
                kept.push(format!("-{rest}"));
            }
        } else if idx == 0 && !word.contains('=') {
            // Make's leading word of single-letter flags, written without a dash.
            let (rest, after) = strip_cluster(word);
            next = after;
            if !rest.is_empty() {
                kept.push(rest);
            }
        } else {
            kept.push(word.to_owned());
        }
    }
    // A `--` with nothing after it says nothing.
    if kept.last().is_some_and(|w| w == "--") {
        kept.pop();
    }
    kept
}

/// Removes `j` and its digits from a cluster of short options (without the
/// dash). Stops at an option whose argument is attached, so `-Cjunk` survives.
fn strip_cluster(cluster: &str) -> (String, Next) {
    let mut out = String::new();
    let mut chars = cluster.char_indices().peekable();
    while let Some((i, c)) = chars.next() {
        match c {
            'j' => {
                let mut digits = false;
                while chars.peek().is_some_and(|(_, d)| d.is_ascii_digit()) {
                    chars.next();
                    digits = true;
                }
                if !digits && chars.peek().is_none() {
                    return (out, Next::DropCount);
                }
            }
            // Options that take an argument: the rest of the word is it.
            'C' | 'f' | 'I' | 'o' | 'W' | 'l' | 'O' => {
                out.push_str(&cluster[i..]);
                let required = matches!(c, 'C' | 'f' | 'I' | 'o' | 'W');
                let attached = i + c.len_utf8() < cluster.len();
                let after = if required && !attached {
                    Next::KeepAny
                } else {
                    Next::Normal
                };
                return (out, after);
            }
            _ => out.push(c),
        }
    }
    (out, Next::Normal)
}

fn is_count(word: &str) -> bool {
    !word.is_empty() && word.bytes().all(|b| b.is_ascii_digit())
}

/// Splits on unescaped ASCII whitespace; words keep their backslashes.
fn words(value: &str) -> Vec<&str> {
    let bytes = value.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        while i < bytes.len() && bytes[i].is_ascii_whitespace() {
            i += 1;
        }
        if i == bytes.len() {
            break;
        }
        let start = i;
        while i < bytes.len() && !bytes[i].is_ascii_whitespace() {
            i += if bytes[i] == b'\\' && i + 1 < bytes.len() {
                2
            } else {
                1
            };
        }
        // `i` stops at ASCII whitespace or the end, so it is a char boundary.
        out.push(&value[start..i]);
    }
    out
}

fn unescape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        // A trailing lone backslash stays as it is.
        let escaped = if c == '\\' { chars.next() } else { None };
        out.push(escaped.unwrap_or(c));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jobs_is_the_last_numbered_j() {
        assert_eq!(jobs(" -j3 --jobserver-auth=3,4"), Some(3));
        assert_eq!(jobs("-j --jobserver-fds=3,4 --jobserver-auth=3,4"), None);
        assert_eq!(jobs("-j2 -j8"), Some(8));
        assert_eq!(jobs(""), None);
    }

    #[test]
    fn parse_pipe_and_last_wins() {
        assert_eq!(
            parse("-j --jobserver-fds=3,4 --jobserver-auth=5,6"),
            Some(JobserverAuth::Pipe { read: 5, write: 6 })
        );
        assert_eq!(
            parse("--jobserver-auth=5,6 --jobserver-fds=3,4"),
            Some(JobserverAuth::Pipe { read: 3, write: 4 })
        );
        assert_eq!(
            parse("ks -j2 --jobserver-auth=7,8"),
            Some(JobserverAuth::Pipe { read: 7, write: 8 })
        );
    }

    #[test]
    fn parse_fifo() {
        assert_eq!(
            parse("-j4 --jobserver-auth=fifo:/tmp/GMfifo12"),
            Some(JobserverAuth::Fifo("/tmp/GMfifo12".into()))
        );
        assert_eq!(
            parse("--jobserver-auth=fifo:/tmp/a\\ b"),
            Some(JobserverAuth::Fifo("/tmp/a b".into()))
        );
    }

    #[test]
    fn parse_rejects_missing_or_malformed() {
        assert_eq!(parse(""), None);
        assert_eq!(parse("-k -j4"), None);
        assert_eq!(parse("--jobserver-auth=3"), None);
        assert_eq!(parse("--jobserver-auth=a,b"), None);
        assert_eq!(parse("--jobserver-auth=-1,-1"), None);
        assert_eq!(parse("--jobserver-auth=fifo:"), None);
        // Variables are not options.
        assert_eq!(parse("-k -- X=--jobserver-auth=3,4"), None);
    }

    #[test]
    fn strip_drops_jobserver_and_job_counts() {
        assert_eq!(strip("-j --jobserver-fds=3,4 --jobserver-auth=3,4"), "");
        assert_eq!(strip("ks -j4 --jobserver-auth=7,8"), "ks");
        assert_eq!(
            strip("-k --jobs=3 --no-print-directory"),
            "-k --no-print-directory"
        );
        assert_eq!(strip("-j 8 -k"), "-k");
        assert_eq!(strip("--jobs 8 -k"), "-k");
        assert_eq!(strip("-kj8 -s"), "-k -s");
        assert_eq!(strip("kj"), "k");
        assert_eq!(strip("--jobserver-auth=fifo:/tmp/x -k"), "-k");
        assert_eq!(strip("--jobserver-style=fifo -k"), "-k");
    }

    #[test]
    fn strip_keeps_arguments_and_variables() {
        assert_eq!(strip("-Cjunk -j2"), "-Cjunk");
        assert_eq!(strip("-C -j2 -k"), "-C -j2 -k");
        assert_eq!(strip("-k -- CC=gcc X=-j4"), "-k -- CC=gcc X=-j4");
        assert_eq!(strip("-j2 --"), "");
        assert_eq!(strip("-k -- A=a\\ b"), "-k -- A=a\\ b");
        assert_eq!(strip("FOO=bar -j2"), "FOO=bar");
    }

    #[test]
    fn compose_places_pool_before_variables() {
        let (mk, mf) = compose(Some("ks -j4 --jobserver-auth=7,8 -- CC=gcc"), 3, 4);
        assert_eq!(
            mk,
            "ks -j --jobserver-fds=3,4 --jobserver-auth=3,4 -- CC=gcc"
        );
        assert_eq!(mf, "-ks -j --jobserver-fds=3,4 --jobserver-auth=3,4");
        let (mk, mf) = compose(None, 5, 6);
        assert_eq!(mk, "-j --jobserver-fds=5,6 --jobserver-auth=5,6");
        assert_eq!(mf, mk);
    }
}
