//! The Producer's Prometheus metrics (served at `GET /metrics` on
//! `METRICS_PORT`, prefixed `ecommerce_`).

use std::sync::OnceLock;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;

type Labels = Vec<(&'static str, &'static str)>;

#[derive(Clone, Default)]
pub struct Metrics {
    pub published: Family<Labels, Counter>,
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
            "producer_events_published",
            "Order events acknowledged by the stream, by event and whether the stream had it already",
            metrics.published.clone(),
        );
        metrics
    }
}
