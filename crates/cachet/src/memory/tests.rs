use super::*;

fn memory(limit: u64, default: u64, history: Option<PathBuf>) -> Arc<Memory> {
    Memory::new(
        Settings {
            limit: Some(LimitSetting::Bytes(limit)),
            default: Some(default),
            history,
            cgroups: false,
            live: false,
        },
        Arc::default(),
    )
}

fn slot(id: u64) -> Slot {
    Slot {
        kind: Kind::C,
        id,
        label: format!("f{id}.c"),
    }
}

#[tokio::test(start_paused = true)]
async fn no_more_start_than_the_budget_holds() {
    let m = memory(250, 100, None);
    let a = m.admit(&slot(1), false).await;
    let b = m.admit(&slot(2), false).await;
    let third_slot = slot(3);
    let third = m.admit(&third_slot, false);
    tokio::pin!(third);
    assert!(
        tokio::time::timeout(Duration::from_secs(5), &mut third)
            .await
            .is_err(),
        "a third of 100 does not fit 250"
    );
    assert_eq!(m.snapshot().waiting, 1);
    drop(a);
    let c = third.await;
    assert_eq!(m.snapshot().predicted_in_use_bytes, 200);
    drop((b, c));
    let s = m.snapshot();
    assert_eq!(
        (s.predicted_in_use_bytes, s.peak_predicted_in_use_bytes),
        (0, 200)
    );
    assert_eq!(m.stats.counters().memory_waits, 1);
}

#[tokio::test(start_paused = true)]
async fn a_waiter_that_goes_away_gives_its_place_back() {
    let m = memory(150, 100, None);
    let a = m.admit(&slot(1), false).await;
    {
        let gone_slot = slot(2);
        let gone = m.admit(&gone_slot, false);
        assert!(
            tokio::time::timeout(Duration::from_secs(1), gone)
                .await
                .is_err()
        );
    }
    assert_eq!(m.snapshot().waiting, 0);
    drop(a);
    assert_eq!(m.snapshot().predicted_in_use_bytes, 0);
    let _b = m.admit(&slot(3), false).await;
}

#[tokio::test(start_paused = true)]
async fn alone_means_after_everything_else() {
    let m = memory(1000, 100, None);
    let a = m.admit(&slot(1), false).await;
    let retry_slot = slot(2);
    let retry = m.admit(&retry_slot, true);
    tokio::pin!(retry);
    assert!(
        tokio::time::timeout(Duration::from_secs(1), &mut retry)
            .await
            .is_err()
    );
    drop(a);
    let alone = retry.await;
    assert_eq!(alone.need(), 1000);
    let other_slot = slot(3);
    let other = m.admit(&other_slot, false);
    assert!(
        tokio::time::timeout(Duration::from_secs(1), other)
            .await
            .is_err()
    );
}

#[tokio::test]
async fn peaks_are_learned_and_kept_across_servers() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join(HISTORY_FILE);
    let m = Memory::new(
        Settings {
            limit: Some(LimitSetting::Bytes(1 << 30)),
            default: None,
            history: Some(file.clone()),
            cgroups: false,
            live: false,
        },
        Arc::default(),
    );
    let permit = m.admit(&slot(7), false).await;
    assert_eq!(permit.need(), Kind::C.built_in_default());
    let measured = permit.finish(Some(5 << 20));
    assert_eq!(measured.peak, Some(5 << 20));
    drop(permit);
    m.save();
    let again = memory(1 << 30, 1, Some(file));
    let permit = again.admit(&slot(7), false).await;
    assert_eq!(
        permit.need(),
        5 << 20,
        "the slot's own peak, not the default"
    );
    let s = again.snapshot();
    assert_eq!(
        s.largest,
        vec![("c".to_owned(), "f7.c".to_owned(), 5 << 20)]
    );
    assert!(s.measure.contains("ru_maxrss"), "{}", s.measure);
}
