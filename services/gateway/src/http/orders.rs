//! `/orders`: a customer's own orders; admins see all and move fulfilment.

use actix_web::{HttpRequest, HttpResponse, get, patch, post, web};
use proto::order::v1 as pb;
use uuid::Uuid;

use super::dto::{CreateOrder, Order, OrderPage, OrderQuery, UpdateOrderStatus, validate_paging};
use super::{AppState, Json, spend_client_quota};
use crate::auth::Caller;
use crate::problem::Problem;

use platform::limits::MAX_IDEMPOTENCY_KEY_BYTES;

pub const IDEMPOTENCY_KEY: &str = "Idempotency-Key";
/// Set on the answer to a retried request that returned the first order.
pub const IDEMPOTENT_REPLAYED: &str = "Idempotent-Replayed";

fn idempotency_key(req: &HttpRequest) -> Result<String, Problem> {
    let Some(value) = req.headers().get(IDEMPOTENCY_KEY) else {
        return Ok(String::new());
    };
    let key = value
        .to_str()
        .ok()
        .map(str::trim)
        .filter(|k| !k.is_empty() && k.len() <= MAX_IDEMPOTENCY_KEY_BYTES)
        .filter(|k| k.chars().all(|c| c.is_ascii_graphic()))
        .ok_or_else(|| {
            let rule = format!("1 to {MAX_IDEMPOTENCY_KEY_BYTES} printable ASCII characters");
            Problem::bad_request(format!("the {IDEMPOTENCY_KEY} header must be {rule}"))
                .with_field(IDEMPOTENCY_KEY, format!("{rule}, e.g. a UUID"))
        })?;
    Ok(key.to_owned())
}

#[utoipa::path(
    tag = "orders",
    request_body = CreateOrder,
    params((
        "Idempotency-Key" = Option<String>, Header,
        description = "Makes retries safe: the same key (per user) and body return the first order; the same key with another body is a 422.",
        min_length = 1, max_length = 255, pattern = "^[!-~]+$"
    )),
    security(("bearer" = [])),
    responses(
        (status = 413, description = "Body larger than HTTP_MAX_BODY_BYTES", body = Problem, content_type = "application/problem+json"),
        (status = 415, description = "Body not application/json", body = Problem, content_type = "application/problem+json"),
        (status = 201, description = "Created, PENDING until stock is applied", body = Order),
        (status = 200, description = "A retry with the same Idempotency-Key: the first order", body = Order),
        (status = 400, description = "Invalid body", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "No valid token", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "Unknown product", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "Not enough stock", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Idempotency-Key reused with another body", body = Problem, content_type = "application/problem+json"),
        (status = 429, description = "Too many orders from this client", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "A service is unavailable", body = Problem, content_type = "application/problem+json"),
    )
)]
#[post("/orders")]
pub async fn create_order(
    req: HttpRequest,
    state: web::Data<AppState>,
    caller: Caller,
    body: Json<CreateOrder>,
) -> Result<HttpResponse, Problem> {
    let key = idempotency_key(&req)?;
    let body = body.into_inner();
    body.validate()?;
    spend_client_quota(&req, &state, &state.shared.order_limiter)?;
    let request = pb::CreateOrderRequest {
        caller: Some(caller.to_proto()),
        items: body
            .items
            .iter()
            .map(|i| pb::OrderItemInput {
                product_id: i.product_id.to_string(),
                quantity: i.quantity,
            })
            .collect(),
        idempotency_key: key,
    };
    let response = state
        .clients
        .order
        .call(|mut c| async move { c.create_order(request).await })
        .await?;
    let order = Order::from_proto(response.order.ok_or_else(missing_order)?)?;
    let mut answer = if response.replayed {
        let mut ok = HttpResponse::Ok();
        ok.insert_header((IDEMPOTENT_REPLAYED, "true"));
        ok
    } else {
        HttpResponse::Created()
    };
    Ok(answer
        .insert_header((
            actix_web::http::header::LOCATION,
            format!("/orders/{}", order.id),
        ))
        .json(order))
}

#[utoipa::path(
    tag = "orders",
    params(OrderQuery),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "A page of the caller's orders (an admin's: everyone's)", body = OrderPage),
        (status = 400, description = "Invalid query", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "No valid token", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "user_id given by a customer", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "Order unavailable", body = Problem, content_type = "application/problem+json"),
    )
)]
#[get("/orders")]
pub async fn list_orders(
    state: web::Data<AppState>,
    caller: Caller,
    query: web::Query<OrderQuery>,
) -> Result<web::Json<OrderPage>, Problem> {
    let query = query.into_inner();
    validate_paging(query.page, query.page_size)?;
    if query.user_id.is_some_and(|id| id != caller.user_id) && !caller.is_admin() {
        return Err(Problem::forbidden(
            "only an admin may list another user's orders",
        ));
    }
    let request = pb::ListOrdersRequest {
        caller: Some(caller.to_proto()),
        page: query.page.unwrap_or(1),
        page_size: query
            .page_size
            .unwrap_or(platform::limits::DEFAULT_PAGE_SIZE),
        user_id: query.user_id.map(|id| id.to_string()),
    };
    let response = state
        .clients
        .order
        .call(|mut c| async move { c.list_orders(request).await })
        .await?;
    let orders: Vec<Order> = response
        .orders
        .into_iter()
        .map(Order::from_proto)
        .collect::<Result<_, _>>()?;
    // The Order service filters by owner; this is a second line of defence.
    if !caller.is_admin() && orders.iter().any(|o| o.user_id != caller.user_id) {
        return Err(Problem::internal(
            "the order service listed another user's order to a customer",
        ));
    }
    Ok(web::Json(OrderPage {
        orders,
        page: response.page,
        page_size: response.page_size,
        total: response.total,
    }))
}

/// A customer never learns whether another user's order exists.
fn owned_or_not_found(caller: &Caller, order: Order) -> Result<Order, Problem> {
    if caller.is_admin() || order.user_id == caller.user_id {
        Ok(order)
    } else {
        Err(Problem::not_found(format!("order {} not found", order.id)))
    }
}

#[utoipa::path(
    tag = "orders",
    params(("id" = Uuid, Path, description = "Order id")),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The order", body = Order),
        (status = 400, description = "Not a UUID", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "No valid token", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such order of the caller's", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "Order unavailable", body = Problem, content_type = "application/problem+json"),
    )
)]
#[get("/orders/{id}")]
pub async fn get_order(
    state: web::Data<AppState>,
    caller: Caller,
    id: web::Path<Uuid>,
) -> Result<web::Json<Order>, Problem> {
    let request = pb::GetOrderRequest {
        caller: Some(caller.to_proto()),
        order_id: id.into_inner().to_string(),
    };
    let response = state
        .clients
        .order
        .call(|mut c| async move { c.get_order(request).await })
        .await?;
    let order = Order::from_proto(response.order.ok_or_else(missing_order)?)?;
    Ok(web::Json(owned_or_not_found(&caller, order)?))
}

#[utoipa::path(
    tag = "orders",
    params(("id" = Uuid, Path, description = "Order id")),
    request_body = UpdateOrderStatus,
    security(("bearer" = [])),
    responses(
        (status = 413, description = "Body larger than HTTP_MAX_BODY_BYTES", body = Problem, content_type = "application/problem+json"),
        (status = 415, description = "Body not application/json", body = Problem, content_type = "application/problem+json"),
        (status = 200, description = "The order with its new status", body = Order),
        (status = 400, description = "Invalid body or id", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "No valid token", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Not an admin", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such order", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "Not allowed from the current status", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "Order unavailable", body = Problem, content_type = "application/problem+json"),
    )
)]
#[patch("/orders/{id}")]
pub async fn update_order_status(
    state: web::Data<AppState>,
    caller: Caller,
    id: web::Path<Uuid>,
    body: Json<UpdateOrderStatus>,
) -> Result<web::Json<Order>, Problem> {
    caller.require_admin()?;
    let request = pb::UpdateOrderStatusRequest {
        caller: Some(caller.to_proto()),
        order_id: id.into_inner().to_string(),
        status: body.status.to_proto() as i32,
    };
    let response = state
        .clients
        .order
        .call(|mut c| async move { c.update_order_status(request).await })
        .await?;
    Ok(web::Json(Order::from_proto(
        response.order.ok_or_else(missing_order)?,
    )?))
}

#[utoipa::path(
    tag = "orders",
    params(("id" = Uuid, Path, description = "Order id")),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The cancelled order; its stock is returned", body = Order),
        (status = 400, description = "Not a UUID", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "No valid token", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such order of the caller's", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "Not cancellable in its current status", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "Order unavailable", body = Problem, content_type = "application/problem+json"),
    )
)]
#[post("/orders/{id}/cancel")]
pub async fn cancel_order(
    state: web::Data<AppState>,
    caller: Caller,
    id: web::Path<Uuid>,
) -> Result<web::Json<Order>, Problem> {
    let request = pb::CancelOrderRequest {
        caller: Some(caller.to_proto()),
        order_id: id.into_inner().to_string(),
    };
    let response = state
        .clients
        .order
        .call(|mut c| async move { c.cancel_order(request).await })
        .await?;
    let order = Order::from_proto(response.order.ok_or_else(missing_order)?)?;
    Ok(web::Json(owned_or_not_found(&caller, order)?))
}

fn missing_order() -> Problem {
    Problem::internal("the order service answered without an order")
}
