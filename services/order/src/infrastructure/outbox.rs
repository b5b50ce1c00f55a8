//! The outbox table: records written in the same transaction as the order
//! change they announce, read and marked sent by the relay.

use sea_orm::sea_query::{Expr, ExprTrait, LockBehavior, LockType};
use sea_orm::{
    ActiveValue::{NotSet, Set},
    ColumnTrait, ConnectionTrait, DbErr, EntityTrait, PaginatorTrait, QueryFilter, QueryOrder,
    QuerySelect,
};
use uuid::Uuid;

use super::entities::outbox;

pub const ORDER_CREATED: &str = "order.created";
pub const ORDER_CANCELLED: &str = "order.cancelled";

/// An event to store with the change it announces.
#[derive(Debug, Clone)]
pub struct OutboxEvent {
    pub order_id: Uuid,
    /// [`ORDER_CREATED`] or [`ORDER_CANCELLED`].
    pub event_type: &'static str,
    /// The encoded protobuf event.
    pub payload: Vec<u8>,
    /// The trace context of the request that caused it.
    pub trace_context: serde_json::Value,
}

impl OutboxEvent {
    /// An event carrying the current span's trace context.
    pub fn new(order_id: Uuid, event_type: &'static str, payload: Vec<u8>) -> Self {
        let context = platform::telemetry::current_context_map();
        OutboxEvent {
            order_id,
            event_type,
            payload,
            trace_context: serde_json::to_value(context).unwrap_or_default(),
        }
    }
}

/// A stored record (as the relay reads it).
pub type OutboxRecord = outbox::Model;

pub async fn insert<C: ConnectionTrait>(conn: &C, event: OutboxEvent) -> Result<(), DbErr> {
    outbox::Entity::insert(outbox::ActiveModel {
        id: NotSet,
        order_id: Set(event.order_id),
        event_type: Set(event.event_type.to_owned()),
        payload: Set(event.payload),
        trace_context: Set(event.trace_context),
        created_at: Set(chrono::Utc::now()),
        sent_at: Set(None),
        attempts: Set(0),
        last_error: Set(None),
        failed_at: Set(None),
    })
    .exec_without_returning(conn)
    .await?;
    Ok(())
}

/// Up to `limit` unsent records, oldest first, locked for this transaction.
/// Records another relay holds are skipped, not waited for, so replicas share
/// the work and never send one record at the same time; records set aside
/// ([`set_aside`]) are not taken again.
pub async fn lock_unsent<C: ConnectionTrait>(
    txn: &C,
    limit: u64,
) -> Result<Vec<OutboxRecord>, DbErr> {
    outbox::Entity::find()
        .filter(outbox::Column::SentAt.is_null())
        .filter(outbox::Column::FailedAt.is_null())
        .order_by_asc(outbox::Column::Id)
        .limit(limit)
        .lock_with_behavior(LockType::Update, LockBehavior::SkipLocked)
        .all(txn)
        .await
}

pub async fn mark_sent<C: ConnectionTrait>(txn: &C, id: i64) -> Result<(), DbErr> {
    outbox::Entity::update_many()
        .col_expr(outbox::Column::SentAt, Expr::value(chrono::Utc::now()))
        .col_expr(
            outbox::Column::Attempts,
            Expr::col(outbox::Column::Attempts).add(1),
        )
        .col_expr(
            outbox::Column::LastError,
            Expr::value(Option::<String>::None),
        )
        .filter(outbox::Column::Id.eq(id))
        .exec(txn)
        .await?;
    Ok(())
}

pub async fn record_failure<C: ConnectionTrait>(
    txn: &C,
    id: i64,
    error: &str,
) -> Result<(), DbErr> {
    outbox::Entity::update_many()
        .col_expr(
            outbox::Column::Attempts,
            Expr::col(outbox::Column::Attempts).add(1),
        )
        .col_expr(outbox::Column::LastError, Expr::value(error.to_owned()))
        .filter(outbox::Column::Id.eq(id))
        .exec(txn)
        .await?;
    Ok(())
}

/// Sets aside a record the Producer can never take, with the reason: it
/// stays unsent, for someone to look at, and is not taken again.
pub async fn set_aside<C: ConnectionTrait>(txn: &C, id: i64, error: &str) -> Result<(), DbErr> {
    outbox::Entity::update_many()
        .col_expr(outbox::Column::FailedAt, Expr::value(chrono::Utc::now()))
        .col_expr(
            outbox::Column::Attempts,
            Expr::col(outbox::Column::Attempts).add(1),
        )
        .col_expr(outbox::Column::LastError, Expr::value(error.to_owned()))
        .filter(outbox::Column::Id.eq(id))
        .exec(txn)
        .await?;
    Ok(())
}

/// How many records wait to be sent (those set aside included).
pub async fn backlog<C: ConnectionTrait>(conn: &C) -> Result<u64, DbErr> {
    outbox::Entity::find()
        .filter(outbox::Column::SentAt.is_null())
        .count(conn)
        .await
}
