//! The steps of running a child that the server's runner and the client's own run of a
//! compiler (under the server's admission) share.

use std::ffi::CStr;
use std::io;
use std::os::unix::ffi::OsStrExt;

/// Waits for `pid` to exit and reaps it (blocking: the server calls it on a blocking
/// thread). `wait4` is the one call that also gives the child's peak resident set (std and
/// tokio give the status only).
/// Returns the raw wait status and `ru_maxrss` in bytes.
pub fn reap(pid: i32) -> io::Result<(i32, u64)> {
    loop {
        let mut status = 0;
        // SAFETY: `rusage` is plain old data, zeroed is a valid value.
        let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
        // SAFETY: both pointers are to live locals; the pid is our own unreaped child.
        let got = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
        if got == pid {
            return Ok((status, (usage.ru_maxrss.max(0) as u64) << 10));
        }
        let err = io::Error::last_os_error();
        if err.kind() != io::ErrorKind::Interrupted {
            return Err(err);
        }
    }
}

/// Moves the running child `pid`, and whatever it has started so far, into the cgroup whose
/// `cgroup.procs` is `procs`; then reaps it as [`reap`] does. Call it on the one thread
/// that reaps `pid`: an unreaped child's pid cannot be reused meanwhile.
///
/// Not done before exec, in the child: a move takes the kernel's cgroup threadgroup lock
/// for writing, which waits for an RCU grace period unless another move happened just
/// before (Linux `kernel/cgroup/cgroup.c`, `percpu_down_write`). That was 5-16 ms here
/// once moves were 50 ms or more apart, as compiles are: each compile started that much
/// later. Moved from outside, the compile runs meanwhile; what it allocated before the
/// move stays charged where it was (cgroup v1 moves no charges), which the caller's
/// `ru_maxrss` covers. A failed move is ignored: a compile outside its group is measured
/// less well, not broken.
pub fn reap_in_group(pid: i32, procs: Option<&CStr>) -> io::Result<(i32, u64)> {
    if let Some(procs) = procs {
        let path = std::path::Path::new(std::ffi::OsStr::from_bytes(procs.to_bytes()));
        // One pid per write, as `cgroup.procs` takes them. The child first: what it starts
        // from then on is born in the group. Then what it started before, looked for again
        // until nothing new turns up (a process outside may have started another meanwhile).
        if std::fs::write(path, pid.to_string()).is_ok() {
            let mut moved = vec![pid as u32];
            for _ in 0..4 {
                let new: Vec<u32> = tree(pid as u32)
                    .into_iter()
                    .filter(|p| !moved.contains(p))
                    .collect();
                if new.is_empty() {
                    break;
                }
                for member in new {
                    let _ = std::fs::write(path, member.to_string());
                    moved.push(member);
                }
            }
        }
    }
    reap(pid)
}

/// `pid` and its descendants, parents first, as `/proc/PID/task/*/children` lists them
/// (Linux 3.5+ with CONFIG_PROC_CHILDREN); just `pid` where those cannot be read.
fn tree(pid: u32) -> Vec<u32> {
    let mut found = vec![pid];
    let mut next = 0;
    while let Some(&parent) = found.get(next) {
        next += 1;
        let Ok(tasks) = std::fs::read_dir(format!("/proc/{parent}/task")) else {
            continue;
        };
        for task in tasks.flatten() {
            if let Ok(children) = std::fs::read_to_string(task.path().join("children")) {
                found.extend(
                    children
                        .split_whitespace()
                        .filter_map(|c| c.parse::<u32>().ok()),
                );
            }
        }
    }
    found
}

/// Opens `path` and writes `bytes` into it, in the forked child before exec: only
/// async-signal-safe calls (open, write, close) on memory made before the fork. Failure is
/// ignored: a compile outside its cgroup is measured less well, not broken.
pub fn write_before_exec(path: &std::ffi::CStr, bytes: &[u8]) {
    // SAFETY: `path` is a valid C string and `bytes` a live slice; the fd is ours to close.
    unsafe {
        let fd = libc::open(path.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC);
        if fd >= 0 {
            let _ = libc::write(fd, bytes.as_ptr().cast(), bytes.len());
            libc::close(fd);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::process::CommandExt;

    #[test]
    fn a_tree_lists_the_child_and_what_it_started() {
        // The shell starts two sleeps and waits: three processes, the shell first.
        let mut shell = std::process::Command::new("sh")
            .args(["-c", "sleep 5 & sleep 5 & wait"])
            .process_group(0)
            .spawn()
            .unwrap();
        let pid = shell.id();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        let mut found = tree(pid);
        while found.len() < 3 && std::time::Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(5));
            found = tree(pid);
        }
        let _ = rustix::process::kill_process_group(
            rustix::process::Pid::from_raw(pid as i32).unwrap(),
            rustix::process::Signal::KILL,
        );
        shell.wait().unwrap();
        assert_eq!(found.len(), 3, "{found:?}");
        assert_eq!(found[0], pid);
    }

    #[test]
    fn reaping_in_a_group_writes_the_child_into_it_then_reaps_it() {
        let dir = tempfile::tempdir().unwrap();
        // A plain file stands in for `cgroup.procs`: it keeps the last pid written.
        let procs = dir.path().join("cgroup.procs");
        std::fs::write(&procs, "").unwrap();
        // Reaped by `reap_in_group`, not through std.
        #[allow(clippy::zombie_processes)]
        let pid = std::process::Command::new("sh")
            .args(["-c", "exit 3"])
            .spawn()
            .unwrap()
            .id() as i32;
        let procs_c = std::ffi::CString::new(procs.as_os_str().as_bytes()).unwrap();
        let (status, _) = reap_in_group(pid, Some(&procs_c)).unwrap();
        assert_eq!(libc::WEXITSTATUS(status), 3);
        assert_eq!(std::fs::read_to_string(&procs).unwrap(), pid.to_string());
    }
}
