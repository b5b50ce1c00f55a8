//! Request logging, tracing and metrics: one span and one log line per
//! request (method, path, status, latency, trace id), Prometheus counters and
//! latency histograms by route and status.

use std::sync::OnceLock;
use std::time::Instant;

use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::header::HeaderValue;
use actix_web::middleware::Next;
use opentelemetry::trace::TraceContextExt;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use tracing::Instrument;
use tracing_opentelemetry::OpenTelemetrySpanExt;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    method: String,
    route: String,
    status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteLabels {
    method: String,
    route: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ServiceLabels {
    service: String,
}

struct Metrics {
    requests: Family<RequestLabels, Counter>,
    latency: Family<RouteLabels, Histogram>,
    breaker_rejections: Family<ServiceLabels, Counter>,
}

fn new_latency_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.001, 2.0, 15))
}

/// Registered once per process, whatever the number of apps built.
fn metrics() -> &'static Metrics {
    static METRICS: OnceLock<Metrics> = OnceLock::new();
    METRICS.get_or_init(|| {
        let requests = Family::<RequestLabels, Counter>::default();
        let latency = Family::<RouteLabels, Histogram>::new_with_constructor(
            new_latency_histogram as fn() -> Histogram,
        );
        let breaker_rejections = Family::<ServiceLabels, Counter>::default();
        platform::metrics::register(
            "gateway_http_requests",
            "HTTP requests by method, route and status",
            requests.clone(),
        );
        platform::metrics::register(
            "gateway_http_request_duration_seconds",
            "HTTP request latency by method and route",
            latency.clone(),
        );
        platform::metrics::register(
            "gateway_circuit_breaker_rejections",
            "Requests answered 503 at once because a service's circuit breaker was open",
            breaker_rejections.clone(),
        );
        Metrics {
            requests,
            latency,
            breaker_rejections,
        }
    })
}

/// Makes sure the metrics exist before the first request (so `/metrics`
/// lists them from the start).
pub fn register_metrics() {
    metrics();
}

pub fn breaker_rejected(service: &str) {
    metrics()
        .breaker_rejections
        .get_or_create(&ServiceLabels {
            service: service.to_owned(),
        })
        .inc();
}

struct HeaderExtractor<'a>(&'a actix_web::http::header::HeaderMap);

impl opentelemetry::propagation::Extractor for HeaderExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(|k| k.as_str()).collect()
    }
}

/// The method as a label: the standard ones, else `OTHER` (a client may
/// invent any number of methods, and each label value would be a series kept
/// forever).
fn method_label(method: &actix_web::http::Method) -> String {
    use actix_web::http::Method;
    let known = [
        Method::GET,
        Method::HEAD,
        Method::POST,
        Method::PUT,
        Method::PATCH,
        Method::DELETE,
        Method::OPTIONS,
        Method::CONNECT,
        Method::TRACE,
    ];
    if known.contains(method) {
        method.to_string()
    } else {
        "OTHER".to_owned()
    }
}

/// The middleware: wraps the whole app.
pub async fn observe(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    let started = Instant::now();
    let method = req.method().to_string();
    let label = method_label(req.method());
    let path = req.path().to_owned();
    let span = tracing::info_span!(
        "http.request",
        otel.name = %format!("{method} {path}"),
        otel.kind = "server",
        http.method = %method,
        http.target = %path,
    );
    platform::telemetry::set_parent_from(&span, &HeaderExtractor(req.headers()));
    let trace_id = span.in_scope(platform::telemetry::current_trace_id);

    let result = next.call(req).instrument(span.clone()).await;

    let (status, route) = match &result {
        Ok(response) => (response.status(), response.request().match_pattern()),
        Err(error) => (error.as_response_error().status_code(), None),
    };
    // Unmatched paths share one label: a scanner must not create series.
    let route = route.unwrap_or_else(|| "unmatched".to_owned());
    // Name the span by its route, not its path: ids in paths would make every
    // request's span name unique.
    // The OTel span exists already (its trace id was read above), so rename
    // it directly: recording `otel.name` now would not reach it.
    span.context()
        .span()
        .update_name(format!("{method} {route}"));
    let elapsed = started.elapsed();
    let m = metrics();
    m.requests
        .get_or_create(&RequestLabels {
            method: label.clone(),
            route: route.clone(),
            status: status.as_u16(),
        })
        .inc();
    m.latency
        .get_or_create(&RouteLabels {
            method: label,
            route,
        })
        .observe(elapsed.as_secs_f64());
    // The log formatter adds the span's trace_id and span_id to the line.
    span.in_scope(|| {
        let latency_ms = elapsed.as_secs_f64() * 1000.0;
        if status.is_server_error() {
            tracing::warn!(%method, %path, status = status.as_u16(), latency_ms, "request");
        } else {
            tracing::info!(%method, %path, status = status.as_u16(), latency_ms, "request");
        }
    });
    let mut response = result?;
    if let Some(id) = trace_id.and_then(|id| HeaderValue::from_str(&id).ok()) {
        response.headers_mut().insert(
            actix_web::http::header::HeaderName::from_static("x-trace-id"),
            id,
        );
    }
    Ok(response)
}
