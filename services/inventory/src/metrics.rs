//! Inventory's Prometheus metrics (served at `GET /metrics` on
//! `METRICS_PORT`, prefixed `ecommerce_`).

use platform::metrics::Labels;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;

platform::service_metrics! {
    apply_outcomes: Family<Labels, Counter> = (
        "inventory_apply_order",
        "ApplyOrder answers by outcome and whether the outcome was replayed",
    ),
}
