use std::collections::BTreeMap;
use std::time::Duration;

use opendal::Operator;

use super::chunked::Chunked;
use super::*;
use crate::cache::entry::ENTRY_FORMAT_VERSION;
use crate::config::Origin;
use crate::config::remotes::Setting;
use crate::config::{RemoteConfig, RemoteKind};

fn memory() -> Operator {
    Operator::new(opendal::services::Memory::default()).unwrap()
}

fn config(kind: &str, settings: &[(&str, &str)]) -> RemoteConfig {
    let kind = RemoteKind::named(kind).unwrap();
    RemoteConfig {
        kind,
        name: kind.name().into(),
        read_only: false,
        timeout: Duration::from_secs(1),
        prefix: String::new(),
        breaker_failures: 3,
        breaker_cooldown: Duration::from_secs(30),
        explain: false,
        settings: settings
            .iter()
            .map(|(k, v)| {
                (
                    k.to_string(),
                    Setting {
                        value: v.to_string(),
                        origin: Origin::Default,
                        secret: false,
                    },
                )
            })
            .collect::<BTreeMap<_, _>>(),
        origin: Origin::Default,
    }
}

#[test]
fn keys_are_namespaced_by_prefix_and_format_version() {
    let key = CacheKey([0xab; 32]);
    assert_eq!(
        key_path("team-a/", &key),
        format!("team-a/cachet/v{ENTRY_FORMAT_VERSION}/{}", key.to_hex())
    );
}

#[test]
fn every_backend_builds_from_its_config_without_touching_the_network() {
    let cases = [
        config(
            "s3",
            &[
                ("bucket", "b"),
                ("endpoint", "http://127.0.0.1:1"),
                ("anonymous", "true"),
            ],
        ),
        config("redis", &[("endpoint", "redis://127.0.0.1:1"), ("db", "2")]),
        config(
            "redis",
            &[(
                "cluster_endpoints",
                "redis://127.0.0.1:1,redis://127.0.0.1:2",
            )],
        ),
        config("memcached", &[("endpoint", "tcp://127.0.0.1:1")]),
        config("webdav", &[("endpoint", "http://127.0.0.1:1/dav/")]),
        config("http", &[("endpoint", "http://127.0.0.1:1/cache/")]),
        config(
            "gcs",
            &[
                ("bucket", "b"),
                ("endpoint", "http://127.0.0.1:1"),
                ("token", "t"),
            ],
        ),
        config(
            "azblob",
            &[
                ("container", "c"),
                ("endpoint", "http://127.0.0.1:1/acct"),
                ("account_name", "acct"),
                ("account_key", "a2V5"),
            ],
        ),
        config(
            "gha",
            &[("endpoint", "http://127.0.0.1:1/"), ("runtime_token", "t")],
        ),
    ];
    for case in &cases {
        if let Err(e) = case.build_store() {
            panic!("{} did not build: {e}", case.kind.name());
        }
        let options = case.level_options();
        assert_eq!(options.kind, case.kind.name());
        assert_eq!(options.timeout, Some(case.timeout));
        assert!(!options.remove_corrupt);
    }
}

#[test]
fn a_malformed_endpoint_is_an_error_at_build_time() {
    let bad = config("memcached", &[("endpoint", "ftp://host")]);
    assert!(bad.build_store().is_err());
    let bad = config("http", &[("endpoint", "not a url")]);
    assert!(bad.build_store().is_err());
}

#[tokio::test]
async fn a_down_remote_is_an_error_not_a_hang() {
    // Nothing listens on port 1 of loopback: refused at once.
    let storage = config("redis", &[("endpoint", "redis://127.0.0.1:1")])
        .build_store()
        .unwrap();
    let result = tokio::time::timeout(Duration::from_secs(20), storage.get(&CacheKey([1; 32])))
        .await
        .expect("answers");
    assert!(result.is_err(), "{result:?}");
}

#[tokio::test]
async fn opendal_storage_round_trips_and_misses_are_none() {
    let op = memory();
    let storage = Prefixed::new(op.clone(), "p/".into());
    let key = CacheKey([3; 32]);
    assert_eq!(storage.get(&key).await.unwrap(), None);
    storage.put(&key, b"entry".to_vec()).await.unwrap();
    assert_eq!(storage.get(&key).await.unwrap(), Some(b"entry".to_vec()));
    assert!(op.exists(&key_path("p/", &key)).await.unwrap());
    storage.remove(&key).await.unwrap();
    assert_eq!(storage.get(&key).await.unwrap(), None);
}

async fn item_sizes(op: &Operator) -> Vec<(String, usize)> {
    let mut out = Vec::new();
    for entry in op.list_with("/").recursive(true).await.unwrap() {
        if entry.metadata().is_file() {
            let len = op.read(entry.path()).await.unwrap().len();
            out.push((entry.path().to_owned(), len));
        }
    }
    out
}

#[tokio::test]
async fn chunked_items_never_exceed_the_limit_and_round_trip() {
    let op = memory();
    let limit = 4096;
    let store = Chunked::new(Box::new(op.clone()), String::new(), limit, 64);
    for (n, len) in [0usize, 10, 3000, 3071, 3072, 10_000, 100_000]
        .into_iter()
        .enumerate()
    {
        let key = CacheKey([n as u8; 32]);
        let bytes: Vec<u8> = (0..len).map(|i| (i * 7 + n) as u8).collect();
        store.put(&key, bytes.clone()).await.unwrap();
        assert_eq!(store.get(&key).await.unwrap(), Some(bytes), "length {len}");
    }
    let sizes = item_sizes(&op).await;
    assert!(sizes.len() > 7, "large entries were split: {sizes:?}");
    for (path, len) in sizes {
        assert!(len as u64 <= limit, "{path} holds {len} bytes");
    }
}

#[tokio::test]
async fn chunked_refuses_entries_above_max_chunks_as_too_large() {
    let store = Chunked::new(Box::new(memory()), String::new(), 4096, 2);
    let err = store
        .put(&CacheKey([1; 32]), vec![0; 20_000])
        .await
        .unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::FileTooLarge);
}

#[tokio::test]
async fn an_evicted_chunk_is_a_miss_and_a_bad_table_an_error() {
    let op = memory();
    let store = Chunked::new(Box::new(op.clone()), String::new(), 4096, 64);
    let key = CacheKey([9; 32]);
    store.put(&key, vec![5; 20_000]).await.unwrap();
    let head = key_path("", &key);
    let chunk = item_sizes(&op)
        .await
        .into_iter()
        .map(|(p, _)| p)
        .find(|p| p.ends_with(".1"))
        .unwrap();
    op.delete(&chunk).await.unwrap();
    assert_eq!(store.get(&key).await.unwrap(), None);

    op.write(&head, vec![7u8, 1, 2, 3]).await.unwrap();
    let err = store.get(&key).await.unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::InvalidData);
}

/// A chunk table planted in a shared store: a huge claimed size, chunks larger than the
/// table says, millions of chunks. Each is an error, with memory bounded by what arrives.
#[tokio::test]
async fn a_planted_chunk_table_never_makes_the_server_allocate_what_it_claims() {
    let op = memory();
    let store = Chunked::new(Box::new(op.clone()), String::new(), 4096, 64);
    let key = CacheKey([3; 32]);
    let head = key_path("", &key);
    let table = |count: u32, total: u64| {
        let mut t = vec![1u8];
        t.extend_from_slice(&count.to_le_bytes());
        t.extend_from_slice(&total.to_le_bytes());
        t.extend_from_slice(&[0u8; 32]);
        t
    };
    // Millions of chunks.
    op.write(&head, table(5_000_000, 100)).await.unwrap();
    let err = store.get(&key).await.unwrap_err();
    assert!(err.to_string().contains("claims 5000000 chunks"), "{err}");
    // Exabytes claimed.
    op.write(&head, table(2, u64::MAX / 2)).await.unwrap();
    let err = store.get(&key).await.unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::InvalidData, "{err}");
    // Chunks that hold more than the table says: refused as soon as they overflow it.
    op.write(&head, table(2, 10)).await.unwrap();
    for n in 0..2u32 {
        // A table's chunks are named after its hash (all zeros here).
        op.write(&format!("{head}.{}.{n}", "0".repeat(16)), vec![0u8; 4000])
            .await
            .unwrap();
    }
    let err = store.get(&key).await.unwrap_err();
    assert!(
        err.to_string().contains("hold more than the 10 bytes"),
        "{err}"
    );
}
