//! Prometheus metrics of the operator and its HTTP endpoint (`/metrics`,
//! `/healthz`, `/readyz`).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use crate::error::Error;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ErrorLabels {
    pub error: String,
}

/// What the controller counts.
#[derive(Clone)]
pub struct Metrics {
    pub reconciliations: Counter,
    pub failures: Family<ErrorLabels, Counter>,
    pub duration: Histogram,
    /// 1 while this replica holds the leader Lease.
    pub leader: Gauge,
}

impl Metrics {
    pub fn register(registry: &mut Registry) -> Self {
        let metrics = Metrics {
            reconciliations: Counter::default(),
            failures: Family::default(),
            // 5 ms .. ~20 s
            duration: Histogram::new(exponential_buckets(0.005, 2.0, 13)),
            leader: Gauge::default(),
        };
        registry.register(
            "ecommerce_operator_reconciliations",
            "Reconciliations started",
            metrics.reconciliations.clone(),
        );
        registry.register(
            "ecommerce_operator_reconcile_failures",
            "Reconciliations that failed, by error kind",
            metrics.failures.clone(),
        );
        registry.register(
            "ecommerce_operator_reconcile_duration_seconds",
            "How long reconciliations took",
            metrics.duration.clone(),
        );
        registry.register(
            "ecommerce_operator_leader",
            "1 while this replica is the leader",
            metrics.leader.clone(),
        );
        metrics
    }

    /// Counts a reconciliation and observes its duration when the guard drops.
    pub fn reconcile_started(&self) -> ReconcileTimer {
        self.reconciliations.inc();
        ReconcileTimer {
            started: Instant::now(),
            histogram: self.duration.clone(),
        }
    }

    pub fn reconcile_failed(&self, error: &Error) {
        self.failures
            .get_or_create(&ErrorLabels {
                error: error.metric_label().to_owned(),
            })
            .inc();
    }

    pub fn failure_count(&self, label: &str) -> u64 {
        self.failures
            .get_or_create(&ErrorLabels {
                error: label.to_owned(),
            })
            .get()
    }
}

/// Observes the elapsed time on drop, so early returns are measured too.
pub struct ReconcileTimer {
    started: Instant,
    histogram: Histogram,
}

impl Drop for ReconcileTimer {
    fn drop(&mut self) {
        self.histogram.observe(self.started.elapsed().as_secs_f64());
    }
}

/// What the HTTP endpoint reports.
pub struct Health {
    pub registry: Registry,
    /// Set once the operator reached the API server and found the CRD.
    pub ready: AtomicBool,
}

impl Health {
    pub fn new(registry: Registry) -> Arc<Self> {
        Arc::new(Health {
            registry,
            ready: AtomicBool::new(false),
        })
    }

    pub fn set_ready(&self) {
        self.ready.store(true, Ordering::SeqCst);
    }
}

pub fn router(health: Arc<Health>) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .with_state(health)
}

async fn metrics(State(health): State<Arc<Health>>) -> impl IntoResponse {
    let mut body = String::new();
    match encode(&mut body, &health.registry) {
        Ok(()) => (
            StatusCode::OK,
            [(
                header::CONTENT_TYPE,
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
            )],
            body,
        )
            .into_response(),
        Err(_) => StatusCode::INTERNAL_SERVER_ERROR.into_response(),
    }
}

async fn readyz(State(health): State<Arc<Health>>) -> impl IntoResponse {
    if health.ready.load(Ordering::SeqCst) {
        (StatusCode::OK, "ready")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "starting")
    }
}

#[cfg(test)]
mod tests {
    use axum::body::Body;
    use axum::http::{Request, StatusCode};
    use prometheus_client::registry::Registry;
    use tower::ServiceExt;

    use super::{Health, Metrics, router};
    use crate::error::Error;

    async fn get(health: &std::sync::Arc<Health>, path: &str) -> (StatusCode, String) {
        let response = router(health.clone())
            .oneshot(Request::get(path).body(Body::empty()).unwrap())
            .await
            .unwrap();
        let status = response.status();
        let bytes = axum::body::to_bytes(response.into_body(), 1 << 20)
            .await
            .unwrap();
        (status, String::from_utf8(bytes.to_vec()).unwrap())
    }

    #[tokio::test]
    async fn metrics_count_reconciliations_failures_and_durations() {
        let mut registry = Registry::default();
        let metrics = Metrics::register(&mut registry);
        let health = Health::new(registry);
        drop(metrics.reconcile_started());
        metrics.reconcile_failed(&Error::MissingObjectKey("metadata.uid"));
        metrics.leader.set(1);
        let (status, body) = get(&health, "/metrics").await;
        assert_eq!(status, StatusCode::OK);
        assert!(
            body.contains("ecommerce_operator_reconciliations_total 1"),
            "{body}"
        );
        assert!(
            body.contains(
                r#"ecommerce_operator_reconcile_failures_total{error="missing_object_key"} 1"#
            ),
            "{body}"
        );
        assert!(
            body.contains("ecommerce_operator_reconcile_duration_seconds_count 1"),
            "{body}"
        );
        assert!(body.contains("ecommerce_operator_leader 1"), "{body}");
    }

    #[tokio::test]
    async fn readiness_waits_for_the_api_server_while_liveness_does_not() {
        let health = Health::new(Registry::default());
        assert_eq!(get(&health, "/healthz").await.0, StatusCode::OK);
        assert_eq!(
            get(&health, "/readyz").await.0,
            StatusCode::SERVICE_UNAVAILABLE
        );
        health.set_ready();
        assert_eq!(get(&health, "/readyz").await.0, StatusCode::OK);
    }
}
