use super::*;

fn sample() -> CacheEntry {
    CacheEntry {
        exit_code: 0,
        stdout: b"compiled ok\n".to_vec(),
        stderr: b"warning: unused variable\n".to_vec(),
        files: vec![
            StoredFile {
                role: "object".into(),
                executable: false,
                data: (0..200u8).collect(),
            },
            StoredFile {
                role: "depfile".into(),
                executable: true,
                data: b"foo.o: foo.c foo.h\n".to_vec(),
            },
        ],
        meta: vec![("display".into(), vec![1, 2, 3])],
    }
}

#[test]
fn round_trip() {
    let entry = sample();
    let bytes = entry.encode();
    assert_eq!(&bytes[..8], &ENTRY_MAGIC);
    assert_eq!(CacheEntry::decode(&bytes).unwrap(), entry);

    let empty = CacheEntry {
        exit_code: -1,
        stdout: vec![],
        stderr: vec![],
        files: vec![],
        meta: vec![],
    };
    assert_eq!(CacheEntry::decode(&empty.encode()).unwrap(), empty);
}

#[test]
fn every_byte_flip_is_detected() {
    let entry = sample();
    let bytes = entry.encode();
    for pos in 0..bytes.len() {
        for mask in [0x01u8, 0x80, 0xff] {
            let mut corrupt = bytes.clone();
            corrupt[pos] ^= mask;
            match CacheEntry::decode(&corrupt) {
                Err(_) => {}
                // Acceptable only if the flip was semantically neutral.
                Ok(decoded) => assert_eq!(decoded, entry, "flip at {pos} mask {mask:#x}"),
            }
        }
    }
}

#[test]
fn every_truncation_is_an_error() {
    let bytes = sample().encode();
    for len in 0..bytes.len() {
        assert!(
            CacheEntry::decode(&bytes[..len]).is_err(),
            "truncation to {len} bytes decoded"
        );
    }
    // Short prefixes of the header are reported as truncation.
    assert!(matches!(
        CacheEntry::decode(&bytes[..20]),
        Err(EntryError::Truncated)
    ));
}

#[test]
fn wrong_version_is_reported() {
    let mut bytes = sample().encode();
    bytes[8..12].copy_from_slice(&7u32.to_le_bytes());
    assert!(matches!(
        CacheEntry::decode(&bytes),
        Err(EntryError::UnsupportedVersion(7))
    ));
}

#[test]
fn bad_magic_and_garbage() {
    assert!(matches!(
        CacheEntry::decode(b"hello world, definitely not a cache entry at all!!!!!!"),
        Err(EntryError::BadMagic)
    ));
    assert!(matches!(
        CacheEntry::decode(b""),
        Err(EntryError::Truncated)
    ));
}

#[test]
fn oversized_claim_is_refused() {
    let mut bytes = sample().encode();
    bytes[12..20].copy_from_slice(&(MAX_ENTRY_SIZE + 1).to_le_bytes());
    assert!(matches!(
        CacheEntry::decode(&bytes),
        Err(EntryError::TooLarge(_))
    ));
}

#[test]
fn decompression_bomb_is_bounded() {
    // A valid frame (correct checksum) whose real size exceeds the header
    // claim must be refused without inflating it fully.
    let raw = vec![0u8; 8 << 20];
    let compressed = zstd::bulk::compress(&raw, 3).unwrap();
    let mut bytes = Vec::new();
    bytes.extend_from_slice(&ENTRY_MAGIC);
    bytes.extend_from_slice(&ENTRY_FORMAT_VERSION.to_le_bytes());
    bytes.extend_from_slice(&1024u64.to_le_bytes());
    bytes.extend_from_slice(blake3::hash(&compressed).as_bytes());
    bytes.extend_from_slice(&compressed);
    assert!(matches!(
        CacheEntry::decode(&bytes),
        Err(EntryError::Decompress(_))
    ));
}

fn framed(raw_len: u64, raw: &[u8]) -> Vec<u8> {
    let compressed = zstd::bulk::compress(raw, 3).unwrap();
    let mut bytes = Vec::new();
    bytes.extend_from_slice(&ENTRY_MAGIC);
    bytes.extend_from_slice(&ENTRY_FORMAT_VERSION.to_le_bytes());
    bytes.extend_from_slice(&raw_len.to_le_bytes());
    bytes.extend_from_slice(blake3::hash(&compressed).as_bytes());
    bytes.extend_from_slice(&compressed);
    bytes
}

#[test]
fn short_frame_for_the_claimed_size_is_refused_on_both_paths() {
    // Small claims take the one-shot path, large ones the streaming path.
    for (claim, real) in [
        (2048u64, 1024usize),
        (BULK_LIMIT + 4096, BULK_LIMIT as usize),
    ] {
        let bytes = framed(claim, &vec![7u8; real]);
        assert!(
            matches!(CacheEntry::decode(&bytes), Err(EntryError::Decompress(_))),
            "claim {claim} with {real} real bytes decoded"
        );
    }
}

#[test]
fn large_entry_round_trips_through_the_streaming_path() {
    let mut entry = sample();
    entry.files[0].data = (0..BULK_LIMIT + 10).map(|i| (i % 251) as u8).collect();
    assert_eq!(CacheEntry::decode(&entry.encode()).unwrap(), entry);
}

/// The zstd frames of an encoded entry's payload.
fn frames(bytes: &[u8]) -> usize {
    let mut payload = &bytes[HEADER_LEN..];
    let mut count = 0;
    while !payload.is_empty() {
        let len = zstd::zstd_safe::find_frame_compressed_size(payload).unwrap();
        payload = &payload[len..];
        count += 1;
    }
    count
}

/// Each output of at least `FRAME_MIN` bytes is a frame of its own, between frames of the
/// small fields; both decoding paths read the frames as one payload.
#[test]
fn large_outputs_are_frames_of_their_own_and_decode_on_both_paths() {
    let mut entry = sample();
    let big = |n: usize, salt: usize| (0..n).map(|i| ((i * 7 + salt) % 253) as u8).collect();
    entry.files[0].data = big(FRAME_MIN, 1);
    entry.files.push(StoredFile {
        role: "rlib".into(),
        executable: false,
        data: big(3 * FRAME_MIN + 5, 2),
    });
    entry.files.push(StoredFile {
        role: "small".into(),
        executable: false,
        data: b"after".to_vec(),
    });
    let bytes = entry.encode();
    // Small fields, the object, the depfile between, the rlib, the rest.
    assert_eq!(frames(&bytes), 5);
    assert_eq!(CacheEntry::decode(&bytes).unwrap(), entry);

    // Past PARALLEL_MIN, an output is frames of PIECE bytes: 4 whole ones and the rest.
    entry.files[2].data = big(BULK_LIMIT as usize + 10, 3);
    let bytes = entry.encode();
    assert_eq!(frames(&bytes), 4 + 5);
    assert_eq!(CacheEntry::decode(&bytes).unwrap(), entry);
}

/// A large output compressed in pieces on several threads comes back in order, and the
/// pieces cost next to nothing in size against one frame.
#[test]
fn large_outputs_compress_in_pieces_in_order_and_as_small() {
    // Real compiler output: the first 3.5 pieces of this test's own binary.
    let mut data = vec![0; 3 * PIECE + PIECE / 2];
    std::io::Read::read_exact(
        &mut std::fs::File::open(std::env::current_exe().unwrap()).unwrap(),
        &mut data,
    )
    .unwrap();
    let mut compressor = zstd::bulk::Compressor::new(ZSTD_LEVEL).unwrap();
    let mut pieces = Vec::new();
    // Three threads whatever the machine, so that pieces finish out of order.
    frames_in_parallel(&mut compressor, &mut pieces, &data, 3).unwrap();
    let mut whole = Vec::new();
    frame(&mut compressor, &mut whole, &data).unwrap();
    let mut count = 0;
    let mut rest = pieces.as_slice();
    while !rest.is_empty() {
        rest = &rest[zstd::zstd_safe::find_frame_compressed_size(rest).unwrap()..];
        count += 1;
    }
    assert_eq!(count, 4);
    assert_eq!(zstd::stream::decode_all(pieces.as_slice()).unwrap(), data);
    assert!(
        pieces.len() <= whole.len() + whole.len() / 100 + 64,
        "{} bytes in pieces, {} in one frame",
        pieces.len(),
        whole.len()
    );
}

#[test]
fn valid_frame_with_trailing_postcard_bytes_is_refused() {
    let mut raw = postcard::to_stdvec(&sample()).unwrap();
    raw.push(0);
    let compressed = zstd::bulk::compress(&raw, 3).unwrap();
    let mut bytes = Vec::new();
    bytes.extend_from_slice(&ENTRY_MAGIC);
    bytes.extend_from_slice(&ENTRY_FORMAT_VERSION.to_le_bytes());
    bytes.extend_from_slice(&(raw.len() as u64).to_le_bytes());
    bytes.extend_from_slice(blake3::hash(&compressed).as_bytes());
    bytes.extend_from_slice(&compressed);
    assert!(matches!(
        CacheEntry::decode(&bytes),
        Err(EntryError::Decode(_))
    ));
}

/// `serde_bytes` on the byte fields changes how fast they encode, not the bytes: entries
/// written before it decode, and the same entry encodes alike.
#[test]
fn byte_fields_keep_their_wire_format() {
    #[derive(serde::Serialize)]
    struct PlainFile {
        role: String,
        executable: bool,
        data: Vec<u8>,
    }
    #[derive(serde::Serialize)]
    struct PlainEntry {
        exit_code: i32,
        stdout: Vec<u8>,
        stderr: Vec<u8>,
        files: Vec<PlainFile>,
        meta: Vec<(String, Vec<u8>)>,
    }
    let data: Vec<u8> = (0..=255u8).cycle().take(1000).collect();
    let plain = PlainEntry {
        exit_code: 0,
        stdout: b"out".to_vec(),
        stderr: data.clone(),
        files: vec![PlainFile {
            role: "object".into(),
            executable: false,
            data: data.clone(),
        }],
        meta: vec![("k".into(), b"v".to_vec())],
    };
    let ours = CacheEntry {
        exit_code: 0,
        stdout: b"out".to_vec(),
        stderr: data.clone(),
        files: vec![StoredFile {
            role: "object".into(),
            executable: false,
            data,
        }],
        meta: vec![("k".into(), b"v".to_vec())],
    };
    let old = postcard::to_stdvec(&plain).unwrap();
    assert_eq!(old, postcard::to_stdvec(&ours).unwrap());
    assert_eq!(postcard::from_bytes::<CacheEntry>(&old).unwrap(), ours);
}

mod properties {
    use proptest::prelude::*;

    use super::*;

    fn file() -> impl Strategy<Value = StoredFile> {
        (
            "[a-z.]{0,12}",
            any::<bool>(),
            prop::collection::vec(any::<u8>(), 0..2048),
        )
            .prop_map(|(role, executable, data)| StoredFile {
                role,
                executable,
                data,
            })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(128))]

        /// Every entry decodes to itself, and any change to its bytes is caught.
        #[test]
        fn any_entry_round_trips_and_any_flipped_byte_is_caught(
            exit_code in any::<i32>(),
            stdout in prop::collection::vec(any::<u8>(), 0..256),
            stderr in prop::collection::vec(any::<u8>(), 0..256),
            files in prop::collection::vec(file(), 0..4),
            meta in prop::collection::vec(("[a-z]{0,8}", prop::collection::vec(any::<u8>(), 0..16)), 0..3),
            flip in any::<prop::sample::Index>(),
        ) {
            let entry = CacheEntry { exit_code, stdout, stderr, files, meta };
            let bytes = entry.encode();
            prop_assert_eq!(&CacheEntry::decode(&bytes).unwrap(), &entry);
            let mut bad = bytes.clone();
            let at = flip.index(bad.len());
            bad[at] ^= 0x40;
            prop_assert!(CacheEntry::decode(&bad).is_err());
        }
    }
}
