//! The one error type of the use cases, and its single mapping to a gRPC
//! status with a machine-readable reason (`ErrorDetail`).

use sea_orm::DbErr;
use tonic::{Code, Status};
use uuid::Uuid;

use platform::grpc::{status_with_detail, violation};

use crate::domain::{FieldViolation, PricingError, TransitionError};
use crate::infrastructure::inventory::InventoryError;

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

#[derive(Debug, thiserror::Error)]
pub enum OrderError {
    #[error("{}", .0.iter().map(ToString::to_string).collect::<Vec<_>>().join("; "))]
    Invalid(Vec<FieldViolation>),
    #[error(transparent)]
    Pricing(#[from] PricingError),
    #[error("order {0} not found")]
    NotFound(Uuid),
    #[error("{0}")]
    PermissionDenied(&'static str),
    #[error(transparent)]
    Transition(#[from] TransitionError),
    #[error("the idempotency key {0:?} was already used for an order with other items")]
    IdempotencyKeyReused(String),
    #[error(transparent)]
    Inventory(#[from] InventoryError),
    #[error(transparent)]
    Database(#[from] DbErr),
}

impl OrderError {
    pub fn invalid(field: &str, message: impl Into<String>) -> Self {
        OrderError::Invalid(vec![FieldViolation::new(field, message)])
    }
}

impl From<OrderError> for Status {
    fn from(error: OrderError) -> Status {
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
            OrderError::PermissionDenied(_) => {
                plain(Code::PermissionDenied, reason::PERMISSION_DENIED)
            }
            OrderError::Transition(TransitionError::NotCancellableYet) => {
                plain(Code::FailedPrecondition, reason::ORDER_NOT_CANCELLABLE_YET)
            }
            OrderError::Transition(TransitionError::OutcomeConflict) => {
                plain(Code::FailedPrecondition, reason::OUTCOME_CONFLICT)
            }
            OrderError::Transition(_) => {
                plain(Code::FailedPrecondition, reason::ILLEGAL_TRANSITION)
            }
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
}
