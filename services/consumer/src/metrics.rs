//! The Consumer's Prometheus metrics (served at `GET /metrics` on
//! `CONSUMER_ADDR`, prefixed `ecommerce_`).

use std::sync::OnceLock;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;

type Labels = Vec<(&'static str, &'static str)>;

#[derive(Clone, Default)]
pub struct Metrics {
    processed: Family<Labels, Counter>,
    failures: Family<Labels, Counter>,
    dead_lettered: Family<Labels, Counter>,
    deferred: Family<Labels, Counter>,
    pending: Gauge,
    ack_pending: Gauge,
}

impl Metrics {
    /// The process's metrics, registered in the process registry the first
    /// time (tests that need none use `Metrics::default()`).
    pub fn register() -> Self {
        static METRICS: OnceLock<Metrics> = OnceLock::new();
        METRICS.get_or_init(Metrics::create).clone()
    }

    fn create() -> Self {
        let metrics = Metrics::default();
        platform::metrics::register(
            "consumer_events_processed",
            "Order events handled to the end and acknowledged, by event, outcome and whether Inventory had seen the order already",
            metrics.processed.clone(),
        );
        platform::metrics::register(
            "consumer_failures",
            "Failed attempts at handling an order event, by event and kind (transient: retried, handed back for later after the bound; permanent: dead-lettered after the bound)",
            metrics.failures.clone(),
        );
        platform::metrics::register(
            "consumer_dead_lettered",
            "Order events written to the dead-letter stream, by event",
            metrics.dead_lettered.clone(),
        );
        platform::metrics::register(
            "consumer_deferred",
            "Order events handed back for a delayed redelivery after failing transiently too many times in a row, by event",
            metrics.deferred.clone(),
        );
        platform::metrics::register(
            "consumer_pending",
            "Messages in the stream not yet delivered to the durable consumer (its lag)",
            metrics.pending.clone(),
        );
        platform::metrics::register(
            "consumer_ack_pending",
            "Messages delivered to the durable consumer and not yet acknowledged",
            metrics.ack_pending.clone(),
        );
        metrics
    }

    /// Metrics that are counted but not exported (unit tests).
    pub fn unregistered() -> Self {
        Metrics::default()
    }

    pub fn count_processed(&self, event: &'static str, outcome: &'static str, replayed: bool) {
        let replayed = if replayed { "true" } else { "false" };
        self.processed
            .get_or_create(&vec![
                ("event", event),
                ("outcome", outcome),
                ("replayed", replayed),
            ])
            .inc();
    }

    pub fn count_failure(&self, event: &'static str, kind: &'static str) {
        self.failures
            .get_or_create(&vec![("event", event), ("kind", kind)])
            .inc();
    }

    pub fn count_dead_letter(&self, event: &'static str) {
        self.dead_lettered
            .get_or_create(&vec![("event", event)])
            .inc();
    }

    pub fn count_deferred(&self, event: &'static str) {
        self.deferred.get_or_create(&vec![("event", event)]).inc();
    }

    pub fn set_lag(&self, pending: u64, ack_pending: usize) {
        self.pending.set(i64::try_from(pending).unwrap_or(i64::MAX));
        self.ack_pending
            .set(i64::try_from(ack_pending).unwrap_or(i64::MAX));
    }
}
