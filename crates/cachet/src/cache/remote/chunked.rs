//! Entries split into items that fit a key-value store's item limit (memcached: 1 MiB by
//! default, smaller than many rlibs).
//!
//! The item at an entry's key starts with a tag byte: 0 and the entry itself, or 1 and a
//! table: chunk count (u32), total length (u64), blake3 of the whole (32 bytes). Chunks live
//! at `<key>.<hash>.<n>`: naming them by content means two writers of one key never mix
//! their chunks. Chunks are written before the table, so a reader that finds the table
//! finds the chunks, unless the store evicted one, which reads as a miss.

use std::io;

use async_trait::async_trait;

use super::{Items, key_path};
use crate::cache::entry::MAX_ENTRY_SIZE;
use crate::cache::{CacheKey, Storage};

pub const DEFAULT_ITEM_LIMIT: u64 = 1 << 20;
pub const DEFAULT_MAX_CHUNKS: u64 = 64;
/// Room left under the limit for the store's own item header and the key.
const ITEM_OVERHEAD: u64 = 1024;

const WHOLE: u8 = 0;
const TABLE: u8 = 1;
const TABLE_LEN: usize = 1 + 4 + 8 + 32;

pub struct Chunked {
    items: Box<dyn Items>,
    prefix: String,
    /// The most bytes one item may hold.
    item_bytes: usize,
    max_chunks: u64,
}

impl Chunked {
    pub fn new(items: Box<dyn Items>, prefix: String, item_limit: u64, max_chunks: u64) -> Chunked {
        Chunked {
            items,
            prefix,
            item_bytes: item_limit.saturating_sub(ITEM_OVERHEAD).max(1024) as usize,
            max_chunks: max_chunks.max(1),
        }
    }
}

fn chunk_path(head: &str, hash: &[u8; 32], n: u32) -> String {
    let hex = blake3::Hash::from(*hash).to_hex();
    format!("{head}.{}.{n}", &hex[..16])
}

fn invalid(message: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, message)
}

#[async_trait]
impl Storage for Chunked {
    async fn get(&self, key: &CacheKey) -> io::Result<Option<Vec<u8>>> {
        let head = key_path(&self.prefix, key);
        let Some(item) = self.items.read(&head).await? else {
            return Ok(None);
        };
        match item.first() {
            Some(&WHOLE) => Ok(Some(item[1..].to_vec())),
            Some(&TABLE) if item.len() == TABLE_LEN => {
                let count = u32::from_le_bytes(item[1..5].try_into().expect("4 bytes"));
                let total = u64::from_le_bytes(item[5..13].try_into().expect("8 bytes"));
                let hash: [u8; 32] = item[13..45].try_into().expect("32 bytes");
                if u64::from(count) > self.max_chunks.max(4096) {
                    return Err(invalid(format!(
                        "chunk table of {head} claims {count} chunks"
                    )));
                }
                // A table planted in a shared store claims what it likes: memory follows
                // the chunks that really come, never past the claim nor an entry's limit.
                if total > MAX_ENTRY_SIZE {
                    return Err(invalid(format!(
                        "chunk table of {head} claims {total} bytes"
                    )));
                }
                let mut whole = Vec::with_capacity(total.min(16 << 20) as usize);
                for n in 0..count {
                    match self.items.read(&chunk_path(&head, &hash, n)).await? {
                        Some(chunk) if (whole.len() + chunk.len()) as u64 <= total => {
                            whole.extend_from_slice(&chunk)
                        }
                        Some(_) => {
                            return Err(invalid(format!(
                                "chunks of {head} hold more than the {total} bytes of its table"
                            )));
                        }
                        // Evicted: the entry is gone.
                        None => return Ok(None),
                    }
                }
                if whole.len() as u64 != total || *blake3::hash(&whole).as_bytes() != hash {
                    return Err(invalid(format!(
                        "chunks of {head} do not match their table"
                    )));
                }
                Ok(Some(whole))
            }
            _ => Err(invalid(format!(
                "item {head} is not a cachet entry or chunk table"
            ))),
        }
    }

    async fn put(&self, key: &CacheKey, bytes: Vec<u8>) -> io::Result<()> {
        let head = key_path(&self.prefix, key);
        if bytes.len() < self.item_bytes {
            let mut item = Vec::with_capacity(bytes.len() + 1);
            item.push(WHOLE);
            item.extend_from_slice(&bytes);
            return self.items.write(&head, item).await;
        }
        let count = bytes.len().div_ceil(self.item_bytes) as u64;
        if count > self.max_chunks {
            return Err(io::Error::new(
                io::ErrorKind::FileTooLarge,
                format!(
                    "{} bytes would take {count} items, above max_chunks = {}",
                    bytes.len(),
                    self.max_chunks
                ),
            ));
        }
        let hash = *blake3::hash(&bytes).as_bytes();
        for (n, chunk) in bytes.chunks(self.item_bytes).enumerate() {
            self.items
                .write(&chunk_path(&head, &hash, n as u32), chunk.to_vec())
                .await?;
        }
        let mut table = Vec::with_capacity(TABLE_LEN);
        table.push(TABLE);
        table.extend_from_slice(&(count as u32).to_le_bytes());
        table.extend_from_slice(&(bytes.len() as u64).to_le_bytes());
        table.extend_from_slice(&hash);
        self.items.write(&head, table).await
    }

    async fn remove(&self, key: &CacheKey) -> io::Result<()> {
        // The chunks age out of the store on their own.
        self.items.delete(&key_path(&self.prefix, key)).await
    }
}
