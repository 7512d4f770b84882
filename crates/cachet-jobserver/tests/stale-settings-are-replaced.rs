//! A client's old jobserver settings never reach our children; its other
//! flags do.

use std::ffi::OsStr;

use cachet_jobserver::Jobserver;
use cachet_jobserver::flags::{self, JobserverAuth};

fn env_of(pool: &Jobserver, inherited: &str) -> Vec<(String, String)> {
    pool.child_env(Some(OsStr::new(inherited)))
        .into_iter()
        .map(|(k, v)| (k, v.into_string().unwrap()))
        .collect()
}

#[tokio::test]
async fn stale_settings_are_replaced() {
    let pool = Jobserver::new(2).unwrap();
    let [r, w] = pool.fds();
    let ours = JobserverAuth::Pipe { read: r, write: w };
    let stale = [
        "ks -j4 --jobserver-auth=7,8",
        "-k -j --jobserver-fds=3,4 --jobserver-auth=3,4 --no-print-directory",
        "-k --jobserver-auth=fifo:/tmp/GMfifo99 -j16",
        "kj8 --jobs=3 --jobserver-fds=3,4 -- CC=cc",
    ];
    for inherited in stale {
        for (name, value) in env_of(&pool, inherited) {
            assert_eq!(flags::parse(&value), Some(ours.clone()), "{name}={value}");
            for gone in ["7,8", "3,4", "fifo:", "-j4", "-j16", "j8", "--jobs="] {
                assert!(!value.contains(gone), "{name}={value} kept {gone}");
            }
            // Only our own `-j` is left.
            let counts = value.split(' ').filter(|w| w.starts_with("-j")).count();
            assert_eq!(counts, 1, "{name}={value}");
        }
    }

    let env = env_of(&pool, stale[0]);
    let pool_words = format!("-j --jobserver-fds={r},{w} --jobserver-auth={r},{w}");
    assert_eq!(env[0], ("MAKEFLAGS".into(), format!("ks {pool_words}")));
    assert_eq!(env[1], ("MFLAGS".into(), format!("-ks {pool_words}")));
    assert_eq!(env[2], ("CARGO_MAKEFLAGS".into(), pool_words.clone()));

    let env = env_of(&pool, stale[1]);
    assert_eq!(env[0].1, format!("-k --no-print-directory {pool_words}"));

    let env = env_of(&pool, stale[3]);
    assert_eq!(env[0].1, format!("k {pool_words} -- CC=cc"));
    assert_eq!(env[1].1, format!("-k {pool_words}"));

    // No inherited value: just the pool.
    let env = pool.child_env(None);
    assert!(
        env.iter()
            .all(|(_, v)| v.to_str() == Some(pool_words.as_str()))
    );
}

#[test]
fn strip_and_parse_agree() {
    assert_eq!(flags::strip("-k -j4 --jobserver-auth=7,8 -s"), "-k -s");
    assert_eq!(flags::parse(&flags::strip("--jobserver-fds=3,4 -k")), None);
}
