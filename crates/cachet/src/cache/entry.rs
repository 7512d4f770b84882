//! On-disk format of one cached compile result.
//!
//! Layout (all integers little endian):
//!
//! | offset | size | field                                   |
//! |--------|------|-----------------------------------------|
//! | 0      | 8    | magic `b"CACHET\0\x01"`                 |
//! | 8      | 4    | format version ([`ENTRY_FORMAT_VERSION`]) |
//! | 12     | 8    | length of the uncompressed payload      |
//! | 20     | 32   | blake3 of the compressed payload        |
//! | 52     | ..   | zstd(postcard(CacheEntry))              |
//!
//! The checksum covers the compressed bytes so corruption is caught before
//! the decompressor ever sees them; the header length is checked exactly
//! against what decompression produced, so a flipped length byte is caught
//! too.

use std::io::Read;

use serde::{Deserialize, Serialize};

/// One cached compiler invocation: its exit status, captured output and the
/// files it produced.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CacheEntry {
    pub exit_code: i32,
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
    pub files: Vec<StoredFile>,
    /// Facts about the entry that a compiler module needs on a hit, by name (for rustc:
    /// which rendering of diagnostics the stored stderr is).
    pub meta: Vec<(String, Vec<u8>)>,
}

impl CacheEntry {
    pub fn meta(&self, name: &str) -> Option<&[u8]> {
        self.meta
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_slice())
    }
}

/// One output file of a cached invocation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredFile {
    /// What the file is for, e.g. "object" or "depfile".
    pub role: String,
    /// Restore with the executable bits set (subject to umask).
    pub executable: bool,
    pub data: Vec<u8>,
}

/// Bumped whenever the serialized shape of [`CacheEntry`] changes.
pub const ENTRY_FORMAT_VERSION: u32 = 2;

/// Identifies a cachet entry file.
pub const ENTRY_MAGIC: [u8; 8] = *b"CACHET\0\x01";

/// Decompressed entries larger than this are refused, whatever the header
/// claims, so a crafted or corrupt entry cannot exhaust memory.
pub const MAX_ENTRY_SIZE: u64 = 4 << 30;

const ZSTD_LEVEL: i32 = 3;
const HEADER_LEN: usize = 8 + 4 + 8 + 32;

/// Why an encoded entry could not be decoded.
#[derive(Debug, thiserror::Error)]
pub enum EntryError {
    #[error("not a cachet cache entry (bad magic)")]
    BadMagic,
    #[error("unsupported cache entry format version {0} (expected {ENTRY_FORMAT_VERSION})")]
    UnsupportedVersion(u32),
    #[error("cache entry is truncated")]
    Truncated,
    #[error("cache entry checksum mismatch (entry is corrupt)")]
    ChecksumMismatch,
    #[error("cache entry claims {0} uncompressed bytes, above the {MAX_ENTRY_SIZE} byte limit")]
    TooLarge(u64),
    #[error("cache entry failed to decompress: {0}")]
    Decompress(#[source] std::io::Error),
    #[error("cache entry failed to deserialize: {0}")]
    Decode(#[source] postcard::Error),
}

impl CacheEntry {
    /// Serializes, compresses and frames the entry.
    pub fn encode(&self) -> Vec<u8> {
        // Neither step can fail for these plain types short of allocation
        // failure, which would abort anyway.
        let raw = postcard::to_stdvec(self).expect("postcard serialization of CacheEntry");
        let compressed =
            zstd::bulk::compress(&raw, ZSTD_LEVEL).expect("zstd compression into memory");
        let hash = blake3::hash(&compressed);

        let mut out = Vec::with_capacity(HEADER_LEN + compressed.len());
        out.extend_from_slice(&ENTRY_MAGIC);
        out.extend_from_slice(&ENTRY_FORMAT_VERSION.to_le_bytes());
        out.extend_from_slice(&(raw.len() as u64).to_le_bytes());
        out.extend_from_slice(hash.as_bytes());
        out.extend_from_slice(&compressed);
        out
    }

    /// Verifies and decodes bytes produced by [`CacheEntry::encode`].
    ///
    /// Never panics; any corruption yields an error.
    pub fn decode(bytes: &[u8]) -> Result<CacheEntry, EntryError> {
        // Check the magic on whatever prefix exists so a short non-entry file
        // reports BadMagic rather than Truncated.
        let magic_len = bytes.len().min(ENTRY_MAGIC.len());
        if bytes[..magic_len] != ENTRY_MAGIC[..magic_len] {
            return Err(EntryError::BadMagic);
        }
        if bytes.len() < HEADER_LEN {
            return Err(EntryError::Truncated);
        }
        let (header, payload) = bytes.split_at(HEADER_LEN);
        let version = u32::from_le_bytes(header[8..12].try_into().expect("4-byte slice"));
        if version != ENTRY_FORMAT_VERSION {
            return Err(EntryError::UnsupportedVersion(version));
        }
        let raw_len = u64::from_le_bytes(header[12..20].try_into().expect("8-byte slice"));
        if raw_len > MAX_ENTRY_SIZE {
            return Err(EntryError::TooLarge(raw_len));
        }
        let expected: [u8; 32] = header[20..52].try_into().expect("32-byte slice");
        if blake3::hash(payload) != blake3::Hash::from(expected) {
            return Err(EntryError::ChecksumMismatch);
        }

        let raw = decompress_bounded(payload, raw_len).map_err(EntryError::Decompress)?;
        let (entry, rest) =
            postcard::take_from_bytes::<CacheEntry>(&raw).map_err(EntryError::Decode)?;
        if !rest.is_empty() {
            return Err(EntryError::Decode(postcard::Error::DeserializeBadEncoding));
        }
        Ok(entry)
    }
}

/// Decompresses `payload`, requiring exactly `expected` output bytes and
/// never buffering more than `expected + 1`.
fn decompress_bounded(payload: &[u8], expected: u64) -> std::io::Result<Vec<u8>> {
    if expected <= BULK_LIMIT {
        return decompress_small(payload, expected as usize);
    }
    let decoder = zstd::stream::read::Decoder::with_buffer(payload)?;
    // Don't trust the header for the initial allocation: grow as data really
    // arrives, capped at a modest up-front reservation.
    let reserve = expected.min(16 << 20) as usize;
    let mut out = Vec::with_capacity(reserve);
    // Reading one byte past the claim is how an overlong stream is noticed.
    decoder.take(expected + 1).read_to_end(&mut out)?;
    if out.len() as u64 != expected {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("decompressed size does not match the header's {expected} bytes"),
        ));
    }
    Ok(out)
}

/// Entries up to this size decompress in one call into an exact-size buffer.
const BULK_LIMIT: u64 = 16 << 20;

/// One-shot decompression with a context kept per thread: creating a zstd context costs
/// more than decompressing a typical object, and hits are on every warm build's path.
fn decompress_small(payload: &[u8], expected: usize) -> std::io::Result<Vec<u8>> {
    thread_local! {
        static CONTEXT: std::cell::RefCell<Option<zstd::bulk::Decompressor<'static>>> =
            const { std::cell::RefCell::new(None) };
    }
    CONTEXT.with(|context| {
        let mut context = context.borrow_mut();
        if context.is_none() {
            *context = Some(zstd::bulk::Decompressor::new()?);
        }
        let decompressor = context.as_mut().expect("set above");
        // Capacity is exactly the claim: a frame that holds more fails to fit.
        let mut out = Vec::with_capacity(expected);
        decompressor.decompress_to_buffer(payload, &mut out)?;
        if out.len() != expected {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!("decompressed size does not match the header's {expected} bytes"),
            ));
        }
        Ok(out)
    })
}

#[cfg(test)]
mod tests {
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
}
