//! What one request's cache reads found: the level that served a hit (with the entry's
//! key and size), the levels that failed, and the size of what the request stored. Kept
//! for a request's task when the server runs it inside [`with_read_log`]; reads and writes
//! elsewhere (background writes, backfills) are not noted.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::future::Future;

use super::CacheKey;

/// The reads and stores of one request.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ReadLog {
    /// The level that served a hit, the entry's key and its encoded size (bytes).
    pub hit: Option<(String, CacheKey, u64)>,
    /// Per level that failed: (errors, timeouts).
    pub failures: BTreeMap<String, (u64, u64)>,
    /// The entry this request stored: its key and its size (bytes, outputs and output).
    pub stored: Option<(CacheKey, u64)>,
}

impl ReadLog {
    /// The failures in words: `redis: 3 timeouts`, `s3: 1 error`.
    pub fn failures_text(&self) -> Vec<String> {
        self.failures
            .iter()
            .map(|(level, (errors, timeouts))| {
                let mut parts = Vec::new();
                let plural =
                    |n: u64, word: &str| format!("{n} {word}{}", if n == 1 { "" } else { "s" });
                if *timeouts > 0 {
                    parts.push(plural(*timeouts, "timeout"));
                }
                if *errors > 0 {
                    parts.push(plural(*errors, "error"));
                }
                format!("{level}: {}", parts.join(", "))
            })
            .collect()
    }
}

tokio::task_local! {
    static LOG: RefCell<ReadLog>;
}

/// Runs `work` with a read log of its own, and returns it with the result.
pub async fn with_read_log<F: Future>(work: F) -> (F::Output, ReadLog) {
    LOG.scope(RefCell::new(ReadLog::default()), async {
        let output = work.await;
        let log = LOG.with(|log| log.borrow().clone());
        (output, log)
    })
    .await
}

/// The log of the current request so far (empty outside one).
pub fn current() -> ReadLog {
    LOG.try_with(|log| log.borrow().clone()).unwrap_or_default()
}

/// Notes something in the current request's log, if there is one.
pub(super) fn note(change: impl FnOnce(&mut ReadLog)) {
    let _ = LOG.try_with(|log| change(&mut log.borrow_mut()));
}

/// Notes the entry the current request stores.
pub fn note_stored(key: CacheKey, bytes: u64) {
    note(|log| log.stored = Some((key, bytes)));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_request_sees_its_own_notes_only() {
        note(|log| {
            log.failures
                .insert("outside".into(), (1, 0))
                .map(|_| ())
                .unwrap_or(())
        });
        let ((), log) = with_read_log(async {
            note(|log| {
                log.failures.insert("redis".into(), (0, 3));
            });
            note(|log| {
                log.failures.insert("s3".into(), (1, 0));
            });
            note_stored(CacheKey([1; 32]), 42);
            assert_eq!(current().stored, Some((CacheKey([1; 32]), 42)));
        })
        .await;
        assert_eq!(log.failures_text(), ["redis: 3 timeouts", "s3: 1 error"]);
        assert_eq!(current(), ReadLog::default());
    }
}
