//! A client of the Remote Execution API (REAPI v2): the messages ([`proto`]), the gRPC
//! calls ([`grpc`]) and the content-addressable storage ([`Cas`]) that both the `reapi`
//! cache level and remote execution use. Digests are SHA-256 (the protocol's default,
//! and what every service takes).

mod cas;
pub mod grpc;
pub mod proto;
#[cfg(test)]
mod tests;

use std::io;

use sha2::{Digest as _, Sha256};

pub use cas::{Blob, Capabilities, Cas};
pub use grpc::{Client, Target, io_error};
use proto::Digest;

/// The largest blob cachet asks a server for or accepts (bytes): a compile's output or
/// input above this is refused as malformed.
pub const MAX_BLOB_SIZE: u64 = 4 << 30;

/// SHA-256 digest of `data`.
pub fn digest_of(data: &[u8]) -> Digest {
    Digest {
        hash: hex(&Sha256::digest(data)),
        size_bytes: data.len() as i64,
    }
}

/// The digest of a message as the protocol hashes it: its encoding.
pub fn digest_of_message(message: &impl prost::Message) -> (Digest, Vec<u8>) {
    let bytes = message.encode_to_vec();
    (digest_of(&bytes), bytes)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A digest from the server, if it is one we may ask for: 64 lowercase hex digits and a
/// size within `limit` bytes.
pub fn checked(digest: Option<&Digest>, limit: u64) -> io::Result<&Digest> {
    let digest = digest.ok_or_else(|| invalid_data("an output without a digest"))?;
    let canonical = digest.hash.len() == 64
        && digest
            .hash
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
    if !canonical || digest.size_bytes < 0 || digest.size_bytes as u64 > limit {
        return Err(invalid_data(format!(
            "malformed digest {:?}/{}",
            digest.hash, digest.size_bytes
        )));
    }
    Ok(digest)
}

/// Whether `data` is what `digest` names.
pub fn verify(digest: &Digest, data: &[u8]) -> io::Result<()> {
    if digest_of(data) != *digest {
        return Err(invalid_data(format!(
            "blob {} does not match its digest",
            digest.hash
        )));
    }
    Ok(())
}

/// `instance/` for a ByteStream resource name, nothing for the default instance.
fn instance_prefix(instance: &str) -> String {
    if instance.is_empty() {
        String::new()
    } else {
        format!("{}/", instance.trim_end_matches('/'))
    }
}

/// A UUID-shaped upload id, unique per process and upload (the protocol asks for a UUID
/// so that concurrent uploads of one blob do not collide).
fn upload_id(n: u64) -> String {
    let seed = format!(
        "{}-{n}-{:?}",
        std::process::id(),
        std::time::SystemTime::now()
    );
    let h = blake3::hash(seed.as_bytes()).to_hex();
    format!(
        "{}-{}-4{}-8{}-{}",
        &h[0..8],
        &h[8..12],
        &h[13..16],
        &h[17..20],
        &h[20..32]
    )
}

/// An error for malformed data from a server.
pub fn invalid_data(message: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, message.into())
}
