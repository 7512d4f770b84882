//! A proxy whose child waits for a token while every token of a level is held does not
//! look at the child (a read of /proc for each of its threads) until a token is free, and
//! then grants it: woken by the token written back into the level, not by its next tick.

use cachet_jobserver::{Demand, Jobserver, Proxy, waiting_on};
use std::time::Duration;

mod support;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_waiting_child_is_looked_at_only_once_a_token_is_free() {
    let build = Jobserver::new(1).unwrap();
    let server = Jobserver::new(2).unwrap();
    let held = build.acquire().await.unwrap();
    let proxy = Proxy::new().unwrap();
    let inode = proxy.inode();
    let dir = tempfile::tempdir().unwrap();
    // Reads one token, blocking, then exits with it (the proxy takes it back).
    let mut cmd = support::bash_on_proxy(
        &proxy,
        "head -c 1 <&{r} > \"$1\"",
        &dir.path().join("token"),
    );
    let mut child = cmd.spawn().unwrap();
    let pid = child.id();
    let release = async move {
        // Hold the build's only token until the child is seen blocked on the proxy's pipe,
        // and a while longer: the proxy ticks every few ms meanwhile.
        while waiting_on(pid.unwrap(), inode) != Demand::Waiting {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
        drop(held);
    };
    let levels = [build.clone(), server.clone()];
    let ((status, ()), report) = proxy
        .serve(&levels, || pid, async {
            tokio::join!(child.wait(), release)
        })
        .await;
    assert!(status.unwrap().success());
    assert_eq!(std::fs::read(dir.path().join("token")).unwrap().len(), 1);
    assert_eq!(report.grants, 1, "{report:?}");
    // One look finds the child waiting once the token is free; one more may come between
    // the grant and the child's exit.
    assert!(
        report.looks <= 2,
        "looked while nothing could be given: {report:?}"
    );
    assert!(
        report.refills >= 1,
        "the token written back woke nothing: {report:?}"
    );
    support::assert_no_token_lost(&build, &server);
}
