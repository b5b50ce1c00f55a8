//! Internal gRPC calls carry a token shared by the stack's services
//! (`INTERNAL_AUTH_TOKEN`): every outgoing call sends it, every server refuses
//! a call without it (UNAUTHENTICATED), so a pod that can merely reach a
//! service cannot confirm orders, return stock or read profiles. The gRPC
//! health service stays open (kubelet probes carry no token), and so do the
//! plain HTTP `/healthz` and `/readyz`; every other path needs the token.
//!
//! Required in production (at least [`MIN_LEN`] characters); in development
//! an unset token turns the check off.

use std::future::Future;
use std::pin::Pin;
use std::sync::OnceLock;
use std::task::{Context, Poll};

use tonic::codegen::http;

use crate::ConfigError;
use crate::config::AppEnv;

pub const VAR: &str = "INTERNAL_AUTH_TOKEN";
pub const MIN_LEN: usize = 32;

/// The metadata key the token travels in.
pub const HEADER: &str = "x-internal-token";

/// The message of a refusal.
pub const REFUSAL: &str = "missing or wrong internal token";

/// Marks a refusal's response, so that the gRPC metrics tell it from a
/// method's own UNAUTHENTICATED (a wrong password).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Refused;

static TOKEN: OnceLock<Option<String>> = OnceLock::new();

/// Reads and checks the token once per process (the binary's start-up).
pub fn init_from_env(env: &crate::settings::Env, app_env: AppEnv) -> Result<(), ConfigError> {
    let token = env.get(&crate::settings::INTERNAL_AUTH_TOKEN);
    match (&token, app_env) {
        (None, AppEnv::Production) => {
            return Err(ConfigError::invalid(
                VAR,
                "",
                "is required with APP_ENV=production: set the token every service of the stack shares",
            ));
        }
        (Some(t), _) if t.chars().count() < MIN_LEN || !t.is_ascii() => {
            return Err(ConfigError::invalid(
                VAR,
                "***",
                format!("must be at least {MIN_LEN} ASCII characters"),
            ));
        }
        _ => {}
    }
    if token.is_none() {
        tracing::warn!(
            "{VAR} is not set: internal gRPC calls are not authenticated (APP_ENV=development)"
        );
    }
    let _ = TOKEN.set(token);
    Ok(())
}

/// The token, when one is configured.
pub fn token() -> Option<&'static str> {
    TOKEN.get().and_then(|t| t.as_deref())
}

/// Compares without an early exit, so the time taken does not say how much
/// of a guess was right.
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Whether a request may pass: no token configured, a health check (gRPC
/// health, `/healthz`, `/readyz`), or the right token. Decided by the path,
/// never by the content type, which the caller chooses (the gRPC server
/// serves a method whatever content type the request claims).
fn admitted<B>(request: &http::Request<B>, expected: Option<&str>) -> bool {
    let Some(expected) = expected else {
        return true;
    };
    let path = request.uri().path();
    if path.starts_with("/grpc.health.v1.Health/") || path == "/healthz" || path == "/readyz" {
        return true;
    }
    request
        .headers()
        .get(HEADER)
        .is_some_and(|v| same(v.as_bytes(), expected.as_bytes()))
}

/// The server side: answers UNAUTHENTICATED to a gRPC call without the token.
#[derive(Debug, Clone, Copy, Default)]
pub struct RequireTokenLayer;

impl<S> tower::Layer<S> for RequireTokenLayer {
    type Service = RequireToken<S>;

    fn layer(&self, inner: S) -> Self::Service {
        RequireToken { inner }
    }
}

#[derive(Debug, Clone)]
pub struct RequireToken<S> {
    inner: S,
}

impl<S, B, ResBody> tower::Service<http::Request<B>> for RequireToken<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<ResBody>>,
    S::Future: Send + 'static,
    ResBody: Default + Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        if admitted(&request, token()) {
            return Box::pin(self.inner.call(request));
        }
        tracing::warn!(path = %request.uri().path(), "internal call without a valid {HEADER} refused");
        // A trailers-only gRPC answer.
        let mut refused = http::Response::builder()
            .status(http::StatusCode::OK)
            .header(http::header::CONTENT_TYPE, "application/grpc")
            .header(
                "grpc-status",
                (tonic::Code::Unauthenticated as i32).to_string(),
            )
            .header("grpc-message", REFUSAL)
            .body(ResBody::default())
            .expect("a valid response");
        refused.extensions_mut().insert(Refused);
        Box::pin(async move { Ok(refused) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn grpc(path: &str, token: Option<&str>) -> http::Request<()> {
        let mut builder = http::Request::builder()
            .uri(path)
            .header(http::header::CONTENT_TYPE, "application/grpc");
        if let Some(token) = token {
            builder = builder.header(HEADER, token);
        }
        builder.body(()).unwrap()
    }

    #[test]
    fn only_the_right_token_passes_and_health_stays_open() {
        let expected = Some("a-token-of-enough-length-0123456789");
        let method = "/ecommerce.order.v1.OrderService/RecordOutcome";
        assert!(!admitted(&grpc(method, None), expected));
        assert!(!admitted(
            &grpc(method, Some("a-token-of-enough-length-012345678X")),
            expected
        ));
        assert!(!admitted(&grpc(method, Some("short")), expected));
        assert!(admitted(&grpc(method, expected), expected));
        assert!(admitted(
            &grpc("/grpc.health.v1.Health/Check", None),
            expected
        ));
        // Plain HTTP health is open...
        for open in ["/readyz", "/healthz"] {
            let plain = http::Request::builder().uri(open).body(()).unwrap();
            assert!(admitted(&plain, expected));
        }
        // ...but a method called with another content type is not.
        let disguised = http::Request::builder()
            .uri(method)
            .header(http::header::CONTENT_TYPE, "text/plain")
            .body(())
            .unwrap();
        assert!(!admitted(&disguised, expected));
        // No token configured (development): everything passes.
        assert!(admitted(&grpc(method, None), None));
    }
}
