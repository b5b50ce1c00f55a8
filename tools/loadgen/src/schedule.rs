//! Open-loop scheduling: request `i` is due at `start + i / rate`, whatever
//! happened to the requests before it. Latency is measured from that due time,
//! so a stalled server shows up as latency instead of as fewer requests
//! (coordinated omission).

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
}
