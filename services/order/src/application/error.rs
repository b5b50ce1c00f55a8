//! The one error type of the use cases (mapped once to a gRPC status in
//! `infrastructure::grpc`).

use sea_orm::DbErr;
use uuid::Uuid;

use super::ports::InventoryError;
use crate::domain::{FieldViolation, PricingError, TransitionError};

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
