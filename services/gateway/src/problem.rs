//! The one error mapping of the API: every failure becomes an
//! `application/problem+json` body (RFC 9457) with the HTTP status, a title,
//! a detail and per-field messages.
//!
//! Status choices (documented in the OpenAPI description too):
//! - 400: the request itself is wrong: malformed JSON, wrong types, missing or
//!   unknown fields, bad ids or query parameters, and values that break a rule
//!   (gRPC INVALID_ARGUMENT / OUT_OF_RANGE land here as well);
//! - 401 / 403 / 404 / 409 / 413 / 415 / 429 as usual;
//! - 422: only an `Idempotency-Key` reused with a different body;
//! - 503: a downstream service is unreachable, too slow (its deadline passed)
//!   or its circuit breaker is open;
//! - 500: anything else, with no internals in the body (they go to the log).

use std::fmt;
use std::time::Duration;

use actix_web::http::StatusCode;
use actix_web::http::header::{self, HeaderValue};
use actix_web::{HttpResponse, ResponseError};
use serde::Serialize;
use tonic::Code;

pub const PROBLEM_CONTENT_TYPE: &str = "application/problem+json";

/// One message about one field of the request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct FieldError {
    /// The field, e.g. `items[0].quantity`, `price`, `id`.
    pub field: String,
    pub message: String,
}

/// An RFC 9457 problem document.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct Problem {
    /// A URN naming the kind of problem, e.g. `urn:problem:ecommerce:not-found`.
    #[serde(rename = "type")]
    pub kind: String,
    pub title: String,
    #[schema(value_type = u16, example = 404)]
    #[serde(serialize_with = "serialize_status")]
    pub status: StatusCode,
    pub detail: String,
    /// Per-field messages; empty when the problem is not about a field.
    pub errors: Vec<FieldError>,
    /// The trace id of the request, to find it in the logs.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub trace_id: Option<String>,
    #[serde(skip)]
    #[schema(ignore)]
    pub retry_after: Option<Duration>,
    /// The `error` parameter of `WWW-Authenticate` for a 401.
    #[serde(skip)]
    #[schema(ignore)]
    pub bearer_error: Option<&'static str>,
}

fn serialize_status<S: serde::Serializer>(status: &StatusCode, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_u16(status.as_u16())
}

impl Problem {
    pub fn new(status: StatusCode, kind: &str, title: &str, detail: impl Into<String>) -> Self {
        Problem {
            kind: format!("urn:problem:ecommerce:{kind}"),
            title: title.to_owned(),
            status,
            detail: detail.into(),
            errors: Vec::new(),
            trace_id: platform::telemetry::current_trace_id(),
            retry_after: None,
            bearer_error: None,
        }
    }

    pub fn with_errors(mut self, errors: Vec<FieldError>) -> Self {
        self.errors = errors;
        self
    }

    pub fn with_field(mut self, field: impl Into<String>, message: impl Into<String>) -> Self {
        self.errors.push(FieldError {
            field: field.into(),
            message: message.into(),
        });
        self
    }

    /// 400 for a request whose shape or values are wrong.
    pub fn bad_request(detail: impl Into<String>) -> Self {
        Problem::new(
            StatusCode::BAD_REQUEST,
            "invalid-request",
            "The request is not valid",
            detail,
        )
    }

    /// 400 listing every bad field.
    pub fn invalid_fields(errors: Vec<FieldError>) -> Self {
        let detail = errors
            .iter()
            .map(|e| format!("{}: {}", e.field, e.message))
            .collect::<Vec<_>>()
            .join("; ");
        Problem::bad_request(detail).with_errors(errors)
    }

    pub fn unauthorized(detail: impl Into<String>, bearer_error: Option<&'static str>) -> Self {
        let mut problem = Problem::new(
            StatusCode::UNAUTHORIZED,
            "unauthenticated",
            "Authentication is required",
            detail,
        );
        problem.bearer_error = bearer_error;
        problem
    }

    pub fn forbidden(detail: impl Into<String>) -> Self {
        Problem::new(StatusCode::FORBIDDEN, "forbidden", "Not allowed", detail)
    }

    pub fn not_found(detail: impl Into<String>) -> Self {
        Problem::new(StatusCode::NOT_FOUND, "not-found", "Not found", detail)
    }

    pub fn rate_limited(retry_after: Duration) -> Self {
        let seconds = retry_after_seconds(retry_after);
        let mut problem = Problem::new(
            StatusCode::TOO_MANY_REQUESTS,
            "rate-limited",
            "Too many requests",
            format!("too many requests from this client; retry in {seconds} s"),
        );
        problem.retry_after = Some(retry_after);
        problem
    }

    /// 503 without calling: the service's circuit breaker is open.
    pub fn circuit_open(service: &str, retry_after: Duration) -> Self {
        let mut problem = Problem::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "service-unavailable",
            "Service unavailable",
            format!(
                "the {service} service keeps failing; requests to it are paused, try again shortly"
            ),
        );
        problem.retry_after = Some(retry_after);
        problem
    }

    /// 500 with no internals; `cause` goes to the log only.
    pub fn internal(cause: impl fmt::Display) -> Self {
        tracing::error!(error = %cause, "internal error");
        Problem::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "Internal error",
            "the request could not be completed; it has been logged",
        )
    }

    /// The mapping of a downstream gRPC status. `service` names the callee in
    /// 503 details.
    pub fn from_status(service: &str, status: &tonic::Status) -> Self {
        let detail_of = platform::grpc::error_detail(status);
        let reason = detail_of.as_ref().map(|d| d.reason.as_str()).unwrap_or("");
        let errors: Vec<FieldError> = detail_of
            .as_ref()
            .map(|d| {
                d.field_violations
                    .iter()
                    .map(|v| FieldError {
                        field: v.field.clone(),
                        message: v.description.clone(),
                    })
                    .collect()
            })
            .unwrap_or_default();
        let message = status.message().to_owned();
        let problem = match status.code() {
            _ if reason == "IDEMPOTENCY_KEY_REUSED" => Problem::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "idempotency-key-reused",
                "Idempotency-Key reused",
                non_empty(
                    message,
                    "this Idempotency-Key was used with a different request body",
                ),
            ),
            Code::InvalidArgument | Code::OutOfRange => {
                let mut p = Problem::bad_request(non_empty(message, "the request is not valid"));
                p.errors = errors.clone();
                p
            }
            Code::NotFound => Problem::not_found(non_empty(message, "not found")),
            Code::AlreadyExists => Problem::new(
                StatusCode::CONFLICT,
                "already-exists",
                "Already exists",
                non_empty(message, "it already exists"),
            ),
            Code::FailedPrecondition | Code::Aborted => Problem::new(
                StatusCode::CONFLICT,
                "conflict",
                "Conflict with the current state",
                non_empty(message, "the request conflicts with the current state"),
            ),
            Code::Unauthenticated => {
                Problem::unauthorized(non_empty(message, "authentication failed"), None)
            }
            Code::PermissionDenied => {
                Problem::forbidden(non_empty(message, "this operation is not allowed"))
            }
            Code::Unavailable => {
                // A service that answers "<DEPENDENCY>_UNAVAILABLE" is up
                // itself; name the one that is not.
                let unavailable = reason
                    .strip_suffix("_UNAVAILABLE")
                    .filter(|s| !s.is_empty())
                    .map(str::to_ascii_lowercase)
                    .unwrap_or_else(|| service.to_owned());
                Problem::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "service-unavailable",
                    "Service unavailable",
                    format!("the {unavailable} service is unavailable; try again shortly"),
                )
            }
            // tonic reports its own client deadline as CANCELLED ("Timeout expired").
            Code::DeadlineExceeded | Code::Cancelled => Problem::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "service-unavailable",
                "Service unavailable",
                format!("the {service} service did not answer in time; try again shortly"),
            ),
            Code::ResourceExhausted => Problem::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "service-unavailable",
                "Service unavailable",
                format!("the {service} service is overloaded; try again shortly"),
            ),
            _ => {
                return Problem::internal(format_args!(
                    "{service} answered {:?}: {}",
                    status.code(),
                    status.message()
                ));
            }
        };
        if problem.errors.is_empty() && !errors.is_empty() {
            problem.with_errors(errors)
        } else {
            problem
        }
    }
}

fn non_empty(message: String, fallback: &str) -> String {
    if message.trim().is_empty() {
        fallback.to_owned()
    } else {
        message
    }
}

fn retry_after_seconds(d: Duration) -> u64 {
    // Round up: "retry in 0 s" would invite an immediate retry.
    d.as_millis().div_ceil(1000).max(1) as u64
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} {}: {}",
            self.status.as_u16(),
            self.title,
            self.detail
        )
    }
}

impl ResponseError for Problem {
    fn status_code(&self) -> StatusCode {
        self.status
    }

    fn error_response(&self) -> HttpResponse {
        let mut response = HttpResponse::build(self.status);
        response.insert_header((header::CONTENT_TYPE, PROBLEM_CONTENT_TYPE));
        if let Some(retry_after) = self.retry_after {
            response.insert_header((header::RETRY_AFTER, retry_after_seconds(retry_after)));
        }
        if self.status == StatusCode::UNAUTHORIZED {
            let challenge = match self.bearer_error {
                Some(error) => format!(
                    "Bearer realm=\"ecommerce\", error=\"{error}\", error_description=\"{}\"",
                    self.detail.replace(['"', '\\'], "'")
                ),
                None => "Bearer realm=\"ecommerce\"".to_owned(),
            };
            if let Ok(value) = HeaderValue::from_str(&challenge) {
                response.insert_header((header::WWW_AUTHENTICATE, value));
            }
        }
        response.body(serde_json::to_string(self).unwrap_or_default())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use platform::grpc::{invalid_argument, status_with_detail, violation};

    fn status_of(code: Code) -> StatusCode {
        Problem::from_status("inventory", &tonic::Status::new(code, "message")).status
    }

    #[test]
    fn grpc_codes_map_to_http_statuses() {
        let table = [
            (Code::InvalidArgument, 400),
            (Code::OutOfRange, 400),
            (Code::NotFound, 404),
            (Code::AlreadyExists, 409),
            (Code::FailedPrecondition, 409),
            (Code::Aborted, 409),
            (Code::Unauthenticated, 401),
            (Code::PermissionDenied, 403),
            (Code::Unavailable, 503),
            (Code::DeadlineExceeded, 503),
            (Code::Cancelled, 503),
            (Code::ResourceExhausted, 503),
            (Code::Internal, 500),
            (Code::Unknown, 500),
            (Code::DataLoss, 500),
            (Code::Unimplemented, 500),
        ];
        for (code, http) in table {
            assert_eq!(status_of(code).as_u16(), http, "{code:?}");
        }
    }

    #[test]
    fn idempotency_key_reuse_is_422_whatever_the_code() {
        let status = status_with_detail(
            Code::FailedPrecondition,
            "key reused",
            "IDEMPOTENCY_KEY_REUSED",
            vec![],
        );
        let problem = Problem::from_status("order", &status);
        assert_eq!(problem.status, StatusCode::UNPROCESSABLE_ENTITY);
        assert_eq!(problem.kind, "urn:problem:ecommerce:idempotency-key-reused");
    }

    #[test]
    fn field_violations_become_field_errors() {
        let status = invalid_argument(vec![violation("price", "must be greater than 0")]);
        let problem = Problem::from_status("inventory", &status);
        assert_eq!(problem.status, StatusCode::BAD_REQUEST);
        assert_eq!(
            problem.errors,
            vec![FieldError {
                field: "price".into(),
                message: "must be greater than 0".into()
            }]
        );
    }

    #[test]
    fn internal_errors_hide_the_message() {
        let status = tonic::Status::internal("relation \"orders\" does not exist at db:5432");
        let problem = Problem::from_status("order", &status);
        assert_eq!(problem.status, StatusCode::INTERNAL_SERVER_ERROR);
        let body = serde_json::to_string(&problem).unwrap();
        assert!(!body.contains("relation"), "{body}");
        assert!(!body.contains("5432"), "{body}");
    }

    #[test]
    fn unavailable_names_the_service() {
        let problem = Problem::from_status(
            "inventory",
            &tonic::Status::unavailable("tcp connect error"),
        );
        assert_eq!(problem.status, StatusCode::SERVICE_UNAVAILABLE);
        assert!(
            problem.detail.contains("inventory service"),
            "{}",
            problem.detail
        );
        assert!(!problem.detail.contains("tcp"), "{}", problem.detail);
    }

    #[test]
    fn unavailable_dependency_is_named() {
        let status = status_with_detail(
            Code::Unavailable,
            "inventory unavailable: tcp connect error 10.0.0.1",
            "INVENTORY_UNAVAILABLE",
            vec![],
        );
        let problem = Problem::from_status("order", &status);
        assert_eq!(problem.status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(
            problem.detail,
            "the inventory service is unavailable; try again shortly"
        );
    }

    #[test]
    fn response_is_problem_json_with_headers() {
        let response = Problem::rate_limited(Duration::from_millis(1500)).error_response();
        assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(
            response.headers().get(header::CONTENT_TYPE).unwrap(),
            PROBLEM_CONTENT_TYPE
        );
        assert_eq!(response.headers().get(header::RETRY_AFTER).unwrap(), "2");

        let response = Problem::unauthorized("no token", None).error_response();
        assert!(
            response
                .headers()
                .get(header::WWW_AUTHENTICATE)
                .unwrap()
                .to_str()
                .unwrap()
                .starts_with("Bearer")
        );
    }

    #[test]
    fn body_has_the_rfc_9457_members() {
        let problem = Problem::not_found("order 1 not found").with_field("id", "unknown");
        let body: serde_json::Value = serde_json::to_value(&problem).unwrap();
        assert_eq!(body["status"], 404);
        assert_eq!(body["title"], "Not found");
        assert_eq!(body["detail"], "order 1 not found");
        assert_eq!(body["type"], "urn:problem:ecommerce:not-found");
        assert_eq!(body["errors"][0]["field"], "id");
    }
}
