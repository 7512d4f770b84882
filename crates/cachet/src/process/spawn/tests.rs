use super::*;
use std::io::Read;
use std::os::unix::process::ExitStatusExt;

/// Runs `spec` to the end: (wait status, stdout, stderr).
fn run(spec: &CommandSpec, nofile: Option<libc::rlimit>) -> (i32, String, String) {
    let child = spawn(spec, nofile).unwrap();
    // Drained on a thread each, so that neither pipe can fill while the other is read.
    let read = |fd: OwnedFd| {
        std::thread::spawn(move || {
            let mut text = String::new();
            std::fs::File::from(fd).read_to_string(&mut text).unwrap();
            text
        })
    };
    let (out, err) = (read(child.stdout), read(child.stderr));
    let (status, _) = crate::process::child::reap(child.pid).unwrap();
    (status, out.join().unwrap(), err.join().unwrap())
}

fn sh(script: &str) -> CommandSpec {
    let mut spec = CommandSpec::new("/bin/sh", "/");
    spec.args = vec!["-c".into(), script.into()];
    spec.env = vec![("PATH".into(), "/usr/bin:/bin".into())];
    spec
}

fn exit_code(status: i32) -> Option<i32> {
    std::process::ExitStatus::from_raw(status).code()
}

#[test]
fn runs_the_program_with_exactly_its_arguments_environment_and_cwd() {
    let dir = tempfile::tempdir().unwrap();
    let mut spec = sh(r#"printf '%s|' "$0" "$@"; echo; env | sort; pwd; echo oops >&2; exit 7"#);
    spec.args
        .extend(["zero".into(), "one two".into(), "".into()]);
    spec.env.push(("GREETING".into(), "hi there".into()));
    spec.cwd = dir.path().to_owned();
    let (status, out, err) = run(&spec, None);
    assert_eq!(exit_code(status), Some(7));
    let pwd = dir.path().canonicalize().unwrap();
    // `env` lists only what the spec gives (and what sh itself adds: PWD, maybe SHLVL).
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[0], "zero|one two||");
    assert!(lines.contains(&"GREETING=hi there"), "{out}");
    assert!(lines.contains(&"PATH=/usr/bin:/bin"), "{out}");
    assert!(
        lines[1..lines.len() - 1]
            .iter()
            .all(|l| l.starts_with("GREETING=")
                || l.starts_with("PATH=")
                || l.starts_with("PWD=")
                || l.starts_with("SHLVL=")
                || l.starts_with("_=")),
        "{out}"
    );
    assert_eq!(lines.last(), Some(&pwd.to_str().unwrap()));
    assert_eq!(err, "oops\n");
}

#[test]
fn a_bare_name_is_looked_for_in_the_specs_path_and_argv0_stays_as_given() {
    let dir = tempfile::tempdir().unwrap();
    let tool = dir.path().join("greet");
    std::fs::write(&tool, "#!/bin/sh\necho \"found as $0\"\n").unwrap();
    std::fs::set_permissions(&tool, std::fs::Permissions::from_mode(0o755)).unwrap();
    // Not executable, first in PATH: skipped as execvp skips it.
    let other = tempfile::tempdir().unwrap();
    std::fs::write(other.path().join("greet"), "not a program").unwrap();
    let mut spec = CommandSpec::new("greet", "/");
    let path = format!(
        "{}:{}:/usr/bin:/bin",
        other.path().display(),
        dir.path().display()
    );
    spec.env = vec![("PATH".into(), path.into())];
    let (status, out, _) = run(&spec, None);
    assert_eq!(exit_code(status), Some(0));
    assert_eq!(out, format!("found as {}\n", tool.display()));
}

#[test]
fn a_missing_program_or_cwd_is_an_error_and_leaves_no_child() {
    let mut spec = CommandSpec::new("cachet-no-such-program", "/");
    spec.env = vec![("PATH".into(), "/usr/bin:/bin".into())];
    let err = spawn(&spec, None).unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::NotFound, "{err}");

    let dir = tempfile::tempdir().unwrap();
    let mut spec = sh("true");
    spec.cwd = dir.path().join("gone");
    let err = spawn(&spec, None).unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::NotFound, "{err}");
    assert!(err.to_string().contains("/bin/sh"), "{err}");
}

#[test]
fn a_file_that_is_not_executable_is_refused_and_a_script_without_shebang_runs_in_sh() {
    let dir = tempfile::tempdir().unwrap();
    let plain = dir.path().join("plain");
    std::fs::write(&plain, "echo never\n").unwrap();
    let err = spawn(&CommandSpec::new(&plain, "/"), None).unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::PermissionDenied, "{err}");

    let script = dir.path().join("script");
    std::fs::write(&script, "echo \"via sh: $1\"\n").unwrap();
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    let mut spec = CommandSpec::new(&script, "/");
    spec.args = vec!["arg".into()];
    spec.env = vec![("PATH".into(), "/usr/bin:/bin".into())];
    let (status, out, _) = run(&spec, None);
    assert_eq!(exit_code(status), Some(0));
    assert_eq!(out, "via sh: arg\n");
}

#[test]
fn stdin_is_empty_and_only_the_listed_descriptors_are_inherited() {
    let (listed, _listed_write) = pipe().unwrap();
    let (unlisted, _unlisted_write) = pipe().unwrap();
    let (listed, unlisted) = (listed.as_raw_fd(), unlisted.as_raw_fd());
    let mut spec = sh(&format!(
        "wc -c; [ -e /proc/self/fd/{listed} ] && echo listed; \
         [ -e /proc/self/fd/{unlisted} ] && echo unlisted; exit 0"
    ));
    spec.inherit_fds = vec![listed];
    let (status, out, _) = run(&spec, None);
    assert_eq!(exit_code(status), Some(0));
    assert_eq!(out, "0\nlisted\n");
}

#[test]
fn the_child_gets_its_umask_oom_score_limit_and_group_and_no_blocked_or_ignored_pipe_signal() {
    let dir = tempfile::tempdir().unwrap();
    let hard = rustix::process::getrlimit(rustix::process::Resource::Nofile)
        .maximum
        .map_or(libc::RLIM_INFINITY, |m| m as libc::rlim_t);
    let limit = libc::rlimit {
        rlim_cur: 100,
        rlim_max: hard,
    };
    let mut spec = sh("umask; touch f; cat /proc/self/oom_score_adj; ulimit -n; \
         cut -d' ' -f5 /proc/self/stat");
    spec.cwd = dir.path().to_owned();
    spec.umask = Some(0o027);
    spec.oom_score_adj = Some(700);
    // A signal blocked on the spawning thread must not stay blocked in the child.
    let child = std::thread::spawn(move || {
        // SAFETY: blocks SIGUSR2 on this test thread only.
        unsafe {
            let mut set: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut set);
            libc::sigaddset(&mut set, libc::SIGUSR2);
            libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
        }
        let child = spawn(&spec, Some(limit)).unwrap();
        let mut out = String::new();
        std::fs::File::from(child.stdout)
            .read_to_string(&mut out)
            .unwrap();
        let (status, _) = crate::process::child::reap(child.pid).unwrap();
        // Straight from the child, not through a shell, which may set its own mask.
        let mut grep = CommandSpec::new("grep", "/");
        grep.args = ["-E", "^Sig(Blk|Ign)", "/proc/self/status"]
            .map(Into::into)
            .into();
        grep.env = vec![("PATH".into(), "/usr/bin:/bin".into())];
        let (_, signals, _) = run(&grep, None);
        (child.pid, status, out, signals)
    });
    let (pid, status, out, signals) = child.join().unwrap();
    assert_eq!(exit_code(status), Some(0));
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines, ["0027", "700", "100", &pid.to_string()]);
    let mode = std::fs::metadata(dir.path().join("f"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o640);
    let mask = |name: &str| {
        let line = signals.lines().find(|l| l.starts_with(name)).unwrap();
        u64::from_str_radix(line.split_whitespace().nth(1).unwrap(), 16).unwrap()
    };
    assert_eq!(mask("SigBlk:"), 0, "{signals}");
    // The test harness, as any Rust program, ignores SIGPIPE; its children must not.
    assert_eq!(mask("SigIgn:") & (1 << (libc::SIGPIPE - 1)), 0, "{signals}");
}

#[test]
fn the_child_is_killed_when_the_thread_that_started_it_ends() {
    let spawner = std::thread::spawn(|| spawn(&sh("sleep 30"), None).unwrap());
    let child = spawner.join().unwrap();
    let start = std::time::Instant::now();
    let (status, _) = crate::process::child::reap(child.pid).unwrap();
    assert_eq!(
        std::process::ExitStatus::from_raw(status).signal(),
        Some(libc::SIGKILL)
    );
    assert!(start.elapsed() < std::time::Duration::from_secs(20));
}

#[test]
fn many_children_started_at_once_from_many_threads_each_get_their_own() {
    let threads: Vec<_> = (0..8)
        .map(|t| {
            std::thread::spawn(move || {
                for i in 0..16 {
                    let mut spec = sh("echo \"$WHO\"; echo \"$WHO\" >&2");
                    let who = format!("{t}-{i}");
                    spec.env.push(("WHO".into(), who.clone().into()));
                    let (status, out, err) = run(&spec, None);
                    assert_eq!(exit_code(status), Some(0));
                    assert_eq!((out.trim(), err.trim()), (who.as_str(), who.as_str()));
                }
            })
        })
        .collect();
    for thread in threads {
        thread.join().unwrap();
    }
}

#[test]
fn a_nul_byte_in_an_argument_is_a_clear_error() {
    let mut spec = sh("true");
    spec.args.push("a\0b".into());
    let err = spawn(&spec, None).unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
    assert!(err.to_string().contains("NUL"), "{err}");
}
