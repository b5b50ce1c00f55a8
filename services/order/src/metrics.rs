//! The Order service's Prometheus metrics (served at `GET /metrics` on
//! `METRICS_PORT`, prefixed `ecommerce_`): the outbox relay's and the
//! sweeper's.

use platform::metrics::Labels;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;

platform::service_metrics! {
    outbox_backlog: Gauge = (
        "order_outbox_backlog",
        "Outbox records not yet handed to the Producer",
    ),
    relayed: Counter = (
        "order_outbox_relayed",
        "Outbox records the Producer confirmed and the relay marked sent",
    ),
    relay_errors: Counter = (
        "order_outbox_relay_errors",
        "Failed relay attempts (Producer or database unavailable, unpublishable records)",
    ),
    pruned: Counter = (
        "order_outbox_pruned",
        "Sent outbox records deleted after OUTBOX_RETENTION_SECONDS",
    ),
    pending_overdue: Gauge = (
        "order_pending_overdue",
        "Orders PENDING for longer than ORDER_PENDING_REPUBLISH_AFTER_MS at the last sweep",
    ),
    pending_swept: Family<Labels, Counter> = (
        "order_pending_swept",
        "What the sweeper did to orders left PENDING, by action (republished, rejected_unpublishable, rejected_timeout)",
    ),
}
