use super::*;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};

/// What the in-test server remembers; tests poke at it directly to
/// simulate eviction and corruption.
#[derive(Default)]
struct ServerState {
    objects: HashMap<String, Vec<u8>>,
    /// (method, path) of every request, in arrival order.
    log: Vec<(String, String)>,
    /// Lower-cased headers of every request.
    headers: Vec<HashMap<String, String>>,
    /// Answer every request with this status instead of serving it.
    force_status: Option<u16>,
    /// Read requests but never answer them.
    hang: bool,
}

struct TestServer {
    addr: SocketAddr,
    state: Arc<Mutex<ServerState>>,
}

impl TestServer {
    async fn start() -> TestServer {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let state = Arc::new(Mutex::new(ServerState::default()));
        let accept_state = state.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                tokio::spawn(serve_connection(stream, accept_state.clone()));
            }
        });
        TestServer { addr, state }
    }

    fn url(&self, prefix: &str) -> String {
        format!("http://{}{prefix}", self.addr)
    }

    fn cache(&self, prefix: &str) -> HttpCache {
        HttpCache::new(config(&self.url(prefix))).unwrap()
    }

    fn log(&self) -> Vec<(String, String)> {
        self.state.lock().unwrap().log.clone()
    }
}

fn config(endpoint: &str) -> HttpCacheConfig {
    HttpCacheConfig {
        endpoint: endpoint.to_owned(),
        timeout: Duration::from_secs(10),
        bearer_token: None,
        basic_auth: None,
        extra_headers: Vec::new(),
    }
}

/// Minimal HTTP/1.1 with keep-alive and Content-Length bodies, which is
/// all reqwest sends for in-memory bodies.
async fn serve_connection(stream: TcpStream, state: Arc<Mutex<ServerState>>) {
    let mut stream = BufReader::new(stream);
    loop {
        let mut request_line = String::new();
        if stream.read_line(&mut request_line).await.unwrap_or(0) == 0 {
            return;
        }
        let mut parts = request_line.split_whitespace();
        let method = parts.next().unwrap_or_default().to_owned();
        let path = parts.next().unwrap_or_default().to_owned();

        let mut headers = HashMap::new();
        loop {
            let mut line = String::new();
            if stream.read_line(&mut line).await.unwrap_or(0) == 0 {
                return;
            }
            let line = line.trim_end();
            if line.is_empty() {
                break;
            }
            if let Some((k, v)) = line.split_once(':') {
                headers.insert(k.trim().to_ascii_lowercase(), v.trim().to_owned());
            }
        }
        assert!(
            !headers.contains_key("transfer-encoding"),
            "test server only handles Content-Length bodies"
        );
        let len: usize = headers
            .get("content-length")
            .map_or(0, |v| v.parse().unwrap());
        let mut body = vec![0; len];
        if stream.read_exact(&mut body).await.is_err() {
            return;
        }

        let (status, response_body, hang) = {
            let mut st = state.lock().unwrap();
            st.log.push((method.clone(), path.clone()));
            st.headers.push(headers);
            if st.hang {
                (0, Vec::new(), true)
            } else if let Some(code) = st.force_status {
                (code, b"simulated failure".to_vec(), false)
            } else {
                match method.as_str() {
                    "PUT" => {
                        st.objects.insert(path, body);
                        (201, Vec::new(), false)
                    }
                    "GET" | "HEAD" => match st.objects.get(&path) {
                        Some(obj) => (200, obj.clone(), false),
                        None => (404, Vec::new(), false),
                    },
                    _ => (405, Vec::new(), false),
                }
            }
        };
        if hang {
            // Hold the connection open without ever answering.
            std::future::pending::<()>().await;
        }
        let reason = match status {
            200 => "OK",
            201 => "Created",
            404 => "Not Found",
            500 => "Internal Server Error",
            _ => "Other",
        };
        let head = format!(
            "HTTP/1.1 {status} {reason}\r\nContent-Length: {}\r\n\r\n",
            response_body.len()
        );
        let stream = stream.get_mut();
        if stream.write_all(head.as_bytes()).await.is_err() {
            return;
        }
        if method != "HEAD" && stream.write_all(&response_body).await.is_err() {
            return;
        }
    }
}

fn assert_only_plain_methods(log: &[(String, String)]) {
    for (method, path) in log {
        assert!(
            matches!(method.as_str(), "GET" | "PUT" | "HEAD"),
            "unexpected {method} {path}"
        );
    }
}

const KEY: &str = "cachet-v2/ab12cd34";

fn content() -> Vec<u8> {
    b"compiled object bytes\n".repeat(100)
}

#[tokio::test]
async fn round_trip_uses_bazel_remote_layout() {
    let server = TestServer::start().await;
    let cache = server.cache("/");
    let bytes = content();
    cache.put(KEY, bytes.clone()).await.unwrap();
    assert_eq!(cache.get(KEY).await.unwrap(), Some(bytes.clone()));

    let cas = format!("/cas/{}", sha256_hex(&bytes));
    let ac = format!("/ac/{}", sha256_hex(KEY.as_bytes()));
    let log = server.log();
    let expected: Vec<(String, String)> = [
        ("PUT", &cas), // CAS strictly before AC
        ("PUT", &ac),
        ("GET", &ac),
        ("GET", &cas),
    ]
    .iter()
    .map(|(m, p)| (m.to_string(), p.to_string()))
    .collect();
    assert_eq!(log, expected);
    assert_only_plain_methods(&log);

    // The AC entry is a real ActionResult pointing at the blob.
    let ac_bytes = server.state.lock().unwrap().objects[&ac].clone();
    let action = proto::ActionResult::decode(ac_bytes.as_slice()).unwrap();
    assert_eq!(action.exit_code, 0);
    assert_eq!(action.output_files.len(), 1);
    let file = &action.output_files[0];
    assert_eq!(file.path, ENTRY_PATH);
    assert!(!file.is_executable);
    let digest = file.digest.as_ref().unwrap();
    assert_eq!(digest.hash, sha256_hex(&bytes));
    assert_eq!(digest.size_bytes, bytes.len() as i64);
}

#[tokio::test]
async fn endpoint_path_prefix_is_kept() {
    let server = TestServer::start().await;
    // No trailing slash on purpose: the prefix must not be swallowed by URL joining.
    let cache = server.cache("/bazel/cache");
    cache.put(KEY, b"x".to_vec()).await.unwrap();
    assert_eq!(cache.get(KEY).await.unwrap(), Some(b"x".to_vec()));
    let log = server.log();
    assert_eq!(log[0].1, format!("/bazel/cache/cas/{}", sha256_hex(b"x")));
    assert_eq!(
        log[1].1,
        format!("/bazel/cache/ac/{}", sha256_hex(KEY.as_bytes()))
    );
    assert_only_plain_methods(&log);
}

#[tokio::test]
async fn empty_value_round_trips() {
    let server = TestServer::start().await;
    let cache = server.cache("/");
    cache.put(KEY, Vec::new()).await.unwrap();
    assert_eq!(cache.get(KEY).await.unwrap(), Some(Vec::new()));
}

#[tokio::test]
async fn miss_is_none() {
    let server = TestServer::start().await;
    let cache = server.cache("/");
    assert_eq!(cache.get("cachet-v2/missing").await.unwrap(), None);
    let log = server.log();
    assert_eq!(log.len(), 1, "a miss needs only the AC lookup: {log:?}");
    assert_only_plain_methods(&log);
}

#[tokio::test]
async fn dangling_ac_is_a_miss() {
    let server = TestServer::start().await;
    let cache = server.cache("/");
    let bytes = content();
    cache.put(KEY, bytes.clone()).await.unwrap();
    let cas = format!("/cas/{}", sha256_hex(&bytes));
    server.state.lock().unwrap().objects.remove(&cas);
    assert_eq!(cache.get(KEY).await.unwrap(), None);
}

#[tokio::test]
async fn tampered_blob_is_invalid_data() {
    let server = TestServer::start().await;
    let cache = server.cache("/");
    let bytes = content();
    cache.put(KEY, bytes.clone()).await.unwrap();
    let cas = format!("/cas/{}", sha256_hex(&bytes));

    // Same length, different content: caught by the hash.
    server.state.lock().unwrap().objects.get_mut(&cas).unwrap()[3] ^= 0xff;
    let err = cache.get(KEY).await.unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::InvalidData);
    assert!(err.to_string().contains("sha256"), "{err}");

    // Different length: caught by the size.
    server
        .state
        .lock()
        .unwrap()
        .objects
        .insert(cas, b"short".to_vec());
    let err = cache.get(KEY).await.unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::InvalidData);
    assert!(err.to_string().contains("bytes"), "{err}");
}

#[tokio::test]
async fn garbage_ac_is_invalid_data() {
    let server = TestServer::start().await;
    let cache = server.cache("/");
    let ac = format!("/ac/{}", sha256_hex(KEY.as_bytes()));

    // Not protobuf at all (an over-long varint).
    server
        .state
        .lock()
        .unwrap()
        .objects
        .insert(ac.clone(), vec![0xff; 16]);
    let err = cache.get(KEY).await.unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::InvalidData);
    assert!(err.to_string().contains("ActionResult"), "{err}");

    // Valid protobuf, but not one of ours (no entry file).
    let foreign = proto::ActionResult {
        output_files: vec![proto::OutputFile {
            path: "bazel-out/foo.o".into(),
            digest: Some(proto::Digest {
                hash: sha256_hex(b""),
                size_bytes: 0,
            }),
            is_executable: false,
        }],
        ..Default::default()
    };
    server
        .state
        .lock()
        .unwrap()
        .objects
        .insert(ac.clone(), foreign.encode_to_vec());
    let err = cache.get(KEY).await.unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::InvalidData);

    // A digest that would escape the cas/ directory is refused before any request.
    let hostile = proto::ActionResult {
        output_files: vec![proto::OutputFile {
            path: ENTRY_PATH.into(),
            digest: Some(proto::Digest {
                hash: "../ac/x".into(),
                size_bytes: 1,
            }),
            is_executable: false,
        }],
        ..Default::default()
    };
    server
        .state
        .lock()
        .unwrap()
        .objects
        .insert(ac, hostile.encode_to_vec());
    let before = server.log().len();
    let err = cache.get(KEY).await.unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::InvalidData);
    assert_eq!(server.log().len(), before + 1, "only the AC was fetched");
}

#[tokio::test]
async fn unresponsive_server_times_out() {
    let server = TestServer::start().await;
    server.state.lock().unwrap().hang = true;
    let timeout = Duration::from_millis(300);
    let cache = HttpCache::new(HttpCacheConfig {
        timeout,
        ..config(&server.url("/"))
    })
    .unwrap();

    let start = std::time::Instant::now();
    let err = cache.get(KEY).await.unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::TimedOut, "{err}");
    assert!(start.elapsed() < timeout * 10, "took {:?}", start.elapsed());

    let start = std::time::Instant::now();
    let err = cache.put(KEY, content()).await.unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::TimedOut, "{err}");
    assert!(start.elapsed() < timeout * 10, "took {:?}", start.elapsed());
}

#[tokio::test]
async fn server_error_names_url_and_status() {
    let server = TestServer::start().await;
    server.state.lock().unwrap().force_status = Some(500);
    let cache = server.cache("/");

    let err = cache.get(KEY).await.unwrap_err();
    let msg = err.to_string();
    assert!(msg.contains("500"), "{msg}");
    assert!(
        msg.contains(&format!("/ac/{}", sha256_hex(KEY.as_bytes()))),
        "{msg}"
    );
    assert!(msg.contains("simulated failure"), "{msg}");

    let err = cache.put(KEY, content()).await.unwrap_err();
    let msg = err.to_string();
    assert!(msg.contains("500") && msg.contains("/cas/"), "{msg}");
    // The failed CAS upload must stop us from writing the AC entry.
    assert_eq!(
        server
            .log()
            .iter()
            .filter(|(m, p)| m == "PUT" && p.starts_with("/ac/"))
            .count(),
        0
    );
}

#[tokio::test]
async fn auth_and_extra_headers_are_sent() {
    let server = TestServer::start().await;
    let cache = HttpCache::new(HttpCacheConfig {
        bearer_token: Some("tok123".into()),
        extra_headers: vec![("X-Cache-Tenant".into(), "team-a".into())],
        ..config(&server.url("/"))
    })
    .unwrap();
    cache.put(KEY, content()).await.unwrap();
    cache.get(KEY).await.unwrap();

    let basic = HttpCache::new(HttpCacheConfig {
        basic_auth: Some(("user".into(), "pw".into())),
        ..config(&server.url("/"))
    })
    .unwrap();
    basic.get(KEY).await.unwrap();

    let headers = server.state.lock().unwrap().headers.clone();
    let (bearer, basic) = headers.split_at(4);
    for h in bearer {
        assert_eq!(h["authorization"], "Bearer tok123");
        assert_eq!(h["x-cache-tenant"], "team-a");
    }
    for h in basic {
        // base64("user:pw")
        assert_eq!(h["authorization"], "Basic dXNlcjpwdw==");
    }
}

#[tokio::test]
async fn new_validates_config_without_network() {
    // Nothing listens here; new() must still succeed since it does no I/O.
    HttpCache::new(config("http://127.0.0.1:9/")).unwrap();

    let bad = [
        config("not a url"),
        config("ftp://host/"),
        config("http://host/?q=1"),
        HttpCacheConfig {
            timeout: Duration::ZERO,
            ..config("http://host/")
        },
        HttpCacheConfig {
            bearer_token: Some("t".into()),
            basic_auth: Some(("u".into(), "p".into())),
            ..config("http://host/")
        },
        HttpCacheConfig {
            extra_headers: vec![("bad header".into(), "v".into())],
            ..config("http://host/")
        },
    ];
    for cfg in bad {
        let err = HttpCache::new(cfg.clone()).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidInput, "{cfg:?}");
    }
}

#[tokio::test]
async fn secrets_stay_out_of_messages() {
    let cfg = HttpCacheConfig {
        bearer_token: Some("s3cret-token".into()),
        ..config("http://user:s3cret-pw@127.0.0.1:9/")
    };
    let shown = format!("{cfg:?}");
    assert!(!shown.contains("s3cret"), "{shown}");
    // Port 9 (discard) is closed on a test box: a connection error, whose
    // message must not leak the URL password.
    let err = HttpCache::new(cfg).unwrap().get(KEY).await.unwrap_err();
    assert!(!err.to_string().contains("s3cret"), "{err}");
}

/// Round-trips against a real bazel-remote-compatible server (e.g. nginx
/// with WebDAV PUT at http://127.0.0.1:18080/bazel/) when
/// `CACHET_TEST_BAZEL` is set; its value is used as the endpoint if it is
/// a URL.
#[tokio::test]
async fn real_server_round_trip_when_configured() {
    let Ok(value) = std::env::var("CACHET_TEST_BAZEL") else {
        eprintln!("CACHET_TEST_BAZEL unset; skipping real-server round trip");
        return;
    };
    let endpoint = if value.starts_with("http://") || value.starts_with("https://") {
        value
    } else {
        "http://127.0.0.1:18080/bazel/".to_owned()
    };
    let cache = HttpCache::new(config(&endpoint)).unwrap();
    // Unique per run so stale entries from earlier runs cannot mask a bug.
    let nonce = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    let key = format!("cachet-v2/test-{nonce}");
    let bytes = format!("payload {nonce}\n").repeat(1000).into_bytes();

    assert_eq!(cache.get(&key).await.unwrap(), None);
    cache.put(&key, bytes.clone()).await.unwrap();
    assert_eq!(cache.get(&key).await.unwrap(), Some(bytes));
    // Overwriting an existing entry must work too (same CAS blob re-PUT).
    cache.put(&key, b"second".to_vec()).await.unwrap();
    assert_eq!(cache.get(&key).await.unwrap(), Some(b"second".to_vec()));
}
