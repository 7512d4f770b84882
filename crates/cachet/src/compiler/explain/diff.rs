//! Why two recipes of one slot differ, in the words a user thinks in.

use std::collections::{BTreeMap, BTreeSet};

use super::recipe::Recipe;

/// Flags whose value is the next argument: shown together with it.
const TAKES_NEXT: &[&str] = &[
    "-I",
    "-D",
    "-U",
    "-include",
    "-imacros",
    "-isystem",
    "-iquote",
    "-idirafter",
    "-x",
    "-arch",
    "-target",
    "--target",
    "-C",
    "--cfg",
    "--crate-type",
    "--edition",
    "-L",
    "-l",
    "--extern",
    "--cap-lints",
    "-A",
    "-W",
    "--check-cfg",
    "--remap-path-prefix",
    "-Xlinker",
    "-Xclang",
];

/// How a family's causes are worded.
struct Words {
    /// What changed when the compiler's identity did.
    compiler: &'static str,
    /// How to stop an output recording the cwd.
    fix_cwd: &'static str,
    /// What reads variables during the compile.
    env_read: &'static str,
}

fn words(language: &str) -> Words {
    match language {
        "Rust" => Words {
            compiler: "toolchain",
            fix_cwd: "set base_dirs and --remap-path-prefix",
            env_read: "env read by the compile (env!, option_env! or a proc macro) changed",
        },
        _ => Words {
            compiler: "compiler",
            fix_cwd: "set base_dirs and -fdebug-prefix-map",
            env_read: "env read by the compile changed",
        },
    }
}

/// The causes, most telling first; empty when every part is the same.
pub fn causes(before: &Recipe, now: &Recipe) -> Vec<String> {
    let words = words(&now.language);
    let mut out = Vec::new();
    if before.compiler != now.compiler {
        out.push(format!(
            "{} changed: {} → {}",
            words.compiler, before.compiler, now.compiler
        ));
    }
    args(&before.args, &now.args, &mut out);
    variables("environment changed", &before.env, &now.env, &mut out);
    if let Some(why) = &now.cwd_recorded
        && before.cwd != now.cwd
    {
        out.push(format!(
            "working directory differs and is recorded ({why}): {} vs {}; {}",
            before.cwd, now.cwd, words.fix_cwd
        ));
    }
    inputs(before, now, &mut out);
    variables(words.env_read, &before.env_read, &now.env_read, &mut out);
    out
}

/// Arguments, each joined with the value it takes from the next one.
fn joined(args: &[String]) -> Vec<String> {
    let mut out = Vec::new();
    let mut i = 0;
    while i < args.len() {
        if TAKES_NEXT.contains(&args[i].as_str()) && i + 1 < args.len() {
            out.push(format!("{} {}", args[i], args[i + 1]));
            i += 2;
        } else {
            out.push(args[i].clone());
            i += 1;
        }
    }
    out
}

/// What an argument sets, so that `-O2` and `-O3`, or `-std=c11` and `-std=c17`, pair as
/// one changed argument: up to `=`, else an option letter and its attached value.
fn stem(arg: &str) -> String {
    if let Some(eq) = arg.find('=') {
        return arg[..=eq].to_owned();
    }
    let bytes = arg.as_bytes();
    if bytes.len() > 2 && bytes[0] == b'-' && bytes[1] == b'O' {
        return "-O".into();
    }
    if bytes.len() > 2 && bytes[0] == b'-' && bytes[1] == b'g' && bytes[2].is_ascii_digit() {
        return "-g".into();
    }
    if let Some(rest) = arg.strip_prefix("-fno-") {
        return format!("-f{rest}");
    }
    arg.to_owned()
}

fn args(before: &[String], now: &[String], out: &mut Vec<String>) {
    let (before, now) = (joined(before), joined(now));
    let mut removed: Vec<&String> = Vec::new();
    let mut left: Vec<&String> = now.iter().collect();
    for arg in &before {
        match left.iter().position(|a| *a == arg) {
            Some(i) => {
                left.remove(i);
            }
            None => removed.push(arg),
        }
    }
    let mut added = left;
    for old in removed {
        match added.iter().position(|new| stem(new) == stem(old)) {
            Some(i) => {
                let new = added.remove(i);
                out.push(format!("argument changed: {old} → {new}"));
            }
            None => out.push(format!("argument removed: {old}")),
        }
    }
    for new in added {
        out.push(format!("argument added: {new}"));
    }
    if out.is_empty() && before != now {
        out.push("argument order changed".into());
    }
}

fn variables(
    what: &str,
    before: &[(String, String)],
    now: &[(String, String)],
    out: &mut Vec<String>,
) {
    let before: BTreeMap<&str, &str> = before
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    let now: BTreeMap<&str, &str> = now.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let names: BTreeSet<&str> = before.keys().chain(now.keys()).copied().collect();
    for name in names {
        let (old, new) = (before.get(name), now.get(name));
        if old == new {
            continue;
        }
        let old = old.copied().unwrap_or("(unset)");
        let new = new.copied().unwrap_or("(unset)");
        if old.starts_with("<hidden") || new.starts_with("<hidden") {
            out.push(format!("{what}: {name} (its value is not shown)"));
        } else {
            out.push(format!("{what}: {name} {old} → {new}"));
        }
    }
}

fn file_name(path: &str) -> &str {
    path.rsplit('/').next().unwrap_or(path)
}

fn inputs(before: &Recipe, now: &Recipe, out: &mut Vec<String>) {
    let old: BTreeMap<&str, (&str, &str)> = before
        .inputs
        .iter()
        .map(|i| (i.path.as_str(), (i.role.as_str(), i.digest.as_str())))
        .collect();
    let new: BTreeMap<&str, (&str, &str)> = now
        .inputs
        .iter()
        .map(|i| (i.path.as_str(), (i.role.as_str(), i.digest.as_str())))
        .collect();
    for (path, (role, digest)) in &new {
        match old.get(path) {
            Some((_, was)) if was != digest => {
                out.push(format!("{role} changed: {path} (content)"));
            }
            Some(_) => {}
            None => {
                // A file now read where one of the same name was read before (or where
                // the compile looked and found nothing) is found first now.
                let shadowed = old
                    .keys()
                    .find(|p| !new.contains_key(*p) && file_name(p) == file_name(path));
                match shadowed {
                    Some(previous) => {
                        out.push(format!("{role} now found first: {path} shadows {previous}"))
                    }
                    None if before.absent.iter().any(|a| a == path) => {
                        out.push(format!("{role} now found first: {path} (it was not there)"))
                    }
                    None => out.push(format!("{role} now read: {path}")),
                }
            }
        }
    }
    for (path, (role, _)) in &old {
        let shadowed = new
            .keys()
            .any(|p| !old.contains_key(*p) && file_name(p) == file_name(path));
        if !new.contains_key(path) && !shadowed {
            out.push(format!("{role} no longer read: {path}"));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::recipe::Input;
    use super::*;

    fn recipe(args: &[&str]) -> Recipe {
        Recipe {
            language: "C".into(),
            compiler: "gcc 12.2.0 (binary digest 111111111111)".into(),
            args: args.iter().map(|a| a.to_string()).collect(),
            cwd: "/w".into(),
            ..Recipe::default()
        }
    }

    fn input(role: &str, path: &str, digest: &str) -> Input {
        Input {
            role: role.into(),
            path: path.into(),
            digest: digest.into(),
        }
    }

    #[test]
    fn arguments_changed_added_and_removed() {
        let before = recipe(&["-O2", "-c", "-I", "inc", "-g"]);
        let now = recipe(&["-O3", "-c", "-DNDEBUG", "-I", "inc"]);
        assert_eq!(
            causes(&before, &now),
            [
                "argument changed: -O2 → -O3",
                "argument removed: -g",
                "argument added: -DNDEBUG"
            ]
        );
        let reordered = recipe(&["-c", "-O2", "-g", "-I", "inc"]);
        assert_eq!(causes(&before, &reordered), ["argument order changed"]);
        assert!(causes(&before, &before).is_empty());
        let std = causes(&recipe(&["-std=c11"]), &recipe(&["-std=c17"]));
        assert_eq!(std, ["argument changed: -std=c11 → -std=c17"]);
    }

    #[test]
    fn the_compiler_the_environment_and_the_cwd() {
        let mut before = recipe(&[]);
        before.env = vec![
            ("LANG".into(), "C".into()),
            ("A_TOKEN".into(), "<hidden 1>".into()),
        ];
        let mut now = recipe(&[]);
        now.compiler = "gcc 12.3.0 (binary digest 222222222222)".into();
        now.env = vec![
            ("LANG".into(), "de_DE".into()),
            ("A_TOKEN".into(), "<hidden 2>".into()),
        ];
        now.cwd = "/ci".into();
        now.cwd_recorded = Some("-g without a prefix map".into());
        assert_eq!(
            causes(&before, &now),
            [
                "compiler changed: gcc 12.2.0 (binary digest 111111111111) → gcc 12.3.0 (binary digest 222222222222)",
                "environment changed: A_TOKEN (its value is not shown)",
                "environment changed: LANG C → de_DE",
                "working directory differs and is recorded (-g without a prefix map): /w vs /ci; set base_dirs and -fdebug-prefix-map",
            ]
        );
    }

    #[test]
    fn headers_changed_shadowed_read_and_dropped() {
        let mut before = recipe(&[]);
        before.inputs = vec![
            input("source", "a.c", "1"),
            input("header", "util.h", "1"),
            input("header", "/usr/include/config.h", "1"),
            input("header", "old.h", "1"),
        ];
        before.absent = vec!["include/extra.h".into()];
        let mut now = before.clone();
        now.inputs = vec![
            input("source", "a.c", "1"),
            input("header", "util.h", "2"),
            input("header", "include/config.h", "1"),
            input("header", "include/extra.h", "1"),
        ];
        assert_eq!(
            causes(&before, &now),
            [
                "header now found first: include/config.h shadows /usr/include/config.h",
                "header now found first: include/extra.h (it was not there)",
                "header changed: util.h (content)",
                "header no longer read: old.h",
            ]
        );
    }
}
