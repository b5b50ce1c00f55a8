//! The User service's Prometheus metrics (served at `GET /metrics` on
//! `METRICS_PORT`, prefixed `ecommerce_`).

use platform::metrics::Labels;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;

platform::service_metrics! {
    registrations: Family<Labels, Counter> = (
        "user_registrations",
        "Registrations by outcome (created, taken, invalid, busy, failed)",
    ),
    logins: Family<Labels, Counter> = (
        "user_logins",
        "Logins by outcome (ok, refused, invalid, failed): a rise of refused ones is someone guessing",
    ),
}
