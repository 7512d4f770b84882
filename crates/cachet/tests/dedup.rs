//! Identical compiles in flight at once run the compiler once, and one client going away
//! does not kill the compile another client waits on.

mod common;

use std::process::Stdio;

use common::*;

#[test]
fn identical_compiles_run_once_and_outlive_the_first_client() {
    let env = Env::new();
    let log = env.dir.path().join("runs.log");
    let cc = env.dir.path().join("slowcc");
    script(
        &cc,
        &format!(
            "case \" $* \" in *\" -dM \"*|*\" -E \"*) exec gcc \"$@\";; esac\n\
             echo \"compile $$\" >> {}\nsleep 2\nexec gcc \"$@\"\n",
            log.display()
        ),
    );
    let cc = cc.to_str().unwrap();
    env.write("warm.c", "int w;\n");
    env.ok(&[cc, "-c", "warm.c"]);
    std::fs::remove_file(&log).unwrap();

    env.write("a.c", "int a(void) { return 3; }\n");
    let spawn = || {
        env.cachet()
            .args([cc, "-c", "a.c", "-o", "a.o"])
            .stdin(no_input())
            .stdout(discard(env.dir.path(), "client.stdout"))
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    };
    let mut first = spawn();
    wait_for("the first compile to start", || log.exists());
    let second = spawn();
    wait_for("the second request to join", || {
        env.stats()["counters"]["dedup_joins"] == 1
    });
    first.kill().unwrap();
    first.wait().unwrap();

    let out = second.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stderr(&out).is_empty(), "{}", stderr(&out));
    let runs = std::fs::read_to_string(&log).unwrap();
    assert_eq!(
        runs.lines().count(),
        1,
        "the compiler ran more than once:\n{runs}"
    );
    let ours = std::fs::read(env.work.join("a.o")).unwrap();
    env.command("gcc")
        .args(["-c", "a.c", "-o", "plain.o"])
        .status()
        .unwrap();
    assert!(ours == std::fs::read(env.work.join("plain.o")).unwrap());
    let stats = env.stats();
    assert_eq!(stats["counters"]["dedup_joins"], 1, "{stats}");
    assert_eq!(
        stats["counters"]["cancelled"], 0,
        "the compile another client waited on was cancelled: {stats}"
    );
}

#[test]
fn a_compile_nobody_waits_for_is_killed() {
    let env = Env::new();
    let pids = env.dir.path().join("pids");
    std::fs::create_dir(&pids).unwrap();
    let cc = env.dir.path().join("slowcc");
    script(
        &cc,
        &format!(
            "case \" $* \" in *\" -dM \"*|*\" -E \"*) exec gcc \"$@\";; esac\n\
             echo $$ > {}/$$\nsleep 30\nexec gcc \"$@\"\n",
            pids.display()
        ),
    );
    env.write("a.c", "int a;\n");
    env.ok(&["--start-server"]);
    let mut client = env
        .cachet()
        .args([cc.to_str().unwrap(), "-c", "a.c"])
        .stdin(no_input())
        .stderr(discard(env.dir.path(), "client.stderr"))
        .spawn()
        .unwrap();
    let pid = wait_for_pid_file("the compile to start", &pids);
    client.kill().unwrap();
    client.wait().unwrap();
    wait_for("the orphaned compile to be killed", || !process_alive(pid));
}
