use super::*;
use crate::reapi::digest_of;

#[test]
fn an_entry_key_names_one_action_and_its_parts_are_uploaded_with_it() {
    let (a, blobs) = action_for("cachet/v2/ab");
    let (again, _) = action_for("cachet/v2/ab");
    let (other, _) = action_for("cachet/v2/cd");
    assert_eq!(a, again);
    assert_ne!(a, other);
    // The command, then the action itself, each under its own digest.
    assert_eq!(blobs.len(), 2);
    for (digest, data) in &blobs {
        assert_eq!(*digest, digest_of(data));
    }
    assert_eq!(blobs[1].0, a);
    let action = proto::Action::decode(blobs[1].1.as_slice()).unwrap();
    assert_eq!(action.command_digest.as_ref(), Some(&blobs[0].0));
    // The empty directory's digest: SHA-256 of no bytes.
    assert_eq!(
        action.input_root_digest.unwrap().hash,
        "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
    );
}

#[test]
fn a_bad_endpoint_or_header_is_refused_before_any_call() {
    let target = |endpoint: &str, headers: Vec<(String, String)>| Target {
        endpoint: endpoint.into(),
        headers,
        ca_file: None,
        timeout: std::time::Duration::from_secs(1),
    };
    assert!(Reapi::new(&target("ftp://host:1", vec![]), String::new()).is_err());
    assert!(
        Reapi::new(
            &target("grpc://127.0.0.1:1", vec![("bad name".into(), "v".into())]),
            String::new()
        )
        .is_err()
    );
    assert!(Reapi::new(&target("grpc://127.0.0.1:1", vec![]), "main".into()).is_ok());
}

#[test]
fn a_planted_result_naming_more_than_an_entry_holds_is_refused_before_any_fetch() {
    let blob = |n: u8, size: u64| Digest {
        hash: format!("{n:064x}"),
        size_bytes: size as i64,
    };
    // The same blob named many times is fetched once, and counted once.
    let same: Vec<Digest> = (0..1000).map(|_| blob(1, MAX_ENTRY_SIZE / 2)).collect();
    assert!(within_an_entry(&same).is_ok());
    // Distinct blobs that each fit, but not together.
    let many: Vec<Digest> = (0..3).map(|n| blob(n, MAX_ENTRY_SIZE / 2)).collect();
    let err = within_an_entry(&many).unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::InvalidData);
}
