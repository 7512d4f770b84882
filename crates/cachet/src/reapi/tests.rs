use super::*;

const LIMIT: u64 = 1 << 20;

#[test]
fn only_canonical_digests_within_an_entrys_size_are_asked_for() {
    let good = digest_of(b"x");
    assert!(checked(Some(&good), LIMIT).is_ok());
    for bad in [
        Digest {
            hash: "../../etc/passwd".into(),
            size_bytes: 1,
        },
        Digest {
            hash: good.hash.to_uppercase(),
            size_bytes: 1,
        },
        Digest {
            hash: good.hash.clone(),
            size_bytes: -1,
        },
        Digest {
            hash: good.hash.clone(),
            size_bytes: LIMIT as i64 + 1,
        },
    ] {
        assert!(checked(Some(&bad), LIMIT).is_err(), "{bad:?}");
    }
    assert!(checked(None, LIMIT).is_err());
    assert!(verify(&good, b"y").is_err());
}

#[test]
fn upload_ids_look_like_uuids_and_differ() {
    let (a, b) = (upload_id(1), upload_id(2));
    assert_ne!(a, b);
    let parts: Vec<usize> = a.split('-').map(str::len).collect();
    assert_eq!(parts, [8, 4, 4, 4, 12]);
    assert_eq!(instance_prefix(""), "");
    assert_eq!(instance_prefix("main"), "main/");
}
