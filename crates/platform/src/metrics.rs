//! Prometheus metrics: one registry per process, served as text at
//! `GET /metrics` on the service's own port (HTTP/1.1 beside gRPC).

use std::sync::{Mutex, OnceLock};

use prometheus_client::encoding::text::encode;
use prometheus_client::registry::{Metric, Registry};

fn registry() -> &'static Mutex<Registry> {
    static REGISTRY: OnceLock<Mutex<Registry>> = OnceLock::new();
    REGISTRY.get_or_init(|| Mutex::new(Registry::with_prefix("ecommerce")))
}

/// Registers a metric under `ecommerce_<name>`. Register each name once, at
/// start-up; the metric handle is cheap to clone and update anywhere.
pub fn register(name: &str, help: &str, metric: impl Metric) {
    registry()
        .lock()
        .expect("metrics registry")
        .register(name, help, metric);
}

/// The current values in the Prometheus text format.
pub fn render() -> String {
    let mut out = String::new();
    let registry = registry().lock().expect("metrics registry");
    encode(&mut out, &registry).expect("encode metrics");
    out
}

/// `GET /metrics` and `GET /healthz` (liveness) as an axum router, merged
/// into every gRPC server by [`crate::grpc::serve`].
pub fn http_routes() -> axum::Router {
    use axum::http::header::CONTENT_TYPE;
    use axum::routing::get;
    axum::Router::new()
        .route(
            "/metrics",
            get(|| async {
                (
                    [(
                        CONTENT_TYPE,
                        "application/openmetrics-text; version=1.0.0; charset=utf-8",
                    )],
                    render(),
                )
            }),
        )
        .route("/healthz", get(|| async { "ok" }))
}
