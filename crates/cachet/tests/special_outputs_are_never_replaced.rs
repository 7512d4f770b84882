//! An output path that exists and is not a regular file (a device, a FIFO, a symlink) is
//! someone else's: the compile is passed through, so the compiler writes it exactly as it
//! would without cachet, and nothing is stored from it or restored over it. Every special
//! file here is made inside the test's own temp dir; the machine's `/dev/null` is never
//! named.

mod common;

use std::io::Read;
use std::os::unix::fs::FileTypeExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use common::*;

const SOURCE: &str = "int answer(void) { return 42; }\n";

fn make_fifo(path: &Path) {
    let status = Command::new("mkfifo").arg(path).status().unwrap();
    assert!(status.success(), "mkfifo {}", path.display());
}

/// Drains a FIFO in the background, as a reader of the compiler's output would.
fn drain(path: PathBuf) -> std::thread::JoinHandle<Vec<u8>> {
    std::thread::spawn(move || {
        let mut data = Vec::new();
        std::fs::File::open(&path)
            .unwrap()
            .read_to_end(&mut data)
            .unwrap();
        data
    })
}

fn kind(path: &Path) -> std::fs::FileType {
    std::fs::symlink_metadata(path).unwrap().file_type()
}

/// Runs `cachet gcc args` twice (a second run is where a hit would replace the path) and
/// checks that each exit code is the plain compiler's, that no entry was stored, and that
/// nothing was served from the cache.
fn twice_like_plain(env: &Env, cc: &str, args: &[&str], plain_code: Option<i32>) {
    let mut full = vec![cc];
    full.extend(args);
    for round in 0..2 {
        let out = env.run(&full);
        assert_eq!(
            out.status.code(),
            plain_code,
            "{cc} round {round}: {}",
            stderr(&out)
        );
    }
    let stats = env.settle();
    assert_eq!(stats["counters"]["cache_hits"], 0, "{cc}: {stats}");
    assert_eq!(stats["counters"]["cache_misses"], 0, "{cc}: {stats}");
    assert!(env.entries().is_empty(), "{cc}: an entry was stored");
}

#[test]
fn a_fifo_as_the_object_stays_a_fifo() {
    for cc in compilers() {
        let env = Env::new();
        env.write("t.c", SOURCE);
        let fifo = env.work.join("out.fifo");
        make_fifo(&fifo);
        // What the compiler does with a FIFO as its object, without cachet.
        let reader = drain(fifo.clone());
        let plain = env
            .command(cc)
            .args(["-c", "t.c", "-o", "out.fifo"])
            .output()
            .unwrap();
        reader.join().unwrap();
        for _ in 0..2 {
            let reader = drain(fifo.clone());
            let out = env.run(&[cc, "-c", "t.c", "-o", "out.fifo"]);
            reader.join().unwrap();
            assert_eq!(out.status.code(), plain.status.code(), "{}", stderr(&out));
        }
        assert!(kind(&fifo).is_fifo(), "{cc}: the FIFO was replaced");
        assert!(env.entries().is_empty(), "{cc}: an entry was stored");
        assert_eq!(env.counter("cache_hits"), 0);
    }
}

#[test]
fn a_fifo_as_the_depfile_gets_the_plain_dependency_text() {
    for cc in compilers() {
        let env = Env::new();
        env.write("t.c", SOURCE);
        let fifo = env.work.join("deps.fifo");
        make_fifo(&fifo);
        let args = ["-c", "t.c", "-o", "t.o", "-MD", "-MF", "deps.fifo"];
        let reader = drain(fifo.clone());
        assert!(env.command(cc).args(args).status().unwrap().success());
        let plain = reader.join().unwrap();
        assert!(!plain.is_empty());
        for round in 0..2 {
            let reader = drain(fifo.clone());
            let mut full = vec![cc];
            full.extend(args);
            env.ok(&full);
            assert_eq!(reader.join().unwrap(), plain, "{cc} round {round}");
        }
        assert!(kind(&fifo).is_fifo(), "{cc}: the FIFO was replaced");
        assert!(env.entries().is_empty(), "{cc}: an entry was stored");
    }
}

/// What the compiler itself does with a symlink as its output, twice over (GNU as replaces
/// an object symlink that points to a regular file; a dependency file is written through
/// its link), cachet does too: it never replaces the link with a hit of its own.
#[test]
fn a_symlink_as_the_object_or_depfile_ends_as_without_cachet() {
    for cc in compilers() {
        for (flag_args, link_name) in [
            (&["-o", "link.o"][..], "link.o"),
            (&["-o", "t.o", "-MD", "-MF", "link.d"][..], "link.d"),
        ] {
            let env = Env::new();
            env.write("t.c", SOURCE);
            let mut args = vec!["-c", "t.c"];
            args.extend(flag_args);
            let link = env.work.join(link_name);
            let real = env.work.join("real.out");
            let fresh_link = || {
                let _ = std::fs::remove_file(&link);
                let _ = std::fs::remove_file(&real);
                std::os::unix::fs::symlink("real.out", &link).unwrap();
            };
            let end_state = || {
                (
                    kind(&link).is_symlink(),
                    std::fs::read(&link).unwrap(),
                    std::fs::read(&real).ok(),
                )
            };
            fresh_link();
            for _ in 0..2 {
                assert!(env.command(cc).args(&args).status().unwrap().success());
            }
            let plain = end_state();
            fresh_link();
            let mut full = vec![cc];
            full.extend(&args);
            for _ in 0..2 {
                env.ok(&full);
            }
            assert_eq!(end_state(), plain, "{cc} {link_name}");
            // The first compile met the link and was passed through. (A compiler that
            // replaced the link itself left a regular file, which the second may cache.)
            let stats = env.settle();
            let passed = &stats["counters"]["uncacheable"]["output is a symlink"];
            assert!(passed.as_u64() >= Some(1), "{cc} {link_name}: {stats}");
        }
    }
}

/// A device node made in the temp dir stands for `/dev/null` (the same major and minor).
/// As root `mknod` must work: its failure fails the test.
#[test]
fn a_device_as_the_object_or_depfile_stays_a_device() {
    if current_uid() != 0 {
        skip("mknod needs root");
        return;
    }
    for cc in compilers() {
        for (flag_args, dev_name) in [
            (&["-o", "null.dev"][..], "null.dev"),
            (&["-o", "t.o", "-MD", "-MF", "null.dev"][..], "null.dev"),
        ] {
            let env = Env::new();
            env.write("t.c", SOURCE);
            let dev = env.work.join(dev_name);
            let status = Command::new("mknod")
                .args(["-m", "666"])
                .arg(&dev)
                .args(["c", "1", "3"])
                .status()
                .unwrap();
            assert!(status.success(), "mknod failed as root");
            let mut args = vec!["-c", "t.c"];
            args.extend(flag_args);
            let plain = env.command(cc).args(&args).status().unwrap();
            twice_like_plain(&env, cc, &args, plain.code());
            assert!(kind(&dev).is_char_device(), "{cc}: the device was replaced");
        }
    }
}

/// Whether we run as root, read from `id -u` (no libc call in tests).
fn current_uid() -> u32 {
    let out = Command::new("id")
        .arg("-u")
        .stdin(no_input())
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).trim().parse().unwrap()
}
