//! Shared caches against real servers on loopback, started by `scripts/services start`
//! (`.ci/run` does it): redis (one node, over TLS too, and a 3-node Cluster), memcached,
//! SeaweedFS S3, nginx WebDAV, nginx as a bazel-remote style HTTP store, and BuildGrid
//! (the Remote Execution API's ActionCache and CAS).
//!
//! Each backend shows: two cachet servers with their own local dirs and runtime dirs share
//! one remote, with the project checked out at two paths; a read-only level is never
//! written (checked on the store itself); and outages mid-build never fail the build.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime};

use common::*;
use opendal::Operator;
use serde_json::Value;

/// Tests that stop or kill a shared server must not overlap with the others of its kind.
static S3: Mutex<()> = Mutex::new(());

fn service(var: &str) -> Option<String> {
    match std::env::var(var) {
        Ok(v) if !v.is_empty() => Some(v),
        _ => {
            skip(&format!(
                "{var} is not set: run `scripts/services start` and source target/services/env"
            ));
            None
        }
    }
}

/// A key prefix no other run has used, so a rerun against the same servers starts empty.
fn unique_prefix(tag: &str) -> String {
    let nanos = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!("test-{tag}-{}-{nanos}/", std::process::id())
}

fn fixture() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/cproject")
}

/// A cachet with its own local dir and runtime dir, its base dir set to its own work dir
/// (where the checkout lives), and the remote settings given.
fn cachet_with(remote: &[(String, String)]) -> Env {
    let env = Env::new();
    let base = env.work.clone();
    with_remote(env, &base, remote)
}

/// `env` with `base` as its base dir and the remote settings given (a second cachet that
/// builds another one's checkout passes that one's base dir).
fn with_remote(env: Env, base: &Path, remote: &[(String, String)]) -> Env {
    let mut env = env.with_env("CACHET_BASE_DIRS", base.to_str().unwrap());
    for (k, v) in remote {
        env = env.with_env(k, v);
    }
    env
}

/// Checks the project out under the env's work dir, at a path of its own.
fn checkout(env: &Env, name: &str) -> PathBuf {
    let dir = env.work.join(name).join("proj");
    copy_dir(&fixture(), &dir);
    dir
}

/// The flags docs/config.md tells users to set for sharing across paths with -g.
const CFLAGS: &str = "-O2 -g -Wall -Wextra -MMD -MP -Iinclude -fdebug-prefix-map=$(CURDIR)=.";

fn make(env: &Env, dir: &Path, cc: &str) -> Output {
    env.command("make")
        .current_dir(dir)
        .args(["-j2", &format!("CC={cc}"), &format!("CFLAGS={CFLAGS}")])
        .output()
        .unwrap()
}

fn make_ok(env: &Env, dir: &Path) {
    let out = make(env, dir, &format!("{CACHET} gcc"));
    assert!(
        out.status.success(),
        "make failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        stderr(&out)
    );
}

fn level<'a>(stats: &'a Value, name: &str) -> &'a Value {
    stats["counters"]["levels"]
        .as_array()
        .unwrap()
        .iter()
        .find(|l| l["name"] == name)
        .unwrap_or_else(|| panic!("no level {name} in {stats}"))
}

fn n(value: &Value) -> u64 {
    value.as_u64().unwrap()
}

fn flush(env: &Env) {
    let out = env.ok(&["--flush"]);
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("done"),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
}

/// The keys (64 hex characters) of the entries in a cachet's local dir.
fn local_keys(env: &Env) -> Vec<String> {
    env.entries()
        .iter()
        .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
        .collect()
}

fn entry_path(prefix: &str, key: &str) -> String {
    format!("{prefix}cachet/v2/{key}")
}

/// Builds on a first cachet, flushes, then builds a second checkout at another path on a
/// second cachet: every compile must hit, and every output must be the first's.
/// Returns the two envs.
fn shares_across_checkouts(remote: &[(String, String)], remote_name: &str) -> (Env, Env) {
    let first = cachet_with(remote);
    // Base dirs make paths relative to them: the checkouts sit at the same place under
    // each cachet's base dir (its work dir), at different absolute paths.
    let one = checkout(&first, "ws");
    make_ok(&first, &one);
    flush(&first);
    let stats = first.stats();
    assert_eq!(n(&stats["counters"]["cache_hits"]), 0);
    assert!(n(&level(&stats, remote_name)["writes"]) >= 6, "{stats}");

    let second = cachet_with(remote);
    let two = checkout(&second, "ws");
    assert_ne!(one, two);
    make_ok(&second, &two);
    let stats = second.settle();
    let c = &stats["counters"];
    assert_eq!(
        (n(&c["cache_hits"]), n(&c["cache_misses"])),
        (6, 0),
        "the second checkout must be all hits: {stats}"
    );
    // Direct hits (-MMD compiles get them, from observed inputs): each reads a manifest
    // and an entry from the remote.
    assert_eq!(n(&c["direct_hits"]), 6, "{stats}");
    assert_eq!(n(&level(&stats, remote_name)["hits"]), 12, "{stats}");
    assert_eq!(
        build_outputs(&one.join("out")),
        build_outputs(&two.join("out")),
        "outputs differ between checkouts"
    );
    // And identical to a build without cachet.
    let plain = Env::new();
    let three = checkout(&plain, "plain");
    let out = make(&plain, &three, "gcc");
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        build_outputs(&three.join("out")),
        build_outputs(&two.join("out")),
        "cachet's outputs differ from gcc's"
    );
    (first, second)
}

/// A build through a read-only level writes nothing to it.
fn read_only_build(remote: &[(String, String)], remote_name: &str) -> Env {
    let mut settings = remote.to_vec();
    let kind = remote_name.split('-').next().unwrap().to_ascii_uppercase();
    settings.push((format!("CACHET_{kind}_READ_ONLY"), "true".into()));
    let env = cachet_with(&settings);
    let dir = checkout(&env, "ro");
    // Sources of its own: entries are shared across build dirs and checkouts now, and
    // this build must make new ones.
    for entry in std::fs::read_dir(dir.join("src")).unwrap().flatten() {
        let mut text = std::fs::read_to_string(entry.path()).unwrap();
        text.push_str("/* built through a read-only level */\n");
        std::fs::write(entry.path(), text).unwrap();
    }
    make_ok(&env, &dir);
    flush(&env);
    let stats = env.stats();
    let l = level(&stats, remote_name);
    assert_eq!(l["read_only"], true);
    assert!(n(&l["misses"]) >= 6, "{stats}");
    env
}

fn vars(list: &[(&str, &str)]) -> Vec<(String, String)> {
    list.iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn redis_op(url: &str, db: i64) -> Operator {
    let builder = opendal::services::Redis::default()
        .endpoint(url)
        .db(db)
        .root("/");
    Operator::new(builder).unwrap()
}

fn redis_cli(url: &str, db: u32, args: &[&str]) -> String {
    let cli = std::env::var("CACHET_TEST_REDIS_CLI").unwrap_or_else(|_| "redis-cli".into());
    let out = Command::new(cli)
        .args(["-u", url, "-n", &db.to_string()])
        .args(args)
        .stdin(no_input())
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

#[test]
fn redis_shares_across_checkouts_and_a_read_only_level_stays_empty() {
    let Some(url) = service("CACHET_TEST_REDIS") else {
        return;
    };
    let prefix = unique_prefix("redis");
    shares_across_checkouts(
        &vars(&[
            ("CACHET_REDIS_ENDPOINT", &url),
            ("CACHET_REDIS_PREFIX", &prefix),
        ]),
        "redis",
    );

    // Database 7 is this test's alone: its size is what the read-only level wrote.
    redis_cli(&url, 7, &["FLUSHDB"]);
    read_only_build(
        &vars(&[("CACHET_REDIS_ENDPOINT", &url), ("CACHET_REDIS_DB", "7")]),
        "redis",
    );
    assert_eq!(
        redis_cli(&url, 7, &["DBSIZE"]),
        "0",
        "a read-only level was written"
    );
}

#[test]
fn redis_cluster_shares_across_checkouts_and_a_read_only_level_stays_empty() {
    let Some(urls) = service("CACHET_TEST_REDIS_CLUSTER") else {
        return;
    };
    let prefix = unique_prefix("cluster");
    let remote = vars(&[
        ("CACHET_REDIS_CLUSTER_ENDPOINTS", &urls),
        ("CACHET_REDIS_PREFIX", &prefix),
    ]);
    let (first, _) = shares_across_checkouts(&remote, "redis");
    // The keys really are spread over the nodes (the client followed MOVED replies).
    let nodes_with_keys = urls
        .split(',')
        .filter(|url| redis_cli(url, 0, &["DBSIZE"]) != "0")
        .count();
    assert!(
        nodes_with_keys >= 2,
        "entries of {} keys sit on {nodes_with_keys} node",
        local_keys(&first).len()
    );

    // Read-only: the nodes hold exactly as many keys after a build as before it.
    let total = || -> u64 {
        urls.split(',')
            .map(|url| redis_cli(url, 0, &["DBSIZE"]).parse::<u64>().unwrap())
            .sum()
    };
    let before = total();
    read_only_build(
        &vars(&[
            ("CACHET_REDIS_CLUSTER_ENDPOINTS", &urls),
            ("CACHET_REDIS_PREFIX", &unique_prefix("cluster-ro")),
        ]),
        "redis",
    );
    assert_eq!(total(), before, "a read-only level was written");
}

#[test]
fn memcached_shares_across_checkouts_and_splits_large_entries() {
    let Some(endpoint) = service("CACHET_TEST_MEMCACHED") else {
        return;
    };
    let prefix = unique_prefix("memcached");
    let remote = vars(&[
        ("CACHET_MEMCACHED_ENDPOINT", &endpoint),
        ("CACHET_MEMCACHED_PREFIX", &prefix),
    ]);
    shares_across_checkouts(&remote, "memcached");

    // An object of about 1.6 MiB of numbers that do not compress, so that even the
    // compressed entry is above memcached's 1 MiB item limit.
    let big = cachet_with(&remote);
    let mut state = 0x9e3779b97f4a7c15u64;
    let table: String = (0..200_000)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            format!("{state}UL,")
        })
        .collect();
    big.write(
        "big.c",
        &format!("const unsigned long big[] = {{{table}}};\n"),
    );
    let compile = |env: &Env| {
        let out = env.run(&["gcc", "-c", "big.c", "-o", "big.o"]);
        assert!(out.status.success(), "{}", stderr(&out));
        std::fs::read(env.work.join("big.o")).unwrap()
    };
    let object = compile(&big);
    flush(&big);
    let stats = big.stats();
    let stored = n(&stats["cache"]["size_bytes"]);
    assert!(stored > 1 << 20, "the entries take only {stored} bytes");
    assert_eq!(
        n(&level(&stats, "memcached")["skipped_too_large"]),
        0,
        "{stats}"
    );
    assert_eq!(n(&level(&stats, "memcached")["errors"]), 0, "{stats}");

    let other = cachet_with(&remote);
    other.write(
        "big.c",
        &format!("const unsigned long big[] = {{{table}}};\n"),
    );
    assert_eq!(compile(&other), object);
    let stats = other.settle();
    assert_eq!(n(&stats["counters"]["cache_hits"]), 1, "{stats}");
    assert!(n(&level(&stats, "memcached")["hits"]) >= 1, "{stats}");

    // Read-only: none of the entries the build made is in memcached.
    let ro = read_only_build(&remote, "memcached");
    let op = Operator::new(
        opendal::services::Memcached::default()
            .endpoint(&endpoint)
            .root("/"),
    )
    .unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let keys = local_keys(&ro);
    assert!(!keys.is_empty());
    for key in keys {
        let found = rt.block_on(op.exists(&entry_path(&prefix, &key))).unwrap();
        assert!(!found, "a read-only level holds {key}");
    }
}

fn s3_remote(endpoint: &str, bucket: &str, prefix: &str) -> Vec<(String, String)> {
    vars(&[
        ("CACHET_S3_ENDPOINT", endpoint),
        ("CACHET_S3_BUCKET", bucket),
        ("CACHET_S3_PREFIX", prefix),
        ("CACHET_S3_TIMEOUT", "3s"),
        (
            "AWS_ACCESS_KEY_ID",
            &std::env::var("CACHET_TEST_S3_ACCESS_KEY").unwrap_or_default(),
        ),
        (
            "AWS_SECRET_ACCESS_KEY",
            &std::env::var("CACHET_TEST_S3_SECRET_KEY").unwrap_or_default(),
        ),
    ])
}

fn s3_op(endpoint: &str, bucket: &str) -> Operator {
    opendal::install_default();
    let builder = opendal::services::S3::default()
        .endpoint(endpoint)
        .bucket(bucket)
        .region("us-east-1")
        .access_key_id(&std::env::var("CACHET_TEST_S3_ACCESS_KEY").unwrap())
        .secret_access_key(&std::env::var("CACHET_TEST_S3_SECRET_KEY").unwrap());
    Operator::new(builder).unwrap()
}

fn s3_listing(endpoint: &str, bucket: &str, prefix: &str) -> Vec<String> {
    let op = s3_op(endpoint, bucket);
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async { op.list_with(prefix).recursive(true).await })
        .unwrap()
        .into_iter()
        .filter(|e| e.metadata().is_file())
        .map(|e| e.path().to_owned())
        .collect()
}

#[test]
fn s3_shares_across_checkouts_and_a_read_only_level_stays_empty() {
    let Some(endpoint) = service("CACHET_TEST_S3_ENDPOINT") else {
        return;
    };
    let _only = S3.lock().unwrap_or_else(|e| e.into_inner());
    let prefix = unique_prefix("s3");
    shares_across_checkouts(&s3_remote(&endpoint, "cachet", &prefix), "s3");
    assert!(!s3_listing(&endpoint, "cachet", &prefix).is_empty());

    let ro_prefix = unique_prefix("s3-ro");
    read_only_build(&s3_remote(&endpoint, "cachet", &ro_prefix), "s3");
    assert_eq!(
        s3_listing(&endpoint, "cachet", &ro_prefix),
        Vec::<String>::new(),
        "a read-only level was written"
    );
}

#[test]
fn webdav_shares_across_checkouts_and_a_read_only_level_stays_empty() {
    let Some(endpoint) = service("CACHET_TEST_WEBDAV") else {
        return;
    };
    let Some(root) = service("CACHET_TEST_WEBDAV_DIR") else {
        return;
    };
    let prefix = unique_prefix("dav");
    let remote = vars(&[
        ("CACHET_WEBDAV_ENDPOINT", &endpoint),
        ("CACHET_WEBDAV_PREFIX", &prefix),
    ]);
    shares_across_checkouts(&remote, "webdav");
    assert!(Path::new(&root).join(&prefix).is_dir());

    let ro_prefix = unique_prefix("dav-ro");
    read_only_build(
        &vars(&[
            ("CACHET_WEBDAV_ENDPOINT", &endpoint),
            ("CACHET_WEBDAV_PREFIX", &ro_prefix),
        ]),
        "webdav",
    );
    assert!(
        !Path::new(&root).join(&ro_prefix).exists(),
        "a read-only level was written"
    );
}

/// sha256 in hex, as the bazel-remote layout names things.
fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

#[test]
fn http_cache_with_the_bazel_layout_shares_across_checkouts() {
    let Some(endpoint) = service("CACHET_TEST_BAZEL") else {
        return;
    };
    let prefix = unique_prefix("bazel");
    let remote = vars(&[
        ("CACHET_HTTP_ENDPOINT", &endpoint),
        ("CACHET_HTTP_PREFIX", &prefix),
    ]);
    let (first, _) = shares_across_checkouts(&remote, "http");

    // Each entry is an action result under /ac/ whose output points at /cas/.
    // Only the status code counts; the body goes to a file of the test's own.
    let body = first.dir.path().join("curl.body");
    let client = |path: String| {
        Command::new("curl")
            .args(["-s", "-o"])
            .arg(&body)
            .args(["-w", "%{http_code}", &format!("{endpoint}{path}")])
            .stdin(no_input())
            .output()
            .unwrap()
    };
    let keys = local_keys(&first);
    assert!(!keys.is_empty());
    for key in &keys {
        let ac = sha256_hex(entry_path(&prefix, key).as_bytes());
        let code = client(format!("ac/{ac}"));
        assert_eq!(
            String::from_utf8_lossy(&code.stdout),
            "200",
            "no /ac/ for {key}"
        );
    }

    let ro_prefix = unique_prefix("bazel-ro");
    let ro = read_only_build(
        &vars(&[
            ("CACHET_HTTP_ENDPOINT", &endpoint),
            ("CACHET_HTTP_PREFIX", &ro_prefix),
        ]),
        "http",
    );
    for key in local_keys(&ro) {
        let ac = sha256_hex(entry_path(&ro_prefix, &key).as_bytes());
        let code = client(format!("ac/{ac}"));
        assert_eq!(
            String::from_utf8_lossy(&code.stdout),
            "404",
            "a read-only level holds {key}"
        );
    }
}

fn reapi_remote(endpoint: &str, instance: &str, prefix: &str) -> Vec<(String, String)> {
    vars(&[
        ("CACHET_REAPI_ENDPOINT", endpoint),
        ("CACHET_REAPI_INSTANCE_NAME", instance),
        ("CACHET_REAPI_PREFIX", prefix),
    ])
}

#[test]
fn reapi_shares_across_checkouts_through_the_action_cache_and_cas() {
    let Some(endpoint) = service("CACHET_TEST_REAPI") else {
        return;
    };
    let prefix = unique_prefix("reapi");
    let (first, _) = shares_across_checkouts(&reapi_remote(&endpoint, "main", &prefix), "reapi");
    let stats = first.stats();
    let l = level(&stats, "reapi");
    assert!(n(&l["cas_blobs_uploaded"]) > 0, "{stats}");
    assert_eq!(l["refuses_writes"], "", "{stats}");
}

#[test]
fn reapi_stores_an_object_that_two_entries_share_once() {
    let Some(endpoint) = service("CACHET_TEST_REAPI") else {
        return;
    };
    let env = cachet_with(&reapi_remote(
        &endpoint,
        "main",
        &unique_prefix("reapi-dedup"),
    ));
    // The code ignores UNUSED: two keys, one object. A body big enough that the object
    // stands out from the small blobs every entry has (its layout, its action).
    let mut source = String::from("int f(int x) { return x * 3; }\n");
    for i in 0..200 {
        source.push_str(&format!(
            "int g{i}(int x) {{ return x * {i} + {}; }}\n",
            i * 7
        ));
    }
    // A source of this test's own: no other run has stored its object.
    source.push_str(&format!(
        "const char *tag = \"{}\";\n",
        unique_prefix("src")
    ));
    env.write("a.c", &source);
    let compile = |define: &str, out: &str| {
        let out = env
            .cachet()
            .current_dir(&env.work)
            .args(["gcc", "-O2", define, "-c", "a.c", "-o", out])
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", stderr(&out));
        flush(&env);
        env.stats()
    };
    let first = compile("-DUNUSED=1", "a1.o");
    let second = compile("-DUNUSED=2", "a2.o");
    let object = std::fs::read(env.work.join("a1.o")).unwrap();
    assert_eq!(object, std::fs::read(env.work.join("a2.o")).unwrap());
    assert_eq!(n(&second["counters"]["cache_misses"]), 2, "{second}");
    let (a, b) = (level(&first, "reapi"), level(&second, "reapi"));
    let sent = |l: &Value| n(&l["cas_bytes_uploaded"]);
    let present = |l: &Value| n(&l["cas_blobs_present"]);
    assert!(
        sent(a) >= object.len() as u64,
        "the first upload holds the object: {first}"
    );
    // The second entry's object was already there: only its small blobs went up.
    assert!(present(b) > present(a), "{second}");
    assert!(
        sent(b) - sent(a) < object.len() as u64 / 2,
        "the object went up twice: {} then {} bytes, object {} bytes",
        sent(a),
        sent(b),
        object.len()
    );
}

#[test]
fn reapi_moves_blobs_above_the_batch_limit_by_bytestream() {
    let Some(endpoint) = service("CACHET_TEST_REAPI") else {
        return;
    };
    let remote = reapi_remote(&endpoint, "main", &unique_prefix("reapi-big"));
    // A 6 MiB object: above the 4 MiB that a batch call may carry.
    let source = format!(
        "static const char big[6 << 20] = {{1}};\nconst char *tag = \"{}\";\nconst char *f(int i) {{ return &big[i]; }}\n",
        unique_prefix("big")
    );
    let build = |env: &Env| {
        env.write("big.c", &source);
        let out = env
            .cachet()
            .current_dir(&env.work)
            .args(["gcc", "-O2", "-c", "big.c", "-o", "big.o"])
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", stderr(&out));
        flush(env);
        std::fs::read(env.work.join("big.o")).unwrap()
    };
    let first = cachet_with(&remote);
    let object = build(&first);
    assert!(object.len() > 6 << 20);
    let second = cachet_with(&remote);
    assert_eq!(build(&second), object);
    let stats = second.stats();
    assert_eq!(n(&stats["counters"]["cache_hits"]), 1, "{stats}");
    assert_eq!(n(&level(&stats, "reapi")["hits"]), 2, "{stats}");
}

#[test]
fn reapi_over_tls_with_a_bearer_token_shares_and_without_one_never_fails_a_build() {
    let (Some(endpoint), Some(token), Some(ca)) = (
        service("CACHET_TEST_REAPI_TLS"),
        service("CACHET_TEST_REAPI_TOKEN"),
        service("CACHET_TEST_TLS_CA"),
    ) else {
        return;
    };
    let mut remote = reapi_remote(&endpoint, "main", &unique_prefix("reapi-tls"));
    remote.push(("CACHET_REAPI_CA_FILE".into(), ca.clone()));
    let mut with_token = remote.clone();
    with_token.push(("CACHET_REAPI_BEARER_TOKEN".into(), token));
    let (first, _) = shares_across_checkouts(&with_token, "reapi");
    assert_eq!(n(&level(&first.stats(), "reapi")["errors"]), 0);

    // No token: the server refuses every call, and the build goes on without the level.
    let env = cachet_with(&remote);
    let config = String::from_utf8_lossy(&env.ok(&["--show-config"]).stdout).into_owned();
    assert!(config.contains("Unauthenticated"), "{config}");
    let dir = checkout(&env, "no-token");
    make_ok(&env, &dir);
    flush(&env);
    let stats = env.stats();
    let l = level(&stats, "reapi");
    assert_eq!((n(&l["hits"]), n(&l["writes"])), (0, 0), "{stats}");
    assert!(n(&l["errors"]) > 0, "{stats}");

    // The token but not the CA: the certificate is not trusted, the build still succeeds.
    let mut untrusted = with_token.clone();
    untrusted.retain(|(k, _)| k != "CACHET_REAPI_CA_FILE");
    let env = cachet_with(&untrusted);
    let dir = checkout(&env, "no-ca");
    make_ok(&env, &dir);
    let stats = env.settle();
    let l = level(&stats, "reapi");
    assert_eq!(n(&l["hits"]), 0, "{stats}");
    assert!(n(&l["errors"]) > 0, "{stats}");
}

#[test]
fn reapi_server_refusing_action_cache_writes_makes_the_level_read_only() {
    let Some(endpoint) = service("CACHET_TEST_REAPI") else {
        return;
    };
    // Instance "ro" says in its capabilities that it takes no ActionCache updates.
    let env = cachet_with(&reapi_remote(&endpoint, "ro", &unique_prefix("reapi-ro")));
    let dir = checkout(&env, "ro");
    make_ok(&env, &dir);
    flush(&env);
    let stats = env.stats();
    let l = level(&stats, "reapi");
    assert_eq!(n(&l["writes"]), 0, "{stats}");
    assert_eq!(n(&l["errors"]), 0, "{stats}");
    assert!(
        l["refuses_writes"]
            .as_str()
            .unwrap()
            .contains("ActionCache"),
        "{stats}"
    );
    let text = String::from_utf8_lossy(&env.ok(&["--show-stats"]).stdout).into_owned();
    assert!(text.contains("read-only now"), "{text}");
    // --show-config asks the server up front.
    let text = String::from_utf8_lossy(&env.ok(&["--show-config"]).stdout).into_owned();
    assert!(
        text.contains("! read-only: the server says it takes no ActionCache updates"),
        "{text}"
    );
}

/// A project of many files, so that a build lasts long enough to break something in it.
fn many_files(env: &Env, count: usize) -> PathBuf {
    let dir = checkout(env, "many");
    for i in 0..count {
        std::fs::write(
            dir.join(format!("src/gen{i}.c")),
            format!(
                "#include <stdio.h>\n#include <stdlib.h>\n#include <string.h>\n\
                 int gen{i}(int x) {{ char b[64]; snprintf(b, sizeof b, \"%d\", x * {i}); return (int)strlen(b); }}\n"
            ),
        )
        .unwrap();
    }
    dir
}

/// Starts `make -j2` and calls `interrupt` once a few objects exist; the build must succeed.
fn build_through(env: &Env, dir: &Path, interrupt: impl FnOnce()) {
    let child = env
        .command("make")
        .current_dir(dir)
        .args([
            "-j2",
            &format!("CC={CACHET} gcc"),
            &format!("CFLAGS={CFLAGS}"),
        ])
        .stdout(discard(env.dir.path(), "make.stdout"))
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let started = Instant::now();
    loop {
        let objects = std::fs::read_dir(dir.join("out"))
            .map(|d| {
                d.filter(|e| {
                    e.as_ref()
                        .is_ok_and(|e| e.path().extension().is_some_and(|x| x == "o"))
                })
                .count()
            })
            .unwrap_or(0);
        if objects >= 4 || started.elapsed() > Duration::from_secs(60) {
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    interrupt();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "the build failed: {}", stderr(&out));
    assert!(dir.join("out/prog").is_file());
}

fn pid_in(file: &str) -> i32 {
    std::fs::read_to_string(file)
        .unwrap()
        .trim()
        .parse()
        .unwrap()
}

fn restart(var: &str) {
    if let Ok(command) = std::env::var(var) {
        let status = Command::new("sh").args(["-c", &command]).status().unwrap();
        assert!(status.success(), "{command} failed");
    }
}

#[test]
fn s3_build_survives_a_volume_server_killed_mid_build() {
    let Some(endpoint) = service("CACHET_TEST_S3_ENDPOINT") else {
        return;
    };
    let Some(pidfiles) = service("CACHET_TEST_S3_VOLUME_PIDFILES") else {
        return;
    };
    let _only = S3.lock().unwrap_or_else(|e| e.into_inner());
    let env = cachet_with(&s3_remote(&endpoint, "cachet", &unique_prefix("s3-kill")));
    let dir = many_files(&env, 24);
    let victim = pidfiles.split(':').next().unwrap().to_owned();
    build_through(&env, &dir, || {
        // SAFETY: kill(2) of a server process this test's harness started.
        unsafe { libc::kill(pid_in(&victim), libc::SIGKILL) };
    });
    let stats = env.settle();
    assert_eq!(n(&stats["counters"]["compile_failures"]), 0, "{stats}");
    let _ = Command::new(std::env::var("CACHET_TEST_SERVICES").unwrap_or_default())
        .args(["restart", "s3-volume1"])
        .status();
}

/// Kills the store (by its pid file) once the build is under way; the build succeeds, the
/// failures are counted, and the breaker opens.
fn full_outage(remote: Vec<(String, String)>, remote_name: &str, pidfile: &str, restart_var: &str) {
    let mut remote = remote;
    let kind = remote_name.to_ascii_uppercase();
    remote.push((format!("CACHET_{kind}_TIMEOUT"), "1s".into()));
    remote.push((format!("CACHET_{kind}_BREAKER_FAILURES"), "2".into()));
    remote.push((format!("CACHET_{kind}_BREAKER_COOLDOWN"), "10m".into()));
    let env = cachet_with(&remote);
    let dir = many_files(&env, 24);
    let pid = pid_in(pidfile);
    build_through(&env, &dir, || {
        // SAFETY: kill(2) of a server process this test's harness started.
        unsafe { libc::kill(pid, libc::SIGKILL) };
    });
    let stats = env.settle();
    restart(restart_var);
    let l = level(&stats, remote_name);
    assert!(n(&l["errors"]) + n(&l["timeouts"]) >= 2, "{stats}");
    assert!(n(&l["breaker_opens"]) >= 1, "{stats}");
    assert!(n(&l["skipped_by_breaker"]) >= 1, "{stats}");
    assert!(
        l["breaker"].as_str().unwrap().starts_with("open"),
        "{stats}"
    );
    assert_eq!(n(&stats["counters"]["compile_failures"]), 0, "{stats}");
    // The local level went on as before.
    assert_eq!(n(&level(&stats, "local")["errors"]), 0, "{stats}");
}

#[test]
fn redis_outage_mid_build_is_counted_and_opens_the_breaker() {
    let Some(url) = service("CACHET_TEST_REDIS_OUTAGE") else {
        return;
    };
    let Some(pidfile) = service("CACHET_TEST_REDIS_OUTAGE_PIDFILE") else {
        return;
    };
    full_outage(
        vars(&[("CACHET_REDIS_ENDPOINT", &url)]),
        "redis",
        &pidfile,
        "CACHET_TEST_REDIS_OUTAGE_RESTART",
    );
}

#[test]
fn s3_outage_of_every_node_mid_build_is_counted_and_opens_the_breaker() {
    let Some(endpoint) = service("CACHET_TEST_S3_OUTAGE_ENDPOINT") else {
        return;
    };
    let Some(pidfile) = service("CACHET_TEST_S3_OUTAGE_PIDFILE") else {
        return;
    };
    full_outage(
        s3_remote(&endpoint, "cachet", &unique_prefix("s3-outage")),
        "s3",
        &pidfile,
        "CACHET_TEST_S3_OUTAGE_RESTART",
    );
}

#[test]
fn corrupt_and_wrong_version_entries_in_a_remote_are_counted_misses_never_restored() {
    let Some(url) = service("CACHET_TEST_REDIS") else {
        return;
    };
    let prefix = unique_prefix("planted");
    let remote = vars(&[
        ("CACHET_REDIS_ENDPOINT", &url),
        ("CACHET_REDIS_PREFIX", &prefix),
    ]);
    let first = cachet_with(&remote);
    let one = checkout(&first, "a");
    make_ok(&first, &one);
    flush(&first);

    // Plant, under every live key: a flipped byte, or another format version.
    let op = redis_op(&url, 0);
    let rt = tokio::runtime::Runtime::new().unwrap();
    let keys = local_keys(&first);
    assert!(keys.len() >= 6);
    for (i, key) in keys.iter().enumerate() {
        let path = entry_path(&prefix, key);
        let mut bytes = rt.block_on(op.read(&path)).unwrap().to_vec();
        if i % 2 == 0 {
            let last = bytes.len() - 1;
            bytes[last] ^= 0x55;
        } else {
            bytes[8..12].copy_from_slice(&99u32.to_le_bytes());
        }
        rt.block_on(op.write(&path, bytes)).unwrap();
    }

    // A second cachet (empty local dir) builds the same checkout again.
    let second = with_remote(Env::new(), &first.work, &remote);
    let built = build_outputs(&one.join("out"));
    std::fs::remove_dir_all(one.join("out")).unwrap();
    make_ok(&second, &one);
    let stats = second.settle();
    let l = level(&stats, "redis");
    assert_eq!(n(&l["hits"]), 0, "{stats}");
    assert!(n(&l["corrupt"]) >= 6, "{stats}");
    assert_eq!(n(&stats["counters"]["cache_hits"]), 0, "{stats}");
    assert_eq!(
        built,
        build_outputs(&one.join("out")),
        "a planted entry was restored"
    );
}

#[test]
fn s3_anonymous_read_only_level_serves_what_a_trusted_build_stored() {
    let Some(endpoint) = service("CACHET_TEST_S3_ENDPOINT") else {
        return;
    };
    let Some(bucket) = service("CACHET_TEST_S3_RO_BUCKET") else {
        return;
    };
    let _only = S3.lock().unwrap_or_else(|e| e.into_inner());
    let prefix = unique_prefix("s3-anon");
    // The trusted build (say, CI on main) writes with credentials.
    let writer = cachet_with(&s3_remote(&endpoint, &bucket, &prefix));
    let dir = checkout(&writer, "main");
    make_ok(&writer, &dir);
    flush(&writer);
    let built = build_outputs(&dir.join("out"));

    // A fork's build: no credentials at all, read-only, same checkout path.
    let reader = with_remote(
        Env::new(),
        &writer.work,
        &vars(&[
            ("CACHET_S3_ENDPOINT", &endpoint),
            ("CACHET_S3_BUCKET", &bucket),
            ("CACHET_S3_PREFIX", &prefix),
            ("CACHET_S3_ANONYMOUS", "true"),
            ("CACHET_S3_READ_ONLY", "true"),
        ]),
    );
    std::fs::remove_dir_all(dir.join("out")).unwrap();
    make_ok(&reader, &dir);
    let stats = reader.settle();
    // Six direct hits, a manifest and an entry each.
    assert_eq!(n(&level(&stats, "s3")["hits"]), 12, "{stats}");
    assert_eq!(n(&level(&stats, "s3")["errors"]), 0, "{stats}");
    assert_eq!(built, build_outputs(&dir.join("out")));
}

#[test]
fn redis_over_tls_shares_across_checkouts() {
    let Some(url) = service("CACHET_TEST_REDIS_TLS") else {
        return;
    };
    let Some(ca) = service("CACHET_TEST_TLS_CA") else {
        return;
    };
    // The server's certificate is signed by a test CA, trusted through SSL_CERT_FILE.
    shares_across_checkouts(
        &vars(&[
            ("CACHET_REDIS_ENDPOINT", &url),
            ("CACHET_REDIS_PREFIX", &unique_prefix("tls")),
            ("SSL_CERT_FILE", &ca),
        ]),
        "redis",
    );
}

/// Two machines (servers with their own local dirs) share a redis level with
/// `explain = true` and a team `explain_key`; their checkouts sit at different paths and
/// no base dirs are set. The second's miss is explained by what the first stored: the
/// recorded cwd differs, and `explain` says how to fix it.
#[test]
fn a_miss_is_explained_by_what_another_machine_stored() {
    let Some(url) = service("CACHET_TEST_REDIS") else {
        return;
    };
    let prefix = unique_prefix("explain");
    let machine = || {
        let mut env = Env::new();
        for (k, v) in [
            ("CACHET_REDIS_ENDPOINT", url.as_str()),
            ("CACHET_REDIS_PREFIX", prefix.as_str()),
            ("CACHET_REDIS_EXPLAIN", "true"),
            ("CACHET_EXPLAIN_KEY", "our team's key"),
        ] {
            env = env.with_env(k, v);
        }
        env.write("a.c", "int f(void) { return 1; }\n");
        env
    };
    let (first, second) = (machine(), machine());
    assert_ne!(first.work, second.work);
    for env in [&first, &second] {
        env.ok(&["gcc", "-g", "-c", "a.c", "-o", "a.o"]);
        flush(env);
    }
    let out = second.ok(&["explain", "a.o"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("first compile of this output here; compared with what"),
        "{text}"
    );
    let expected = format!(
        "working directory differs and is recorded (-g without a prefix map): {} vs {}; \
         set base_dirs and -fdebug-prefix-map",
        first.work.display(),
        second.work.display()
    );
    assert!(text.contains(&expected), "{text}");
}
