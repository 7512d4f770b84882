//! Starts one child for the real runner without copying the server: `clone` with
//! `CLONE_VM | CLONE_VFORK`, as glibc's `posix_spawn` does, and the steps a compiler needs
//! before `execve` (its own process group, stdio, cwd, inherited fds, umask,
//! `PR_SET_PDEATHSIG`, `oom_score_adj`, the open-file limit the server started with).
//!
//! Hand-rolled because nothing else gives both: `std::process::Command` with a `pre_exec`
//! hook (what this replaces) always `fork`s, which copies the page tables of the whole
//! server and makes its next write to each page a copy-on-write fault (measured: about 6%
//! of the server's CPU in a cold build of 80 crates, 0.45 ms per compile); and
//! `posix_spawn` cannot set a umask, a parent-death signal or a limit.
//!
//! The child shares the parent's memory until it execs, and the parent's other threads
//! go on running: so it only makes raw system calls on memory prepared before the clone
//! (no allocation, no locks, no `errno` read by the parent), and all signals are blocked
//! across the clone, so that no handler of the parent's runs in the child (see glibc
//! `sysdeps/unix/sysv/linux/spawni.c`, which does the same).

use std::ffi::{CString, OsStr, OsString};
use std::io;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicI32, Ordering};

use super::CommandSpec;

/// A child that is running (or has exec'd): its pid, which is also its process group, and
/// the read ends of its stdout and stderr pipes (close-on-exec, blocking).
#[derive(Debug)]
pub struct Spawned {
    pub pid: i32,
    pub stdout: OwnedFd,
    pub stderr: OwnedFd,
}

/// Bytes of stack for the child until it execs; what it runs needs well under 4 KiB.
const CHILD_STACK: usize = 64 << 10;

/// Starts `spec` with stdin on `/dev/null` and stdout and stderr on new pipes.
///
/// `spec.program` without a slash is looked for in the `PATH` of `spec.env` (or of the
/// server, when the spec sets none), as `execvp` would. A file that the kernel refuses as
/// not executable (`ENOEXEC`: a script without `#!`) is run by `/bin/sh`, as `execvp`
/// does. Errors: the program is not found (`NotFound`), the cwd or a listed fd is bad, or
/// `execve` failed (the child's `errno`); the child is reaped before the error returns.
pub fn spawn(spec: &CommandSpec, nofile: Option<libc::rlimit>) -> io::Result<Spawned> {
    let path = resolve(&spec.program, spec.env_var("PATH"))?;
    let child = Prepared::new(spec, &path, nofile)?;
    let (stdout_read, stdout_write) = pipe()?;
    let (stderr_read, stderr_write) = pipe()?;
    let ctx = Context {
        child: &child,
        stdin: dev_null()?,
        stdout: stdout_write.as_raw_fd(),
        stderr: stderr_write.as_raw_fd(),
        error: AtomicI32::new(0),
    };
    let mut stack: Vec<u8> = Vec::with_capacity(CHILD_STACK);
    // The stack grows down on every Linux target we build for; keep its top 16-aligned.
    let top = (stack.as_mut_ptr() as usize + CHILD_STACK) & !15;
    let pid = {
        let _blocked = SignalsBlocked::new();
        // SAFETY: `child_main` only reads `ctx` (alive until clone returns: CLONE_VFORK
        // holds this thread until the child execs or exits) and makes raw system calls;
        // `top` is the top of `stack`, which outlives the child's use of it likewise.
        unsafe {
            libc::clone(
                child_main,
                top as *mut libc::c_void,
                libc::CLONE_VM | libc::CLONE_VFORK | libc::SIGCHLD,
                (&ctx as *const Context).cast_mut().cast(),
            )
        }
    };
    if pid < 0 {
        return Err(io::Error::last_os_error());
    }
    let failed = ctx.error.load(Ordering::SeqCst);
    if failed != 0 {
        // It exited without exec'ing: reap it, so no zombie is left.
        let _ = super::child::reap(pid);
        let error = io::Error::from_raw_os_error(failed);
        return Err(io::Error::new(
            error.kind(),
            format!("cannot run {}: {error}", spec.program.display()),
        ));
    }
    Ok(Spawned {
        pid,
        stdout: stdout_read,
        stderr: stderr_read,
    })
}

/// The path `program` runs from: itself when it holds a slash, else the first
/// executable regular file of that name in `path` (the spec's `PATH`, else the server's).
fn resolve(program: &Path, path: Option<&OsString>) -> io::Result<PathBuf> {
    if program.as_os_str().as_bytes().contains(&b'/') {
        return Ok(program.to_owned());
    }
    let own;
    let path = match path {
        Some(path) => path.as_os_str(),
        None => {
            own = std::env::var_os("PATH").unwrap_or_else(|| "/usr/bin:/bin".into());
            own.as_os_str()
        }
    };
    for dir in path.as_bytes().split(|&b| b == b':') {
        // An empty entry is the current directory, as execvp reads it.
        let dir = if dir.is_empty() {
            Path::new(".")
        } else {
            Path::new(OsStr::from_bytes(dir))
        };
        let candidate = dir.join(program);
        if std::fs::metadata(&candidate)
            .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        {
            return Ok(candidate);
        }
    }
    Err(io::Error::new(
        io::ErrorKind::NotFound,
        format!("{} is not in PATH", program.display()),
    ))
}

/// Everything the child reads, as C data made before the clone.
struct Prepared {
    path: CString,
    /// Owns what `argv_ptrs` points to.
    _argv: Vec<CString>,
    argv_ptrs: Vec<*const libc::c_char>,
    /// `/bin/sh path args…`, for a script the kernel will not run itself.
    sh_argv_ptrs: Vec<*const libc::c_char>,
    /// Owns what `envp_ptrs` points to.
    _envp: Vec<CString>,
    envp_ptrs: Vec<*const libc::c_char>,
    cwd: CString,
    inherit_fds: Vec<RawFd>,
    umask: Option<libc::mode_t>,
    oom_score_adj: Option<Vec<u8>>,
    nofile: Option<libc::rlimit>,
}

fn c_string(bytes: Vec<u8>, what: &str) -> io::Result<CString> {
    CString::new(bytes).map_err(|_| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{what} holds a NUL byte"),
        )
    })
}

impl Prepared {
    fn new(spec: &CommandSpec, path: &Path, nofile: Option<libc::rlimit>) -> io::Result<Self> {
        let path = c_string(path.as_os_str().as_bytes().to_vec(), "the program path")?;
        let mut argv = vec![c_string(
            spec.program.as_os_str().as_bytes().to_vec(),
            "the program",
        )?];
        for arg in &spec.args {
            argv.push(c_string(arg.as_bytes().to_vec(), "an argument")?);
        }
        let mut envp = Vec::with_capacity(spec.env.len());
        for (name, value) in &spec.env {
            let mut pair = name.clone().into_vec();
            pair.push(b'=');
            pair.extend_from_slice(value.as_bytes());
            envp.push(c_string(pair, "the environment")?);
        }
        let cwd = c_string(spec.cwd.as_os_str().as_bytes().to_vec(), "the cwd")?;
        let nul_ended = |strings: &[CString]| {
            let mut ptrs: Vec<*const libc::c_char> = strings.iter().map(|s| s.as_ptr()).collect();
            ptrs.push(std::ptr::null());
            ptrs
        };
        let argv_ptrs = nul_ended(&argv);
        let mut sh_argv_ptrs = vec![c"/bin/sh".as_ptr(), path.as_ptr()];
        sh_argv_ptrs.extend_from_slice(&argv_ptrs[1..]);
        let envp_ptrs = nul_ended(&envp);
        Ok(Prepared {
            path,
            _argv: argv,
            argv_ptrs,
            sh_argv_ptrs,
            _envp: envp,
            envp_ptrs,
            cwd,
            inherit_fds: spec.inherit_fds.clone(),
            umask: spec.umask.map(|m| m as libc::mode_t),
            oom_score_adj: spec.oom_score_adj.map(|adj| adj.to_string().into_bytes()),
            nofile,
        })
    }
}

/// What the clone passes to [`child_main`].
struct Context<'a> {
    child: &'a Prepared,
    stdin: RawFd,
    stdout: RawFd,
    stderr: RawFd,
    /// The child's `errno` when a step failed; 0 while it has not.
    error: AtomicI32,
}

/// The child, until it execs. Returns only by exiting (127 when a step failed, after
/// putting its `errno` into `ctx.error` for the parent).
extern "C" fn child_main(arg: *mut libc::c_void) -> libc::c_int {
    // SAFETY: `arg` is the `Context` the parent passed, alive while the parent is held.
    let ctx = unsafe { &*(arg as *const Context) };
    // SAFETY: raw system calls on memory prepared before the clone (see the module doc).
    let errno = unsafe { child_steps(ctx) };
    ctx.error.store(errno.max(1), Ordering::SeqCst);
    // SAFETY: ends the child only (it is its own thread group).
    unsafe { libc::_exit(127) }
}

/// The steps before exec, then exec; returns the `errno` of the step that failed.
///
/// # Safety
/// Only for [`child_main`], in the vfork'd child.
unsafe fn child_steps(ctx: &Context) -> libc::c_int {
    // SAFETY: reads this thread's errno, a valid location.
    let fail = || unsafe { *libc::__errno_location() };
    let child = ctx.child;
    // SAFETY: system calls on plain ints, on C strings and arrays that `Prepared` owns,
    // and on structs on this stack; nothing here allocates or takes a lock.
    unsafe {
        // Handlers the server installed are no use in the child (exec resets them anyway)
        // and must not run before the exec; SIGPIPE goes back to the default that std's
        // runtime ignores, as std's own spawn does.
        for signal in 1..=libc::SIGRTMAX() {
            if signal == libc::SIGKILL || signal == libc::SIGSTOP {
                continue;
            }
            let mut old: libc::sigaction = std::mem::zeroed();
            if libc::sigaction(signal, std::ptr::null(), &mut old) != 0 {
                continue;
            }
            if old.sa_sigaction != libc::SIG_DFL
                && (old.sa_sigaction != libc::SIG_IGN || signal == libc::SIGPIPE)
            {
                let mut default: libc::sigaction = std::mem::zeroed();
                default.sa_sigaction = libc::SIG_DFL;
                libc::sigaction(signal, &default, std::ptr::null_mut());
            }
        }
        if libc::setpgid(0, 0) != 0 {
            return fail();
        }
        for (from, to) in [(ctx.stdin, 0), (ctx.stdout, 1), (ctx.stderr, 2)] {
            if libc::dup2(from, to) < 0 {
                return fail();
            }
        }
        if libc::chdir(child.cwd.as_ptr()) != 0 {
            return fail();
        }
        for &fd in &child.inherit_fds {
            let flags = libc::fcntl(fd, libc::F_GETFD);
            if flags < 0 || libc::fcntl(fd, libc::F_SETFD, flags & !libc::FD_CLOEXEC) < 0 {
                return fail();
            }
        }
        if let Some(mask) = child.umask {
            libc::umask(mask);
        }
        // If the server dies, the compiler must not go on writing outputs that the
        // client's fallback compile is also writing.
        libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
        if let Some(adj) = &child.oom_score_adj {
            super::child::write_before_exec(c"/proc/self/oom_score_adj", adj);
        }
        // The compiler gets the open-file limit the server started with.
        if let Some(limit) = &child.nofile
            && libc::setrlimit(libc::RLIMIT_NOFILE, limit) != 0
        {
            return fail();
        }
        // Unblock everything only now that no handler of the server's is left to run.
        let mut none: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut none);
        libc::pthread_sigmask(libc::SIG_SETMASK, &none, std::ptr::null_mut());
        libc::execve(
            child.path.as_ptr(),
            child.argv_ptrs.as_ptr(),
            child.envp_ptrs.as_ptr(),
        );
        if fail() == libc::ENOEXEC {
            libc::execve(
                c"/bin/sh".as_ptr(),
                child.sh_argv_ptrs.as_ptr(),
                child.envp_ptrs.as_ptr(),
            );
        }
        fail()
    }
}

/// Every signal blocked on this thread while it lives, the old mask back when dropped.
struct SignalsBlocked(libc::sigset_t);

impl SignalsBlocked {
    fn new() -> Self {
        // SAFETY: sigset_t is plain data; the calls only read and write these locals.
        unsafe {
            let mut all: libc::sigset_t = std::mem::zeroed();
            let mut old: libc::sigset_t = std::mem::zeroed();
            libc::sigfillset(&mut all);
            libc::pthread_sigmask(libc::SIG_SETMASK, &all, &mut old);
            SignalsBlocked(old)
        }
    }
}

impl Drop for SignalsBlocked {
    fn drop(&mut self) {
        // SAFETY: restores the mask saved in `new` on the same thread.
        unsafe {
            libc::pthread_sigmask(libc::SIG_SETMASK, &self.0, std::ptr::null_mut());
        }
    }
}

/// A pipe, both ends close-on-exec and numbered above stdio: (read end, write end).
fn pipe() -> io::Result<(OwnedFd, OwnedFd)> {
    let (read, write) = rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC)?;
    Ok((above_stdio(read)?, above_stdio(write)?))
}

/// `fd`, or a close-on-exec copy numbered 3 or more if it is 0, 1 or 2 (a process that
/// runs with a standard stream closed gets those numbers for new files): the child's
/// `dup2` onto 0, 1 and 2 must never overwrite a descriptor it has yet to copy.
fn above_stdio(fd: OwnedFd) -> io::Result<OwnedFd> {
    if fd.as_raw_fd() > 2 {
        return Ok(fd);
    }
    Ok(rustix::io::fcntl_dupfd_cloexec(&fd, 3)?)
}

/// `/dev/null` for reading, opened once (close-on-exec) for every child's stdin.
fn dev_null() -> io::Result<RawFd> {
    static DEV_NULL: OnceLock<OwnedFd> = OnceLock::new();
    if let Some(fd) = DEV_NULL.get() {
        return Ok(fd.as_raw_fd());
    }
    let fd = above_stdio(std::fs::File::open("/dev/null")?.into())?;
    Ok(DEV_NULL.get_or_init(|| fd).as_raw_fd())
}

#[cfg(test)]
mod tests;
