//! Every token taken comes back when its `Token` drops, even on a panic.

use cachet_jobserver::Jobserver;

#[tokio::test]
async fn tokens_return_when_dropped() {
    let pool = Jobserver::new(3).unwrap();
    let mut held = Vec::new();
    for _ in 0..3 {
        held.push(pool.acquire().await.unwrap());
    }
    assert!(pool.try_acquire().unwrap().is_none());
    let s = pool.stats();
    assert_eq!((s.held, s.peak_held, s.pool_in_use), (3, 3, 3));

    held.pop();
    let again = pool.acquire().await.unwrap();
    assert_eq!(pool.stats().waits, 0, "a free token needs no wait");
    drop(again);
    drop(held);

    let s = pool.stats();
    assert_eq!((s.held, s.peak_held, s.pool_in_use), (0, 3, 0));
    pool.zero_stats();
    assert_eq!(pool.stats().peak_held, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_return_when_a_task_panics() {
    let pool = Jobserver::new(2).unwrap();
    let p = pool.clone();
    let task = tokio::spawn(async move {
        let _token = p.acquire().await.unwrap();
        panic!("compiler task blew up");
    });
    assert!(task.await.unwrap_err().is_panic());
    let s = pool.stats();
    assert_eq!((s.held, s.pool_in_use), (0, 0));
    let a = pool.try_acquire().unwrap();
    let b = pool.try_acquire().unwrap();
    assert!(a.is_some() && b.is_some());
}
