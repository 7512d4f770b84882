//! The server's process, apart from the build: the client starts it detached
//! ([`spawn_detached`]), and the server, first thing, drops every descriptor it inherited
//! ([`close_inherited_fds`]). Shared by both sides, so the client need not know the server.

use std::io;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};

/// The hidden argument that makes `cachet` run as the server in the foreground; `cli`
/// declares the same flag.
pub(crate) const SERVER_ARG: &str = "--internal-run-server";

/// Closes every descriptor above stderr. A daemon that keeps a build's jobserver fds makes
/// make wait for it at exit (sccache#2841), and a kept pipe stalls whoever reads it.
pub(crate) fn close_inherited_fds() {
    // SAFETY: close_range only closes descriptors; nothing in this process owns one above
    // 2 yet (this runs first in the server's main), so no Rust owner is left dangling.
    // rustix has no close_range, hence the raw syscall.
    let closed = unsafe { libc::syscall(libc::SYS_close_range, 3u32, u32::MAX, 0u32) };
    if closed == 0 {
        return;
    }
    // Kernels before 5.9: close what /proc lists.
    let fds: Vec<i32> = match std::fs::read_dir("/proc/self/fd") {
        Ok(dir) => dir
            .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
            .filter(|fd| *fd > 2)
            .collect(),
        Err(_) => (3..1024).collect(),
    };
    for fd in fds {
        // SAFETY: as above, no Rust owner holds these; the one read_dir used is closed.
        unsafe { rustix::io::close(fd) };
    }
}

/// Starts `exe` as a detached server: its own session, no terminal, stdin from /dev/null,
/// output to `log`. The caller then waits until the socket answers, or the child exits.
pub(crate) fn spawn_detached(exe: &Path, log: &Path) -> io::Result<std::process::Child> {
    let log_file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)?;
    let mut command = Command::new(exe);
    command
        .arg(SERVER_ARG)
        // Keep no build directory busy.
        .current_dir("/")
        .stdin(Stdio::null())
        .stdout(log_file.try_clone()?)
        .stderr(log_file);
    // SAFETY: the hook runs in the forked child before exec, where only async-signal-safe
    // calls are allowed; it makes one setsid system call and allocates nothing.
    unsafe {
        command.pre_exec(|| {
            rustix::process::setsid()?;
            Ok(())
        });
    }
    command.spawn()
}
