//! Identical compiles in flight at once run the compiler once.
//!
//! The first request for a key leads: it runs the compiler. Requests for the same key
//! that arrive meanwhile follow: they wait for the leader's result and replay it. The
//! compile is cancelled only when no participant (leader's client or follower) is left,
//! so one client going away never kills a compile that another waits on.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::cache::{CacheEntry, CacheKey};
use crate::process::Exit;

/// What the leader's compile ended with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Shared {
    Finished {
        exit: Exit,
        stdout: Vec<u8>,
        stderr: Vec<u8>,
        /// The outputs, for a successful compile.
        entry: Option<CacheEntry>,
    },
    /// The leader gave up (its compile was cancelled or failed to run): run it yourself.
    Abandoned,
}

struct Slot {
    result: watch::Sender<Option<Arc<Shared>>>,
    participants: AtomicUsize,
    cancel: CancellationToken,
}

#[derive(Default)]
pub struct InFlight {
    slots: Mutex<HashMap<CacheKey, Arc<Slot>>>,
}

pub enum Role {
    Leader(Leader),
    Follower(Follower),
}

impl InFlight {
    /// Leads the compile of `key`, or follows the one already running.
    pub fn join(self: &Arc<Self>, key: CacheKey) -> Role {
        let mut slots = self.slots.lock().unwrap();
        if let Some(slot) = slots.get(&key) {
            slot.participants.fetch_add(1, Ordering::SeqCst);
            return Role::Follower(Follower {
                result: slot.result.subscribe(),
                participant: Participant(slot.clone()),
            });
        }
        let slot = Arc::new(Slot {
            result: watch::channel(None).0,
            participants: AtomicUsize::new(1),
            cancel: CancellationToken::new(),
        });
        slots.insert(key, slot.clone());
        Role::Leader(Leader {
            inflight: self.clone(),
            key,
            slot: slot.clone(),
            participant: Some(Participant(slot)),
            published: false,
        })
    }

    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.slots.lock().unwrap().len()
    }
}

/// One client's interest in a compile; the compile is cancelled when the last one goes.
pub struct Participant(Arc<Slot>);

impl Drop for Participant {
    fn drop(&mut self) {
        if self.0.participants.fetch_sub(1, Ordering::SeqCst) == 1 {
            self.0.cancel.cancel();
        }
    }
}

pub struct Leader {
    inflight: Arc<InFlight>,
    key: CacheKey,
    slot: Arc<Slot>,
    participant: Option<Participant>,
    published: bool,
}

impl Leader {
    /// Fires when no participant is left: the compile should stop.
    pub fn cancel_token(&self) -> CancellationToken {
        self.slot.cancel.clone()
    }

    /// The leader's own client's interest: dropped when that client goes away.
    pub fn take_participant(&mut self) -> Option<Participant> {
        self.participant.take()
    }

    /// Hands the result to every follower and closes the slot. `result` runs only when
    /// some follower waits: a result holds copies of every output.
    pub fn publish(mut self, result: impl FnOnce() -> Shared) {
        self.finish(result);
    }

    fn finish(&mut self, result: impl FnOnce() -> Shared) {
        if self.published {
            return;
        }
        self.published = true;
        // Out of the map first: no follower can join after this.
        self.inflight.slots.lock().unwrap().remove(&self.key);
        if self.slot.result.receiver_count() > 0 {
            self.slot.result.send_replace(Some(Arc::new(result())));
        }
    }
}

impl Drop for Leader {
    fn drop(&mut self) {
        self.finish(|| Shared::Abandoned);
    }
}

pub struct Follower {
    result: watch::Receiver<Option<Arc<Shared>>>,
    participant: Participant,
}

impl Follower {
    /// Waits for the leader's result.
    pub async fn result(mut self) -> Arc<Shared> {
        loop {
            if let Some(result) = self.result.borrow_and_update().clone() {
                drop(self.participant);
                return result;
            }
            if self.result.changed().await.is_err() {
                return Arc::new(Shared::Abandoned);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(n: u8) -> CacheKey {
        CacheKey([n; 32])
    }

    #[tokio::test]
    async fn followers_get_the_leaders_result() {
        let inflight = Arc::new(InFlight::default());
        let Role::Leader(leader) = inflight.join(key(1)) else {
            panic!()
        };
        let Role::Follower(follower) = inflight.join(key(1)) else {
            panic!()
        };
        assert!(matches!(inflight.join(key(2)), Role::Leader(_)));
        let waiting = tokio::spawn(follower.result());
        let done = Shared::Finished {
            exit: Exit::Code(0),
            stdout: vec![],
            stderr: b"w".to_vec(),
            entry: None,
        };
        leader.publish(|| done.clone());
        assert_eq!(*waiting.await.unwrap(), done);
        assert_eq!(inflight.len(), 0);
    }

    #[tokio::test]
    async fn the_compile_is_cancelled_only_when_nobody_waits() {
        let inflight = Arc::new(InFlight::default());
        let Role::Leader(mut leader) = inflight.join(key(1)) else {
            panic!()
        };
        let cancel = leader.cancel_token();
        let Role::Follower(follower) = inflight.join(key(1)) else {
            panic!()
        };
        // The leader's client goes away: the follower still waits.
        drop(leader.take_participant());
        assert!(!cancel.is_cancelled());
        drop(follower);
        assert!(cancel.is_cancelled());
        // A leader dropped without a result leaves its followers to run it themselves.
        let Role::Follower(late) = inflight.join(key(1)) else {
            panic!()
        };
        drop(leader);
        assert_eq!(*late.result().await, Shared::Abandoned);
    }
}
