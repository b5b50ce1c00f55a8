//! `/users`: registration, login (a JWT) and profiles.

use actix_web::{HttpRequest, get, post, web};
use proto::user::v1 as pb;
use uuid::Uuid;

use super::dto::{Login, LoginResponse, RegisterUser, User};
use super::{AppState, Created, Json, spend_account_quota, spend_client_quota};
use crate::auth::{Caller, JwtKeys};
use crate::problem::Problem;

#[utoipa::path(
    tag = "users",
    request_body = RegisterUser,
    responses(
        (status = 413, description = "Body larger than HTTP_MAX_BODY_BYTES", body = Problem, content_type = "application/problem+json"),
        (status = 415, description = "Body not application/json", body = Problem, content_type = "application/problem+json"),
        (status = 201, description = "Registered as a customer", body = User),
        (status = 400, description = "Invalid body (a `role` field is refused too)", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "Username or email taken", body = Problem, content_type = "application/problem+json"),
        (status = 429, description = "Too many registrations from this client", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "User service unavailable or busy", body = Problem, content_type = "application/problem+json"),
    )
)]
#[post("/users/register")]
pub async fn register(
    req: HttpRequest,
    state: web::Data<AppState>,
    body: Json<RegisterUser>,
) -> Result<Created<User>, Problem> {
    let body = body.into_inner();
    body.validate()?;
    spend_client_quota(&req, &state, &state.shared.register_limiter)?;
    let request = pb::RegisterRequest {
        username: body.username.trim().to_owned(),
        email: body.email.trim().to_owned(),
        password: body.password,
    };
    let response = state
        .clients
        .user
        .call(|mut c| async move { c.register(request).await })
        .await?;
    let user = User::from_proto(response.user.ok_or_else(missing_user)?)?;
    Ok(Created::at(format!("/users/{}", user.id), user))
}

#[utoipa::path(
    tag = "users",
    request_body = Login,
    responses(
        (status = 413, description = "Body larger than HTTP_MAX_BODY_BYTES", body = Problem, content_type = "application/problem+json"),
        (status = 415, description = "Body not application/json", body = Problem, content_type = "application/problem+json"),
        (status = 200, description = "A bearer token", body = LoginResponse),
        (status = 400, description = "Invalid body", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "Unknown user or wrong password", body = Problem, content_type = "application/problem+json"),
        (status = 429, description = "Too many attempts from this client, or at this account", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "User service unavailable", body = Problem, content_type = "application/problem+json"),
    )
)]
#[post("/users/login")]
pub async fn login(
    req: HttpRequest,
    state: web::Data<AppState>,
    keys: web::Data<JwtKeys>,
    body: Json<Login>,
) -> Result<web::Json<LoginResponse>, Problem> {
    let body = body.into_inner();
    body.validate()?;
    spend_client_quota(&req, &state, &state.shared.login_limiter)?;
    spend_account_quota(&state, &body.username)?;
    let request = pb::AuthenticateRequest {
        username: body.username.trim().to_owned(),
        password: body.password,
    };
    let response = state
        .clients
        .user
        .call(|mut c| async move { c.authenticate(request).await })
        .await?;
    let user = User::from_proto(response.user.ok_or_else(missing_user)?)?;
    let token = keys.issue(user.id, user.role).map_err(Problem::internal)?;
    Ok(web::Json(LoginResponse {
        token,
        token_type: "Bearer",
        expires_in: keys.ttl().as_secs(),
        user,
    }))
}

#[utoipa::path(
    tag = "users",
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The caller's profile", body = User),
        (status = 401, description = "No valid token", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "User service unavailable", body = Problem, content_type = "application/problem+json"),
    )
)]
#[get("/users/me")]
pub async fn me(state: web::Data<AppState>, caller: Caller) -> Result<web::Json<User>, Problem> {
    fetch_user(&state, caller, caller.user_id)
        .await
        .map(web::Json)
}

#[utoipa::path(
    tag = "users",
    params(("id" = Uuid, Path, description = "User id")),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The profile (a customer sees only their own)", body = User),
        (status = 400, description = "Not a UUID", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "No valid token", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such user visible to the caller", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "User service unavailable", body = Problem, content_type = "application/problem+json"),
    )
)]
#[get("/users/{id}")]
pub async fn get_user(
    state: web::Data<AppState>,
    caller: Caller,
    id: web::Path<Uuid>,
) -> Result<web::Json<User>, Problem> {
    let id = id.into_inner();
    // Another user's profile looks exactly like a missing one.
    if !caller.is_admin() && id != caller.user_id {
        return Err(Problem::not_found(format!("user {id} not found")));
    }
    fetch_user(&state, caller, id).await.map(web::Json)
}

async fn fetch_user(state: &AppState, caller: Caller, id: Uuid) -> Result<User, Problem> {
    let request = pb::GetUserRequest {
        caller: Some(caller.to_proto()),
        user_id: id.to_string(),
    };
    let response = state
        .clients
        .user
        .call(|mut c| async move { c.get_user(request).await })
        .await
        .map_err(|p| {
            // The User service may say "forbidden" for another's profile;
            // outside, that must not differ from "missing".
            if p.status == actix_web::http::StatusCode::FORBIDDEN {
                Problem::not_found(format!("user {id} not found"))
            } else {
                p
            }
        })?;
    User::from_proto(response.user.ok_or_else(missing_user)?)
}

fn missing_user() -> Problem {
    Problem::internal("the user service answered without a user")
}
