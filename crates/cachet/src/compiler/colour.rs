//! Colour in diagnostics. gcc and clang colour only for a terminal; cachet runs every
//! compile whose colour is left to the terminal with colour on, stores that rendering, and
//! takes the colour out again for a client whose stderr is no terminal, so one entry
//! serves both. Only SGR (`ESC [ … m`) and erase-line (`ESC [ K`, gcc) sequences are
//! removed: a hyperlink (`ESC ] 8 ; ; URL`, gcc's `-fdiagnostics-urls=always`) is what a
//! plain compile writes to a pipe as well, so it stays.

/// Removes colour from a stream of chunks; an escape split between chunks is held back
/// until the rest arrives.
#[derive(Debug, Default)]
pub struct ColourStripper {
    pending: Vec<u8>,
}

impl ColourStripper {
    /// `chunk` without colour, after whatever the previous chunk left unfinished.
    pub fn strip(&mut self, chunk: &[u8]) -> Vec<u8> {
        let mut input = std::mem::take(&mut self.pending);
        input.extend_from_slice(chunk);
        let mut out = Vec::with_capacity(input.len());
        let mut i = 0;
        while i < input.len() {
            if input[i] != 0x1b {
                out.push(input[i]);
                i += 1;
                continue;
            }
            match colour_sequence_len(&input[i..]) {
                Sequence::Colour(len) => i += len,
                Sequence::Other => {
                    out.push(input[i]);
                    i += 1;
                }
                Sequence::Unfinished => {
                    self.pending = input[i..].to_vec();
                    break;
                }
            }
        }
        out
    }

    /// What is still held back (an escape the stream ended inside), as it was.
    pub fn finish(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.pending)
    }
}

/// `text` without colour.
pub fn strip(text: &[u8]) -> Vec<u8> {
    let mut stripper = ColourStripper::default();
    let mut out = stripper.strip(text);
    out.extend(stripper.finish());
    out
}

enum Sequence {
    /// A colour or erase-line sequence of this many bytes.
    Colour(usize),
    /// Not one: kept.
    Other,
    /// Could still become one.
    Unfinished,
}

/// What starts at `bytes[0]` (an ESC).
fn colour_sequence_len(bytes: &[u8]) -> Sequence {
    match bytes.get(1) {
        None => return Sequence::Unfinished,
        Some(b'[') => {}
        Some(_) => return Sequence::Other,
    }
    for (i, &b) in bytes.iter().enumerate().skip(2) {
        match b {
            b'0'..=b'9' | b';' => continue,
            b'm' | b'K' => return Sequence::Colour(i + 1),
            _ => return Sequence::Other,
        }
    }
    Sequence::Unfinished
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gcc_and_clang_colours_are_removed_and_links_kept() {
        let gcc = b"\x1b[01m\x1b[Kw.c:1:17:\x1b[m\x1b[K \x1b[01;35m\x1b[Kwarning: \x1b[m\x1b[Kx";
        assert_eq!(strip(gcc), b"w.c:1:17: warning: x");
        let clang = b"\x1b[1mw.c:1:17: \x1b[0m\x1b[0;1;35mwarning: \x1b[0m\x1b[1mx\x1b[0m\n";
        assert_eq!(strip(clang), b"w.c:1:17: warning: x\n");
        let link = b"[\x1b]8;;https://gcc.gnu.org/x\x07-Wunused\x1b]8;;\x07]";
        assert_eq!(strip(link), link);
        assert_eq!(strip(b"a\x1b[2Jb\x1b"), b"a\x1b[2Jb\x1b");
    }

    #[test]
    fn an_escape_split_between_chunks_is_removed_whole() {
        let text = b"\x1b[01;35m\x1b[Kwarning: \x1b[m\x1b[Kdone\n";
        for cut in 0..text.len() {
            let mut stripper = ColourStripper::default();
            let mut out = stripper.strip(&text[..cut]);
            out.extend(stripper.strip(&text[cut..]));
            out.extend(stripper.finish());
            assert_eq!(out, b"warning: done\n", "cut at {cut}");
        }
    }
}
