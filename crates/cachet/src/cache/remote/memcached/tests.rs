//! The client against a small text-protocol server in the test (and against a real
//! memcached when `CACHET_TEST_MEMCACHED` names one).

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;

use super::*;

/// Serves get/set/delete from a map; items above `limit` bytes are refused as memcached
/// does; a key starting with "garbage" gets a nonsense answer. Counts connections.
async fn fake_server(limit: usize) -> (String, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap().to_string();
    let connections = Arc::new(AtomicUsize::new(0));
    let items = Arc::new(std::sync::Mutex::new(HashMap::<String, Vec<u8>>::new()));
    let counter = connections.clone();
    tokio::spawn(async move {
        loop {
            let (stream, _) = listener.accept().await.unwrap();
            counter.fetch_add(1, Ordering::SeqCst);
            let items = items.clone();
            tokio::spawn(async move {
                let mut stream = BufReader::new(stream);
                loop {
                    let mut line = String::new();
                    if stream.read_line(&mut line).await.unwrap_or(0) == 0 {
                        return;
                    }
                    let words: Vec<&str> = line.split_whitespace().collect();
                    let answer: Vec<u8> = match words.as_slice() {
                        ["get", key] if key.starts_with("garbage") => b"HELLO\r\n".to_vec(),
                        ["get", key] => match items.lock().unwrap().get(*key) {
                            Some(v) => {
                                let mut a = format!("VALUE {key} 0 {}\r\n", v.len()).into_bytes();
                                a.extend_from_slice(v);
                                a.extend_from_slice(b"\r\nEND\r\n");
                                a
                            }
                            None => b"END\r\n".to_vec(),
                        },
                        ["set", key, _, _, n] => {
                            let n: usize = n.parse().unwrap();
                            let mut data = vec![0; n + 2];
                            stream.read_exact(&mut data).await.unwrap();
                            data.truncate(n);
                            if n > limit {
                                b"SERVER_ERROR object too large for cache\r\n".to_vec()
                            } else {
                                items.lock().unwrap().insert(key.to_string(), data);
                                b"STORED\r\n".to_vec()
                            }
                        }
                        ["delete", key] => match items.lock().unwrap().remove(*key) {
                            Some(_) => b"DELETED\r\n".to_vec(),
                            None => b"NOT_FOUND\r\n".to_vec(),
                        },
                        _ => b"ERROR\r\n".to_vec(),
                    };
                    if stream.get_mut().write_all(&answer).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    (address, connections)
}

#[tokio::test]
async fn round_trip_miss_and_delete_reuse_one_connection() {
    let (address, connections) = fake_server(1 << 20).await;
    let client = Memcached::new(&format!("tcp://{address}"), 0).unwrap();
    assert_eq!(client.read("k1").await.unwrap(), None);
    let value: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
    client.write("k1", value.clone()).await.unwrap();
    // Data holding the protocol's own line ends comes back whole.
    client.write("k2", b"a\r\nEND\r\nb".to_vec()).await.unwrap();
    assert_eq!(client.read("k1").await.unwrap(), Some(value));
    assert_eq!(
        client.read("k2").await.unwrap(),
        Some(b"a\r\nEND\r\nb".to_vec())
    );
    client.delete("k1").await.unwrap();
    client.delete("k1").await.unwrap();
    assert_eq!(client.read("k1").await.unwrap(), None);
    assert_eq!(
        connections.load(Ordering::SeqCst),
        1,
        "one pooled connection"
    );
}

#[tokio::test]
async fn too_large_is_its_own_error_and_garbage_drops_the_connection() {
    let (address, connections) = fake_server(1000).await;
    let client = Memcached::new(&address, 0).unwrap();
    let err = client.write("big", vec![1; 2000]).await.unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::FileTooLarge);
    let err = client.read("garbage-key").await.unwrap_err();
    assert!(err.to_string().contains("HELLO"), "{err}");
    client.write("small", vec![1; 10]).await.unwrap();
    assert_eq!(
        connections.load(Ordering::SeqCst),
        3,
        "a connection with a failed call is never reused"
    );
}

#[tokio::test]
async fn bad_endpoints_and_keys_are_refused() {
    for endpoint in [
        "",
        "host",
        "tcp://host",
        "host:port",
        "unix:///tmp/x",
        "http://h:1/x",
    ] {
        assert!(Memcached::new(endpoint, 0).is_err(), "{endpoint}");
    }
    let client = Memcached::new("127.0.0.1:1", 0).unwrap();
    for key in ["", "has space", &"k".repeat(251)] {
        let err = client.read(key).await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidInput, "{key}");
    }
    // Nothing listens on port 1: a clear error, not a hang.
    assert!(client.read("k").await.is_err());
}

#[tokio::test]
async fn a_real_memcached_when_there_is_one() {
    let Ok(endpoint) = std::env::var("CACHET_TEST_MEMCACHED") else {
        eprintln!("SKIPPED: CACHET_TEST_MEMCACHED is not set");
        return;
    };
    let client = Memcached::new(&endpoint, 60).unwrap();
    let key = format!("cachet-unit-{}", std::process::id());
    client.write(&key, b"value".to_vec()).await.unwrap();
    assert_eq!(client.read(&key).await.unwrap(), Some(b"value".to_vec()));
    let err = client.write(&key, vec![7; 2 << 20]).await.unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::FileTooLarge);
    client.delete(&key).await.unwrap();
    assert_eq!(client.read(&key).await.unwrap(), None);
}
