//! The Order service's Prometheus metrics (served at `GET /metrics` on
//! `METRICS_PORT`, prefixed `ecommerce_`): the outbox relay's and the
//! sweeper's.

use std::sync::OnceLock;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;

type Labels = Vec<(&'static str, &'static str)>;

#[derive(Clone)]
pub struct Metrics {
    pub outbox_backlog: Gauge,
    pub relayed: Counter,
    pub relay_errors: Counter,
    pub pruned: Counter,
    pub pending_overdue: Gauge,
    pub pending_swept: Family<Labels, Counter>,
}

impl Metrics {
    /// The process's metrics, registered in the process registry the first
    /// time: once per process, however many relays and sweepers it runs
    /// (tests run several services in one process).
    pub fn register() -> Metrics {
        static METRICS: OnceLock<Metrics> = OnceLock::new();
        METRICS.get_or_init(|| {
        let metrics = Metrics {
            outbox_backlog: Gauge::default(),
            relayed: Counter::default(),
            relay_errors: Counter::default(),
            pruned: Counter::default(),
            pending_overdue: Gauge::default(),
            pending_swept: Family::default(),
        };
        platform::metrics::register(
            "order_outbox_backlog",
            "Outbox records not yet handed to the Producer",
            metrics.outbox_backlog.clone(),
        );
        platform::metrics::register(
            "order_outbox_relayed",
            "Outbox records the Producer confirmed and the relay marked sent",
            metrics.relayed.clone(),
        );
        platform::metrics::register(
            "order_outbox_relay_errors",
            "Failed relay attempts (Producer or database unavailable, unpublishable records)",
            metrics.relay_errors.clone(),
        );
        platform::metrics::register(
            "order_outbox_pruned",
            "Sent outbox records deleted after OUTBOX_RETENTION_SECONDS",
            metrics.pruned.clone(),
        );
        platform::metrics::register(
            "order_pending_overdue",
            "Orders PENDING for longer than ORDER_PENDING_REPUBLISH_AFTER_MS at the last sweep",
            metrics.pending_overdue.clone(),
        );
        platform::metrics::register(
            "order_pending_swept",
            "What the sweeper did to orders left PENDING, by action (republished, rejected_unpublishable, rejected_timeout)",
            metrics.pending_swept.clone(),
        );
        metrics
    })
        .clone()
    }
}
