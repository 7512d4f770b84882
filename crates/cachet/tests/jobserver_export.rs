//! `cachet jobserver-env` exports the server's pool as a fifo, and GNU make 4.4.1 and
//! ninja 1.13 (from PyPI, installed by scripts/install-deps) join it: their jobs and
//! cachet's compilers share one machine-wide pool, which is whole again afterwards.

mod common;

use common::*;

/// The tool named by `var`, or a skip when it is not installed here.
fn tool(var: &str) -> Option<String> {
    match std::env::var(var) {
        Ok(path) if std::path::Path::new(&path).exists() => Some(path),
        _ => {
            skip(&format!(
                "{var} does not name an installed tool (scripts/install-deps installs it)"
            ));
            None
        }
    }
}

/// The MAKEFLAGS value that `cachet jobserver-env` prints.
fn exported_makeflags(env: &Env) -> String {
    let out = env.ok(&["jobserver-env"]);
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let line = text.lines().find(|l| l.starts_with("MAKEFLAGS=")).unwrap();
    let value = line
        .trim_start_matches("MAKEFLAGS=")
        .trim_matches('\'')
        .to_owned();
    assert!(value.contains("--jobserver-auth=fifo:"), "{text}");
    let fifo = value.split("fifo:").nth(1).unwrap().trim();
    use std::os::unix::fs::{FileTypeExt, PermissionsExt};
    let meta = std::fs::metadata(fifo).unwrap();
    assert!(meta.file_type().is_fifo());
    assert_eq!(meta.permissions().mode() & 0o777, 0o600);
    assert!(text.contains("CARGO_MAKEFLAGS="), "{text}");
    value
}

fn sources(env: &Env) {
    for name in ["a", "b", "c", "d"] {
        env.write(
            &format!("{name}.c"),
            &format!("int {name}(void) {{ return 2; }}\n"),
        );
    }
}

fn pool_is_whole(env: &Env) {
    wait_for("the machine-wide pool to be whole", || {
        let stats = env.stats();
        stats["jobserver"]["tokens_held"] == 0 && stats["jobserver"]["pool_in_use"] == 0
    });
}

#[test]
fn make_4_4_joins_the_machine_wide_pool() {
    let Some(make) = tool("CACHET_TEST_MAKE44") else {
        return;
    };
    let env = Env::new().with_env("CACHET_JOBS", "2");
    sources(&env);
    env.write(
        "Makefile",
        "all: a.o b.o c.o d.o\n%.o: %.c\n\t$(CC) -c $< -o $@\n",
    );
    let makeflags = exported_makeflags(&env);
    let out = env
        .command(&make)
        .arg(format!("CC={CACHET} gcc"))
        .env("MAKEFLAGS", &makeflags)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(!stderr(&out).contains("jobserver"), "{}", stderr(&out));
    let stats = env.stats();
    assert_eq!(stats["counters"]["compile_requests"], 4, "{stats}");
    // Every compile knew it ran under a job that holds one of the pool's tokens.
    assert_eq!(stats["counters"]["build_jobservers"], 4, "{stats}");
    pool_is_whole(&env);
}

#[test]
fn ninja_joins_the_machine_wide_pool() {
    let Some(ninja) = tool("CACHET_TEST_NINJA") else {
        return;
    };
    let env = Env::new().with_env("CACHET_JOBS", "2");
    sources(&env);
    env.write(
        "build.ninja",
        &format!(
            "rule cc\n  command = {CACHET} gcc -c $in -o $out\n\
             build a.o: cc a.c\nbuild b.o: cc b.c\nbuild c.o: cc c.c\nbuild d.o: cc d.c\n"
        ),
    );
    let makeflags = exported_makeflags(&env);
    let out = env
        .command(&ninja)
        .env("MAKEFLAGS", &makeflags)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        stderr(&out)
    );
    let stats = env.stats();
    assert_eq!(stats["counters"]["compile_requests"], 4, "{stats}");
    assert_eq!(stats["counters"]["build_jobservers"], 4, "{stats}");
    pool_is_whole(&env);
}

/// make 4.4.1 with its own fifo jobserver (-j4) drives compiles through cachet: they join
/// make's fifo by path, make exits while the server runs, and the server keeps no fd on it.
#[test]
fn make_4_4_with_its_own_fifo_drives_cachet() {
    let Some(make) = tool("CACHET_TEST_MAKE44") else {
        return;
    };
    let env = Env::new().with_env("CACHET_IDLE_TIMEOUT", "600");
    sources(&env);
    env.write(
        "Makefile",
        "all: a.o b.o c.o d.o\n%.o: %.c\n\t$(CC) -c $< -o $@\n",
    );
    let out = env
        .command(&make)
        .args(["-j4", &format!("CC={CACHET} gcc")])
        .env("TMPDIR", env.dir.path())
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let stats = env.stats();
    assert_eq!(stats["counters"]["build_jobservers"], 4, "{stats}");
    let pid = stats["server_pid"].as_u64().unwrap() as i32;
    assert!(process_alive(pid));
    for fd in std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .flatten()
    {
        let link = std::fs::read_link(fd.path()).unwrap_or_default();
        assert!(
            !link.to_string_lossy().contains("GMfifo"),
            "the server kept make's fifo: {link:?}"
        );
    }
    pool_is_whole(&env);
}
