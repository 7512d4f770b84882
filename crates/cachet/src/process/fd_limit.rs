//! The server's open-file limit (`RLIMIT_NOFILE`).
//!
//! Each client connection costs the server a socket and, with a pipe-style build
//! jobserver, two more fds; each running compile adds its pipes. The soft limit a shell
//! gives is often 1024, so the server raises its own soft limit towards the hard one at
//! start (as systemd and the Go runtime do), and gives every compiler it runs the limit it
//! started with: some programs use select(2), which breaks past fd 1023, or close every
//! fd up to the limit before they exec.

use std::sync::atomic::{AtomicU64, Ordering};

use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};

/// The soft limit the server asks for, when the hard limit allows: enough for
/// [`MAX_CONNECTIONS`](crate::server) and their compiles, and small enough that a child
/// that walks every fd up to the limit stays cheap.
pub const WANTED: u64 = 1 << 16;

/// The soft and hard limits the server started with; 0 until [`raise`] changed them.
static STARTED_WITH: [AtomicU64; 2] = [AtomicU64::new(0), AtomicU64::new(0)];

/// Raises the soft limit to `WANTED`, or to the hard limit if that is lower; returns the
/// soft limit now (unchanged when it was already higher, or when raising failed).
/// `u64::MAX` stands for no limit.
pub fn raise() -> u64 {
    let limits = getrlimit(Resource::Nofile);
    let soft = limits.current.unwrap_or(u64::MAX);
    let hard = limits.maximum.unwrap_or(u64::MAX);
    let wanted = WANTED.min(hard);
    if soft >= wanted {
        return soft;
    }
    let raised = Rlimit {
        current: Some(wanted),
        maximum: limits.maximum,
    };
    match setrlimit(Resource::Nofile, raised) {
        Ok(()) => {
            STARTED_WITH[0].store(soft, Ordering::SeqCst);
            STARTED_WITH[1].store(hard, Ordering::SeqCst);
            wanted
        }
        Err(e) => {
            tracing::warn!("cannot raise the open-file limit from {soft} to {wanted}: {e}");
            soft
        }
    }
}

/// The open-file limit the server started with, if [`raise`] changed it: what a child
/// gets back before it execs.
pub fn started_with() -> Option<libc::rlimit> {
    let soft = STARTED_WITH[0].load(Ordering::Relaxed);
    let hard = STARTED_WITH[1].load(Ordering::Relaxed);
    if soft == 0 {
        return None;
    }
    let limit = |v: u64| {
        if v == u64::MAX {
            libc::RLIM_INFINITY
        } else {
            v as libc::rlim_t
        }
    };
    Some(libc::rlimit {
        rlim_cur: limit(soft),
        rlim_max: limit(hard),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn raise_goes_up_to_the_wanted_limit_within_the_hard_one_and_never_down() {
        let before = getrlimit(Resource::Nofile);
        let soft = before.current.unwrap_or(u64::MAX);
        let target = WANTED.min(before.maximum.unwrap_or(u64::MAX));
        let now = raise();
        assert_eq!(now, soft.max(target));
        let after = getrlimit(Resource::Nofile);
        assert_eq!(after.current.unwrap_or(u64::MAX), now);
        assert_eq!(
            after.maximum, before.maximum,
            "the hard limit is left alone"
        );
    }
}
