//! The Producer's Prometheus metrics (served at `GET /metrics` on
//! `METRICS_PORT`, prefixed `ecommerce_`).

use platform::metrics::Labels;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;

platform::service_metrics! {
    published: Family<Labels, Counter> = (
        "producer_events_published",
        "Order events acknowledged by the stream, by event and whether the stream had it already",
    ),
}
