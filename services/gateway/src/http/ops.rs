//! Operations: liveness, readiness, metrics and the OpenAPI document.

use std::collections::BTreeMap;

use actix_web::http::StatusCode;
use actix_web::{HttpResponse, get, web};
use serde::Serialize;
use utoipa::ToSchema;

use super::{ApiDocument, AppState};
use crate::problem::{FieldError, Problem};

/// `{"status": "ok"}` and friends.
#[derive(Debug, Serialize, ToSchema)]
pub struct Health {
    #[schema(example = "ok")]
    pub status: &'static str,
    /// Each downstream service and its state (readiness only).
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub services: BTreeMap<&'static str, String>,
}

#[utoipa::path(
    tag = "operations",
    responses((status = 200, description = "The process is alive", body = Health))
)]
#[get("/healthz")]
pub async fn healthz() -> web::Json<Health> {
    web::Json(Health {
        status: "ok",
        services: BTreeMap::new(),
    })
}

#[utoipa::path(
    tag = "operations",
    responses(
        (status = 200, description = "Every downstream service answers SERVING", body = Health),
        (status = 503, description = "Names the services that are not ready", body = Problem, content_type = "application/problem+json"),
    )
)]
#[get("/readyz")]
pub async fn readyz(state: web::Data<AppState>) -> Result<web::Json<Health>, Problem> {
    let results = state.clients.readiness(state.readiness_timeout).await;
    let not_ready: Vec<FieldError> = results
        .iter()
        .filter_map(|(name, result)| {
            result.as_ref().err().map(|why| FieldError {
                field: (*name).to_owned(),
                message: format!("not ready: {why}"),
            })
        })
        .collect();
    if !not_ready.is_empty() {
        let names: Vec<&str> = not_ready.iter().map(|e| e.field.as_str()).collect();
        return Err(Problem::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "not-ready",
            "Not ready",
            format!("not ready: {}", names.join(", ")),
        )
        .with_errors(not_ready));
    }
    Ok(web::Json(Health {
        status: "ready",
        services: results
            .into_iter()
            .map(|(name, _)| (name, "serving".to_owned()))
            .collect(),
    }))
}

#[utoipa::path(
    tag = "operations",
    responses((status = 200, description = "Prometheus metrics (OpenMetrics text)", body = String, content_type = "application/openmetrics-text"))
)]
#[get("/metrics")]
pub async fn metrics() -> HttpResponse {
    HttpResponse::Ok()
        .content_type("application/openmetrics-text; version=1.0.0; charset=utf-8")
        .body(platform::metrics::render())
}

#[utoipa::path(
    tag = "operations",
    responses((status = 200, description = "This OpenAPI document", body = Object))
)]
#[get("/openapi.json")]
pub async fn openapi_json(document: web::Data<ApiDocument>) -> HttpResponse {
    HttpResponse::Ok()
        .content_type("application/json")
        .body(document.json.clone())
}
