//! A child fed through a proxy takes tokens from two pools at once, and when it is killed
//! while holding them, every pool gets all of its tokens back.

use std::os::unix::process::ExitStatusExt;

use cachet_jobserver::{Jobserver, Proxy};

mod support;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_child_returns_every_token_to_every_pool() {
    let build = Jobserver::new(3).unwrap();
    let server = Jobserver::new(2).unwrap();
    let proxy = Proxy::new().unwrap();
    // What the child reads goes to a file here, not to the machine's /dev/null.
    let dir = tempfile::tempdir().unwrap();
    // A greedy child: a blocking read of two tokens (visible as demand), then it dies
    // holding them.
    let mut cmd = support::bash_on_proxy(
        &proxy,
        "head -c 2 <&{r} > \"$1\"; kill -9 $$",
        &dir.path().join("tokens"),
    );
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
    support::assert_no_token_lost(&build, &server);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_child_never_holds_more_than_the_smallest_pool_allows() {
    let build = Jobserver::new(1).unwrap();
    let server = Jobserver::new(4).unwrap();
    let proxy = Proxy::new().unwrap();
    let dir = tempfile::tempdir().unwrap();
    // Tries for three tokens; only one can come, so it waits until killed by timeout.
    let mut cmd = support::bash_on_proxy(
        &proxy,
        "timeout 0.5 head -c 3 <&{r} > \"$1\"; exit 0",
        &dir.path().join("tokens"),
    );
    let mut child = cmd.spawn().unwrap();
    let pid = child.id();
    let levels = [build.clone(), server.clone()];
    let (_, report) = proxy.serve(&levels, || pid, child.wait()).await;
    assert_eq!(report.peak, 1, "{report:?}");
    support::assert_no_token_lost(&build, &server);
}
