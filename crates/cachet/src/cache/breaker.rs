//! A circuit breaker for one cache level: after enough failed calls in a row it stops
//! calling the store for a cooldown, then lets one probe through; the probe's outcome closes
//! it or opens it again. A dead remote then costs nothing instead of a timeout per compile.

use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Closed {
        failures: u32,
    },
    Open {
        until: Instant,
    },
    /// The cooldown is over and one call is on its way to find out, since then. A probe
    /// whose caller went away without an answer (its future dropped) is made again by the
    /// first call one cooldown later.
    Probing {
        since: Instant,
    },
}

#[derive(Debug)]
pub struct Breaker {
    threshold: u32,
    cooldown: Duration,
    state: Mutex<State>,
}

/// What the breaker looks like now, for stats.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BreakerView {
    Closed,
    Open { remaining: Duration },
    Probing,
}

impl std::fmt::Display for BreakerView {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            BreakerView::Closed => write!(f, "closed"),
            BreakerView::Open { remaining } => {
                write!(f, "open ({}s left)", remaining.as_secs_f64().ceil() as u64)
            }
            BreakerView::Probing => write!(f, "probing"),
        }
    }
}

impl Breaker {
    pub fn new(threshold: u32, cooldown: Duration) -> Breaker {
        Breaker {
            threshold: threshold.max(1),
            cooldown,
            state: Mutex::new(State::Closed { failures: 0 }),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether a call may go to the store now.
    pub fn allow(&self) -> bool {
        let mut state = self.lock();
        match *state {
            State::Closed { .. } => true,
            State::Open { until } if Instant::now() >= until => {
                *state = State::Probing {
                    since: Instant::now(),
                };
                true
            }
            State::Probing { since } if since.elapsed() >= self.cooldown => {
                *state = State::Probing {
                    since: Instant::now(),
                };
                true
            }
            State::Open { .. } | State::Probing { .. } => false,
        }
    }

    pub fn succeeded(&self) {
        *self.lock() = State::Closed { failures: 0 };
    }

    /// Records a failed call; true when this failure opened the breaker.
    pub fn failed(&self) -> bool {
        let mut state = self.lock();
        let failures = match *state {
            State::Closed { failures } => failures + 1,
            // A failed probe, or a call that was already out when the breaker opened.
            State::Probing { .. } | State::Open { .. } => self.threshold,
        };
        if failures >= self.threshold {
            let was_open = matches!(*state, State::Open { .. });
            *state = State::Open {
                until: Instant::now() + self.cooldown,
            };
            !was_open
        } else {
            *state = State::Closed { failures };
            false
        }
    }

    /// A call let through ended without an answer either way (it was cancelled): a probe
    /// it was is owed to the next call.
    pub fn abandoned(&self) {
        let mut state = self.lock();
        if matches!(*state, State::Probing { .. }) {
            *state = State::Open {
                until: Instant::now(),
            };
        }
    }

    pub fn view(&self) -> BreakerView {
        match *self.lock() {
            State::Closed { .. } => BreakerView::Closed,
            State::Open { until } => BreakerView::Open {
                remaining: until.saturating_duration_since(Instant::now()),
            },
            State::Probing { .. } => BreakerView::Probing,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn an_abandoned_probe_lets_the_next_call_probe() {
        let breaker = Breaker::new(1, Duration::from_secs(30));
        assert!(breaker.failed());
        tokio::time::advance(Duration::from_secs(31)).await;
        assert!(breaker.allow(), "the probe");
        assert!(!breaker.allow(), "only one probe at a time");
        breaker.abandoned();
        assert!(
            breaker.allow(),
            "the probe was never made: the next call makes it"
        );
        // A probe whose caller vanished without a word is made again a cooldown later.
        assert!(!breaker.allow());
        tokio::time::advance(Duration::from_secs(31)).await;
        assert!(
            breaker.allow(),
            "a lost probe does not keep the breaker shut"
        );
        breaker.succeeded();
        assert!(breaker.allow());
        breaker.abandoned();
        assert!(
            breaker.allow(),
            "abandoning a call through a closed breaker changes nothing"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn opens_after_the_threshold_and_probes_after_the_cooldown() {
        let breaker = Breaker::new(3, Duration::from_secs(30));
        assert!(!breaker.failed());
        assert!(!breaker.failed());
        assert!(breaker.allow());
        assert!(breaker.failed(), "the third failure in a row opens it");
        assert!(!breaker.allow());
        assert!(matches!(breaker.view(), BreakerView::Open { .. }));

        tokio::time::advance(Duration::from_secs(29)).await;
        assert!(!breaker.allow(), "still cooling down");
        tokio::time::advance(Duration::from_secs(2)).await;
        assert!(breaker.allow(), "one probe goes through");
        assert!(!breaker.allow(), "only one");
        assert_eq!(breaker.view(), BreakerView::Probing);

        assert!(breaker.failed(), "a failed probe opens it again");
        assert!(!breaker.allow());
        tokio::time::advance(Duration::from_secs(31)).await;
        assert!(breaker.allow());
        breaker.succeeded();
        assert_eq!(breaker.view(), BreakerView::Closed);
        assert!(breaker.allow() && breaker.allow());
    }

    #[tokio::test(start_paused = true)]
    async fn a_success_resets_the_count() {
        let breaker = Breaker::new(2, Duration::from_secs(5));
        assert!(!breaker.failed());
        breaker.succeeded();
        assert!(!breaker.failed());
        assert!(breaker.allow());
        assert!(breaker.failed());
        assert!(!breaker.allow());
        // Late failures of calls that left before it opened do not count as new openings.
        assert!(!breaker.failed());
    }
}
