//! The client: what the build tool runs in place of the compiler.
//!
//! It is synchronous and small on purpose: a hit costs a process start, one connect, one
//! round trip and a few writes. Whatever goes wrong with the cache, it runs the compiler
//! itself, so a cache problem is a warning, never a broken build.

pub mod commands;
mod connect;
mod rerun;
mod resolve;
mod tokens;

use std::ffi::{OsStr, OsString};
use std::io::Write;
use std::os::fd::BorrowedFd;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::process::CommandExt;
use std::path::Path;

pub(crate) use connect::{ClientError, Connection, Start};
pub(crate) use resolve::{names_cachet, resolve_compiler};

use crate::config::Config;
use cachet_jobserver::inherited::{self, Found, NotFound};
use rustix::fs::Mode;

use crate::process::child;
use crate::protocol::{
    Admission, BuildJobserver, CompileRequest, Exit, Request, Response, to_bytes,
};
use rerun::Forwarded;
use tokens::BuildPool;

/// Runs one compile through the server. Returns the exit code; may also exec the compiler.
pub(crate) fn compile(compiler: &OsStr, args: Vec<OsString>) -> i32 {
    let Some(path) = resolve_compiler(compiler) else {
        eprintln!(
            "cachet: cannot find the compiler `{}` on PATH",
            compiler.to_string_lossy()
        );
        return 127;
    };
    if env_flag("CACHET_DISABLE") {
        run_directly(&path, &args);
    }
    let config = match Config::load() {
        Ok(config) => config,
        Err(e) => warn_and_run_directly(&e.to_string(), &path, &args),
    };
    crate::logging::init_client(config.log.as_deref());
    // Timing spans for CACHET_LOG=debug: where a hit's time goes, from this process's start.
    let started = std::time::Instant::now();
    tracing::debug!(target: "cachet::timing", "client: config loaded");

    let (request, fds) = match build_request(&path, &args, &config) {
        Ok(request) => request,
        Err(e) => warn_and_run_directly(&e.to_string(), &path, &args),
    };
    tracing::debug!(target: "cachet::timing", "client: request built after {:?}", started.elapsed());
    let pool = match (&request.build_jobserver, fds.get(1)) {
        (Some(BuildJobserver::Pipe), Some(write)) => Some(BuildPool::Pipe(*write)),
        (Some(BuildJobserver::Fifo(path)), _) => {
            Some(BuildPool::Fifo(crate::protocol::to_os(path).into()))
        }
        _ => None,
    };
    let first = Request::Compile(request);
    let mut connection = match Connection::open_with_fds(&config, Start::IfNeeded, &first, &fds) {
        Ok(connection) => connection,
        Err(e) => warn_and_run_directly(&e.to_string(), &path, &args),
    };
    tracing::debug!(target: "cachet::timing", "client: connected and handshaken after {:?}", started.elapsed());
    let stdout = std::io::stdout();
    let stderr = std::io::stderr();
    let mut compiler_group = None;
    let mut forwarded = Forwarded::default();
    let mut build_tokens = 0;
    loop {
        let response = connection.receive();
        if let Err(e) = &response {
            // The server is gone; so must its compiler be before we write the same outputs.
            // An error means the group is gone already.
            if let Some(pgid) = compiler_group
                .take()
                .and_then(|g| rustix::process::Pid::from_raw(g as i32))
            {
                let _ = rustix::process::kill_process_group(pgid, rustix::process::Signal::KILL);
            }
            // A server that died held the build's tokens it took; give them back. (One that
            // sends garbage is alive and gives them back itself.)
            if matches!(e, ClientError::Closed | ClientError::Io(_))
                && build_tokens > 0
                && let Some(pool) = &pool
                && let Err(e) = pool.give_back(std::mem::take(&mut build_tokens))
            {
                eprintln!("cachet: warning: giving back the build's jobserver tokens: {e}");
            }
        }
        match response {
            Ok(Response::CompilerStarted { pgid }) => compiler_group = Some(pgid),
            Ok(Response::BuildTokens { held }) => build_tokens = held,
            Ok(Response::Stdout(bytes)) => {
                let _ = stdout.lock().write_all(&bytes);
                forwarded.stdout.extend_from_slice(&bytes);
            }
            Ok(Response::Stderr(bytes)) => {
                let _ = stderr.lock().write_all(&bytes);
                forwarded.stderr.extend_from_slice(&bytes);
            }
            Ok(Response::Finished(exit)) => {
                let _ = stdout.lock().flush();
                tracing::debug!(target: "cachet::timing", "client: finished after {:?}", started.elapsed());
                return exit_like(exit);
            }
            Ok(Response::RunLocally { reason, admission }) => {
                tracing::debug!("not cacheable ({reason}); running the compiler directly");
                match admission {
                    Some(admission) => {
                        return run_admitted(&path, &args, admission, &mut connection);
                    }
                    None => run_directly(&path, &args),
                }
            }
            Ok(Response::Error(message)) => fall_back(
                &format!("server error: {message}"),
                &path,
                &args,
                &forwarded,
            ),
            Ok(other) => fall_back(
                &format!("unexpected answer {other:?}"),
                &path,
                &args,
                &forwarded,
            ),
            Err(e) => fall_back(&e.to_string(), &path, &args, &forwarded),
        }
    }
}

fn env_flag(name: &str) -> bool {
    std::env::var_os(name).is_some_and(|v| !v.is_empty() && v != "0")
}

/// The request, and the fds to send with it (the build's jobserver pipe, if any).
fn build_request(
    compiler: &Path,
    args: &[OsString],
    config: &Config,
) -> std::io::Result<(CompileRequest, Vec<BorrowedFd<'static>>)> {
    let cwd = std::env::current_dir()?;
    // umask can only be read by setting it; we are single-threaded here.
    let mask = rustix::process::umask(Mode::from_raw_mode(0o022));
    rustix::process::umask(mask);
    let umask = mask.as_raw_mode();
    // The build's own jobserver, checked here where its fds are valid.
    let (build_jobserver, stale_jobserver, fds) =
        match inherited::find(|name| std::env::var_os(name)) {
            Ok(Found::Pipe { read, write }) => {
                // SAFETY: `find` checked that both are open, the two ends of one pipe, and this
                // process never closes them: it exits or execs the compiler.
                let fds = unsafe { [BorrowedFd::borrow_raw(read), BorrowedFd::borrow_raw(write)] };
                (Some(BuildJobserver::Pipe), None, fds.to_vec())
            }
            Ok(Found::Fifo(path)) => (
                Some(BuildJobserver::Fifo(to_bytes(path.as_os_str()))),
                None,
                vec![],
            ),
            Err(NotFound::Absent) => (None, None, vec![]),
            Err(NotFound::Stale(why)) => {
                tracing::debug!("ignoring the jobserver in the environment: {why}");
                (None, Some(why.to_string()), vec![])
            }
        };
    let request = CompileRequest {
        compiler: compiler.as_os_str().as_bytes().to_vec(),
        args: args.iter().map(|a| to_bytes(a)).collect(),
        cwd: to_bytes(cwd.as_os_str()),
        env: std::env::vars_os()
            .map(|(k, v)| (to_bytes(&k), to_bytes(&v)))
            .collect(),
        umask,
        stderr_is_tty: rustix::termios::isatty(std::io::stderr()),
        build_jobserver,
        stale_jobserver,
        base_dirs: config
            .base_dirs
            .iter()
            .map(|d| to_bytes(d.as_os_str()))
            .collect(),
    };
    Ok((request, fds))
}

/// Runs the compiler as a child under the server's admission (its cgroup, its
/// `oom_score_adj`), reports how it ended, and runs it once more if the server says the
/// OOM killer struck it. The admission ends when this reports or dies. Returns the exit
/// code, or dies of the compiler's signal.
fn run_admitted(
    compiler: &Path,
    args: &[OsString],
    mut admission: Admission,
    connection: &mut Connection,
) -> i32 {
    loop {
        let (exit, max_rss) = match run_child(compiler, args, &admission) {
            Ok(ended) => ended,
            Err(e) => {
                eprintln!("cachet: cannot run {}: {e}", compiler.display());
                return 127;
            }
        };
        if connection
            .send(&Request::LocalExit { exit, max_rss })
            .is_err()
        {
            return exit_like(exit);
        }
        match connection.receive() {
            Ok(Response::RunAgain(next)) => admission = next,
            _ => return exit_like(exit),
        }
    }
}

/// Runs the compiler with this process's environment and descriptors (the build's
/// jobserver reaches it), in the admission's cgroup; returns how it ended and its
/// `ru_maxrss` (bytes).
fn run_child(
    compiler: &Path,
    args: &[OsString],
    admission: &Admission,
) -> std::io::Result<(Exit, Option<u64>)> {
    use std::os::unix::process::ExitStatusExt;
    let procs = admission
        .cgroup_procs
        .as_ref()
        .and_then(|p| std::ffi::CString::new(p.clone()).ok());
    let adj = admission.oom_score_adj.to_string().into_bytes();
    let mut command = std::process::Command::new(compiler);
    command.args(args);
    // SAFETY: only open, write and close on memory made before the fork (see
    // `write_before_exec`).
    unsafe {
        command.pre_exec(move || {
            child::write_before_exec(c"/proc/self/oom_score_adj", &adj);
            Ok(())
        });
    }
    let pid = command.spawn()?.id() as i32;
    let (status, max_rss) = child::reap_in_group(pid, procs.as_deref())?;
    Ok((
        exit_of(std::process::ExitStatus::from_raw(status)),
        Some(max_rss),
    ))
}

fn exit_of(status: std::process::ExitStatus) -> Exit {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(code), _) => Exit::Code(code),
        (None, Some(signal)) => Exit::Signal(signal),
        (None, None) => Exit::Code(1),
    }
}

/// Ends this process the way the compiler's process ended.
fn exit_like(exit: Exit) -> i32 {
    match exit {
        Exit::Code(code) => code,
        Exit::Signal(signal) => {
            // SAFETY: restoring the default action, unblocking and raising is how we "die of"
            // the same signal as the compiler did.
            unsafe {
                libc::signal(signal, libc::SIG_DFL);
                let mut set: libc::sigset_t = std::mem::zeroed();
                libc::sigemptyset(&mut set);
                libc::sigaddset(&mut set, signal);
                libc::sigprocmask(libc::SIG_UNBLOCK, &set, std::ptr::null_mut());
                libc::raise(signal);
            }
            128 + signal
        }
    }
}

/// Warns and compiles directly: the compiler replaces this process, unless the server
/// already forwarded part of its compiler's output; then the compiler runs as a child and
/// that part is left out of its output ([`rerun`]).
fn fall_back(why: &str, compiler: &Path, args: &[OsString], forwarded: &Forwarded) -> ! {
    if forwarded.is_empty() {
        warn_and_run_directly(why, compiler, args);
    }
    eprintln!("cachet: warning: {why}; running the compiler directly");
    match rerun::run_after(compiler, args, forwarded) {
        Ok(status) => std::process::exit(exit_like(exit_of(status))),
        Err(e) => {
            eprintln!("cachet: cannot run {}: {e}", compiler.display());
            std::process::exit(127)
        }
    }
}

fn warn_and_run_directly(why: &str, compiler: &Path, args: &[OsString]) -> ! {
    eprintln!("cachet: warning: {why}; running the compiler directly");
    run_directly(compiler, args)
}

/// Replaces this process with the compiler: same environment, same descriptors (so the
/// build's own jobserver reaches it), and its exit status is the build tool's to see.
pub(crate) fn run_directly(compiler: &Path, args: &[OsString]) -> ! {
    let err = std::process::Command::new(compiler).args(args).exec();
    eprintln!("cachet: cannot run {}: {err}", compiler.display());
    std::process::exit(127)
}
