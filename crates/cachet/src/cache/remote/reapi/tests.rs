use super::*;

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
fn only_canonical_digests_within_an_entrys_size_are_asked_for() {
    let good = digest_of(b"x");
    assert!(checked(Some(&good)).is_ok());
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
            size_bytes: MAX_ENTRY_SIZE as i64 + 1,
        },
    ] {
        assert!(checked(Some(&bad)).is_err(), "{bad:?}");
    }
    assert!(checked(None).is_err());
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
