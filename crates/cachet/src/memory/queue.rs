//! Who may start now: compiles waiting for memory, admitted in order of arrival while the
//! predicted peaks of what runs plus their own fit the budget.
//!
//! Pure bookkeeping (no clock, no files), so that every rule is tested on its own:
//! - whatever fits starts, even past an earlier compile that does not fit yet; but one
//!   overtaken [`MAX_OVERTAKEN`] times stops everything behind it until it has started,
//!   so a large compile is never starved by a stream of small ones;
//! - when nothing runs, the first waiter starts whatever its size and whatever the live
//!   signals say: a compile larger than the whole budget still runs, alone.

use std::collections::VecDeque;

/// How often a waiting compile may be overtaken by later, smaller ones.
pub const MAX_OVERTAKEN: u32 = 4;

#[derive(Debug)]
struct Waiter {
    id: u64,
    need: u64,
    overtaken: u32,
}

/// The admission state of one server.
#[derive(Debug)]
pub struct Queue {
    budget: u64,
    in_use: u64,
    running: usize,
    waiters: VecDeque<Waiter>,
    next_id: u64,
}

impl Queue {
    /// An empty queue for a budget of `budget` bytes (`u64::MAX`: no limit).
    pub fn new(budget: u64) -> Queue {
        Queue {
            budget,
            in_use: 0,
            running: 0,
            waiters: VecDeque::new(),
            next_id: 0,
        }
    }

    /// Predicted bytes of the compiles admitted and not yet released.
    pub fn in_use(&self) -> u64 {
        self.in_use
    }

    /// Compiles admitted and not yet released.
    #[cfg(test)]
    pub fn running(&self) -> usize {
        self.running
    }

    /// Compiles waiting.
    pub fn waiting(&self) -> usize {
        self.waiters.len()
    }

    /// Queues a compile predicted to need `need` bytes; returns its id.
    pub fn enqueue(&mut self, need: u64) -> u64 {
        self.next_id += 1;
        self.waiters.push_back(Waiter {
            id: self.next_id,
            need,
            overtaken: 0,
        });
        self.next_id
    }

    /// Takes a waiter out (it went away before it was admitted). False if not waiting.
    pub fn cancel(&mut self, id: u64) -> bool {
        let before = self.waiters.len();
        self.waiters.retain(|w| w.id != id);
        self.waiters.len() != before
    }

    /// An admitted compile of `need` bytes ended.
    pub fn release(&mut self, need: u64) {
        self.in_use = self.in_use.saturating_sub(need);
        self.running = self.running.saturating_sub(1);
    }

    /// Admits every waiter that may start now and returns their ids, in order. `extra` is
    /// memory in use besides the admitted compiles (the server's own pending writes);
    /// `short(need)` says whether the live signals hold a start of `need` bytes.
    pub fn dispatch(&mut self, extra: u64, mut short: impl FnMut(u64) -> bool) -> Vec<u64> {
        let mut admitted = Vec::new();
        let mut i = 0;
        while i < self.waiters.len() {
            let need = self.waiters[i].need;
            let fits = self.in_use.saturating_add(extra).saturating_add(need) <= self.budget;
            if self.running == 0 || (fits && !short(need)) {
                let waiter = self.waiters.remove(i).expect("index in range");
                for earlier in self.waiters.iter_mut().take(i) {
                    earlier.overtaken += 1;
                }
                self.in_use = self.in_use.saturating_add(need);
                self.running += 1;
                admitted.push(waiter.id);
                continue;
            }
            if self.waiters[i].overtaken >= MAX_OVERTAKEN {
                break;
            }
            i += 1;
        }
        admitted
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NO_PRESSURE: fn(u64) -> bool = |_| false;

    #[test]
    fn admits_what_fits_and_holds_the_rest() {
        let mut q = Queue::new(100);
        let a = q.enqueue(40);
        let b = q.enqueue(40);
        let c = q.enqueue(40);
        assert_eq!(q.dispatch(0, NO_PRESSURE), vec![a, b]);
        assert_eq!((q.running(), q.in_use(), q.waiting()), (2, 80, 1));
        q.release(40);
        assert_eq!(q.dispatch(0, NO_PRESSURE), vec![c]);
    }

    #[test]
    fn a_compile_larger_than_the_budget_runs_alone() {
        let mut q = Queue::new(100);
        let small = q.enqueue(10);
        assert_eq!(q.dispatch(0, NO_PRESSURE), vec![small]);
        let huge = q.enqueue(500);
        assert!(q.dispatch(0, NO_PRESSURE).is_empty());
        q.release(10);
        assert_eq!(q.dispatch(0, NO_PRESSURE), vec![huge]);
        // Nothing else starts beside it.
        q.enqueue(1);
        assert!(q.dispatch(0, NO_PRESSURE).is_empty());
    }

    #[test]
    fn pressure_holds_starts_but_never_the_only_one() {
        let mut q = Queue::new(100);
        let a = q.enqueue(10);
        assert_eq!(
            q.dispatch(0, |_| true),
            vec![a],
            "nothing ran: it starts anyway"
        );
        q.enqueue(10);
        assert!(q.dispatch(0, |_| true).is_empty());
        assert_eq!(q.dispatch(0, NO_PRESSURE).len(), 1);
    }

    #[test]
    fn pending_writes_count_against_the_budget() {
        let mut q = Queue::new(100);
        let a = q.enqueue(50);
        assert_eq!(q.dispatch(0, NO_PRESSURE), vec![a]);
        q.enqueue(30);
        assert!(q.dispatch(30, NO_PRESSURE).is_empty());
        assert_eq!(q.dispatch(20, NO_PRESSURE).len(), 1);
    }

    #[test]
    fn a_large_compile_is_overtaken_only_so_often() {
        let mut q = Queue::new(100);
        let first = q.enqueue(60);
        assert_eq!(q.dispatch(0, NO_PRESSURE), vec![first]);
        let large = q.enqueue(60);
        // Small ones pass the large one while they fit, MAX_OVERTAKEN times.
        for _ in 0..MAX_OVERTAKEN {
            let small = q.enqueue(10);
            assert_eq!(q.dispatch(0, NO_PRESSURE), vec![small]);
            q.release(10);
        }
        let held = q.enqueue(10);
        assert!(
            q.dispatch(0, NO_PRESSURE).is_empty(),
            "the large one is next"
        );
        q.release(60);
        assert_eq!(q.dispatch(0, NO_PRESSURE), vec![large, held]);
    }

    #[test]
    fn a_cancelled_waiter_is_gone() {
        let mut q = Queue::new(10);
        let a = q.enqueue(5);
        assert!(q.cancel(a));
        assert!(!q.cancel(a));
        assert!(q.dispatch(0, NO_PRESSURE).is_empty());
        assert_eq!(q.running(), 0);
    }
}
