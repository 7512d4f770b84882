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
// Byte fields go through `serde_bytes`: postcard then copies them whole instead of one
// element at a time (the same bytes on the wire).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CacheEntry {
    /// The compiler's exit code (1 for a compile ended by a signal).
    pub exit_code: i32,
    /// What the compiler wrote to stdout.
    #[serde(with = "serde_bytes")]
    pub stdout: Vec<u8>,
    /// What the compiler wrote to stderr.
    #[serde(with = "serde_bytes")]
    pub stderr: Vec<u8>,
    /// The output files.
    pub files: Vec<StoredFile>,
    /// Facts about the entry that a compiler module needs on a hit, by name (for rustc:
    /// which rendering of diagnostics the stored stderr is).
    pub meta: Vec<(String, Vec<u8>)>,
}

impl CacheEntry {
    /// Bytes of outputs and captured output, uncompressed.
    pub fn data_size(&self) -> u64 {
        let files: usize = self.files.iter().map(|f| f.data.len()).sum();
        (files + self.stdout.len() + self.stderr.len()) as u64
    }

    /// The value of the fact `name` in [`meta`](Self::meta), if the entry has it.
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
    /// The file's bytes.
    #[serde(with = "serde_bytes")]
    pub data: Vec<u8>,
}

/// Bumped whenever the serialized shape of [`CacheEntry`] changes.
pub const ENTRY_FORMAT_VERSION: u32 = 2;

/// Identifies a cachet entry file.
pub const ENTRY_MAGIC: [u8; 8] = *b"CACHET\0\x01";

/// Decompressed entries larger than this are refused, whatever the header
/// claims, so a crafted or corrupt entry cannot exhaust memory.
pub const MAX_ENTRY_SIZE: u64 = 4 << 30;

/// zstd level 1: on this project's debug rlibs 478 MB/s at a 3.93 ratio, where level 3
/// gives 320 MB/s at 4.22 (`zstd -b1 -e3`); the server compresses on the build's cores.
/// The fast levels save too little for what they lose: on a cold `bench/crate-graph`
/// build's 311 MB of outputs in 4 MiB frames, one thread, three rounds, level 1 gave
/// 459-493 MB/s at 3.72, level -1 480-545 MB/s at 3.29, level -3 499-570 MB/s at 2.80.
const ZSTD_LEVEL: i32 = 1;
const HEADER_LEN: usize = 8 + 4 + 8 + 32;

/// Why an encoded entry could not be decoded.
#[derive(Debug, thiserror::Error)]
pub enum EntryError {
    /// The first bytes are not [`ENTRY_MAGIC`].
    #[error("not a cachet cache entry (bad magic)")]
    BadMagic,
    /// Written by another format version (the one found).
    #[error("unsupported cache entry format version {0} (expected {ENTRY_FORMAT_VERSION})")]
    UnsupportedVersion(u32),
    /// Shorter than its header says.
    #[error("cache entry is truncated")]
    Truncated,
    /// The stored checksum does not match the bytes.
    #[error("cache entry checksum mismatch (entry is corrupt)")]
    ChecksumMismatch,
    /// The header claims more than [`MAX_ENTRY_SIZE`] bytes (the claimed size).
    #[error("cache entry claims {0} uncompressed bytes, above the {MAX_ENTRY_SIZE} byte limit")]
    TooLarge(u64),
    /// zstd refused the payload.
    #[error("cache entry failed to decompress: {0}")]
    Decompress(#[source] std::io::Error),
    /// The payload is not a serialized entry.
    #[error("cache entry failed to deserialize: {0}")]
    Decode(#[source] postcard::Error),
}

impl CacheEntry {
    /// Serializes, compresses and frames the entry.
    ///
    /// Serialized straight into the compressor, behind the header's room: the serialized
    /// entry is never whole in memory (it is as large as the outputs, and faulting in a
    /// fresh buffer of that size per entry was a measurable share of a cold build's
    /// server CPU), and the compressed bytes are not copied again. Each large byte field
    /// (an output) is a zstd frame of its own, compressed in one call from where it lies;
    /// see [`Frames`].
    pub fn encode(&self) -> Vec<u8> {
        // Nothing here can fail for these plain types writing into memory, short of
        // allocation failure, which would abort anyway.
        // zstd level 1 writes about a quarter of the input; room for a bit more.
        let room = HEADER_LEN + self.data_size() as usize / 3 + 1024;
        let mut out = super::buffers::take(room);
        out.resize(HEADER_LEN, 0);
        let (mut out, raw_len) = COMPRESSOR.with(|compressor| {
            let mut compressor = compressor.borrow_mut();
            let compressor = match &mut *compressor {
                Some(compressor) => compressor,
                empty => empty.insert(
                    zstd::bulk::Compressor::new(ZSTD_LEVEL).expect("zstd compression context"),
                ),
            };
            let frames = Frames {
                compressor,
                out,
                pending: Vec::with_capacity(FRAME_MIN),
            };
            let counted = Counted {
                inner: frames,
                bytes: 0,
            };
            let mut counted =
                postcard::to_io(self, counted).expect("postcard serialization of CacheEntry");
            counted.inner.end().expect("zstd compression into memory");
            (counted.inner.out, counted.bytes)
        });
        if out.capacity() > 2 * out.len() {
            out.shrink_to_fit();
        }
        let hash = blake3::hash(&out[HEADER_LEN..]);
        out[..8].copy_from_slice(&ENTRY_MAGIC);
        out[8..12].copy_from_slice(&ENTRY_FORMAT_VERSION.to_le_bytes());
        out[12..20].copy_from_slice(&raw_len.to_le_bytes());
        out[20..HEADER_LEN].copy_from_slice(hash.as_bytes());
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

thread_local! {
    /// A compression context per thread: making one costs more than compressing a small
    /// object.
    static COMPRESSOR: std::cell::RefCell<Option<zstd::bulk::Compressor<'static>>> =
        const { std::cell::RefCell::new(None) };
}

/// Writes of at least this many bytes (an output, through `serde_bytes`) become a zstd
/// frame of their own; smaller ones gather into a frame of up to about this size.
const FRAME_MIN: usize = 64 << 10;

/// The payload as a series of zstd frames, which a decoder reads as one stream (zstd's
/// format: frames may follow one another). An output is compressed in one call from its
/// own bytes, where streaming copied it through the compressor's window and matched
/// across that window's wrap (zstd's slower "extDict" path): 13% less CPU on this
/// project's rlibs at the same size.
struct Frames<'c> {
    compressor: &'c mut zstd::bulk::Compressor<'static>,
    /// The entry so far: header room, then the frames.
    out: Vec<u8>,
    /// Small writes not yet in a frame.
    pending: Vec<u8>,
}

impl Frames<'_> {
    /// Puts the small writes gathered so far into a frame.
    fn end(&mut self) -> std::io::Result<()> {
        if !self.pending.is_empty() {
            frame(self.compressor, &mut self.out, &self.pending)?;
            self.pending.clear();
        }
        Ok(())
    }
}

/// Appends `data` to `out` as one zstd frame.
fn frame(
    compressor: &mut zstd::bulk::Compressor<'static>,
    out: &mut Vec<u8>,
    data: &[u8],
) -> std::io::Result<()> {
    out.reserve(zstd::zstd_safe::compress_bound(data.len()));
    let mut at = std::io::Cursor::new(out);
    at.set_position(at.get_ref().len() as u64);
    compressor.compress_to_buffer(data, &mut at)?;
    Ok(())
}

/// Outputs of at least this many bytes are compressed in pieces of [`PIECE`] bytes, each a
/// frame, on up to one thread per CPU at once: a build's last output (its binary, tens of
/// MB) is what `cachet --flush` and a stopping server wait for, while the build leaves the
/// cores idle. zstd level 1 looks back at most 512 KiB, so pieces of 4 MiB compress as well.
const PARALLEL_MIN: usize = 8 << 20;
const PIECE: usize = 4 << 20;

/// Appends `data` to `out` as frames of [`PIECE`] bytes, compressed on up to `threads`
/// threads (this one with `compressor`, the others with contexts of their own; fewer when
/// the system makes fewer). Threads made here inherit the caller's scheduling and I/O
/// classes (background work stays idle). Errors: zstd's.
fn frames_in_parallel(
    compressor: &mut zstd::bulk::Compressor<'static>,
    out: &mut Vec<u8>,
    data: &[u8],
    threads: usize,
) -> std::io::Result<()> {
    let pieces: Vec<&[u8]> = data.chunks(PIECE).collect();
    let threads = threads.min(pieces.len());
    let next = std::sync::atomic::AtomicUsize::new(0);
    let work = |compressor: &mut zstd::bulk::Compressor<'static>| {
        let mut done = Vec::new();
        loop {
            let at = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let Some(piece) = pieces.get(at) else {
                return std::io::Result::Ok(done);
            };
            let mut frames = super::buffers::take(zstd::zstd_safe::compress_bound(piece.len()));
            frame(compressor, &mut frames, piece)?;
            done.push((at, frames));
        }
    };
    let mut done = std::thread::scope(|scope| {
        // A thread the system refuses leaves its pieces to the others.
        let helpers: Vec<_> = (1..threads)
            .map_while(|_| {
                std::thread::Builder::new()
                    .spawn_scoped(scope, || {
                        work(&mut zstd::bulk::Compressor::new(ZSTD_LEVEL)?)
                    })
                    .ok()
            })
            .collect();
        let mine = work(compressor);
        // Every helper joined before any error returns.
        let theirs: Vec<_> = helpers
            .into_iter()
            .map(|helper| {
                helper
                    .join()
                    .unwrap_or_else(|_| Err(std::io::Error::other("a compression thread panicked")))
            })
            .collect();
        let mut done = mine?;
        for pieces in theirs {
            done.extend(pieces?);
        }
        std::io::Result::Ok(done)
    })?;
    done.sort_unstable_by_key(|(at, _)| *at);
    out.reserve(done.iter().map(|(_, f)| f.len()).sum());
    for (_, frames) in done {
        out.extend_from_slice(&frames);
        super::buffers::give_back(frames);
    }
    Ok(())
}

impl std::io::Write for Frames<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if buf.len() >= PARALLEL_MIN {
            self.end()?;
            let threads = std::thread::available_parallelism().map_or(1, usize::from);
            frames_in_parallel(self.compressor, &mut self.out, buf, threads)?;
        } else if buf.len() >= FRAME_MIN {
            self.end()?;
            frame(self.compressor, &mut self.out, buf)?;
        } else {
            self.pending.extend_from_slice(buf);
            if self.pending.len() >= FRAME_MIN {
                self.end()?;
            }
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// A writer that counts the bytes written through it: the serialized length, for the header.
struct Counted<W> {
    inner: W,
    bytes: u64,
}

impl<W: std::io::Write> std::io::Write for Counted<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.bytes += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
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
mod tests;
