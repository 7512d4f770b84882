//! A child fed through a proxy takes tokens from two pools at once, and when it is killed
//! while holding them, every pool gets all of its tokens back.

use std::os::unix::process::ExitStatusExt;

use cachet_jobserver::{Jobserver, Proxy};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_child_returns_every_token_to_every_pool() {
    let build = Jobserver::new(3).unwrap();
    let server = Jobserver::new(2).unwrap();
    let proxy = Proxy::new().unwrap();
    let [r, w] = proxy.fds();
    // What the child reads goes to a file here, not to the machine's /dev/null.
    let dir = tempfile::tempdir().unwrap();

    // A greedy child: a blocking read of two tokens (visible as demand), then it dies
    // holding them.
    let mut cmd = tokio::process::Command::new("/bin/bash");
    cmd.arg("-c")
        .arg(format!("head -c 2 <&{r} > \"$1\"; kill -9 $$"))
        .arg("bash")
        .arg(dir.path().join("tokens"))
        .envs(proxy.child_env(None));
    // SAFETY: fcntl only, between fork and exec.
    unsafe {
        cmd.pre_exec(move || {
            for fd in [r, w] {
                let flags = libc::fcntl(fd, libc::F_GETFD);
                libc::fcntl(fd, libc::F_SETFD, flags & !libc::FD_CLOEXEC);
            }
            Ok(())
        });
    }
    let mut child = cmd.spawn().unwrap();
    let pid = child.id();
    let levels = [build.clone(), server.clone()];
    let (status, report) = proxy.serve(&levels, || pid, child.wait()).await;
    let status = status.unwrap();
    assert_eq!(status.signal(), Some(libc::SIGKILL));
    // The proxy may hand out one more token before it sees the child die; every grant
    // must come back, either unread (reclaimed) or from the dead child (recovered).
    assert!(report.grants >= 2, "{report:?}");
    assert_eq!(report.recovered, 2, "{report:?}");
    assert_eq!(
        report.recovered + report.reclaims,
        report.grants,
        "{report:?}"
    );
    assert_eq!(
        build.stats().pool_in_use,
        0,
        "the build's pool lost a token"
    );
    assert_eq!(
        server.stats().pool_in_use,
        0,
        "the server's pool lost a token"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_child_never_holds_more_than_the_smallest_pool_allows() {
    let build = Jobserver::new(1).unwrap();
    let server = Jobserver::new(4).unwrap();
    let proxy = Proxy::new().unwrap();
    let [r, w] = proxy.fds();
    let dir = tempfile::tempdir().unwrap();
    // Tries for three tokens; only one can come, so it waits until killed by timeout.
    let mut cmd = tokio::process::Command::new("/bin/bash");
    cmd.arg("-c")
        .arg(format!("timeout 0.5 head -c 3 <&{r} > \"$1\"; exit 0"))
        .arg("bash")
        .arg(dir.path().join("tokens"));
    // SAFETY: fcntl only, between fork and exec.
    unsafe {
        cmd.pre_exec(move || {
            for fd in [r, w] {
                let flags = libc::fcntl(fd, libc::F_GETFD);
                libc::fcntl(fd, libc::F_SETFD, flags & !libc::FD_CLOEXEC);
            }
            Ok(())
        });
    }
    let mut child = cmd.spawn().unwrap();
    let pid = child.id();
    let levels = [build.clone(), server.clone()];
    let (_, report) = proxy.serve(&levels, || pid, child.wait()).await;
    assert_eq!(report.peak, 1, "{report:?}");
    assert_eq!(build.stats().pool_in_use, 0);
    assert_eq!(server.stats().pool_in_use, 0);
}
