//! Two steps of running a child that the server's runner and the client's own run of a
//! compiler (under the server's admission) share.

use std::io;

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
