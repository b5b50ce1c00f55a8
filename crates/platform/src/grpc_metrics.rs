//! Request metrics of every gRPC server: calls by method and status code,
//! failed calls (any code but OK), and their latency, recorded by a tower
//! layer that `grpc::serve_ready` installs.

use std::future::Future;
use std::pin::Pin;
use std::sync::OnceLock;
use std::task::{Context, Poll};
use std::time::Instant;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use tonic::codegen::http;

type MethodStatus = Vec<(&'static str, String)>;
type Method = Vec<(&'static str, String)>;

struct GrpcMetrics {
    calls: Family<MethodStatus, Counter>,
    errors: Family<MethodStatus, Counter>,
    latency: Family<Method, Histogram>,
}

fn metrics() -> &'static GrpcMetrics {
    static METRICS: OnceLock<GrpcMetrics> = OnceLock::new();
    METRICS.get_or_init(|| {
        let calls = Family::<MethodStatus, Counter>::default();
        let errors = Family::<MethodStatus, Counter>::default();
        let latency = Family::<Method, Histogram>::new_with_constructor(|| {
            // 1 ms .. ~16 s
            Histogram::new(exponential_buckets(0.001, 2.0, 15))
        });
        crate::metrics::register(
            "grpc_server_calls",
            "gRPC calls handled, by method and status code",
            calls.clone(),
        );
        crate::metrics::register(
            "grpc_server_errors",
            "gRPC calls answered with a status other than OK, by method and status code",
            errors.clone(),
        );
        crate::metrics::register(
            "grpc_server_call_duration_seconds",
            "Time to the response headers of gRPC calls, by method",
            latency.clone(),
        );
        GrpcMetrics {
            calls,
            errors,
            latency,
        }
    })
}

/// The method label: the request's path, unless the server answered that it
/// has no such method (UNIMPLEMENTED) or refused the caller before looking
/// (no internal token). Any caller can send any path; only the methods the
/// server really has may become series, so their number stays bounded.
fn method_label(path: String, code: tonic::Code, refused: bool) -> String {
    if refused || code == tonic::Code::Unimplemented {
        "unknown".to_owned()
    } else {
        path
    }
}

/// The layer; cheap to clone.
#[derive(Debug, Clone, Copy, Default)]
pub struct MetricsLayer;

impl<S> tower::Layer<S> for MetricsLayer {
    type Service = MetricsService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        metrics();
        MetricsService { inner }
    }
}

#[derive(Debug, Clone)]
pub struct MetricsService<S> {
    inner: S,
}

impl<S, B, ResBody> tower::Service<http::Request<B>> for MetricsService<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<ResBody>>,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        let is_grpc = request
            .headers()
            .get(http::header::CONTENT_TYPE)
            .is_some_and(|v| v.as_bytes().starts_with(b"application/grpc"));
        let method = request.uri().path().to_owned();
        let started = Instant::now();
        let future = self.inner.call(request);
        Box::pin(async move {
            let result = future.await;
            if is_grpc {
                // Errors are "trailers-only" responses with the status in the
                // headers; a successful unary call has it in the trailers.
                let (code, refused) = match &result {
                    Ok(response) => (
                        response
                            .headers()
                            .get("grpc-status")
                            .and_then(|v| v.to_str().ok())
                            .map(|c| tonic::Code::from_bytes(c.as_bytes()))
                            .unwrap_or(tonic::Code::Ok),
                        response
                            .extensions()
                            .get::<crate::internal_auth::Refused>()
                            .is_some(),
                    ),
                    Err(_) => (tonic::Code::Unknown, false),
                };
                let m = metrics();
                let method = method_label(method, code, refused);
                let labels = vec![("method", method.clone()), ("code", format!("{code:?}"))];
                if code != tonic::Code::Ok {
                    m.errors.get_or_create(&labels).inc();
                }
                m.calls.get_or_create(&labels).inc();
                m.latency
                    .get_or_create(&vec![("method", method)])
                    .observe(started.elapsed().as_secs_f64());
            }
            result
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn invented_paths_share_one_label() {
        assert_eq!(
            method_label("/x.Y/Invented1".into(), tonic::Code::Unimplemented, false),
            "unknown"
        );
        assert_eq!(
            method_label("/x.Y/Invented2".into(), tonic::Code::Unauthenticated, true),
            "unknown"
        );
        // A method's own UNAUTHENTICATED (a wrong password) keeps its name.
        let login = "/ecommerce.user.v1.UserService/Authenticate";
        assert_eq!(
            method_label(login.into(), tonic::Code::Unauthenticated, false),
            login
        );
    }
}
