use super::*;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

fn pipe() -> (OwnedFd, OwnedFd) {
    let mut fds = [0; 2];
    // SAFETY: pipe2 fills two ints.
    assert_eq!(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) }, 0);
    // SAFETY: fresh fds, owned here.
    unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) }
}

fn env(value: String) -> impl Fn(&str) -> Option<OsString> {
    move |name| (name == "MAKEFLAGS").then(|| value.clone().into())
}

#[test]
fn a_real_pipe_is_found() {
    let (r, w) = pipe();
    let (r, w) = (r.as_raw_fd(), w.as_raw_fd());
    assert_eq!(
        find(env(format!(" -j4 --jobserver-auth={r},{w}"))).unwrap(),
        Found::Pipe { read: r, write: w }
    );
    assert_eq!(
        find(env(format!("-j --jobserver-fds={r},{w}"))).unwrap(),
        Found::Pipe { read: r, write: w }
    );
}

#[test]
fn stale_settings_are_refused() {
    assert!(matches!(find(|_| None), Err(NotFound::Absent)));
    assert!(matches!(find(env("-k".into())), Err(NotFound::Absent)));
    let file = tempfile::tempfile().unwrap();
    let f = file.as_raw_fd();
    assert!(matches!(
        find(env(format!("--jobserver-auth={f},{f}"))),
        Err(NotFound::Stale(_))
    ));
    let (r1, _w1) = pipe();
    let (_r2, w2) = pipe();
    let why = find(env(format!(
        "--jobserver-auth={},{}",
        r1.as_raw_fd(),
        w2.as_raw_fd()
    )));
    assert!(
        matches!(&why, Err(NotFound::Stale(t)) if t.to_string().contains("different pipes")),
        "{why:?}"
    );
    // Swapped ends: the "read" end is write-only.
    let (r, w) = pipe();
    let why = find(env(format!(
        "--jobserver-auth={},{}",
        w.as_raw_fd(),
        r.as_raw_fd()
    )));
    assert!(matches!(why, Err(NotFound::Stale(_))), "{why:?}");
    assert!(matches!(
        find(env("--jobserver-auth=900,901".into())),
        Err(NotFound::Stale(_))
    ));
    assert!(matches!(
        find(env("--jobserver-auth=fifo:/nonexistent/fifo".into())),
        Err(NotFound::Stale(_))
    ));
}

#[test]
fn reasons_read_as_before() {
    let path = PathBuf::from("/x/fifo");
    let cases = [
        (Stale::NotOpen(9), "fd 9 is not open"),
        (Stale::NotAPipe(9), "fd 9 is not a pipe"),
        (
            Stale::DifferentPipes { read: 3, write: 4 },
            "fds 3 and 4 are two different pipes",
        ),
        (Stale::NotReadable(3), "fd 3 is not open for reading"),
        (Stale::NotWritable(4), "fd 4 is not open for writing"),
        (
            Stale::NotAFifo { path: path.clone() },
            "/x/fifo is not a fifo",
        ),
        (
            Stale::ForeignFifo { path, uid: 7 },
            "/x/fifo belongs to uid 7, not to us",
        ),
    ];
    for (stale, text) in cases {
        assert_eq!(stale.to_string(), text);
    }
    let missing = find(env("--jobserver-auth=fifo:/nonexistent/fifo".into()));
    let Err(NotFound::Stale(why)) = missing else {
        panic!("{missing:?}")
    };
    assert_eq!(
        why.to_string(),
        format!(
            "/nonexistent/fifo: {}",
            std::io::Error::from_raw_os_error(libc::ENOENT)
        )
    );
}

#[test]
fn a_fifo_of_ours_is_found() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("fifo");
    let c = std::ffi::CString::new(path.to_str().unwrap()).unwrap();
    // SAFETY: mkfifo reads a valid C string.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
    assert_eq!(
        find(env(format!("--jobserver-auth=fifo:{}", path.display()))).unwrap(),
        Found::Fifo(path.clone())
    );
    let plain = dir.path().join("plain");
    std::fs::write(&plain, "").unwrap();
    assert!(matches!(
        find(env(format!("--jobserver-auth=fifo:{}", plain.display()))),
        Err(NotFound::Stale(_))
    ));
}
