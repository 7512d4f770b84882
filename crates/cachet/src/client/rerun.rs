//! Running the compiler directly after the server already forwarded part of its output.
//!
//! When the server goes away mid-compile (killed, crashed), the client compiles by itself.
//! By then the build may have seen some of the server's compiler's output, and seeing it
//! twice can break the build: cargo counts rustc's artifact notification
//! (`{"artifact":"….rmeta","emit":"metadata"}`) once per unit, and a second one trips an
//! assertion in its job queue (found by `bench/chaos.sh`, killing the server during a
//! crate graph build). So the direct compile runs as a child, and each line of its output
//! that was forwarded already is left out once; everything else passes through.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::path::Path;
use std::process::{Command, Stdio};

use std::ffi::OsString;

/// What the client has written to its stdout and stderr on the server's behalf.
#[derive(Debug, Default)]
pub(crate) struct Forwarded {
    pub(crate) stdout: Vec<u8>,
    pub(crate) stderr: Vec<u8>,
}

impl Forwarded {
    /// Whether nothing was forwarded (the compiler may then simply replace the client).
    pub(crate) fn is_empty(&self) -> bool {
        self.stdout.is_empty() && self.stderr.is_empty()
    }
}

/// Lines already written, each to be left out once, by content.
struct Seen(HashMap<Vec<u8>, usize>);

impl Seen {
    fn of(bytes: &[u8]) -> Seen {
        let mut seen = HashMap::new();
        for line in bytes.split_inclusive(|&b| b == b'\n') {
            *seen.entry(line.to_vec()).or_default() += 1;
        }
        Seen(seen)
    }

    /// Whether `line` was written already (and is now used up).
    fn take(&mut self, line: &[u8]) -> bool {
        match self.0.get_mut(line) {
            Some(n) if *n > 0 => {
                *n -= 1;
                true
            }
            _ => false,
        }
    }
}

/// Copies `from` to `to` line by line, leaving out the lines in `seen` once each. A
/// forwarded line cut short (`cut`: the server died mid-line) is ended first, so that the
/// next line does not run on from it.
fn pass_on(from: impl Read, mut to: impl Write, mut seen: Seen, cut: bool) {
    if cut {
        let _ = to.write_all(b"\n");
    }
    let mut from = BufReader::new(from);
    let mut line = Vec::new();
    loop {
        line.clear();
        match from.read_until(b'\n', &mut line) {
            Ok(0) | Err(_) => break,
            Ok(_) if seen.take(&line) => {}
            Ok(_) => {
                let _ = to.write_all(&line);
                let _ = to.flush();
            }
        }
    }
}

/// Runs `compiler` with this process's environment and descriptors (the build's jobserver
/// reaches it), its stdout and stderr passed on without the lines in `forwarded`; returns
/// how it ended. Errors: it could not be started.
pub(crate) fn run_after(
    compiler: &Path,
    args: &[OsString],
    forwarded: &Forwarded,
) -> std::io::Result<std::process::ExitStatus> {
    let mut child = Command::new(compiler)
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    let out = child.stdout.take().expect("stdout is piped");
    let err = child.stderr.take().expect("stderr is piped");
    let (seen_out, cut_out) = (Seen::of(&forwarded.stdout), cut(&forwarded.stdout));
    let (seen_err, cut_err) = (Seen::of(&forwarded.stderr), cut(&forwarded.stderr));
    std::thread::scope(|scope| {
        scope.spawn(|| pass_on(out, std::io::stdout(), seen_out, cut_out));
        pass_on(err, std::io::stderr(), seen_err, cut_err);
    });
    child.wait()
}

fn cut(bytes: &[u8]) -> bool {
    bytes.last().is_some_and(|&b| b != b'\n')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn passed(forwarded: &[u8], rerun: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        pass_on(rerun, &mut out, Seen::of(forwarded), cut(forwarded));
        out
    }

    #[test]
    fn lines_forwarded_already_are_left_out_once_each() {
        let artifact = b"{\"artifact\":\"/t/libx.rmeta\",\"emit\":\"metadata\"}\n";
        let warning = b"{\"$message_type\":\"diagnostic\",\"message\":\"unused\"}\n";
        let forwarded = [&warning[..], &artifact[..]].concat();
        let rerun = [&warning[..], &artifact[..], &warning[..], b"done\n"].concat();
        assert_eq!(
            passed(&forwarded, &rerun),
            [&warning[..], b"done\n"].concat()
        );
    }

    #[test]
    fn a_line_cut_short_is_ended_and_the_whole_line_follows() {
        assert_eq!(passed(b"a\nhal", b"a\nhalf\nb\n"), b"\nhalf\nb\n");
        assert_eq!(passed(b"", b"x\n"), b"x\n");
        assert_eq!(passed(b"", b"no newline"), b"no newline");
    }
}
