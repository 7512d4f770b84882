//! A child that uses the `jobserver` crate finds our pool in its environment
//! and takes tokens from it. This file runs without libtest: it re-executes
//! itself as the child, so it prints libtest-style lines itself.

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::time::Instant;

use cachet_jobserver::Jobserver;

const CHILD: &str = "CACHET_JOBSERVER_TEST_CHILD";
const TEST: &str = "children_join";

fn main() {
    if std::env::var_os(CHILD).is_some() {
        child();
        return;
    }
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.iter().any(|a| a == "--list") {
        println!("{TEST}: test");
        return;
    }
    // Honour a name filter the way libtest does.
    let filters: Vec<&String> = args.iter().filter(|a| !a.starts_with('-')).collect();
    if !filters.is_empty() && !filters.iter().any(|f| TEST.contains(f.as_str())) {
        println!(
            "\nrunning 0 tests\n\ntest result: ok. 0 passed; 0 failed; 0 ignored; 0 measured; 1 filtered out; finished in 0.00s\n"
        );
        return;
    }

    println!("\nrunning 1 test");
    let start = Instant::now();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(children_join());
    println!("test {TEST} ... ok");
    println!(
        "\ntest result: ok. 1 passed; 0 failed; 0 ignored; 0 measured; 0 filtered out; finished in {:.2}s\n",
        start.elapsed().as_secs_f64()
    );
}

/// The child: join the pool from the environment, take two tokens, say so,
/// hold them until the parent has looked, then give them back.
fn child() {
    // SAFETY: the parent set these fds up for us just before exec.
    let client = unsafe { jobserver::Client::from_env() }.expect("no jobserver in env");
    let a = client.acquire().expect("first token");
    let b = client.acquire().expect("second token");
    println!("acquired 2");
    std::io::stdout().flush().unwrap();
    let mut line = String::new();
    std::io::stdin().read_line(&mut line).unwrap();
    drop((a, b));
    println!("ok");
}

async fn children_join() {
    let pool = Jobserver::new(2).unwrap();
    let mut cmd = Command::new(std::env::current_exe().unwrap());
    cmd.env(CHILD, "1")
        .env_remove("MAKEFLAGS")
        .env_remove("MFLAGS")
        .env_remove("CARGO_MAKEFLAGS")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped());
    pool.configure_std_command(&mut cmd, None);
    let mut child = cmd.spawn().unwrap();
    let mut stdout = BufReader::new(child.stdout.take().unwrap());

    let mut line = String::new();
    stdout.read_line(&mut line).unwrap();
    assert_eq!(line.trim(), "acquired 2");
    // The child's two tokens came out of our pipe.
    assert_eq!(pool.stats().pool_in_use, 2);
    assert!(pool.try_acquire().unwrap().is_none());

    child.stdin.take().unwrap().write_all(b"go\n").unwrap();
    line.clear();
    stdout.read_line(&mut line).unwrap();
    assert_eq!(line.trim(), "ok");
    assert!(child.wait().unwrap().success());

    assert_eq!(pool.stats().pool_in_use, 0);
    // The awaited path also works once the child has gone.
    let t1 = pool.acquire().await.unwrap();
    let t2 = pool.acquire().await.unwrap();
    assert_eq!(pool.stats().waits, 0);
    drop((t1, t2));
}
