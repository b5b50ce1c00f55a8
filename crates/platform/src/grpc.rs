//! gRPC plumbing shared by every service: the server (trace context taken from
//! incoming metadata), lazily connected client channels with a deadline on
//! every call (trace context injected), and error details on statuses.

use std::future::Future;
use std::time::Duration;

use prost::Message;
use tokio::net::TcpListener;
use tonic::codegen::http;
use tonic::metadata::{MetadataKey, MetadataMap, MetadataValue};
use tonic::service::Interceptor;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::server::TcpIncoming;
use tonic::transport::{Channel, Endpoint, Server};
use tonic::{Code, Status};

use crate::config::{CallSettings, ServiceAddr};
use proto::common::v1::{ErrorDetail, FieldViolation};

/// A server builder whose requests each get a span, child of the caller's
/// trace when the request carries a `traceparent`.
pub fn server() -> Server {
    Server::builder()
        .http2_keepalive_interval(Some(Duration::from_secs(30)))
        .trace_fn(|request: &http::Request<()>| {
            let span = tracing::info_span!(
                "grpc.server",
                otel.name = %request.uri().path(),
                otel.kind = "server",
                rpc.system = "grpc",
            );
            crate::telemetry::set_parent_from(&span, &HeaderExtractor(request.headers()));
            span
        })
}

/// Serves `routes` on `listener` until `shutdown` resolves, with plain
/// HTTP/1.1 `GET /healthz` and `GET /readyz` (from `readiness`, whose reporter
/// must be the one of the health service in `routes`) on the same port
/// (`GET /metrics` has a port of its own: [`crate::metrics`]). When
/// `shutdown` resolves the service turns NOT_SERVING, then drains in-flight
/// calls. Services reach it through [`crate::service::GrpcService`].
pub async fn serve_ready(
    routes: tonic::service::Routes,
    listener: TcpListener,
    readiness: &crate::readiness::Readiness,
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<()> {
    let http = crate::metrics::http_routes().merge(readiness.http_routes());
    let readiness = readiness.clone();
    let shutdown = async move {
        shutdown.await;
        readiness.shutting_down().await;
    };
    let mut routes = routes;
    let merged = std::mem::take(routes.axum_router_mut()).merge(http);
    *routes.axum_router_mut() = merged;
    server()
        .accept_http1(true)
        .layer(crate::grpc_metrics::MetricsLayer)
        .layer(crate::internal_auth::RequireTokenLayer)
        .add_routes(routes)
        .serve_with_incoming_shutdown(accepted_without_delay(listener), shutdown)
        .await?;
    Ok(())
}

/// The connections `listener` accepts, with `TCP_NODELAY` set on each (the
/// server builder's `tcp_nodelay` only applies to listeners it binds itself);
/// also for tests' stand-in servers, so they answer as the services do.
/// Without it a piece of an answer written while an earlier one is not yet
/// acknowledged waits for the caller's delayed ACK (40 ms and more):
/// BENCHMARKS.md, "Nagle".
pub fn accepted_without_delay(listener: TcpListener) -> TcpIncoming {
    TcpIncoming::from(listener).with_nodelay(Some(true))
}

struct HeaderExtractor<'a>(&'a http::HeaderMap);

impl opentelemetry::propagation::Extractor for HeaderExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(|k| k.as_str()).collect()
    }
}

struct MetadataInjector<'a>(&'a mut MetadataMap);

impl opentelemetry::propagation::Injector for MetadataInjector<'_> {
    fn set(&mut self, key: &str, value: String) {
        if let (Ok(key), Ok(value)) = (
            MetadataKey::from_bytes(key.as_bytes()),
            MetadataValue::try_from(value.as_str()),
        ) {
            self.0.insert(key, value);
        }
    }
}

/// Puts the current trace context, and the internal token when one is
/// configured ([`crate::internal_auth`]), into every outgoing request.
#[derive(Debug, Clone, Copy, Default)]
pub struct PropagateTrace;

impl Interceptor for PropagateTrace {
    fn call(&mut self, mut request: tonic::Request<()>) -> Result<tonic::Request<()>, Status> {
        crate::telemetry::inject_current(&mut MetadataInjector(request.metadata_mut()));
        if let Some(token) = crate::internal_auth::token()
            && let Ok(value) = MetadataValue::try_from(token)
        {
            request
                .metadata_mut()
                .insert(crate::internal_auth::HEADER, value);
        }
        Ok(request)
    }
}

/// The channel type every generated client is built on.
pub type TracedChannel = InterceptedService<Channel, PropagateTrace>;

/// A channel to `addr` that connects on first use (and reconnects by itself),
/// with a connect timeout and a deadline on every call.
pub fn channel(addr: &ServiceAddr, settings: CallSettings) -> anyhow::Result<TracedChannel> {
    Ok(lazy_channel(&endpoint(addr, settings)?))
}

/// How to reach `addr`: its URI, the connect timeout and the deadline of
/// every call. Checked once; [`lazy_channel`] makes channels from it.
pub fn endpoint(addr: &ServiceAddr, settings: CallSettings) -> anyhow::Result<Endpoint> {
    Ok(Endpoint::from_shared(addr.dial_uri())
        .map_err(|e| anyhow::anyhow!("invalid address {addr}: {e}"))?
        .connect_timeout(settings.connect_timeout)
        .timeout(settings.request_timeout)
        .tcp_nodelay(true)
        .http2_keep_alive_interval(Duration::from_secs(30))
        .keep_alive_while_idle(true))
}

/// A channel that connects on first use. Its connection is driven by a task
/// spawned on the current Tokio runtime, so it must be made on the runtime
/// whose tasks will call through it.
pub fn lazy_channel(endpoint: &Endpoint) -> TracedChannel {
    InterceptedService::new(endpoint.connect_lazy(), PropagateTrace)
}

/// A status whose details carry a machine-readable reason and per-field
/// messages (decoded at the edge into problem+json).
pub fn status_with_detail(
    code: Code,
    message: impl Into<String>,
    reason: &str,
    violations: Vec<FieldViolation>,
) -> Status {
    let detail = ErrorDetail {
        reason: reason.to_owned(),
        field_violations: violations,
    };
    Status::with_details(code, message, detail.encode_to_vec().into())
}

/// INVALID_ARGUMENT with one violation per bad field.
pub fn invalid_argument(violations: Vec<FieldViolation>) -> Status {
    let message = violations
        .iter()
        .map(|v| format!("{}: {}", v.field, v.description))
        .collect::<Vec<_>>()
        .join("; ");
    status_with_detail(
        Code::InvalidArgument,
        message,
        "INVALID_ARGUMENT",
        violations,
    )
}

/// Builds one field violation.
pub fn violation(field: impl Into<String>, description: impl Into<String>) -> FieldViolation {
    FieldViolation {
        field: field.into(),
        description: description.into(),
    }
}

/// The details a service attached to `status`, if any.
pub fn error_detail(status: &Status) -> Option<ErrorDetail> {
    if status.details().is_empty() {
        return None;
    }
    ErrorDetail::decode(status.details()).ok()
}

/// Whether a failed call may succeed when simply tried again later: the
/// service is down, busy, timed out or lost a race (ABORTED: a serialization
/// failure or deadlock); the connection broke under the call; or the address
/// does not reach it (another service there, or a proxy without its route
/// yet, answers UNIMPLEMENTED, PERMISSION_DENIED or UNAUTHENTICATED).
/// Everything a service sent about the request itself is a verdict, INTERNAL
/// and UNKNOWN included: the same request fails the same way again, so
/// retrying it forever would only hold up the work behind it.
pub fn is_transient(status: &Status) -> bool {
    matches!(
        status.code(),
        Code::Unavailable
            | Code::DeadlineExceeded
            | Code::ResourceExhausted
            | Code::Aborted
            | Code::Cancelled
            | Code::Unimplemented
            | Code::PermissionDenied
            | Code::Unauthenticated
    ) || is_connection_failure(status)
}

/// Whether the client library made `status` from a failure of the connection
/// (the peer died or reset it mid-call, an HTTP/2 error), rather than the
/// server sending it: tonic reports those as UNKNOWN or INTERNAL with the
/// cause attached, while a status that came over the wire has no source. A
/// call still queued on a connection that closed (the peer was killed a
/// moment before) is CANCELLED by hyper, with the cause attached, like the
/// client's own deadline; a deadline has tonic's `TimeoutExpired` among its
/// causes.
pub fn is_connection_failure(status: &Status) -> bool {
    let source = std::error::Error::source(status);
    match status.code() {
        Code::Unknown | Code::Internal => source.is_some(),
        Code::Cancelled => source.is_some_and(|source| {
            !std::iter::successors(Some(source), |e| e.source())
                .any(|e| e.is::<tonic::TimeoutExpired>())
        }),
        _ => false,
    }
}

/// A client's view of a failed call: a broken connection is UNAVAILABLE (the
/// service could not be reached), everything else stays as the server said.
pub fn normalize_client_status(status: Status) -> Status {
    if is_connection_failure(&status) {
        Status::unavailable(format!("connection failed: {}", status.message()))
    } else {
        status
    }
}

/// One call's failure as an entry of a batch answer.
pub fn item_error(status: &Status) -> proto::common::v1::ItemError {
    proto::common::v1::ItemError {
        code: status.code() as i32,
        message: status.message().to_owned(),
        details: status.details().to_vec(),
    }
}

/// The status an entry of a batch answer stands for.
pub fn from_item_error(error: proto::common::v1::ItemError) -> Status {
    Status::with_details(
        Code::from_i32(error.code),
        error.message,
        error.details.into(),
    )
}

/// Parses a UUID field of a request, naming the field when it is not one.
pub fn parse_uuid(field: &str, value: &str) -> Result<uuid::Uuid, Status> {
    uuid::Uuid::parse_str(value.trim())
        .map_err(|_| invalid_argument(vec![violation(field, format!("{value:?} is not a UUID"))]))
}

/// Converts a timestamp for the wire.
pub fn timestamp(t: chrono::DateTime<chrono::Utc>) -> prost_types::Timestamp {
    prost_types::Timestamp {
        seconds: t.timestamp(),
        nanos: t.timestamp_subsec_nanos() as i32,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn accepted_connections_send_without_delay() {
        use tokio_stream::StreamExt;
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let mut incoming = accepted_without_delay(listener);
        let _client = tokio::net::TcpStream::connect(addr).await.unwrap();
        let accepted = incoming.next().await.unwrap().unwrap();
        assert!(accepted.nodelay().unwrap());
    }

    #[test]
    fn details_round_trip() {
        let status = invalid_argument(vec![violation("price", "must be > 0")]);
        assert_eq!(status.code(), Code::InvalidArgument);
        assert_eq!(status.message(), "price: must be > 0");
        let detail = error_detail(&status).unwrap();
        assert_eq!(detail.reason, "INVALID_ARGUMENT");
        assert_eq!(detail.field_violations[0].field, "price");
    }

    #[test]
    fn broken_connections_are_unavailable_but_server_statuses_stay() {
        let io = std::io::Error::new(std::io::ErrorKind::ConnectionReset, "reset by peer");
        let local = Status::from_error(Box::new(io));
        assert_eq!(local.code(), Code::Unknown);
        assert!(is_connection_failure(&local));
        assert_eq!(normalize_client_status(local).code(), Code::Unavailable);

        let sent = Status::unknown("the server said so");
        assert!(!is_connection_failure(&sent));
        assert_eq!(normalize_client_status(sent).code(), Code::Unknown);
    }

    #[test]
    fn a_call_cancelled_by_its_closing_connection_is_unavailable_but_a_deadline_stays() {
        let deadline = Status::from_error(Box::new(tonic::TimeoutExpired(())));
        assert_eq!(deadline.code(), Code::Cancelled);
        assert!(!is_connection_failure(&deadline));
        assert_eq!(normalize_client_status(deadline).code(), Code::Cancelled);

        // What tonic makes of hyper's "operation was canceled: connection closed".
        let mut closed = Status::cancelled("operation was canceled: connection closed");
        closed.set_source(std::sync::Arc::new(std::io::Error::other(
            "connection closed",
        )));
        assert!(is_connection_failure(&closed));
        assert_eq!(normalize_client_status(closed).code(), Code::Unavailable);

        let sent = Status::cancelled("the server gave up");
        assert!(!is_connection_failure(&sent));
    }

    #[test]
    fn transient_codes() {
        assert!(is_transient(&Status::unavailable("down")));
        assert!(is_transient(&Status::deadline_exceeded("slow")));
        assert!(is_transient(&Status::unimplemented("another service")));
        assert!(!is_transient(&Status::invalid_argument("bad")));
        assert!(!is_transient(&Status::failed_precondition("state")));
        assert!(!is_transient(&Status::not_found("gone")));
        assert!(is_transient(&Status::aborted("deadlock")));
        // A verdict of the server's: the same request fails the same way.
        assert!(!is_transient(&Status::internal("bug")));
        assert!(!is_transient(&Status::unknown("said so")));
        assert!(!is_transient(&Status::out_of_range("overflow")));
        // The connection broke under the call.
        let io = std::io::Error::new(std::io::ErrorKind::ConnectionReset, "reset");
        assert!(is_transient(&Status::from_error(Box::new(io))));
    }
}
