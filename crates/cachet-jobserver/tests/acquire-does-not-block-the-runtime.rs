//! A pending acquire parks the task, not the thread: on a single-threaded
//! runtime other tasks still run while it waits.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use cachet_jobserver::Jobserver;

#[tokio::test(flavor = "current_thread")]
async fn acquire_does_not_block_the_runtime() {
    let pool = Jobserver::new(1).unwrap();
    let held = pool.acquire().await.unwrap();

    let p = pool.clone();
    let waiter = tokio::spawn(async move { p.acquire().await.unwrap() });

    let ticks = Arc::new(AtomicUsize::new(0));
    let t = Arc::clone(&ticks);
    let ticker = tokio::spawn(async move {
        for _ in 0..5 {
            t.fetch_add(1, Ordering::SeqCst);
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    });
    ticker.await.unwrap();
    assert_eq!(ticks.load(Ordering::SeqCst), 5, "other task ran");
    assert!(!waiter.is_finished(), "acquire is still pending");

    drop(held);
    let token = tokio::time::timeout(Duration::from_secs(5), waiter)
        .await
        .expect("pending acquire completes once the token is back")
        .unwrap();

    let s = pool.stats();
    assert_eq!(s.waits, 1);
    assert!(
        s.wait_time >= Duration::from_millis(40),
        "{:?}",
        s.wait_time
    );
    assert_eq!((s.held, s.pool_in_use), (1, 1));
    drop(token);
    assert_eq!(pool.stats().pool_in_use, 0);
}
