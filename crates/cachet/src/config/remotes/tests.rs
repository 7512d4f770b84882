use std::ffi::OsString;

use super::*;
use crate::config::Config;

fn load(file: Option<&str>, vars: &[(&str, &str)]) -> Result<Config, ConfigError> {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c.toml");
    let mut vars: Vec<(String, String)> = vars
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    vars.push(("HOME".into(), "/h".into()));
    vars.push(("XDG_CONFIG_HOME".into(), "/nonexistent".into()));
    if let Some(text) = file {
        std::fs::write(&path, text).unwrap();
        vars.push(("CACHET_CONFIG".into(), path.to_str().unwrap().into()));
    }
    Config::load_with(move |name| {
        vars.iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| OsString::from(v))
    })
}

#[test]
fn remotes_keep_the_file_order_and_their_origins() {
    let config = load(
        Some(
            r#"
[[remote]]
type = "s3"
bucket = "team-cache"
endpoint = "http://127.0.0.1:8333"
read_only = true
timeout = "800ms"

[[remote]]
type = "redis"
cluster_endpoints = ["redis://10.0.0.1:7000", "redis://10.0.0.2:7000"]
ttl = "7d"
"#,
        ),
        &[],
    )
    .unwrap();
    assert!(config.local);
    let [s3, redis] = config.remotes.as_slice() else {
        panic!("{:?}", config.remotes)
    };
    assert_eq!((s3.kind.name(), s3.name.as_str()), ("s3", "s3"));
    assert!(s3.read_only);
    assert_eq!(s3.timeout, Duration::from_millis(800));
    assert_eq!(s3.get("bucket"), Some("team-cache"));
    assert!(matches!(s3.settings["bucket"].origin, Origin::File(_)));
    assert_eq!(redis.kind, RemoteKind::named("redis").unwrap());
    assert!(!redis.read_only);
    assert_eq!(redis.timeout, DEFAULT_TIMEOUT);
    // The typed reading of these (a list, 7 days) is checked beside the redis backend.
    assert_eq!(
        redis.get("cluster_endpoints"),
        Some("redis://10.0.0.1:7000,redis://10.0.0.2:7000")
    );
    assert_eq!(redis.get("ttl"), Some("7d"));
}

#[test]
fn variables_add_a_remote_or_override_the_first_of_their_type() {
    let config = load(
        None,
        &[
            ("CACHET_REDIS_ENDPOINT", "redis://127.0.0.1:6379"),
            ("CACHET_REDIS_READ_ONLY", "1"),
            ("CACHET_LOCAL", "false"),
        ],
    )
    .unwrap();
    assert!(!config.local);
    assert_eq!(config.remotes.len(), 1);
    let redis = &config.remotes[0];
    assert!(redis.read_only);
    assert_eq!(
        redis.settings["endpoint"].origin,
        Origin::EnvVar("CACHET_REDIS_ENDPOINT".into())
    );

    let config = load(
        Some("[[remote]]\ntype = \"s3\"\nbucket = \"a\"\n\n[[remote]]\ntype = \"s3\"\nbucket = \"b\"\n"),
        &[("CACHET_S3_BUCKET", "from-env")],
    )
    .unwrap();
    let buckets: Vec<_> = config.remotes.iter().map(|r| r.get("bucket")).collect();
    assert_eq!(buckets, [Some("from-env"), Some("b")]);
    let names: Vec<_> = config.remotes.iter().map(|r| r.name.as_str()).collect();
    assert_eq!(names, ["s3", "s3-2"]);
}

#[test]
fn mistakes_are_clear_errors_that_name_the_place() {
    type Case<'a> = (Option<&'a str>, &'a [(&'a str, &'a str)], &'a str);
    let cases: &[Case] = &[
        (
            Some("[[remote]]\ntype = \"ftp\"\n"),
            &[],
            "unknown type `ftp`",
        ),
        (Some("[[remote]]\nbucket = \"x\"\n"), &[], "needs `type"),
        (
            Some("[[remote]]\ntype = \"s3\"\nbucket = \"x\"\nbukcet = 1\n"),
            &[],
            "unknown key `bukcet`",
        ),
        (
            Some("[[remote]]\ntype = \"s3\"\n"),
            &[],
            "`bucket` is required",
        ),
        (
            Some(
                "[[remote]]\ntype = \"memcached\"\nendpoint = \"tcp://h:1\"\nitem_limit = \"big\"\n",
            ),
            &[],
            "`item_limit` is `big`",
        ),
        (Some("remote = 3\n"), &[], "array of tables"),
        (None, &[("CACHET_REDIS_DB", "zero")], "CACHET_REDIS_DB"),
        (None, &[("CACHET_REDIS_TTL", "1h")], "`endpoint` (one node)"),
        (
            None,
            &[
                ("CACHET_HTTP_ENDPOINT", "http://h/"),
                ("CACHET_HTTP_TIMEOUT", "soon"),
            ],
            "a duration",
        ),
        (None, &[("CACHET_LOCAL", "maybe")], "`local`"),
        (
            None,
            &[
                ("CACHET_REDIS_ENDPOINT", "redis://h"),
                ("CACHET_REDIS_TTL", "0s"),
            ],
            "`ttl`",
        ),
        (
            None,
            &[
                ("CACHET_MEMCACHED_ENDPOINT", "tcp://h:1"),
                ("CACHET_MEMCACHED_TTL", "60d"),
            ],
            "`ttl`",
        ),
        (
            None,
            &[
                ("CACHET_REDIS_ENDPOINT", "redis://h"),
                ("CACHET_REDIS_TIMEOUT", "0"),
            ],
            "above zero",
        ),
        (
            None,
            &[
                ("CACHET_HTTP_ENDPOINT", "http://h/"),
                ("CACHET_HTTP_BEARER_TOKEN", "t"),
                ("CACHET_HTTP_USERNAME", "u"),
            ],
            "not both",
        ),
        (
            Some("[[remote]]\ntype = \"s3\"\nbucket = \"x\"\nname = \"local\"\n"),
            &[],
            "already used",
        ),
    ];
    for (file, vars, expected) in cases {
        let text = load(*file, vars).unwrap_err().to_string();
        assert!(text.contains(expected), "{file:?} {vars:?}: {text}");
        if file.is_some() && !text.contains("TOML") {
            assert!(text.contains("c.toml"), "no file named: {text}");
        }
    }
}

#[test]
fn secrets_are_masked_in_what_is_shown() {
    let config = load(
        Some(
            r#"
[[remote]]
type = "redis"
endpoint = "redis://cache:hunter2@10.0.0.1:6379/0"
password = "hunter2"
"#,
        ),
        &[
            ("CACHET_S3_BUCKET", "b"),
            ("CACHET_S3_SECRET_ACCESS_KEY", "AKIAsecret"),
        ],
    )
    .unwrap();
    let shown: Vec<String> = config
        .remotes
        .iter()
        .flat_map(|r| r.shown())
        .map(|(k, v, _)| format!("{k}={v}"))
        .collect();
    let all = shown.join(" ");
    assert!(
        !all.contains("hunter2") && !all.contains("AKIAsecret"),
        "{all}"
    );
    assert!(
        all.contains("endpoint=redis://cache:****@10.0.0.1:6379/0"),
        "{all}"
    );
    assert!(all.contains("secret_access_key=****"), "{all}");
}

#[test]
fn url_masking_leaves_plain_urls_alone() {
    assert_eq!(mask_url_password("http://h:80/x"), "http://h:80/x");
    assert_eq!(mask_url_password("redis://u@h"), "redis://u@h");
    assert_eq!(
        mask_url_password("redis://:p@a,redis://:q@b"),
        "redis://:****@a,redis://:****@b"
    );
}

#[test]
fn an_unknown_backend_key_names_the_remote_the_key_and_the_known_keys() {
    let text = load(
        Some("[[remote]]\ntype = \"s3\"\nbucket = \"x\"\n\n[[remote]]\ntype = \"gha\"\nruntime_tokn = \"t\"\n"),
        &[],
    )
    .unwrap_err()
    .to_string();
    assert!(
        text.contains(
            "remote #2 (gha): unknown key `runtime_tokn` (known keys: type, name, read_only, \
             timeout, prefix, breaker_failures, breaker_cooldown, explain, endpoint, runtime_token, \
             version)"
        ),
        "{text}"
    );
    assert!(text.contains("c.toml"), "{text}");
}

#[test]
fn every_secret_field_is_masked_and_nothing_else() {
    let config = load(
        Some(
            r#"
[[remote]]
type = "http"
endpoint = "http://h/"
bearer_token = "tok-http"

[[remote]]
type = "webdav"
endpoint = "http://h/dav/"
username = "ci"
token = "tok-dav"

[[remote]]
type = "gcs"
bucket = "b"
credential = "tok-gcs"

[[remote]]
type = "azblob"
container = "c"
sas_token = "tok-az"

[[remote]]
type = "gha"
runtime_token = "tok-gha"
"#,
        ),
        &[
            ("CACHET_MEMCACHED_ENDPOINT", "tcp://h:1"),
            ("CACHET_MEMCACHED_PASSWORD", "tok-mc"),
        ],
    )
    .unwrap();
    let shown: Vec<String> = config
        .remotes
        .iter()
        .flat_map(|r| r.shown())
        .map(|(k, v, _)| format!("{k}={v}"))
        .collect();
    let all = shown.join(" ");
    assert!(!all.contains("tok-"), "{all}");
    for masked in [
        "bearer_token=****",
        "token=****",
        "credential=****",
        "sas_token=****",
        "runtime_token=****",
        "password=****",
    ] {
        assert!(shown.iter().any(|s| s == masked), "{masked}: {all}");
    }
    for plain in [
        "username=ci",
        "bucket=b",
        "container=c",
        "endpoint=tcp://h:1",
    ] {
        assert!(shown.iter().any(|s| s == plain), "{plain}: {all}");
    }
}
