//! A private jobserver for one child, fed from one or more pools.
//!
//! The child gets a pipe of its own in MAKEFLAGS. A token goes into that pipe only when
//! one is held from every level at once (the calling build's pool and the server's), and
//! whatever the child still holds when it exits is taken back by the owner: the child
//! never touches a real pool, so killing it cannot cost any pool a token.
//!
//! The owner of a pipe cannot see that a reader waits on it, but Linux shows it: a thread
//! blocked on the proxy has the read syscall in `/proc/PID/task/TID/syscall` on an fd whose
//! `/proc/PID/fd/N` link is the proxy's `pipe:[INODE]`. Tokens are granted when such a
//! waiter is seen and taken back when none is; where the tree cannot be looked at, at most
//! one token is granted ahead.

use std::ffi::{OsStr, OsString};
use std::future::Future;
use std::io;
use std::os::fd::RawFd;
use std::time::{Duration, Instant};

use crate::pipe::Pipe;
use crate::{Jobserver, TOKEN_BYTE, Token};

/// How often the proxy looks at its child while it wants tokens, or just after.
const TICK: Duration = Duration::from_millis(3);

/// How long the proxy may wait between looks while nothing in the child reads its pipe:
/// each look that finds no reader doubles the wait from [`TICK`] up to this. A look reads
/// `/proc` for every thread of the child's tree (rustc runs a dozen), which at every
/// [`TICK`] cost a cold build a few percent of a core; a child that starts to read waits
/// at most this long for its first token.
const IDLE_TICK: Duration = Duration::from_millis(48);

/// How long the proxy may wait between looks while its child wants a token that no level
/// has to give (every token of the build and of the machine is held, as for most of a
/// busy build): nothing can change until some other compile ends, and a look costs a scan
/// of the child's threads. A level whose pipe is empty wakes the proxy the moment a token
/// is written back into it (see [`Jobserver::refilled`]); this tick covers the rest (a
/// level whose tokens are queued for, memory held back).
const STARVED_TICK: Duration = Duration::from_millis(24);

/// The read(2) syscall number, as `/proc/PID/task/TID/syscall` shows it.
#[cfg(target_arch = "x86_64")]
const READ_SYSCALL: i64 = 0;
#[cfg(target_arch = "aarch64")]
const READ_SYSCALL: i64 = 63;
#[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
const READ_SYSCALL: i64 = -1;

/// What the proxy did for one child.
#[derive(Debug, Default, Clone, Copy, PartialEq)]
pub struct ProxyReport {
    /// Tokens put into the child's pipe.
    pub grants: u64,
    /// Tokens taken back from the pipe while the child ran (returned or unwanted).
    pub reclaims: u64,
    /// Tokens the child still held when it exited (killed, or careless), given back.
    pub recovered: u64,
    /// The most tokens granted at once.
    pub peak: u64,
    /// Token-time that granted tokens sat unread in the pipe.
    pub idle: Duration,
    /// Token-time granted in all (held by the child or waiting in its pipe).
    pub granted: Duration,
    /// Times the child's process tree was looked at for a reader of the pipe.
    pub looks: u64,
    /// Times a token written back into a level that had none woke the proxy at once.
    pub refills: u64,
}

/// Whether a process tree waits on a pipe, as [`waiting_on`] saw it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Demand {
    /// A thread in the tree is blocked in read(2) on the pipe: it wants a token now.
    Waiting,
    /// The tree could be looked at, and nothing in it reads the pipe.
    Idle,
    /// Nothing could be looked at (no `/proc`, or the tree is not ours to look at).
    Unknown,
}

/// A private jobserver pipe for one child process, fed from real pools by
/// [`serve`](Self::serve). The child sees an ordinary GNU make jobserver (the pipe style);
/// whatever it holds when it dies is taken back, so no pool loses a token.
pub struct Proxy {
    pipe: Pipe,
    inode: u64,
}

impl Proxy {
    /// An empty private pool. Must be called inside a tokio runtime with IO enabled; fails
    /// with the OS error if the pipe cannot be made or registered.
    pub fn new() -> io::Result<Proxy> {
        let pipe = Pipe::new(0, TOKEN_BYTE)?;
        let inode = pipe.inode()?;
        Ok(Proxy { pipe, inode })
    }

    /// The pipe's inode: a joined pool whose [`Jobserver::id`] is `pipe:[INODE]` with this
    /// number is this very proxy (a process under it came back to its owner).
    pub fn inode(&self) -> u64 {
        self.inode
    }

    /// The pipe's read and write fds (CLOEXEC here; the spawner clears it in the child).
    pub fn fds(&self) -> [RawFd; 2] {
        [self.pipe.read_fd(), self.pipe.write_fd()]
    }

    /// MAKEFLAGS, MFLAGS and CARGO_MAKEFLAGS naming this proxy; see
    /// [`Jobserver::child_env`].
    pub fn child_env(&self, inherited_makeflags: Option<&OsStr>) -> Vec<(String, OsString)> {
        let [read, write] = self.fds();
        crate::child_env_for(read, write, inherited_makeflags)
    }

    /// Feeds the child from `levels` until `done` completes (the child has exited), then
    /// takes every token back. `child` names the child's pid once it runs (None before).
    pub async fn serve<F: Future>(
        &self,
        levels: &[Jobserver],
        child: impl Fn() -> Option<u32>,
        done: F,
    ) -> (F::Output, ProxyReport) {
        self.serve_gated(levels, child, || true, |_| {}, done).await
    }

    /// Like [`serve`](Self::serve), but grants a new token only while `may_grant()` says
    /// so (a server holds extra threads back while memory is short; tokens already granted
    /// stay with the child), and tells `granted(n)` each time the number of tokens granted
    /// changes (0 at the end).
    pub async fn serve_gated<F: Future>(
        &self,
        levels: &[Jobserver],
        child: impl Fn() -> Option<u32>,
        may_grant: impl Fn() -> bool,
        granted: impl Fn(usize),
        done: F,
    ) -> (F::Output, ProxyReport) {
        let mut grants: Vec<Vec<Token>> = Vec::new();
        let mut report = ProxyReport::default();
        let mut wait = TICK;
        let mut last = Instant::now();
        let mut reader = None;
        // A level whose pipe was empty when last asked: its refill wakes the loop at once.
        let mut empty: Option<&Jobserver> = None;
        tokio::pin!(done);
        let output = loop {
            let refilled = async {
                match empty {
                    // An error leaves the wake to the timer.
                    Some(level) if level.refilled().await.is_ok() => {}
                    _ => std::future::pending().await,
                }
            };
            tokio::select! {
                biased;
                output = &mut done => break output,
                _ = refilled => report.refills += 1,
                _ = tokio::time::sleep(wait) => {}
            }
            empty = None;
            let now = Instant::now();
            let in_pipe = self.pipe.available().unwrap_or(0);
            report.idle += (now - last) * in_pipe as u32;
            report.granted += (now - last) * grants.len() as u32;
            last = now;
            // With no token in its pipe and none to give, what the child wants changes
            // nothing: the look (a read of /proc for each of its threads) waits until some
            // level has a token free. Most of a busy build is spent so.
            if in_pipe == 0 && !(levels.iter().all(Jobserver::has_free_token) && may_grant()) {
                wait = (wait * 2).min(STARVED_TICK);
                empty = levels.iter().find(|level| level.is_empty());
                continue;
            }
            // Before the child is known to run, nobody can be waiting.
            let demand = child().map_or(Demand::Idle, |pid| {
                report.looks += 1;
                waiting_on_hinted(pid, self.inode, &mut reader)
            });
            let wanted = match demand {
                Demand::Waiting | Demand::Unknown => 1,
                Demand::Idle => 0,
            };
            let before = grants.len();
            let mut starved = false;
            if in_pipe > wanted {
                for _ in wanted..in_pipe {
                    if let Ok(Some(_)) = self.pipe.try_read_byte() {
                        grants.pop();
                        report.reclaims += 1;
                    }
                }
            } else if in_pipe < wanted {
                match may_grant().then(|| take_from_every(levels)).flatten() {
                    Some(tokens) if self.pipe.write_byte(TOKEN_BYTE).is_ok() => {
                        grants.push(tokens);
                        report.grants += 1;
                        report.peak = report.peak.max(grants.len() as u64);
                    }
                    _ => {
                        starved = true;
                        empty = levels.iter().find(|level| level.is_empty());
                    }
                }
            }
            wait = match demand {
                Demand::Idle if in_pipe == 0 => (wait * 2).min(IDLE_TICK),
                _ if starved => (wait * 2).min(STARVED_TICK),
                _ => TICK,
            };
            if grants.len() != before {
                granted(grants.len());
            }
        };
        // The child is gone: what it did not give back was still ours.
        let in_pipe = self.pipe.available().unwrap_or(0);
        report.recovered = grants.len().saturating_sub(in_pipe) as u64;
        if !grants.is_empty() {
            grants.clear();
            granted(0);
        }
        (output, report)
    }
}

/// One token from each level, or none at all.
fn take_from_every(levels: &[Jobserver]) -> Option<Vec<Token>> {
    let mut held = Vec::with_capacity(levels.len());
    for level in levels {
        // Dropping `held` on the way out gives back what was taken so far.
        held.push(level.try_acquire().ok()??);
    }
    Some(held)
}

/// Whether any thread in the tree rooted at `pid` is blocked reading the pipe `inode` (the
/// number in a `pipe:[INODE]` link). Linux only: reads `/proc/PID/task/*/syscall` and
/// follows `children`; [`Demand::Unknown`] where none of that can be read.
pub fn waiting_on(pid: u32, inode: u64) -> Demand {
    waiting_on_hinted(pid, inode, &mut None)
}

/// [`waiting_on`], looking first at the thread that `reader` says was found reading last
/// time (process, thread), and keeping there the one found now. A child that wants a token
/// no pool has keeps one thread blocked on the pipe for long: that thread alone is looked
/// at then, not every thread of the tree (rustc runs a dozen).
fn waiting_on_hinted(pid: u32, inode: u64, reader: &mut Option<(u32, u32)>) -> Demand {
    let target = format!("pipe:[{inode}]");
    // A thread id is listed under its own process only, and the fd's link names our pipe:
    // a reused id cannot pass for the reader.
    if let Some((process, thread)) = *reader
        && reads_pipe(process, thread, &target) == Some(true)
    {
        return Demand::Waiting;
    }
    *reader = None;
    let mut looked = false;
    let mut stack = vec![pid];
    while let Some(pid) = stack.pop() {
        let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
            continue;
        };
        for task in tasks.flatten() {
            let dir = task.path();
            let thread = task
                .file_name()
                .to_str()
                .and_then(|t| t.parse::<u32>().ok());
            if let Some(thread) = thread
                && let Some(reading) = reads_pipe(pid, thread, &target)
            {
                looked = true;
                if reading {
                    *reader = Some((pid, thread));
                    return Demand::Waiting;
                }
            }
            if let Ok(children) = std::fs::read_to_string(dir.join("children")) {
                stack.extend(
                    children
                        .split_whitespace()
                        .filter_map(|c| c.parse::<u32>().ok()),
                );
            }
        }
    }
    // A child reaped before or during the walk wants nothing: asked before the walk
    // only, a child reaped between that check and the walk read as Unknown, and a token
    // was granted to nobody (a server's peak of tokens held went up by one).
    if looked || gone(pid) {
        Demand::Idle
    } else {
        Demand::Unknown
    }
}

/// Whether thread `thread` of process `pid` is blocked in read(2) on an fd whose link is
/// `target`; None when its syscall cannot be read (gone, or not ours to look at).
fn reads_pipe(pid: u32, thread: u32, target: &str) -> Option<bool> {
    let syscall = std::fs::read_to_string(format!("/proc/{pid}/task/{thread}/syscall")).ok()?;
    let mut words = syscall.split_whitespace();
    let nr = words.next().and_then(|w| w.parse::<i64>().ok());
    let fd = words
        .next()
        .and_then(|w| i64::from_str_radix(w.trim_start_matches("0x"), 16).ok());
    Some(
        nr == Some(READ_SYSCALL)
            && fd.is_some_and(|fd| {
                std::fs::read_link(format!("/proc/{pid}/fd/{fd}"))
                    .is_ok_and(|link| link.as_os_str() == target)
            }),
    )
}

/// Whether `pid` has exited and been reaped: `/proc` is there, its entry is not.
fn gone(pid: u32) -> bool {
    let proc = std::path::Path::new("/proc");
    proc.join("self").exists() && !proc.join(pid.to_string()).exists()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reaped_child_wants_no_token() {
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let pid = child.id();
        child.wait().unwrap();
        assert_eq!(waiting_on(pid, 1), Demand::Idle);
    }

    #[test]
    fn a_child_reaped_while_it_is_looked_at_wants_no_token() {
        // The serve loop looks while another thread reaps: whenever the reap falls, before,
        // during or after a look, the child reads as Idle, never as Unknown (which grants a
        // token to nobody). 300 children: a look spans the reap for several of them.
        for _ in 0..300 {
            let mut child = std::process::Command::new("true").spawn().unwrap();
            let pid = child.id();
            let reaped = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
            let reaper = {
                let reaped = reaped.clone();
                std::thread::spawn(move || {
                    child.wait().unwrap();
                    reaped.store(true, std::sync::atomic::Ordering::SeqCst);
                })
            };
            loop {
                let done = reaped.load(std::sync::atomic::Ordering::SeqCst);
                assert_ne!(waiting_on(pid, 1), Demand::Unknown, "child {pid}");
                if done {
                    break;
                }
            }
            reaper.join().unwrap();
        }
    }

    #[test]
    fn a_running_child_that_reads_nothing_is_idle() {
        let mut child = std::process::Command::new("sleep")
            .arg("5")
            .spawn()
            .unwrap();
        let demand = waiting_on(child.id(), 1);
        child.kill().unwrap();
        child.wait().unwrap();
        assert_eq!(demand, Demand::Idle);
    }

    #[test]
    fn the_reader_found_once_is_looked_at_first_then_forgotten_when_it_stops() {
        let (read, write) = rustix::pipe::pipe().unwrap();
        let inode = rustix::fs::fstat(&read).unwrap().st_ino;
        // `head -c1` blocks in read(2) on its stdin, the pipe's read end.
        let mut child = std::process::Command::new("head")
            .args(["-c", "1"])
            .stdin(std::process::Stdio::from(read))
            .stdout(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let pid = child.id();
        let mut reader = None;
        let deadline = Instant::now() + Duration::from_secs(5);
        while waiting_on_hinted(pid, inode, &mut reader) != Demand::Waiting {
            assert!(Instant::now() < deadline, "head never read the pipe");
            std::thread::sleep(Duration::from_millis(5));
        }
        assert_eq!(reader, Some((pid, pid)));
        assert_eq!(waiting_on_hinted(pid, inode, &mut reader), Demand::Waiting);
        // Another pipe: the reader seen does not read that one.
        assert_eq!(waiting_on_hinted(pid, inode + 1, &mut reader), Demand::Idle);
        assert_eq!(reader, None);
        rustix::io::write(&write, &[TOKEN_BYTE]).unwrap();
        child.wait().unwrap();
    }
}
