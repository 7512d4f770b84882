//! Which explain slot last wrote each output path: one file, a line appended per miss, so
//! that a miss makes no new file for its outputs (a file per output, each a new inode, was
//! a measurable share of a cold build's server CPU). Compacted now and then to the newest
//! line per output.
//!
//! A line is `<output id> <slot as a JSON string>\n`: the id is [`super::id`] of the
//! normalised output path, the slot is JSON so that any character in it survives. A line
//! that does not parse is skipped: an append cut short by a crash loses that line only.

use std::collections::HashSet;
use std::io::{self, Write};
use std::path::Path;

use crate::paths::write_atomically;

/// Appends one line per output, naming `slot`, in one write (`O_APPEND`: servers sharing
/// the cache dir do not interleave lines).
pub(super) fn append(log: &Path, outputs: &[String], slot: &str) -> io::Result<()> {
    let slot = serde_json::to_string(slot)?;
    let mut lines = String::new();
    for output in outputs {
        lines.push_str(&super::id(output));
        lines.push(' ');
        lines.push_str(&slot);
        lines.push('\n');
    }
    let open = || {
        std::fs::OpenOptions::new()
            .append(true)
            .create(true)
            .open(log)
    };
    let mut file = match open() {
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            std::fs::create_dir_all(log.parent().unwrap_or(Path::new(".")))?;
            open()?
        }
        other => other?,
    };
    file.write_all(lines.as_bytes())
}

/// The slot the newest line names for `output` (a normalised path), if any.
pub(super) fn find(log: &Path, output: &str) -> Option<String> {
    let text = std::fs::read_to_string(log).ok()?;
    let id = super::id(output);
    text.lines()
        .rev()
        .filter_map(parse)
        .find(|(line_id, _)| *line_id == id)
        .map(|(_, slot)| slot)
}

/// Rewrites the log with the newest line of each output, at most `keep` outputs (those
/// written last). A missing log is left missing.
pub(super) fn compact(log: &Path, keep: usize) -> io::Result<()> {
    let text = match std::fs::read_to_string(log) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        other => other?,
    };
    // Newest first, each output once.
    let mut seen = HashSet::new();
    let mut newest = Vec::new();
    for (id, slot) in text.lines().rev().filter_map(parse) {
        if newest.len() == keep {
            break;
        }
        if seen.insert(id) {
            newest.push((id, slot));
        }
    }
    let mut out = String::new();
    for (id, slot) in newest.iter().rev() {
        out.push_str(id);
        out.push(' ');
        out.push_str(&serde_json::to_string(slot)?);
        out.push('\n');
    }
    write_atomically(log, out.as_bytes())
}

/// A line's output id and slot; `None` for a torn or foreign line.
fn parse(line: &str) -> Option<(&str, String)> {
    let (id, slot) = line.split_once(' ')?;
    let well_formed = id.len() == 32 && id.bytes().all(|b| b.is_ascii_hexdigit());
    well_formed.then_some(())?;
    Some((id, serde_json::from_str(slot).ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_newest_line_of_an_output_wins_and_torn_lines_are_skipped() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("explain").join("outputs.log");
        assert_eq!(find(&log, "/w/a.o"), None);
        append(&log, &["/w/a.o".into(), "/w/a.d".into()], "a.o from a.c").unwrap();
        append(
            &log,
            &["/w/b.o".into()],
            "slot with \"quotes\"\nand a newline",
        )
        .unwrap();
        assert_eq!(find(&log, "/w/a.d").as_deref(), Some("a.o from a.c"));
        assert_eq!(
            find(&log, "/w/b.o").as_deref(),
            Some("slot with \"quotes\"\nand a newline")
        );
        // A torn line (an append cut short) and a foreign line are skipped.
        let mut file = std::fs::OpenOptions::new().append(true).open(&log).unwrap();
        file.write_all(b"0123456789abcdef0123456789abcdef \"cut sh")
            .unwrap();
        file.write_all(b"\nnot a line at all\n").unwrap();
        append(&log, &["/w/a.o".into()], "a.o from a2.c").unwrap();
        assert_eq!(find(&log, "/w/a.o").as_deref(), Some("a.o from a2.c"));
        assert_eq!(find(&log, "/w/a.d").as_deref(), Some("a.o from a.c"));
        assert_eq!(find(&log, "/w/c.o"), None);
    }

    #[test]
    fn compaction_keeps_the_newest_line_of_the_newest_outputs() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("outputs.log");
        compact(&log, 2).unwrap();
        assert!(!log.exists());
        for (output, slot) in [("/a", "1"), ("/b", "2"), ("/a", "3"), ("/c", "4")] {
            append(&log, &[output.into()], slot).unwrap();
        }
        compact(&log, 2).unwrap();
        assert_eq!(std::fs::read_to_string(&log).unwrap().lines().count(), 2);
        assert_eq!(find(&log, "/a").as_deref(), Some("3"));
        assert_eq!(find(&log, "/c").as_deref(), Some("4"));
        assert_eq!(find(&log, "/b"), None);
        // Appends go on after a compaction.
        append(&log, &["/b".into()], "5").unwrap();
        assert_eq!(find(&log, "/b").as_deref(), Some("5"));
    }
}
