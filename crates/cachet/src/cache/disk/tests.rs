use super::*;
use std::sync::Arc;

/// A key spread over shards by hashing `n`.
fn key(n: u64) -> String {
    blake3::hash(&n.to_le_bytes()).to_hex().to_string()
}

/// A key in a chosen shard.
fn key_in(shard: char, n: u64) -> String {
    format!("{shard}{n:063x}")
}

fn set_mtime(path: &Path, secs_ago: u64) {
    let file = File::options().write(true).open(path).unwrap();
    file.set_modified(SystemTime::now() - Duration::from_secs(secs_ago))
        .unwrap();
}

/// Ground truth: walk the whole tree for entry files.
fn walk(root: &Path) -> Usage {
    fn go(dir: &Path, acc: &mut Usage) {
        let Ok(rd) = fs::read_dir(dir) else { return };
        for e in rd {
            let e = e.unwrap();
            let meta = e.metadata().unwrap();
            if meta.is_dir() {
                go(&e.path(), acc);
            } else if check_key(e.file_name().to_str().unwrap()).is_ok() {
                acc.bytes += meta.len();
                acc.entries += 1;
            }
        }
    }
    let mut acc = Usage::default();
    go(root, &mut acc);
    acc
}

/// Every file that is neither an entry nor a shard's stats or lock, in the shards and in
/// leaf directories of the earlier layout.
fn stray_files(root: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for shard in fs::read_dir(root).into_iter().flatten() {
        let shard = shard.unwrap().path();
        for file in fs::read_dir(&shard).into_iter().flatten() {
            let file = file.unwrap().path();
            let files: Vec<PathBuf> = if file.is_dir() {
                fs::read_dir(&file)
                    .unwrap()
                    .map(|f| f.unwrap().path())
                    .collect()
            } else {
                vec![file]
            };
            for f in files {
                let name = f.file_name().unwrap().to_str().unwrap();
                if check_key(name).is_err() && name != STATS_FILE && name != LOCK_FILE {
                    out.push(f);
                }
            }
        }
    }
    out
}

/// Writes `data` as the entry for `key` where the earlier layout kept it, as an older
/// cachet did: the file, and the shard's stats counting it.
fn put_legacy(cache: &DiskCache, key: &str, data: &[u8]) {
    let path = cache.legacy_path_for(key);
    let shard = shard_index(key);
    let _lock = cache.lock_shard(shard).unwrap();
    let mut usage = cache.load_stats_locked(shard).unwrap();
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    fs::write(&path, data).unwrap();
    usage.bytes += data.len() as u64;
    usage.entries += 1;
    cache.store_stats_locked(shard, usage);
}

fn big_cache(dir: &tempfile::TempDir) -> DiskCache {
    DiskCache::new(dir.path().join("cache"), 1 << 30)
}

#[test]
fn put_get_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    let cache = big_cache(&dir);
    assert!(!cache.root().exists(), "new() must not do I/O");
    assert_eq!(cache.max_size(), 1 << 30);

    let k = key(1);
    assert_eq!(cache.get(&k).unwrap(), None);
    assert!(!cache.remove(&k).unwrap());
    assert_eq!(cache.usage().unwrap(), Usage::default());

    cache.put(&k, b"hello").unwrap();
    assert_eq!(cache.get(&k).unwrap().as_deref(), Some(&b"hello"[..]));
    let path = cache.entry_path(&k);
    assert_eq!(
        path,
        cache.root().join(&k[..1]).join(&k),
        "one level of 16 shards"
    );
    assert!(path.is_file());
    assert_eq!(
        cache.usage().unwrap(),
        Usage {
            bytes: 5,
            entries: 1
        }
    );

    assert!(cache.remove(&k).unwrap());
    assert_eq!(cache.get(&k).unwrap(), None);
    assert_eq!(cache.usage().unwrap(), Usage::default());
}

#[test]
fn invalid_keys_are_rejected() {
    let dir = tempfile::tempdir().unwrap();
    let cache = big_cache(&dir);
    let upper = key(1).to_uppercase();
    let traversal = format!("../{}", &key(1)[3..]);
    for bad in ["", "abc", &upper, &traversal, &format!("{}0", key(1))] {
        assert_eq!(cache.get(bad).unwrap_err().kind(), ErrorKind::InvalidInput);
        assert_eq!(
            cache.put(bad, b"x").unwrap_err().kind(),
            ErrorKind::InvalidInput
        );
        assert_eq!(
            cache.remove(bad).unwrap_err().kind(),
            ErrorKind::InvalidInput
        );
    }
    assert!(!cache.root().exists());
}

#[test]
fn overwrite_accounts_size_difference() {
    let dir = tempfile::tempdir().unwrap();
    let cache = big_cache(&dir);
    let k = key(7);
    cache.put(&k, &[1u8; 100]).unwrap();
    cache.put(&k, &[2u8; 30]).unwrap();
    assert_eq!(
        cache.usage().unwrap(),
        Usage {
            bytes: 30,
            entries: 1
        }
    );
    cache.put(&k, &[3u8; 250]).unwrap();
    assert_eq!(
        cache.usage().unwrap(),
        Usage {
            bytes: 250,
            entries: 1
        }
    );
    assert_eq!(cache.get(&k).unwrap().unwrap(), vec![3u8; 250]);
    assert_eq!(cache.usage().unwrap(), walk(cache.root()));
}

#[test]
fn usage_sums_shards() {
    let dir = tempfile::tempdir().unwrap();
    let cache = big_cache(&dir);
    let mut expected = Usage::default();
    for (i, shard) in "0123456789abcdef".chars().enumerate() {
        for n in 0..=i as u64 {
            let len = 10 + n as usize;
            cache.put(&key_in(shard, n), &vec![0u8; len]).unwrap();
            expected.bytes += len as u64;
            expected.entries += 1;
        }
        let stats = read_stats(&cache.root().join(shard.to_string()).join(STATS_FILE));
        assert_eq!(stats.unwrap().entries, i as u64 + 1);
    }
    assert_eq!(cache.usage().unwrap(), expected);
    assert_eq!(walk(cache.root()), expected);
}

#[test]
fn lru_eviction_spares_recently_used() {
    let dir = tempfile::tempdir().unwrap();
    // 1000 bytes per shard.
    let cache = DiskCache::new(dir.path().join("cache"), 16 * 1000);
    let keys: Vec<String> = (0..7).map(|n| key_in('a', n)).collect();
    for (i, k) in keys.iter().take(5).enumerate() {
        cache.put(k, &[i as u8; 150]).unwrap();
        // keys[0] oldest, keys[4] newest.
        set_mtime(&cache.entry_path(k), 1000 - i as u64 * 100);
    }
    // Using the oldest entry makes keys[1] the least recently used.
    assert!(cache.get(&keys[0]).unwrap().is_some());

    cache.put(&keys[5], &[5; 150]).unwrap(); // 900 bytes: under the limit
    assert_eq!(cache.usage().unwrap().entries, 6);
    cache.put(&keys[6], &[6; 150]).unwrap(); // 1050: trim to <= 900

    assert!(
        cache.get(&keys[0]).unwrap().is_some(),
        "bumped entry survives"
    );
    assert!(cache.get(&keys[1]).unwrap().is_none(), "LRU entry evicted");
    for k in &keys[2..] {
        assert!(cache.get(k).unwrap().is_some());
    }
    let usage = cache.usage().unwrap();
    assert_eq!(
        usage,
        Usage {
            bytes: 900,
            entries: 6
        }
    );
    assert_eq!(usage, walk(cache.root()));
}

#[test]
fn eviction_only_touches_the_full_shard() {
    let dir = tempfile::tempdir().unwrap();
    let cache = DiskCache::new(dir.path().join("cache"), 16 * 1000);
    cache.put(&key_in('3', 0), &[0; 600]).unwrap();
    cache.put(&key_in('b', 0), &[0; 600]).unwrap();
    cache.put(&key_in('b', 1), &[0; 600]).unwrap();
    assert!(cache.get(&key_in('3', 0)).unwrap().is_some());
    assert_eq!(
        cache.usage().unwrap(),
        Usage {
            bytes: 1200,
            entries: 2
        }
    );
}

#[test]
fn cleanup_trims_every_shard_and_stale_temps() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("cache");
    let big = DiskCache::new(root.clone(), 1 << 30);
    for shard in ['1', '7', 'e'] {
        for n in 0..10 {
            let k = key_in(shard, n);
            big.put(&k, &[n as u8; 100]).unwrap();
            set_mtime(&big.entry_path(&k), 1000 - n);
        }
    }
    let leaf = big.entry_path(&key_in('1', 0)).parent().unwrap().to_owned();
    let stale = leaf.join(format!("{TMP_PREFIX}stale"));
    let young = leaf.join(format!("{TMP_PREFIX}young"));
    fs::write(&stale, b"partial").unwrap();
    fs::write(&young, b"partial").unwrap();
    set_mtime(&stale, 2 * 3600);

    // Same directory, smaller limit: 500 bytes per shard, trimmed to 450.
    let small = DiskCache::new(root.clone(), 16 * 500);
    let report = small.cleanup().unwrap();
    assert_eq!(
        report,
        CleanupReport {
            removed_entries: 18,
            removed_bytes: 1800
        }
    );
    for shard in ['1', '7', 'e'] {
        for n in 0..6 {
            assert!(small.get(&key_in(shard, n)).unwrap().is_none());
        }
        for n in 6..10 {
            assert!(small.get(&key_in(shard, n)).unwrap().is_some());
        }
    }
    assert!(!stale.exists(), "stale temp file deleted");
    assert!(young.exists(), "young temp file may be in use");
    let usage = small.usage().unwrap();
    assert_eq!(
        usage,
        Usage {
            bytes: 1200,
            entries: 12
        }
    );
    assert_eq!(usage, walk(&root));
    // Nothing left to trim.
    assert_eq!(small.cleanup().unwrap(), CleanupReport::default());
}

#[test]
fn clear_removes_everything() {
    let dir = tempfile::tempdir().unwrap();
    let cache = big_cache(&dir);
    assert_eq!(cache.clear().unwrap(), CleanupReport::default());
    for n in 0..40 {
        cache.put(&key(n), &[0; 10]).unwrap();
    }
    assert_eq!(
        cache.clear().unwrap(),
        CleanupReport {
            removed_entries: 40,
            removed_bytes: 400
        }
    );
    assert!(cache.root().is_dir());
    assert_eq!(cache.usage().unwrap(), Usage::default());
    assert_eq!(walk(cache.root()), Usage::default());
    assert!(cache.get(&key(3)).unwrap().is_none());
    cache.put(&key(3), b"again").unwrap();
    assert_eq!(cache.usage().unwrap().entries, 1);
}

#[test]
fn corrupt_or_missing_stats_recount_that_shard() {
    let dir = tempfile::tempdir().unwrap();
    let cache = big_cache(&dir);
    for n in 0..5 {
        cache.put(&key_in('c', n), &[0; 20]).unwrap();
        cache.put(&key_in('d', n), &[0; 30]).unwrap();
    }
    let expected = Usage {
        bytes: 250,
        entries: 10,
    };
    let stats_c = cache.root().join("c").join(STATS_FILE);
    for garbage in [
        &b"garbage"[..],
        b"cachet-stats-v1 1 2 3\n",
        b"\xff\xfe",
        b"",
    ] {
        fs::write(&stats_c, garbage).unwrap();
        assert_eq!(cache.usage().unwrap(), expected);
        assert_eq!(
            read_stats(&stats_c),
            Some(Usage {
                bytes: 100,
                entries: 5
            }),
            "stats rewritten after recount"
        );
    }
    fs::remove_file(&stats_c).unwrap();
    assert_eq!(cache.usage().unwrap(), expected);

    // A put into a shard with corrupt stats starts from the recount.
    fs::write(&stats_c, b"nonsense").unwrap();
    cache.put(&key_in('c', 0), &[0; 5]).unwrap();
    cache.put(&key_in('c', 9), &[0; 5]).unwrap();
    assert_eq!(cache.usage().unwrap(), walk(cache.root()));
}

/// Stats are rewritten in place: a reader that meets a torn or half-old file (the check
/// fails) recounts, a longer file left by anything else is cut to the record, and the
/// stats an older cachet wrote are read as they are.
#[test]
fn stats_rewritten_in_place_are_checked() {
    let dir = tempfile::tempdir().unwrap();
    let cache = big_cache(&dir);
    for n in 0..3 {
        cache.put(&key_in('c', n), &[0; 20]).unwrap();
    }
    let stats_c = cache.root().join("c").join(STATS_FILE);
    let whole = fs::read(&stats_c).unwrap();
    let want = Usage {
        bytes: 60,
        entries: 3,
    };
    assert_eq!(read_stats(&stats_c), Some(want));

    // A torn write: another record's byte count over this one, the rest still old.
    let other = stats_text(Usage {
        bytes: 999_999,
        entries: 77,
    });
    let mut torn = whole.clone();
    torn[16..36].copy_from_slice(&other.as_bytes()[16..36]);
    fs::write(&stats_c, &torn).unwrap();
    assert_eq!(read_stats(&stats_c), None);
    assert_eq!(cache.usage().unwrap(), want);

    // A longer file is cut to the record on the next write.
    fs::write(&stats_c, [whole.as_slice(), b"trailing bytes\n"].concat()).unwrap();
    cache.put(&key_in('c', 7), &[0; 10]).unwrap();
    assert_eq!(
        fs::read_to_string(&stats_c).unwrap(),
        stats_text(Usage {
            bytes: 70,
            entries: 4
        })
    );

    // What an older cachet wrote.
    fs::write(&stats_c, b"cachet-stats-v1 70 4\n").unwrap();
    assert_eq!(
        read_stats(&stats_c),
        Some(Usage {
            bytes: 70,
            entries: 4
        })
    );
    assert!(stray_files(cache.root()).is_empty());
}

#[test]
fn concurrent_puts_from_two_instances_keep_exact_stats() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("cache");
    // Small enough that eviction runs concurrently with puts.
    let a = Arc::new(DiskCache::new(root.clone(), 16 * 600));
    let b = Arc::new(DiskCache::new(root.clone(), 16 * 600));
    let threads: Vec<_> = (0..6u64)
        .map(|t| {
            let cache = if t % 2 == 0 { a.clone() } else { b.clone() };
            std::thread::spawn(move || {
                for i in 0..150u64 {
                    // A small key pool forces overwrites across threads.
                    let n = (t * 31 + i * 7) % 64;
                    let k = key(n);
                    let len = ((t + 1) * (i + 3) * 13 % 400) as usize;
                    cache.put(&k, &vec![t as u8; len]).unwrap();
                    if i % 10 == 0 {
                        cache.remove(&key((n + 5) % 64)).unwrap();
                    }
                    if i % 3 == 0 {
                        let _ = cache.get(&key((n + 1) % 64)).unwrap();
                    }
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    let usage = a.usage().unwrap();
    assert_eq!(usage, walk(&root));
    // The last put over a shard's limit always trims it afterwards.
    for shard in 0..SHARDS {
        if let Some(u) = read_stats(&root.join(shard_name(shard)).join(STATS_FILE)) {
            assert!(u.bytes <= 600, "shard {shard} left at {u:?}");
        }
    }
    assert_eq!(usage, b.usage().unwrap());
    assert!(stray_files(&root).is_empty());
    // Cleanup recounts from scratch and must agree.
    a.cleanup().unwrap();
    assert_eq!(a.usage().unwrap(), walk(&root));
}

#[test]
fn entries_of_the_earlier_layout_are_found_moved_and_counted_once() {
    let dir = tempfile::tempdir().unwrap();
    let cache = big_cache(&dir);
    let (moved, replaced, removed) = (key_in('3', 1), key_in('3', 2), key_in('3', 3));
    for k in [&moved, &replaced, &removed] {
        put_legacy(&cache, k, b"old entry");
    }
    assert_eq!(
        cache.usage().unwrap(),
        Usage {
            bytes: 27,
            entries: 3
        }
    );

    // A get finds it and moves it into the shard; the count is unchanged.
    assert_eq!(
        cache.get(&moved).unwrap().as_deref(),
        Some(&b"old entry"[..])
    );
    assert!(cache.entry_path(&moved).is_file());
    assert!(!cache.legacy_path_for(&moved).exists());
    assert_eq!(
        cache.get(&moved).unwrap().as_deref(),
        Some(&b"old entry"[..])
    );
    // A put of the same key replaces the old one: one entry, its new size.
    cache.put(&replaced, b"new").unwrap();
    assert!(!cache.legacy_path_for(&replaced).exists());
    assert_eq!(cache.get(&replaced).unwrap().as_deref(), Some(&b"new"[..]));
    assert!(cache.remove(&removed).unwrap());
    assert!(!cache.remove(&removed).unwrap());
    let usage = Usage {
        bytes: 12,
        entries: 2,
    };
    assert_eq!(cache.usage().unwrap(), usage);
    assert_eq!(walk(cache.root()), usage);
    assert!(stray_files(cache.root()).is_empty());

    // Where both layouts hold the key (an older cachet stored it again), a get keeps the
    // new one and uncounts the old.
    put_legacy(&cache, &moved, b"older");
    cache.move_legacy(&moved).unwrap();
    assert_eq!(
        cache.get(&moved).unwrap().as_deref(),
        Some(&b"old entry"[..])
    );
    assert_eq!(cache.usage().unwrap(), usage);
    assert_eq!(walk(cache.root()), usage);
}

#[test]
fn cleanup_counts_and_evicts_both_layouts_and_removes_emptied_leaf_directories() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("cache");
    let big = DiskCache::new(root.clone(), 1 << 30);
    for n in 0..4 {
        put_legacy(&big, &key_in('5', n), &[0; 100]);
        set_mtime(&big.legacy_path_for(&key_in('5', n)), 1000 - n);
        big.put(&key_in('5', 10 + n), &[1; 100]).unwrap();
        set_mtime(&big.entry_path(&key_in('5', 10 + n)), 500 - n);
    }
    // Stats lost: the recount walks both layouts.
    fs::remove_file(root.join("5").join(STATS_FILE)).unwrap();
    assert_eq!(
        big.usage().unwrap(),
        Usage {
            bytes: 800,
            entries: 8
        }
    );

    // 500 bytes per shard, trimmed to 450: the four oldest go, all of the earlier layout.
    let small = DiskCache::new(root.clone(), 16 * 500);
    let report = small.cleanup().unwrap();
    assert_eq!(
        report,
        CleanupReport {
            removed_entries: 4,
            removed_bytes: 400
        }
    );
    for n in 0..4 {
        assert!(small.get(&key_in('5', 10 + n)).unwrap().is_some());
    }
    let leaves: Vec<_> = fs::read_dir(root.join("5"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_dir())
        .collect();
    assert!(leaves.is_empty(), "emptied leaf directories: {leaves:?}");
    assert_eq!(
        small.usage().unwrap(),
        Usage {
            bytes: 400,
            entries: 4
        }
    );
}
