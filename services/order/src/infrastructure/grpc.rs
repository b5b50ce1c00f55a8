//! The gRPC face of the Order service: checks and converts the wire
//! requests, calls the use cases, converts the answers, and maps every
//! error to its status once.

use tonic::{Code, Request, Response, Status};
use uuid::Uuid;

use proto::common::v1 as common;
use proto::order::v1 as pb;
use proto::order::v1::order_service_server::OrderService;

use crate::application::OrderError;
use crate::application::orders::{BatchedOutcome, ListRequest, NewOrderRequest, Orders};
use crate::application::ports::{InventoryError, OrderRepository, PriceSource};
use crate::domain::order::{money, validate_idempotency_key, validate_lines};
use crate::domain::{
    Caller, FieldViolation, Order, OrderStatus, Outcome, PricingError, Role, TransitionError,
};
use platform::grpc::{invalid_argument, status_with_detail, violation};

use platform::limits::{DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE};
/// A rejection reason is kept to this many characters.
const MAX_REASON_CHARS: usize = 1000;

pub struct OrderGrpc<S, P> {
    orders: Orders<S, P>,
}

impl<S: OrderRepository, P: PriceSource> OrderGrpc<S, P> {
    pub fn new(orders: Orders<S, P>) -> Self {
        OrderGrpc { orders }
    }
}

/// Collects every bad field of a request before answering.
#[derive(Default)]
struct Checks(Vec<FieldViolation>);

impl Checks {
    fn add(&mut self, field: impl Into<String>, message: impl Into<String>) {
        self.0.push(FieldViolation::new(field, message));
    }

    fn caller(&mut self, caller: Option<common::Caller>) -> Option<Caller> {
        let Some(caller) = caller else {
            self.add("caller", "is required");
            return None;
        };
        let user_id = self.uuid("caller.user_id", &caller.user_id);
        let role = Role::from_proto(caller.role);
        if role.is_none() {
            self.add("caller.role", "must be ROLE_CUSTOMER or ROLE_ADMIN");
        }
        Some(Caller {
            user_id: user_id?,
            role: role?,
        })
    }

    fn uuid(&mut self, field: &str, raw: &str) -> Option<Uuid> {
        match Uuid::parse_str(raw.trim()) {
            Ok(id) => Some(id),
            Err(_) if raw.trim().is_empty() => {
                self.add(field, "is required");
                None
            }
            Err(_) => {
                self.add(field, format!("{raw:?} is not a UUID"));
                None
            }
        }
    }

    /// The checked value, or INVALID_ARGUMENT naming every bad field.
    fn finish<T>(self, value: impl FnOnce() -> Option<T>) -> Result<T, OrderError> {
        if !self.0.is_empty() {
            return Err(OrderError::Invalid(self.0));
        }
        value().ok_or_else(|| OrderError::invalid("request", "is incomplete"))
    }
}

fn to_wire(order: Order) -> pb::Order {
    pb::Order {
        id: order.id.to_string(),
        user_id: order.user_id.to_string(),
        status: order.status.to_proto() as i32,
        total: money(order.total).to_string(),
        items: order
            .lines
            .iter()
            .map(|line| pb::OrderItem {
                product_id: line.product_id.to_string(),
                quantity: line.quantity,
                unit_price: money(line.unit_price).to_string(),
            })
            .collect(),
        status_reason: order.status_reason.unwrap_or_default(),
        created_at: Some(platform::grpc::timestamp(order.created_at)),
        updated_at: Some(platform::grpc::timestamp(order.updated_at)),
    }
}

#[tonic::async_trait]
impl<S: OrderRepository, P: PriceSource> OrderService for OrderGrpc<S, P> {
    async fn create_order(
        &self,
        request: Request<pb::CreateOrderRequest>,
    ) -> Result<Response<pb::CreateOrderResponse>, Status> {
        let request = request.into_inner();
        let mut checks = Checks::default();
        let caller = checks.caller(request.caller);
        let lines = validate_lines(
            request
                .items
                .iter()
                .map(|item| (item.product_id.as_str(), item.quantity)),
        )
        .map_err(|violations| checks.0.extend(violations))
        .ok();
        let key = validate_idempotency_key(&request.idempotency_key)
            .map_err(|violation| checks.0.push(violation))
            .ok();
        let request = checks
            .finish(|| {
                Some(NewOrderRequest {
                    caller: caller?,
                    lines: lines?,
                    idempotency_key: key?,
                })
            })
            .map_err(to_status)?;
        let reply = self.orders.create(request).await.map_err(to_status)?;
        Ok(Response::new(pb::CreateOrderResponse {
            order: Some(to_wire(reply.order)),
            replayed: reply.replayed,
        }))
    }

    async fn get_order(
        &self,
        request: Request<pb::GetOrderRequest>,
    ) -> Result<Response<pb::GetOrderResponse>, Status> {
        let request = request.into_inner();
        let mut checks = Checks::default();
        let caller = checks.caller(request.caller);
        let id = checks.uuid("order_id", &request.order_id);
        let (caller, id) = checks.finish(|| Some((caller?, id?))).map_err(to_status)?;
        let order = self.orders.get(caller, id).await.map_err(to_status)?;
        Ok(Response::new(pb::GetOrderResponse {
            order: Some(to_wire(order)),
        }))
    }

    async fn list_orders(
        &self,
        request: Request<pb::ListOrdersRequest>,
    ) -> Result<Response<pb::ListOrdersResponse>, Status> {
        let request = request.into_inner();
        let mut checks = Checks::default();
        let caller = checks.caller(request.caller);
        let page = request.page.max(1);
        let page_size = match request.page_size {
            0 => DEFAULT_PAGE_SIZE,
            size if size > MAX_PAGE_SIZE => {
                checks.add(
                    "page_size",
                    format!("must be at most {MAX_PAGE_SIZE}, got {size}"),
                );
                size
            }
            size => size,
        };
        let user_id = match request.user_id.as_deref() {
            None | Some("") => Some(None),
            Some(raw) => checks.uuid("user_id", raw).map(Some),
        };
        let list = checks
            .finish(|| {
                Some(ListRequest {
                    caller: caller?,
                    page: u64::from(page),
                    page_size: u64::from(page_size),
                    user_id: user_id?,
                })
            })
            .map_err(to_status)?;
        let result = self.orders.list(list).await.map_err(to_status)?;
        Ok(Response::new(pb::ListOrdersResponse {
            orders: result.orders.into_iter().map(to_wire).collect(),
            page,
            page_size,
            total: result.total,
        }))
    }

    async fn update_order_status(
        &self,
        request: Request<pb::UpdateOrderStatusRequest>,
    ) -> Result<Response<pb::UpdateOrderStatusResponse>, Status> {
        let request = request.into_inner();
        let mut checks = Checks::default();
        let caller = checks.caller(request.caller);
        let id = checks.uuid("order_id", &request.order_id);
        let status = OrderStatus::from_proto(request.status);
        if status.is_none() {
            checks.add(
                "status",
                format!("{} is not an order status", request.status),
            );
        }
        let (caller, id, status) = checks
            .finish(|| Some((caller?, id?, status?)))
            .map_err(to_status)?;
        let order = self
            .orders
            .update_status(caller, id, status)
            .await
            .map_err(to_status)?;
        Ok(Response::new(pb::UpdateOrderStatusResponse {
            order: Some(to_wire(order)),
        }))
    }

    async fn cancel_order(
        &self,
        request: Request<pb::CancelOrderRequest>,
    ) -> Result<Response<pb::CancelOrderResponse>, Status> {
        let request = request.into_inner();
        let mut checks = Checks::default();
        let caller = checks.caller(request.caller);
        let id = checks.uuid("order_id", &request.order_id);
        let (caller, id) = checks.finish(|| Some((caller?, id?))).map_err(to_status)?;
        let order = self.orders.cancel(caller, id).await.map_err(to_status)?;
        Ok(Response::new(pb::CancelOrderResponse {
            order: Some(to_wire(order)),
        }))
    }

    async fn record_outcome(
        &self,
        request: Request<pb::RecordOutcomeRequest>,
    ) -> Result<Response<pb::RecordOutcomeResponse>, Status> {
        let (id, outcome, reason) = parse_outcome(request.into_inner())?;
        let reply = self
            .orders
            .record_outcome(id, outcome, reason)
            .await
            .map_err(to_status)?;
        Ok(Response::new(pb::RecordOutcomeResponse {
            order: Some(to_wire(reply.order)),
            replayed: reply.replayed,
        }))
    }

    #[tracing::instrument(skip_all, fields(batch_size))]
    async fn record_outcomes(
        &self,
        request: Request<pb::RecordOutcomesRequest>,
    ) -> Result<Response<pb::RecordOutcomesResponse>, Status> {
        let items = request.into_inner().outcomes;
        tracing::Span::current().record("batch_size", items.len());
        if items.len() > MAX_BATCH_OUTCOMES {
            return Err(invalid_argument(vec![violation(
                "outcomes",
                format!("at most {MAX_BATCH_OUTCOMES} outcomes, got {}", items.len()),
            )]));
        }
        let mut parsed = Vec::with_capacity(items.len());
        let mut valid = Vec::new();
        for item in items {
            let span = tracing::info_span!("record_outcome", otel.name = "RecordOutcomes item");
            platform::telemetry::set_parent_from(&span, &item.trace_context);
            let outcome = parse_outcome(item.outcome.unwrap_or_default());
            if let Ok((id, outcome, reason)) = &outcome {
                valid.push(BatchedOutcome {
                    id: *id,
                    outcome: *outcome,
                    reason: reason.clone(),
                    span,
                });
            }
            parsed.push(outcome);
        }
        let mut answers = self
            .orders
            .record_outcomes(valid)
            .await
            .map_err(to_status)?
            .into_iter();
        let results = parsed
            .into_iter()
            .map(|outcome| {
                let answer = match outcome {
                    Err(status) => Err(status),
                    Ok(_) => answers
                        .next()
                        .expect("one answer per valid outcome")
                        .map_err(to_status),
                };
                pb::RecordOutcomesResult {
                    result: Some(match answer {
                        Ok(replayed) => pb::record_outcomes_result::Result::Replayed(replayed),
                        Err(status) => pb::record_outcomes_result::Result::Error(
                            platform::grpc::item_error(&status),
                        ),
                    }),
                }
            })
            .collect();
        Ok(Response::new(pb::RecordOutcomesResponse { results }))
    }
}

/// The most outcomes one RecordOutcomes call may carry.
pub const MAX_BATCH_OUTCOMES: usize = platform::batch::MAX_BATCH_CALLS;

/// A RecordOutcome request checked: the order, the outcome and the reason as
/// it is stored (one line of text: PostgreSQL cannot store NUL, and a reason
/// is shown).
fn parse_outcome(
    request: pb::RecordOutcomeRequest,
) -> Result<(Uuid, Outcome, Option<String>), Status> {
    let mut checks = Checks::default();
    let id = checks.uuid("order_id", &request.order_id);
    let outcome = match pb::OrderOutcome::try_from(request.outcome) {
        Ok(pb::OrderOutcome::Confirmed) => Some(Outcome::Confirmed),
        Ok(pb::OrderOutcome::Rejected) => Some(Outcome::Rejected),
        _ => {
            checks.add(
                "outcome",
                "must be ORDER_OUTCOME_CONFIRMED or ORDER_OUTCOME_REJECTED",
            );
            None
        }
    };
    let (id, outcome) = checks.finish(|| Some((id?, outcome?))).map_err(to_status)?;
    let reason: String = request
        .reason
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    let reason = reason.trim();
    let reason = (!reason.is_empty()).then(|| reason.chars().take(MAX_REASON_CHARS).collect());
    Ok((id, outcome, reason))
}

/// Stable reasons carried in `ErrorDetail.reason`.
pub mod reason {
    pub const INVALID_ARGUMENT: &str = "INVALID_ARGUMENT";
    pub const PRODUCT_NOT_FOUND: &str = "PRODUCT_NOT_FOUND";
    pub const INSUFFICIENT_STOCK: &str = "INSUFFICIENT_STOCK";
    pub const ORDER_NOT_FOUND: &str = "ORDER_NOT_FOUND";
    pub const PERMISSION_DENIED: &str = "PERMISSION_DENIED";
    pub const ILLEGAL_TRANSITION: &str = "ILLEGAL_TRANSITION";
    pub const ORDER_NOT_CANCELLABLE_YET: &str = "ORDER_NOT_CANCELLABLE_YET";
    pub const OUTCOME_CONFLICT: &str = "OUTCOME_CONFLICT";
    pub const IDEMPOTENCY_KEY_REUSED: &str = "IDEMPOTENCY_KEY_REUSED";
    pub const INVENTORY_UNAVAILABLE: &str = "INVENTORY_UNAVAILABLE";
}

/// Maps an error to its status, with a machine-readable reason
/// (`ErrorDetail`): bad input INVALID_ARGUMENT naming every field, unknown
/// products NOT_FOUND, visible shortages FAILED_PRECONDITION, an outage
/// UNAVAILABLE (Inventory's or the database's, by the database error's class).
pub fn to_status(error: OrderError) -> Status {
    let message = error.to_string();
    let plain = |code: Code, reason: &str| status_with_detail(code, &message, reason, vec![]);
    match &error {
        OrderError::Invalid(violations) => platform::grpc::invalid_argument(
            violations
                .iter()
                .map(|v| violation(&v.field, &v.message))
                .collect(),
        ),
        OrderError::Pricing(PricingError::UnknownProducts(unknown)) => status_with_detail(
            Code::NotFound,
            &message,
            reason::PRODUCT_NOT_FOUND,
            unknown
                .iter()
                .map(|(index, id)| {
                    violation(
                        format!("items[{index}].product_id"),
                        format!("product {id} does not exist"),
                    )
                })
                .collect(),
        ),
        OrderError::Pricing(PricingError::InsufficientStock(shortages)) => status_with_detail(
            Code::FailedPrecondition,
            &message,
            reason::INSUFFICIENT_STOCK,
            shortages
                .iter()
                .map(|s| {
                    violation(
                        format!("items[{}].quantity", s.index),
                        format!(
                            "product {} has {} in stock, {} requested",
                            s.product_id,
                            s.available.max(0),
                            s.requested
                        ),
                    )
                })
                .collect(),
        ),
        OrderError::Pricing(PricingError::TotalTooLarge(_)) => status_with_detail(
            Code::InvalidArgument,
            &message,
            reason::INVALID_ARGUMENT,
            vec![violation("items", &message)],
        ),
        OrderError::NotFound(_) => plain(Code::NotFound, reason::ORDER_NOT_FOUND),
        OrderError::PermissionDenied(_) => plain(Code::PermissionDenied, reason::PERMISSION_DENIED),
        OrderError::Transition(TransitionError::NotCancellableYet) => {
            plain(Code::FailedPrecondition, reason::ORDER_NOT_CANCELLABLE_YET)
        }
        OrderError::Transition(TransitionError::OutcomeConflict) => {
            plain(Code::FailedPrecondition, reason::OUTCOME_CONFLICT)
        }
        OrderError::Transition(_) => plain(Code::FailedPrecondition, reason::ILLEGAL_TRANSITION),
        OrderError::IdempotencyKeyReused(_) => {
            plain(Code::FailedPrecondition, reason::IDEMPOTENCY_KEY_REUSED)
        }
        OrderError::Inventory(InventoryError::Unavailable { .. }) => {
            tracing::warn!(%error, "inventory unavailable");
            plain(Code::Unavailable, reason::INVENTORY_UNAVAILABLE)
        }
        OrderError::Inventory(InventoryError::Contract(_)) => {
            tracing::error!(%error, "inventory broke its contract");
            Status::internal(message)
        }
        OrderError::Database(db) => platform::db::status_from_db(db),
    }
}
