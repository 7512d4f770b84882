//! Hashing for cache keys: every field is length-prefixed, so no two different inputs
//! hash alike, and each key starts with a domain string naming what it keys.

use crate::cache::CacheKey;

pub struct KeyHasher(blake3::Hasher);

impl KeyHasher {
    pub fn new(domain: &[u8]) -> KeyHasher {
        let mut h = KeyHasher(blake3::Hasher::new());
        h.field(domain);
        h
    }

    pub fn field(&mut self, bytes: &[u8]) {
        self.0.update(&(bytes.len() as u64).to_le_bytes());
        self.0.update(bytes);
    }

    pub fn finish(self) -> CacheKey {
        CacheKey::from(self.0.finalize())
    }
}
