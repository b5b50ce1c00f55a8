//! Inventory's Prometheus metrics (served at `GET /metrics` on
//! `METRICS_PORT`, prefixed `ecommerce_`).

use std::sync::OnceLock;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;

type Labels = Vec<(&'static str, &'static str)>;

#[derive(Clone, Default)]
pub struct Metrics {
    pub apply_outcomes: Family<Labels, Counter>,
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
            "inventory_apply_order",
            "ApplyOrder answers by outcome and whether the outcome was replayed",
            metrics.apply_outcomes.clone(),
        );
        metrics
    }
}
