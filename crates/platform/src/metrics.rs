//! Prometheus metrics: one registry per process, served as text at
//! `GET /metrics` on a port of their own (`METRICS_PORT`), so that a network
//! policy can admit the scraper to the metrics and nothing else, and the
//! gateway's public port does not publish them.

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

/// A service's metrics, made and registered by `create` the first time and
/// the same handles every time after: once per process, however many
/// servers it runs (tests run several services in one process).
pub fn once<M: Clone + Send + Sync + 'static>(create: impl FnOnce() -> M) -> M {
    use std::any::{Any, TypeId};
    use std::collections::HashMap;
    type ByType = Mutex<HashMap<TypeId, Box<dyn Any + Send + Sync>>>;
    static MADE: OnceLock<ByType> = OnceLock::new();
    let mut made = MADE
        .get_or_init(Default::default)
        .lock()
        .expect("metrics made");
    made.entry(TypeId::of::<M>())
        .or_insert_with(|| Box::new(create()))
        .downcast_ref::<M>()
        .expect("metrics of their own type")
        .clone()
}

/// Label pairs of a metric family, e.g. `[("event", "order.created")]`.
pub type Labels = Vec<(&'static str, &'static str)>;

/// Declares a service's metrics: a `Metrics` struct of metric handles
/// (`Default` gives unregistered ones, for tests) whose `register()` makes
/// and registers them once per process, each under `ecommerce_<name>` with
/// its help text.
#[macro_export]
macro_rules! service_metrics {
    ($($(#[$attr:meta])* $field:ident: $kind:ty = ($name:expr, $help:expr $(,)?),)*) => {
        #[derive(Clone, Default)]
        pub struct Metrics {
            $($(#[$attr])* pub $field: $kind,)*
        }

        impl Metrics {
            /// The process's metrics, registered the first time.
            pub fn register() -> Self {
                $crate::metrics::once(|| {
                    let metrics = Metrics::default();
                    $($crate::metrics::register($name, $help, metrics.$field.clone());)*
                    metrics
                })
            }
        }
    };
}

/// The current values in the Prometheus text format.
pub fn render() -> String {
    let mut out = String::new();
    let registry = registry().lock().expect("metrics registry");
    encode(&mut out, &registry).expect("encode metrics");
    out
}

/// The metrics port of each service when `METRICS_PORT` is not set: its
/// service port's last two digits after 90 (the gateway's 8080: 9080).
pub fn default_port(service: &str) -> u16 {
    match service {
        "gateway" => 9080,
        "inventory" => 9051,
        "order" => 9052,
        "user" => 9053,
        "producer" => 9054,
        "consumer" => 9055,
        _ => 9090,
    }
}

/// `GET /metrics` as an axum router.
pub fn router() -> axum::Router {
    use axum::http::header::CONTENT_TYPE;
    use axum::routing::get;
    axum::Router::new().route(
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
}

/// `GET /healthz` (liveness) as an axum router, merged into every gRPC
/// server by [`crate::grpc::serve_ready`].
pub fn http_routes() -> axum::Router {
    use axum::routing::get;
    axum::Router::new().route("/healthz", get(|| async { "ok" }))
}

/// Binds `0.0.0.0:METRICS_PORT` (default [`default_port`]).
pub async fn bind(service: &str) -> anyhow::Result<tokio::net::TcpListener> {
    let port: u16 = crate::settings::Env::process()
        .parse_or(&crate::settings::METRICS_PORT, default_port(service))?;
    tokio::net::TcpListener::bind(("0.0.0.0", port))
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen on METRICS_PORT {port}: {e}"))
}

/// Serves [`router`] on `listener` for as long as the process runs.
pub async fn serve(listener: tokio::net::TcpListener) {
    if let Err(e) = axum::serve(listener, router()).await {
        tracing::error!(error = %e, "the metrics server stopped");
    }
}
