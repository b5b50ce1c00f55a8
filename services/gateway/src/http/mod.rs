//! The HTTP surface: the actix-web app, its routes, the OpenAPI document
//! generated from them, and the extractor configuration that turns every
//! malformed request into a 4xx problem.

pub mod dto;
pub mod money;
pub mod observe;
pub mod ops;
pub mod orders;
pub mod products;
pub mod storefront;
pub mod users;

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::Arc;
use std::time::Duration;

use actix_web::body::{BoxBody, MessageBody};
use actix_web::dev::{Payload, ServiceFactory, ServiceRequest, ServiceResponse};
use actix_web::error::{PathError, QueryPayloadError};
use actix_web::http::StatusCode;
use actix_web::http::header::{self, ContentType};
use actix_web::middleware::{Next, from_fn};
use actix_web::{
    App, FromRequest, HttpMessage, HttpRequest, HttpResponse, Responder, ResponseError, web,
};
use serde::Serialize;
use utoipa::OpenApi;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa_actix_web::AppExt;

use crate::auth::JwtKeys;
use crate::clients::{Clients, Downstreams};
use crate::limiter::RateLimiter;
use crate::problem::{FieldError, PROBLEM_CONTENT_TYPE, Problem};

/// What one worker's handlers use: its own gRPC clients
/// ([`crate::clients`]) and what every worker shares.
pub struct AppState {
    pub clients: Clients,
    pub shared: Arc<Shared>,
}

impl AppState {
    /// Runs on the worker's own runtime, which drives its clients.
    pub fn for_this_worker(shared: Arc<Shared>) -> Self {
        AppState {
            clients: shared.downstreams.connect_lazy(),
            shared,
        }
    }
}

/// What every worker shares.
pub struct Shared {
    pub downstreams: Downstreams,
    pub login_limiter: RateLimiter,
    /// Logins per account (by the hash of the lowercased name), whichever
    /// client they come from.
    pub account_login_limiter: RateLimiter<u64>,
    pub register_limiter: RateLimiter,
    pub order_limiter: RateLimiter,
    /// Peers whose `X-Forwarded-For` is believed ([`crate::config::TrustedProxies`]).
    pub trusted_proxies: crate::config::TrustedProxies,
    /// How long `/readyz` and `/readyz/downstreams` wait for each service's
    /// health answer.
    pub readiness_timeout: Duration,
    /// `GET /products/{id}` answers from here when it can.
    pub products: Arc<crate::catalogue::ProductCache>,
}

/// The OpenAPI document, rendered once, and the routes it lists (to tell a
/// wrong method, 405, from a wrong path, 404).
pub struct ApiDocument {
    pub json: String,
    routes: Vec<(actix_web::dev::ResourceDef, Vec<String>)>,
}

impl ApiDocument {
    pub fn new(document: &utoipa::openapi::OpenApi) -> anyhow::Result<Self> {
        let json = document.to_json()?;
        let value: serde_json::Value = serde_json::from_str(&json)?;
        let routes = value["paths"]
            .as_object()
            .map(|paths| {
                paths
                    .iter()
                    .map(|(path, item)| {
                        let methods = item
                            .as_object()
                            .map(|ops| ops.keys().map(|m| m.to_ascii_uppercase()).collect())
                            .unwrap_or_default();
                        (actix_web::dev::ResourceDef::new(path.as_str()), methods)
                    })
                    .collect()
            })
            .unwrap_or_default();
        Ok(ApiDocument { json, routes })
    }

    /// The methods served on `path`, if it is a route at all.
    fn methods_of(&self, path: &str) -> Option<Vec<&str>> {
        let methods: Vec<&str> = self
            .routes
            .iter()
            .filter(|(def, _)| def.is_match(path))
            .flat_map(|(_, methods)| methods.iter().map(String::as_str))
            .filter(|m| ["GET", "POST", "PUT", "PATCH", "DELETE"].contains(m))
            .collect();
        (!methods.is_empty()).then_some(methods)
    }
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "E-commerce API",
        description = "The REST API of the e-commerce platform.\n\n\
            Errors are `application/problem+json` (RFC 9457) with `type`, `title`, `status`, `detail` and `errors` \
            (per-field messages). 400: the request is malformed or a value breaks a rule (including values the \
            services reject as invalid); 401: no valid bearer token (`WWW-Authenticate: Bearer`); 403: not allowed \
            for the caller's role; 404: not found, or not the caller's; 405: a method the path does not serve (see `Allow`); 409: conflicts with the current state \
            (duplicates, order status transitions, stock); 413: body over the size limit; 415: not JSON; \
            422: an `Idempotency-Key` reused with a different body; 429: rate limited (`Retry-After`); \
            503: a service is unavailable or too slow; 500: an unexpected failure (details only in the logs).\n\n\
            Money is a JSON number with two decimals, read and kept exactly (never as a binary float).",
        license(name = "Apache-2.0"),
    ),
    modifiers(&BearerSecurity),
    tags(
        (name = "products", description = "The catalogue: anyone reads, admins write"),
        (name = "orders", description = "Orders: customers see only their own"),
        (name = "users", description = "Registration, login and profiles"),
        (name = "operations", description = "Health, readiness and this document"),
    )
)]
struct ApiDoc;

struct BearerSecurity;

impl utoipa::Modify for BearerSecurity {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("JWT")
                    .description(Some("The `token` of `POST /users/login`"))
                    .build(),
            ),
        );
    }
}

/// Registers every route. `/users/me` comes before `/users/{id}` so that
/// "me" is not read as an id.
fn routes(cfg: &mut utoipa_actix_web::service_config::ServiceConfig) {
    cfg.service(products::create_product)
        .service(products::list_products)
        .service(products::get_product)
        .service(products::update_product)
        .service(products::delete_product)
        .service(orders::create_order)
        .service(orders::list_orders)
        .service(orders::get_order)
        .service(orders::update_order_status)
        .service(orders::cancel_order)
        .service(users::register)
        .service(users::login)
        .service(users::me)
        .service(users::get_user)
        .service(ops::healthz)
        .service(ops::readyz)
        .service(ops::downstreams_ready)
        .service(ops::openapi_json);
}

/// The OpenAPI document of exactly the routes [`app`] serves.
pub fn openapi() -> utoipa::openapi::OpenApi {
    App::new()
        .into_utoipa_app()
        .openapi(ApiDoc::openapi())
        .configure(routes)
        .split_for_parts()
        .1
}

/// The application, as each worker builds it.
pub fn app(
    shared: Arc<Shared>,
    keys: web::Data<JwtKeys>,
    document: web::Data<ApiDocument>,
    max_body_bytes: usize,
) -> App<
    impl ServiceFactory<
        ServiceRequest,
        Config = (),
        Response = ServiceResponse<impl MessageBody>,
        Error = actix_web::Error,
        InitError = (),
    >,
> {
    App::new()
        .into_utoipa_app()
        .app_data(web::Data::new(AppState::for_this_worker(shared)))
        .app_data(keys)
        .app_data(document)
        .app_data(web::PathConfig::default().error_handler(|e, req| path_error(e, req).into()))
        .app_data(web::QueryConfig::default().error_handler(|e, _| query_error(e).into()))
        .app_data(web::PayloadConfig::default().limit(max_body_bytes))
        .configure(routes)
        .default_service(web::to(no_such_route))
        .into_app()
        .configure(storefront::routes)
        .wrap(from_fn(problem_for_every_error))
        .wrap(from_fn(observe::observe))
}

async fn no_such_route(req: HttpRequest, document: web::Data<ApiDocument>) -> HttpResponse {
    let Some(methods) = document.methods_of(req.path()) else {
        return Problem::not_found(format!("no route for {} {}", req.method(), req.path()))
            .error_response();
    };
    let allow = methods.join(", ");
    let mut response = Problem::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method-not-allowed",
        "Method not allowed",
        format!(
            "{} is not served on {}; use {allow}",
            req.method(),
            req.path()
        ),
    )
    .error_response();
    if let Ok(value) = header::HeaderValue::from_str(&allow) {
        response.headers_mut().insert(header::ALLOW, value);
    }
    response
}

fn too_large() -> Problem {
    Problem::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        "payload-too-large",
        "Body too large",
        "the body is larger than the accepted number of bytes (HTTP_MAX_BODY_BYTES)",
    )
}

/// serde_json's message, and the field when it names one
/// (``unknown field `role` ``, ``missing field `price` ``).
fn deserialize_problem(e: &serde_json::Error) -> Problem {
    use serde_json::error::Category;
    match e.classify() {
        Category::Syntax | Category::Eof | Category::Io => {
            Problem::bad_request(format!("the body is not valid JSON: {e}"))
        }
        Category::Data => {
            let message = e.to_string();
            let field = ["unknown field `", "missing field `", "duplicate field `"]
                .iter()
                .find_map(|prefix| {
                    let rest = message.split_once(prefix)?.1;
                    Some(rest.split_once('`')?.0.to_owned())
                });
            let problem =
                Problem::bad_request(format!("the body does not match the schema: {message}"));
            match field {
                Some(field) => problem.with_field(field, message),
                None => problem,
            }
        }
    }
}

fn path_error(error: PathError, req: &HttpRequest) -> Problem {
    let names: Vec<String> = req
        .match_info()
        .iter()
        .map(|(name, value)| format!("{name} {value:?}"))
        .collect();
    let PathError::Deserialize(e) = error else {
        return Problem::bad_request(error.to_string());
    };
    let mut problem = Problem::bad_request(format!(
        "the path parameter {} is not valid: {e}",
        names.join(", ")
    ));
    for (name, _) in req.match_info().iter() {
        problem.errors.push(FieldError {
            field: name.to_owned(),
            message: "must be a UUID".to_owned(),
        });
    }
    problem
}

fn query_error(error: QueryPayloadError) -> Problem {
    let message = match &error {
        QueryPayloadError::Deserialize(e) => e.to_string(),
        other => other.to_string(),
    };
    let problem = Problem::bad_request(format!("the query string is not valid: {message}"));
    match ["unknown field `", dto::BAD_QUERY_PARAMETER]
        .iter()
        .find_map(|prefix| message.split_once(prefix)?.1.split_once('`'))
    {
        Some((field, _)) => problem.with_field(field, message.clone()),
        None => problem,
    }
}

/// A safety net: any error answer that is not yet a problem document (from
/// actix itself, e.g. a payload it could not read) becomes one, so clients
/// never see a plain-text error.
async fn problem_for_every_error(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<BoxBody>, actix_web::Error> {
    let response = match next.call(req).await {
        Ok(response) => response.map_into_boxed_body(),
        Err(error) => {
            // Errors raised by middleware; rendered here so the body is ours.
            let status = error.as_response_error().status_code();
            return Err(generic_problem(status, &error.to_string()).into());
        }
    };
    let status = response.status();
    let is_problem = response
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(PROBLEM_CONTENT_TYPE.as_bytes()));
    if status.as_u16() < 400 || is_problem {
        return Ok(response);
    }
    let problem = generic_problem(status, "");
    Ok(response.into_response(problem.error_response().map_into_boxed_body()))
}

fn generic_problem(status: StatusCode, detail: &str) -> Problem {
    if status.is_server_error() {
        return Problem::internal(detail);
    }
    let title = status.canonical_reason().unwrap_or("Client error");
    let detail = if detail.is_empty() { title } else { detail };
    Problem::new(status, "http-error", title, detail)
}

/// A JSON request body: `Content-Type: application/json` (or `+json`), at
/// most the configured size, a JSON object (serde would also take an array
/// for a struct) of exactly the fields of `T`.
pub struct Json<T>(pub T);

impl<T> Json<T> {
    pub fn into_inner(self) -> T {
        self.0
    }
}

impl<T> std::ops::Deref for Json<T> {
    type Target = T;

    fn deref(&self) -> &T {
        &self.0
    }
}

impl<T: serde::de::DeserializeOwned + 'static> FromRequest for Json<T> {
    type Error = Problem;
    type Future = futures::future::LocalBoxFuture<'static, Result<Self, Problem>>;

    fn from_request(req: &HttpRequest, payload: &mut Payload) -> Self::Future {
        let is_json = matches!(
            req.mime_type(),
            Ok(Some(mime)) if mime.subtype() == "json" || mime.suffix().is_some_and(|s| s == "json")
        );
        // Reads the body under `PayloadConfig`'s limit.
        let body = web::Bytes::from_request(req, payload);
        Box::pin(async move {
            if !is_json {
                return Err(Problem::new(
                    StatusCode::UNSUPPORTED_MEDIA_TYPE,
                    "unsupported-media-type",
                    "Unsupported media type",
                    "the body must be JSON with `Content-Type: application/json`",
                ));
            }
            let bytes = body.await.map_err(|e| {
                if e.as_response_error().status_code() == StatusCode::PAYLOAD_TOO_LARGE {
                    too_large()
                } else {
                    Problem::bad_request(format!("the body could not be read: {e}"))
                }
            })?;
            match bytes.iter().find(|b| !b.is_ascii_whitespace()) {
                Some(b'{') => {}
                None => {
                    return Err(Problem::bad_request(
                        "the body is empty; a JSON object is expected",
                    ));
                }
                Some(_) => {
                    // Still say what is wrong with malformed JSON.
                    if let Err(e) = serde_json::from_slice::<serde::de::IgnoredAny>(&bytes) {
                        return Err(deserialize_problem(&e));
                    }
                    return Err(Problem::bad_request(
                        "invalid type: the body must be a JSON object",
                    ));
                }
            }
            serde_json::from_slice(&bytes).map(Json).map_err(|e| {
                // serde_json reports some type mismatches (a number for an
                // enum) as syntax errors; well-formed JSON is a schema problem.
                if e.is_syntax() && serde_json::from_slice::<serde::de::IgnoredAny>(&bytes).is_ok()
                {
                    Problem::bad_request(format!("the body does not match the schema: {e}"))
                } else {
                    deserialize_problem(&e)
                }
            })
        })
    }
}

/// 201 Created with a `Location` and a JSON body.
pub struct Created<T> {
    location: String,
    body: T,
}

impl<T> Created<T> {
    pub fn at(location: String, body: T) -> Self {
        Created { location, body }
    }
}

impl<T: Serialize> Responder for Created<T> {
    type Body = BoxBody;

    fn respond_to(self, _: &HttpRequest) -> HttpResponse {
        match serde_json::to_string(&self.body) {
            Ok(json) => HttpResponse::Created()
                .insert_header((header::LOCATION, self.location))
                .content_type(ContentType::json())
                .body(json),
            Err(e) => Problem::internal(e).error_response(),
        }
    }
}

/// The client's address: the peer's, unless the peer is a trusted proxy
/// (`TRUSTED_PROXIES`); then the `X-Forwarded-For` addresses are walked from
/// the right (the one the nearest proxy wrote) past every trusted proxy, and
/// the first other address is the client. What lies left of it is whatever
/// the client sent, and `Forwarded` (which proxies often pass through) is
/// not believed.
fn client_ip(req: &HttpRequest, trusted: &crate::config::TrustedProxies) -> IpAddr {
    let peer = req
        .peer_addr()
        .map(|a| a.ip())
        .unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED));
    if !trusted.contains(peer) {
        return peer;
    }
    let forwarded: Vec<&str> = req
        .headers()
        .get_all("x-forwarded-for")
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .collect();
    // Each proxy appends the address it saw, always a valid one; something
    // unreadable can only be client-written, left of the client's address.
    let mut client = peer;
    for text in forwarded.into_iter().rev() {
        let Some(ip) = parse_ip(text.trim()) else {
            break;
        };
        client = ip;
        if !trusted.contains(ip) {
            break;
        }
    }
    client
}

fn parse_ip(text: &str) -> Option<IpAddr> {
    text.parse::<IpAddr>()
        .ok()
        .or_else(|| text.parse::<std::net::SocketAddr>().ok().map(|a| a.ip()))
}

/// The key a client is rate limited by: its IPv4 address, or the /64 of its
/// IPv6 address (one host usually holds a whole /64, so one bucket per
/// address would let it rotate addresses for a fresh allowance).
fn limit_key(ip: IpAddr) -> IpAddr {
    match ip.to_canonical() {
        IpAddr::V6(v6) => IpAddr::V6(Ipv6Addr::from_bits(v6.to_bits() & !((1u128 << 64) - 1))),
        v4 => v4,
    }
}

/// Spends one request of the client's allowance in `limiter`. Handlers call
/// it once the request is authenticated and well formed, so junk never eats
/// anybody's budget.
pub fn spend_client_quota(
    req: &HttpRequest,
    state: &AppState,
    limiter: &RateLimiter,
) -> Result<(), Problem> {
    let ip = client_ip(req, &state.shared.trusted_proxies);
    limiter.check(limit_key(ip)).map_err(|wait| {
        tracing::info!(%ip, path = req.path(), "rate limited");
        Problem::rate_limited(wait)
    })
}

/// Spends one login attempt of the account named `login`, from any client:
/// guessing one account's password from many addresses is limited too.
pub fn spend_account_quota(state: &AppState, login: &str) -> Result<(), Problem> {
    use std::hash::{BuildHasher, BuildHasherDefault, DefaultHasher};
    let key = BuildHasherDefault::<DefaultHasher>::default().hash_one(login.trim().to_lowercase());
    state
        .shared
        .account_login_limiter
        .check(key)
        .map_err(|wait| {
            tracing::info!("login rate limited for one account");
            Problem::rate_limited(wait)
        })
}
