//! An async owner of a GNU make compatible jobserver, for tokio.
//!
//! A long-lived server makes one [`Jobserver`] of N tokens. Before it spawns
//! each compiler it awaits a [`Token`] (never blocking a runtime thread) and
//! keeps it until the child exits; dropping the token puts it back. The
//! child gets the pool through `MAKEFLAGS`, `MFLAGS` and `CARGO_MAKEFLAGS`
//! plus the two inherited pipe fds, so make, rustc or `gcc -flto=jobserver`
//! in it draw their extra tokens from the same pool.
//!
//! Linux only: async reads go through `/proc/self/fd` (see `pipe.rs`).
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> std::io::Result<()> {
//! use cachet_jobserver::Jobserver;
//!
//! let pool = Jobserver::new(4)?;
//! let token = pool.acquire().await?;
//!
//! let mut cmd = tokio::process::Command::new("true");
//! // Sets MAKEFLAGS & co. and keeps the pool's fds open across exec.
//! pool.configure_command(&mut cmd, std::env::var_os("MAKEFLAGS").as_deref());
//! let status = cmd.status().await?;
//! assert!(status.success());
//!
//! drop(token); // the child is done: its token goes back
//! assert_eq!(pool.stats().pool_in_use, 0);
//! # Ok(())
//! # }
//! ```

// A library for other projects: every public item says what it is.
#![deny(missing_docs)]

use std::ffi::{OsStr, OsString};
use std::fmt;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use rustix::fs::{Mode, OFlags};

pub mod flags;
pub mod inherited;
mod pipe;
mod proxy;
mod stats;

pub use proxy::{Demand, Proxy, ProxyReport, waiting_on};
pub use stats::JobserverStats;

/// Largest pool we make; a pipe holds far more, but no machine needs more.
pub const MAX_TOKENS: usize = 4096;

/// The byte we fill the pipe with. Any byte works: we give back what we read.
const TOKEN_BYTE: u8 = b'|';

/// The names of the environment variables that [`Jobserver::child_env`] sets.
pub const ENV_VARS: [&str; 3] = ["MAKEFLAGS", "MFLAGS", "CARGO_MAKEFLAGS"];

/// A pool of tokens in an anonymous pipe (or a fifo). Cheap to clone: all clones share it.
///
/// One byte in the pipe is one token, as the GNU make jobserver protocol has it: a taker
/// reads a byte before it starts a job and writes the same byte back when the job ends.
#[derive(Clone)]
pub struct Jobserver {
    inner: Arc<Inner>,
}

struct Inner {
    pipe: pipe::Pipe,
    capacity: usize,
    /// Held by whoever waits at the pipe; tokio's mutex is fair, so waiters
    /// in this process are served in the order they came.
    gate: tokio::sync::Mutex<()>,
    counters: stats::Counters,
    /// Set for a pool made as a fifo; removed from disk when the pool goes, unless the path
    /// names another file by then (a later server's): see `fifo_file`.
    fifo: Option<std::path::PathBuf>,
    /// The fifo's (device, inode) as made.
    fifo_file: Option<(u64, u64)>,
    /// Set for someone else's fifo that we joined; never removed by us.
    joined_fifo: Option<std::path::PathBuf>,
}

/// Which file `path` names now (device, inode), if any.
fn file_id(path: &Path) -> Option<(u64, u64)> {
    use std::os::unix::fs::MetadataExt;
    std::fs::symlink_metadata(path)
        .ok()
        .map(|m| (m.dev(), m.ino()))
}

impl Drop for Inner {
    fn drop(&mut self) {
        if let Some(path) = &self.fifo
            && file_id(path) == self.fifo_file
        {
            let _ = std::fs::remove_file(path);
        }
    }
}

impl Jobserver {
    /// Makes a pipe filled with `tokens` bytes (1..=[`MAX_TOKENS`], else `InvalidInput`).
    /// Must be called inside a tokio runtime with IO enabled (else an `Other` error); other
    /// errors are the OS's.
    pub fn new(tokens: usize) -> io::Result<Self> {
        if !(1..=MAX_TOKENS).contains(&tokens) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("jobserver tokens must be 1..={MAX_TOKENS}, got {tokens}"),
            ));
        }
        if tokio::runtime::Handle::try_current().is_err() {
            return Err(io::Error::other(
                "Jobserver::new must be called inside a tokio runtime",
            ));
        }
        let pipe = pipe::Pipe::new(tokens, TOKEN_BYTE)?;
        tracing::debug!(
            tokens,
            read = pipe.read_fd(),
            write = pipe.write_fd(),
            "jobserver created"
        );
        Self::wrap(pipe, tokens)
    }

    /// Like [`new`](Self::new), but the pool is a fifo at `path` (mode 0600), so that
    /// tools that speak `--jobserver-auth=fifo:PATH` (make 4.4+, ninja 1.13) can join it by
    /// path. A file already at `path` is replaced.
    pub fn new_fifo(tokens: usize, path: &Path) -> io::Result<Self> {
        if !(1..=MAX_TOKENS).contains(&tokens) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("jobserver tokens must be 1..={MAX_TOKENS}, got {tokens}"),
            ));
        }
        let _ = std::fs::remove_file(path);
        rustix::fs::mkfifoat(rustix::fs::CWD, path, Mode::from_raw_mode(0o600))?;
        let (read, write) = open_fifo(path)?;
        let pipe = pipe::Pipe::from_fds(read, write)?;
        for _ in 0..tokens {
            pipe.write_byte(TOKEN_BYTE)?;
        }
        Self::wrap_fifo(pipe, tokens, path)
    }

    /// The fifo this pool lives in, when it is one of ours made by [`new_fifo`](Self::new_fifo).
    pub fn fifo_path(&self) -> Option<&Path> {
        self.inner.fifo.as_deref()
    }

    /// A name for the pool that tells pools apart: `pipe:[INODE]`, or `fifo:PATH` for a fifo.
    pub fn id(&self) -> String {
        match (&self.inner.fifo, &self.inner.joined_fifo) {
            (Some(path), _) | (None, Some(path)) => format!("fifo:{}", path.display()),
            (None, None) => match self.inner.pipe.inode() {
                Ok(inode) => format!("pipe:[{inode}]"),
                Err(_) => "unknown".into(),
            },
        }
    }

    /// Whether `other` is this very pool (a clone of it).
    pub fn same_pool(&self, other: &Jobserver) -> bool {
        Arc::ptr_eq(&self.inner, &other.inner)
    }

    /// Joins another owner's pool through the read and write ends of its pipe (both
    /// checked to be one pipe; `InvalidInput`, with [`inherited::check_pipe`]'s reason,
    /// if not). Tokens taken go back to that pool. `capacity` is 0: the
    /// size of someone else's pool is unknown.
    pub fn join(read: OwnedFd, write: OwnedFd) -> io::Result<Self> {
        inherited::check_pipe(read.as_raw_fd(), write.as_raw_fd())
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
        Self::wrap(pipe::Pipe::from_fds(read, write)?, 0)
    }

    /// Joins a fifo jobserver (make 4.4+, ninja 1.13) by its path. `InvalidInput` if the
    /// path is not a fifo of ours (see [`inherited::check_fifo`]); other errors are the
    /// OS's from opening it.
    pub fn join_fifo(path: &Path) -> io::Result<Self> {
        inherited::check_fifo(path).map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
        let (read, write) = open_fifo(path)?;
        let mut pool = Self::wrap(pipe::Pipe::from_fds(read, write)?, 0)?;
        Arc::get_mut(&mut pool.inner).expect("fresh").joined_fifo = Some(path.to_owned());
        Ok(pool)
    }

    fn wrap(pipe: pipe::Pipe, capacity: usize) -> io::Result<Self> {
        Ok(Jobserver {
            inner: Arc::new(Inner {
                pipe,
                capacity,
                gate: tokio::sync::Mutex::new(()),
                counters: stats::Counters::default(),
                fifo: None,
                fifo_file: None,
                joined_fifo: None,
            }),
        })
    }

    fn wrap_fifo(pipe: pipe::Pipe, capacity: usize, path: &Path) -> io::Result<Self> {
        let mut pool = Self::wrap(pipe, capacity)?;
        let inner = Arc::get_mut(&mut pool.inner).expect("fresh");
        inner.fifo = Some(path.to_owned());
        inner.fifo_file = file_id(path);
        Ok(pool)
    }

    /// Tokens in the pool.
    pub fn capacity(&self) -> usize {
        self.inner.capacity
    }

    /// Waits for a token, first come first served among this process's
    /// callers. Counts a wait when no token was free at once. Cancel-safe:
    /// dropping the future never loses a token. Errors are the OS's from reading the
    /// pipe (`UnexpectedEof` if it was closed at the other end).
    pub async fn acquire(&self) -> io::Result<Token> {
        let start = Instant::now();
        let guard = match self.inner.gate.try_lock() {
            Ok(guard) => {
                if let Some(byte) = self.inner.pipe.try_read_byte()? {
                    return Ok(self.token(byte, None));
                }
                guard
            }
            Err(_) => self.inner.gate.lock().await,
        };
        let byte = self.inner.pipe.read_byte().await?;
        drop(guard);
        Ok(self.token(byte, Some(start.elapsed())))
    }

    /// Takes a token if one is free now. Returns `None` also while other
    /// callers are queued in [`acquire`](Self::acquire), so it never jumps
    /// the queue.
    pub fn try_acquire(&self) -> io::Result<Option<Token>> {
        let Ok(_guard) = self.inner.gate.try_lock() else {
            return Ok(None);
        };
        Ok(self
            .inner
            .pipe
            .try_read_byte()?
            .map(|byte| self.token(byte, None)))
    }

    /// Whether [`try_acquire`](Self::try_acquire) could take a token now: a byte sits in
    /// the pipe and no caller of this process is queued for it. A snapshot (another
    /// process may take the byte first); false when the pipe cannot be asked.
    pub fn has_free_token(&self) -> bool {
        self.inner.gate.try_lock().is_ok() && self.inner.pipe.available().is_ok_and(|n| n > 0)
    }

    /// Whether the pool's pipe holds no byte now (FIONREAD); false when it cannot be asked.
    pub fn is_empty(&self) -> bool {
        self.inner.pipe.available().is_ok_and(|n| n == 0)
    }

    /// Returns once a byte sits in the pool's pipe (a token may be free), without taking
    /// it: at once if one is there now, else when someone writes one back. Waits in tokio's
    /// reactor, so a waiter hears of a returned token at once and spends nothing before.
    /// Errors are the OS's.
    pub async fn refilled(&self) -> io::Result<()> {
        self.inner.pipe.filled().await
    }

    fn token(&self, byte: u8, waited: Option<std::time::Duration>) -> Token {
        self.inner.counters.took(waited);
        Token {
            inner: Arc::clone(&self.inner),
            byte,
        }
    }

    /// The raw read and write fds of the pool, CLOEXEC in this process. A
    /// spawner clears CLOEXEC on them in the child (see
    /// [`configure_command`](Self::configure_command)). They stay open as long
    /// as any clone of this `Jobserver` or any [`Token`] lives.
    pub fn fds(&self) -> [RawFd; 2] {
        [self.inner.pipe.read_fd(), self.inner.pipe.write_fd()]
    }

    /// The environment a child needs to join this pool: `MAKEFLAGS`, `MFLAGS`
    /// and `CARGO_MAKEFLAGS`, each naming it as
    /// `-j --jobserver-fds=R,W --jobserver-auth=R,W`.
    ///
    /// `inherited_makeflags` is the client's `MAKEFLAGS`, if any. Its other
    /// words (`-k`, `--no-print-directory`, a leading `ks`, `-- VAR=value`)
    /// are kept in `MAKEFLAGS` and, without variables, in `MFLAGS`; every
    /// `-j`/`-jN` and jobserver word is dropped so a stale pool never leaks
    /// through. `CARGO_MAKEFLAGS` names only the pool, as cargo does.
    /// A non-UTF-8 value is read lossily.
    pub fn child_env(&self, inherited_makeflags: Option<&OsStr>) -> Vec<(String, OsString)> {
        let [read, write] = self.fds();
        child_env_for(read, write, inherited_makeflags)
    }

    /// Sets [`child_env`](Self::child_env) on `cmd` and clears CLOEXEC on the
    /// pool's fds in the child, between fork and exec. The command keeps the
    /// pool alive until it is dropped, so the fd numbers cannot go stale.
    pub fn configure_std_command(
        &self,
        cmd: &mut std::process::Command,
        inherited_makeflags: Option<&OsStr>,
    ) {
        use std::os::unix::process::CommandExt;
        for (key, value) in self.child_env(inherited_makeflags) {
            cmd.env(key, value);
        }
        let hook = self.pre_exec_hook();
        // SAFETY: the hook runs in the forked child before exec, where only
        // async-signal-safe calls are allowed: it makes fcntl system calls on fds that the
        // hook's `Arc` keeps open, and allocates nothing.
        unsafe {
            cmd.pre_exec(hook);
        }
    }

    /// [`configure_std_command`](Self::configure_std_command) for a tokio command.
    pub fn configure_command(
        &self,
        cmd: &mut tokio::process::Command,
        inherited_makeflags: Option<&OsStr>,
    ) {
        for (key, value) in self.child_env(inherited_makeflags) {
            cmd.env(key, value);
        }
        let hook = self.pre_exec_hook();
        // SAFETY: the hook runs in the forked child before exec, where only
        // async-signal-safe calls are allowed: it makes fcntl system calls on fds that the
        // hook's `Arc` keeps open, and allocates nothing.
        unsafe {
            cmd.pre_exec(hook);
        }
    }

    fn pre_exec_hook(&self) -> impl FnMut() -> io::Result<()> + Send + Sync + 'static {
        let inner = Arc::clone(&self.inner);
        move || {
            pipe::clear_cloexec(inner.pipe.read_end())?;
            pipe::clear_cloexec(inner.pipe.write_end())
        }
    }

    /// A snapshot of the counters and of how full the pipe is.
    pub fn stats(&self) -> JobserverStats {
        let counters = &self.inner.counters;
        let in_pipe = self.inner.pipe.available().unwrap_or_else(|e| {
            tracing::warn!("jobserver FIONREAD failed: {e}");
            self.inner.capacity
        });
        counters.snapshot(self.inner.capacity, in_pipe)
    }

    /// Resets the peak (to the tokens held now), the wait count and the wait time.
    pub fn zero_stats(&self) {
        self.inner.counters.zero();
    }
}

/// Opens a fifo's reading end (non-blocking, so it opens at once) and then its writing end.
fn open_fifo(path: &Path) -> io::Result<(OwnedFd, OwnedFd)> {
    let open = |flags: OFlags| -> io::Result<OwnedFd> {
        Ok(rustix::fs::open(
            path,
            flags | OFlags::CLOEXEC,
            Mode::empty(),
        )?)
    };
    let read = open(OFlags::RDONLY | OFlags::NONBLOCK)?;
    let write = open(OFlags::WRONLY)?;
    Ok((read, write))
}

/// MAKEFLAGS, MFLAGS and CARGO_MAKEFLAGS naming the pipe `read`,`write`.
pub(crate) fn child_env_for(
    read: RawFd,
    write: RawFd,
    inherited_makeflags: Option<&OsStr>,
) -> Vec<(String, OsString)> {
    let inherited = inherited_makeflags.map(OsStr::to_string_lossy);
    let (makeflags, mflags) = flags::compose(inherited.as_deref(), read, write);
    vec![
        ("MAKEFLAGS".to_owned(), makeflags.into()),
        ("MFLAGS".to_owned(), mflags.into()),
        (
            "CARGO_MAKEFLAGS".to_owned(),
            flags::pool_words(read, write).into(),
        ),
    ]
}

impl fmt::Debug for Jobserver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let [read, write] = self.fds();
        f.debug_struct("Jobserver")
            .field("capacity", &self.inner.capacity)
            .field("read", &read)
            .field("write", &write)
            .finish()
    }
}

/// One token of the pool. Dropping it writes the same byte back (the GNU make protocol
/// wants back the byte that was taken), also while a panic unwinds, so a token is never
/// lost.
pub struct Token {
    inner: Arc<Inner>,
    byte: u8,
}

impl Drop for Token {
    fn drop(&mut self) {
        // Count it back first: once the byte is in the pipe another taker may count it.
        self.inner.counters.gave_back();
        if let Err(e) = self.inner.pipe.write_byte(self.byte) {
            // Nothing better to do from Drop; the pool shrinks by one.
            tracing::error!("jobserver: failed to give a token back: {e}");
        }
    }
}

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Token").field("byte", &self.byte).finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn rejects_bad_sizes_and_no_runtime() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let _guard = rt.enter();
        for n in [0, MAX_TOKENS + 1] {
            let err = Jobserver::new(n).unwrap_err();
            assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
        }
        assert_eq!(Jobserver::new(MAX_TOKENS).unwrap().capacity(), MAX_TOKENS);
        drop(_guard);
        assert!(Jobserver::new(1).is_err());
    }

    #[tokio::test]
    async fn a_pool_going_leaves_a_later_pool_at_its_path_alone() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("jobserver.fifo");
        let first = Jobserver::new_fifo(1, &path).unwrap();
        // A later server makes its own fifo at the same path while the first still goes.
        let second = Jobserver::new_fifo(1, &path).unwrap();
        drop(first);
        assert!(path.exists(), "the first pool removed the second's fifo");
        drop(second);
        assert!(!path.exists());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn refilled_returns_at_once_with_a_byte_and_waits_without_one() {
        let pool = Jobserver::new(1).unwrap();
        // A byte is there: at once, and it stays.
        pool.refilled().await.unwrap();
        assert!(!pool.is_empty());
        let token = pool.acquire().await.unwrap();
        assert!(pool.is_empty());
        let waiter = tokio::spawn({
            let pool = pool.clone();
            async move { pool.refilled().await }
        });
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!waiter.is_finished(), "returned with the pipe empty");
        drop(token);
        waiter.await.unwrap().unwrap();
        // Only looked: the token is still free to take.
        assert!(pool.try_acquire().unwrap().is_some());
    }

    #[tokio::test]
    async fn waiters_are_served_in_order() {
        let pool = Jobserver::new(1).unwrap();
        let first = pool.acquire().await.unwrap();
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        for i in 0..4 {
            let pool = pool.clone();
            let tx = tx.clone();
            tokio::spawn(async move {
                let token = pool.acquire().await.unwrap();
                tx.send(i).unwrap();
                tokio::time::sleep(Duration::from_millis(5)).await;
                drop(token);
            });
            // Let this waiter queue up before the next one starts.
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        // Queued waiters keep try_acquire from jumping ahead.
        assert!(pool.try_acquire().unwrap().is_none());
        drop(first);
        let mut order = Vec::new();
        for _ in 0..4 {
            order.push(rx.recv().await.unwrap());
        }
        assert_eq!(order, [0, 1, 2, 3]);
        assert_eq!(pool.stats().waits, 4);
    }

    #[tokio::test]
    async fn cancelled_acquire_loses_nothing() {
        let pool = Jobserver::new(1).unwrap();
        let held = pool.acquire().await.unwrap();
        let pending = tokio::time::timeout(Duration::from_millis(20), pool.acquire()).await;
        assert!(pending.is_err());
        drop(held);
        let again = pool.try_acquire().unwrap();
        assert!(again.is_some());
        drop(again);
        assert_eq!(pool.stats().pool_in_use, 0);
    }

    #[tokio::test]
    async fn child_env_names_this_pool() {
        let pool = Jobserver::new(2).unwrap();
        let [r, w] = pool.fds();
        let env = pool.child_env(Some(OsStr::new("-k -j8 --jobserver-auth=9,10")));
        let names: Vec<&str> = env.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(names, ENV_VARS);
        for (_, value) in &env {
            let value = value.to_str().unwrap();
            assert_eq!(
                flags::parse(value),
                Some(flags::JobserverAuth::Pipe { read: r, write: w })
            );
        }
        assert_eq!(
            env[0].1,
            OsString::from(format!(
                "-k -j --jobserver-fds={r},{w} --jobserver-auth={r},{w}"
            ))
        );
    }
}
