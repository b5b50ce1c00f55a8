//! The Consumer's Prometheus metrics (served at `GET /metrics` on
//! `METRICS_PORT`, prefixed `ecommerce_`).

use platform::metrics::Labels;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;

platform::service_metrics! {
    processed: Family<Labels, Counter> = (
        "consumer_events_processed",
        "Order events handled to the end and acknowledged, by event, outcome and whether Inventory had seen the order already",
    ),
    failures: Family<Labels, Counter> = (
        "consumer_failures",
        "Failed attempts at handling an order event, by event and kind (transient: retried, handed back for later after the bound; permanent: dead-lettered after the bound)",
    ),
    dead_lettered: Family<Labels, Counter> = (
        "consumer_dead_lettered",
        "Order events written to the dead-letter stream, by event",
    ),
    deferred: Family<Labels, Counter> = (
        "consumer_deferred",
        "Order events handed back for a delayed redelivery after failing transiently too many times in a row, by event",
    ),
    pending: Gauge = (
        "consumer_pending",
        "Messages in the stream not yet delivered to the durable consumer (its lag)",
    ),
    ack_pending: Gauge = (
        "consumer_ack_pending",
        "Messages delivered to the durable consumer and not yet acknowledged",
    ),
}

impl Metrics {
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
