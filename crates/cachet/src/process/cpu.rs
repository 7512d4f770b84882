//! The CPU time this process has used, and that of the children it has reaped: what the
//! server costs the machine next to the compilers it ran (`cachet -s`).

/// CPU time (user + system), in ms.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CpuTimes {
    /// This process, all its threads.
    pub own_ms: u64,
    /// Its children that have exited and been waited for, with their own reaped
    /// descendants (getrusage(2), `RUSAGE_CHILDREN`): for the server, the compilers and
    /// probes it ran; not what its clients ran themselves.
    pub children_ms: u64,
}

impl CpuTimes {
    /// The times so far; zero where the kernel does not say.
    pub fn now() -> CpuTimes {
        CpuTimes {
            own_ms: used_ms(libc::RUSAGE_SELF),
            children_ms: used_ms(libc::RUSAGE_CHILDREN),
        }
    }

    /// The time used since `earlier` (a reading of the same process).
    pub fn since(self, earlier: CpuTimes) -> CpuTimes {
        CpuTimes {
            own_ms: self.own_ms.saturating_sub(earlier.own_ms),
            children_ms: self.children_ms.saturating_sub(earlier.children_ms),
        }
    }
}

/// User + system time of `who` (a `RUSAGE_*`), in ms; 0 if getrusage fails.
fn used_ms(who: libc::c_int) -> u64 {
    // SAFETY: `rusage` is plain old data, zeroed is a valid value.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: the pointer is to a live local; `who` is one of the RUSAGE_* constants.
    if unsafe { libc::getrusage(who, &mut usage) } != 0 {
        return 0;
    }
    let ms = |t: libc::timeval| t.tv_sec.max(0) as u64 * 1000 + t.tv_usec.max(0) as u64 / 1000;
    ms(usage.ru_utime) + ms(usage.ru_stime)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reaped_child_counts_as_childrens_time_and_our_own_spinning_as_ours() {
        // (Other tests' threads and children only add to both.)
        let before = CpuTimes::now();
        // A child that burns about 100 ms of CPU, then is waited for.
        let status = std::process::Command::new("sh")
            .args(["-c", "i=0; while [ $i -lt 200000 ]; do i=$((i+1)); done"])
            .status()
            .unwrap();
        assert!(status.success());
        let used = CpuTimes::now().since(before);
        assert!(
            used.children_ms >= 10,
            "the child's CPU is counted: {used:?}"
        );

        let before = CpuTimes::now();
        let spin = std::time::Instant::now();
        let mut x = 0u64;
        while spin.elapsed() < std::time::Duration::from_millis(60) {
            x = std::hint::black_box(x.wrapping_add(1));
        }
        let used = CpuTimes::now().since(before);
        assert!(
            used.own_ms >= 10,
            "this thread's spinning is counted: {used:?}"
        );
    }

    #[test]
    fn since_never_goes_below_zero() {
        let later = CpuTimes {
            own_ms: 5,
            children_ms: 7,
        };
        let earlier = CpuTimes {
            own_ms: 9,
            children_ms: 3,
        };
        assert_eq!(
            later.since(earlier),
            CpuTimes {
                own_ms: 0,
                children_ms: 4
            }
        );
    }
}
