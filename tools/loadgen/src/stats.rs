//! Latency and outcome statistics per operation, kept in HDR histograms.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use serde::Serialize;

use crate::mix::Op;

/// How one request ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// A status the operation expects (2xx, or a 409 a cancel may meet).
    Ok,
    /// Any other HTTP status.
    Status(u16),
    /// No answer: connection error or client timeout.
    Transport(&'static str),
}

impl Outcome {
    fn error_key(&self) -> Option<String> {
        match self {
            Outcome::Ok => None,
            Outcome::Status(code) => Some(code.to_string()),
            Outcome::Transport(kind) => Some((*kind).to_owned()),
        }
    }
}

/// Latencies up to this are recorded exactly (3 significant digits); longer
/// ones are clamped to it.
const MAX_LATENCY_US: u64 = 120_000_000;

struct OpStats {
    latency_us: Histogram<u64>,
    errors: BTreeMap<String, u64>,
}

impl OpStats {
    fn new() -> OpStats {
        OpStats {
            latency_us: Histogram::new_with_bounds(1, MAX_LATENCY_US, 3)
                .expect("valid histogram bounds"),
            errors: BTreeMap::new(),
        }
    }
}

/// Records what is scheduled inside the measured window `[from, until)`; the
/// warm-up before it and the drain after it are left out.
pub struct Recorder {
    from: Instant,
    until: Instant,
    ops: BTreeMap<Op, OpStats>,
}

/// The summary of one operation.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct OpSummary {
    pub count: u64,
    /// Requests per second over the measured window, errors included.
    pub rate: f64,
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
    /// By HTTP status, or `timeout`/`connect`/`io` when there was no answer.
    pub errors: BTreeMap<String, u64>,
}

impl Recorder {
    pub fn new(from: Instant, until: Instant) -> Recorder {
        Recorder {
            from,
            until,
            ops: BTreeMap::new(),
        }
    }

    pub fn in_window(&self, scheduled: Instant) -> bool {
        scheduled >= self.from && scheduled < self.until
    }

    /// `scheduled` is when the request was due (not when it was sent), so
    /// time spent waiting for a free virtual user counts as latency.
    pub fn record(&mut self, op: Op, scheduled: Instant, finished: Instant, outcome: &Outcome) {
        if !self.in_window(scheduled) {
            return;
        }
        let stats = self.ops.entry(op).or_insert_with(OpStats::new);
        let micros = finished.saturating_duration_since(scheduled).as_micros() as u64;
        stats
            .latency_us
            .saturating_record(micros.clamp(1, MAX_LATENCY_US));
        if let Some(key) = outcome.error_key() {
            *stats.errors.entry(key).or_insert(0) += 1;
        }
    }

    pub fn count(&self, op: Op) -> u64 {
        self.ops.get(&op).map_or(0, |s| s.latency_us.len())
    }

    pub fn error_count(&self) -> u64 {
        self.ops.values().flat_map(|s| s.errors.values()).sum()
    }

    pub fn window(&self) -> Duration {
        self.until.duration_since(self.from)
    }

    pub fn summary(&self) -> BTreeMap<&'static str, OpSummary> {
        let seconds = self.window().as_secs_f64().max(f64::MIN_POSITIVE);
        let ms = |us: u64| us as f64 / 1000.0;
        self.ops
            .iter()
            .map(|(op, stats)| {
                let h = &stats.latency_us;
                let summary = OpSummary {
                    count: h.len(),
                    rate: h.len() as f64 / seconds,
                    p50_ms: ms(h.value_at_quantile(0.50)),
                    p90_ms: ms(h.value_at_quantile(0.90)),
                    p99_ms: ms(h.value_at_quantile(0.99)),
                    max_ms: ms(h.max()),
                    errors: stats.errors.clone(),
                };
                (op.name(), summary)
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_rate_and_errors_of_a_known_distribution() {
        let t0 = Instant::now();
        let mut rec = Recorder::new(t0, t0 + Duration::from_secs(10));
        // 1..=100 ms, one each: p50 = 50 ms, p90 = 90 ms, p99 = 99 ms.
        for ms in 1..=100u64 {
            let outcome = if ms > 97 {
                Outcome::Status(503)
            } else {
                Outcome::Ok
            };
            rec.record(Op::GetProduct, t0, t0 + Duration::from_millis(ms), &outcome);
        }
        rec.record(Op::Browse, t0, t0, &Outcome::Transport("timeout"));
        let summary = rec.summary();
        let get = &summary["get-product"];
        assert_eq!(get.count, 100);
        assert!((get.rate - 10.0).abs() < 1e-9);
        // HDR precision: 3 significant digits.
        assert!((get.p50_ms - 50.0).abs() < 0.1, "{get:?}");
        assert!((get.p90_ms - 90.0).abs() < 0.1, "{get:?}");
        assert!((get.p99_ms - 99.0).abs() < 0.1, "{get:?}");
        assert!((get.max_ms - 100.0).abs() < 0.1, "{get:?}");
        assert_eq!(get.errors, BTreeMap::from([("503".to_owned(), 3)]));
        assert_eq!(
            summary["browse"].errors,
            BTreeMap::from([("timeout".to_owned(), 1)])
        );
        assert_eq!(rec.error_count(), 4);
    }

    #[test]
    fn latency_counts_from_the_due_time_not_the_send_time() {
        let t0 = Instant::now();
        let mut rec = Recorder::new(t0, t0 + Duration::from_secs(1));
        // Due at t0, sent 40 ms later (every virtual user was busy), answered
        // in 2 ms: the user waited 42 ms.
        rec.record(
            Op::CreateOrder,
            t0,
            t0 + Duration::from_millis(42),
            &Outcome::Ok,
        );
        let p50 = rec.summary()["create-order"].p50_ms;
        assert!((p50 - 42.0).abs() < 0.1, "{p50}");
    }

    #[test]
    fn warm_up_and_drain_are_not_recorded() {
        let t0 = Instant::now();
        let from = t0 + Duration::from_secs(2);
        let until = from + Duration::from_secs(3);
        let mut rec = Recorder::new(from, until);
        let one = |at: Instant, rec: &mut Recorder| {
            rec.record(Op::Browse, at, at + Duration::from_millis(1), &Outcome::Ok)
        };
        one(t0, &mut rec); // warm-up
        one(from, &mut rec); // first measured
        one(until - Duration::from_millis(1), &mut rec); // last measured
        one(until, &mut rec); // after the window
        assert_eq!(rec.count(Op::Browse), 2);
        assert_eq!(rec.count(Op::GetProduct), 0);
    }
}
