//! Open-loop scheduling: request `i` is due at `start + i / rate`, whatever
//! happened to the requests before it. Latency is measured from that due time,
//! so a stalled server shows up as latency instead of as fewer requests
//! (coordinated omission).

use std::ops::Range;
use std::time::{Duration, Instant};

#[derive(Debug, Clone, Copy)]
pub struct OpenLoop {
    start: Instant,
    interval: Duration,
    /// Number of requests in the whole run (warm-up included).
    total: u64,
}

impl OpenLoop {
    /// `rate` requests per second for `length`; `rate` must be positive.
    pub fn new(start: Instant, rate: f64, length: Duration) -> OpenLoop {
        assert!(rate > 0.0 && rate.is_finite(), "rate must be positive");
        OpenLoop {
            start,
            interval: Duration::from_secs_f64(1.0 / rate),
            total: (length.as_secs_f64() * rate).round() as u64,
        }
    }

    pub fn total(&self) -> u64 {
        self.total
    }

    /// When request `i` is due, `None` past the end of the run.
    pub fn due(&self, i: u64) -> Option<Instant> {
        (i < self.total).then(|| self.start + self.interval.mul_f64(i as f64))
    }

    /// The requests from `next` on that are due at `now`: the scheduler sends
    /// them all at once when it wakes up late, each with its own due time.
    pub fn due_by(&self, next: u64, now: Instant) -> Range<u64> {
        if now < self.start || next >= self.total {
            return next..next;
        }
        let elapsed = now.duration_since(self.start).as_secs_f64();
        let last = (elapsed / self.interval.as_secs_f64()).floor() as u64;
        next..(last + 1).min(self.total).max(next)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_are_evenly_spaced_at_the_rate() {
        let start = Instant::now();
        let plan = OpenLoop::new(start, 200.0, Duration::from_secs(2));
        assert_eq!(plan.total(), 400);
        assert_eq!(plan.due(0), Some(start));
        assert_eq!(plan.due(1), Some(start + Duration::from_millis(5)));
        assert_eq!(plan.due(399), Some(start + Duration::from_millis(1995)));
        assert_eq!(plan.due(400), None);
    }

    #[test]
    fn a_late_wake_up_releases_every_missed_request_once() {
        let start = Instant::now();
        let plan = OpenLoop::new(start, 1000.0, Duration::from_secs(1));
        assert_eq!(plan.due_by(0, start), 0..1);
        // Woke up 10.5 ms late: requests 1..=10 are due, none twice.
        let late = start + Duration::from_micros(10_500);
        assert_eq!(plan.due_by(1, late), 1..11);
        assert_eq!(plan.due_by(11, late), 11..11);
        // Never past the end of the run.
        assert_eq!(plan.due_by(11, start + Duration::from_secs(5)), 11..1000);
        assert_eq!(
            plan.due_by(1000, start + Duration::from_secs(5)),
            1000..1000
        );
        // Nothing is due before the start.
        let early = OpenLoop::new(start + Duration::from_secs(1), 10.0, Duration::from_secs(1));
        assert_eq!(early.due_by(0, start), 0..0);
    }
}
