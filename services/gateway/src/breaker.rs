//! A small circuit breaker per downstream service: after `threshold`
//! consecutive "unreachable" answers (unavailable, deadline passed) it opens
//! and the gateway answers 503 at once for a cool-down; then one trial call
//! is let through, which closes it again on success.

use std::sync::Mutex;
use std::time::{Duration, Instant};

#[derive(Debug, Clone, Copy, PartialEq)]
enum State {
    Closed {
        failures: u32,
    },
    Open {
        until: Instant,
    },
    /// One trial call is in flight since `since`.
    HalfOpen {
        since: Instant,
    },
}

#[derive(Debug)]
pub struct CircuitBreaker {
    threshold: u32,
    cooldown: Duration,
    state: Mutex<State>,
}

impl CircuitBreaker {
    pub fn new(threshold: u32, cooldown: Duration) -> Self {
        CircuitBreaker {
            threshold: threshold.max(1),
            cooldown,
            state: Mutex::new(State::Closed { failures: 0 }),
        }
    }

    pub fn allow(&self) -> Result<(), Duration> {
        self.allow_at(Instant::now())
    }

    /// Whether a call may go out at `now`; if not, how long until one may.
    pub fn allow_at(&self, now: Instant) -> Result<(), Duration> {
        let mut state = self.state.lock().expect("breaker lock");
        match *state {
            State::Closed { .. } => Ok(()),
            State::Open { until } if now >= until => {
                *state = State::HalfOpen { since: now };
                Ok(())
            }
            State::Open { until } => Err(until - now),
            // A trial that never reported (its request was dropped) must not
            // keep the breaker half-open forever.
            State::HalfOpen { since } if now >= since + self.cooldown => {
                *state = State::HalfOpen { since: now };
                Ok(())
            }
            State::HalfOpen { since } => Err(since + self.cooldown - now),
        }
    }

    /// The service answered (whatever the answer).
    pub fn record_success(&self) {
        *self.state.lock().expect("breaker lock") = State::Closed { failures: 0 };
    }

    pub fn record_failure(&self) {
        self.record_failure_at(Instant::now());
    }

    /// The service could not be reached or did not answer in time.
    pub fn record_failure_at(&self, now: Instant) {
        let mut state = self.state.lock().expect("breaker lock");
        *state = match *state {
            State::Closed { failures } if failures + 1 < self.threshold => State::Closed {
                failures: failures + 1,
            },
            State::Closed { .. } | State::HalfOpen { .. } => {
                tracing::warn!(cooldown = ?self.cooldown, "circuit breaker opened");
                State::Open {
                    until: now + self.cooldown,
                }
            }
            open @ State::Open { .. } => open,
        };
    }

    pub fn is_open(&self) -> bool {
        !matches!(
            *self.state.lock().expect("breaker lock"),
            State::Closed { .. }
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const COOLDOWN: Duration = Duration::from_secs(10);

    #[test]
    fn opens_after_threshold_consecutive_failures() {
        let breaker = CircuitBreaker::new(3, COOLDOWN);
        let t0 = Instant::now();
        for _ in 0..2 {
            breaker.record_failure_at(t0);
            assert!(breaker.allow_at(t0).is_ok());
        }
        breaker.record_failure_at(t0);
        let wait = breaker.allow_at(t0 + Duration::from_secs(1)).unwrap_err();
        assert_eq!(wait, Duration::from_secs(9));
    }

    #[test]
    fn a_success_resets_the_count() {
        let breaker = CircuitBreaker::new(3, COOLDOWN);
        let t0 = Instant::now();
        breaker.record_failure_at(t0);
        breaker.record_failure_at(t0);
        breaker.record_success();
        breaker.record_failure_at(t0);
        breaker.record_failure_at(t0);
        assert!(breaker.allow_at(t0).is_ok());
    }

    #[test]
    fn after_the_cooldown_one_trial_goes_through() {
        let breaker = CircuitBreaker::new(1, COOLDOWN);
        let t0 = Instant::now();
        breaker.record_failure_at(t0);
        assert!(breaker.allow_at(t0).is_err());
        let later = t0 + COOLDOWN;
        assert!(breaker.allow_at(later).is_ok(), "the trial");
        assert!(breaker.allow_at(later).is_err(), "only one trial at a time");
        breaker.record_success();
        assert!(breaker.allow_at(later).is_ok());
        assert!(!breaker.is_open());
    }

    #[test]
    fn a_failed_trial_opens_it_again() {
        let breaker = CircuitBreaker::new(1, COOLDOWN);
        let t0 = Instant::now();
        breaker.record_failure_at(t0);
        let later = t0 + COOLDOWN;
        breaker.allow_at(later).unwrap();
        breaker.record_failure_at(later);
        assert!(breaker.allow_at(later + Duration::from_secs(1)).is_err());
        assert!(breaker.allow_at(later + COOLDOWN).is_ok());
    }

    #[test]
    fn a_lost_trial_does_not_block_forever() {
        let breaker = CircuitBreaker::new(1, COOLDOWN);
        let t0 = Instant::now();
        breaker.record_failure_at(t0);
        breaker.allow_at(t0 + COOLDOWN).unwrap();
        // The trial never reports; one cool-down later another may go.
        assert!(breaker.allow_at(t0 + COOLDOWN * 2).is_ok());
    }
}
