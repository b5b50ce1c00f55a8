//! Operations: liveness, readiness and the OpenAPI document (metrics are
//! served on `METRICS_PORT`, not on the public port).

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
    /// Each downstream service and its state (readiness only): "serving"
    /// or why it is not ready.
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

/// Each downstream's state: "serving", or why it is not ready.
async fn downstream_states(state: &AppState) -> (BTreeMap<&'static str, String>, Vec<FieldError>) {
    let results = state
        .clients
        .readiness(state.shared.readiness_timeout)
        .await;
    let mut states = BTreeMap::new();
    let mut not_ready = Vec::new();
    for (name, result) in results {
        match result {
            Ok(()) => {
                states.insert(name, "serving".to_owned());
            }
            Err(why) => {
                states.insert(name, format!("not ready: {why}"));
                not_ready.push(FieldError {
                    field: name.to_owned(),
                    message: format!("not ready: {why}"),
                });
            }
        }
    }
    (states, not_ready)
}

/// The gateway's own readiness: it serves whatever its downstreams' state (a
/// route whose service is down answers 503 problem+json by itself), so one
/// service's outage does not take every gateway out of its Service and the
/// catalogue with it. The body tells each downstream's state.
#[utoipa::path(
    tag = "operations",
    responses(
        (status = 200, description = "The gateway serves; `services` tells each downstream's state", body = Health),
    )
)]
#[get("/readyz")]
pub async fn readyz(state: web::Data<AppState>) -> web::Json<Health> {
    let (services, _) = downstream_states(&state).await;
    web::Json(Health {
        status: "ready",
        services,
    })
}

/// Whether every downstream answers SERVING (for dashboards and start-up
/// scripts; not a probe).
#[utoipa::path(
    tag = "operations",
    responses(
        (status = 200, description = "Every downstream service answers SERVING", body = Health),
        (status = 503, description = "Names the services that are not ready", body = Problem, content_type = "application/problem+json"),
    )
)]
#[get("/readyz/downstreams")]
pub async fn downstreams_ready(state: web::Data<AppState>) -> Result<web::Json<Health>, Problem> {
    let (services, not_ready) = downstream_states(&state).await;
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
        services,
    }))
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
