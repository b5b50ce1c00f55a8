//! What the Order use cases need from the outside world, as traits (ports),
//! and the types they exchange. `infrastructure` implements them: PostgreSQL
//! (the orders and the outbox), Inventory and the Producer over gRPC.

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::time::Duration;

use sea_orm::DbErr;
use uuid::Uuid;

use crate::domain::{Order, OrderStatus, ProductQuote};

/// The orders, their lines and the outbox records written with them. Every
/// method is one transaction.
pub trait OrderRepository: Clone + Send + Sync + 'static {
    /// The order a user's idempotency key made, with its request fingerprint.
    fn find_by_idempotency_key(
        &self,
        user_id: Uuid,
        key: &str,
    ) -> impl Future<Output = Result<Option<(Order, String)>, DbErr>> + Send;
    /// Stores the order, its lines and its `order.created` record together.
    fn insert(&self, new: NewOrder) -> impl Future<Output = Result<(), InsertError>> + Send;
    /// [`Self::insert`] for several orders in one statement and one commit;
    /// for each, whether it was stored (`false`: its user's idempotency key
    /// was taken, by an order of this batch or another). A failure of the
    /// statement stores none of them.
    fn insert_many(
        &self,
        new: &[NewOrder],
    ) -> impl Future<Output = Result<Vec<bool>, DbErr>> + Send;
    fn find(&self, id: Uuid) -> impl Future<Output = Result<Option<Order>, DbErr>> + Send;
    /// A page of orders, newest first, and how many there are in all.
    fn list(
        &self,
        user_id: Option<Uuid>,
        page: u64,
        page_size: u64,
    ) -> impl Future<Output = Result<(Vec<Order>, u64), DbErr>> + Send;
    /// Orders PENDING for longer than `age` (at most `limit`).
    fn pending_older_than(
        &self,
        age: Duration,
        limit: u64,
    ) -> impl Future<Output = Result<Vec<Uuid>, DbErr>> + Send;
    fn count_pending_older_than(
        &self,
        age: Duration,
    ) -> impl Future<Output = Result<u64, DbErr>> + Send;
    /// Moves the PENDING ones among `outcomes` to their status in one
    /// statement; the ids it moved.
    fn record_pending_outcomes(
        &self,
        outcomes: &[(Uuid, OrderStatus, Option<String>)],
    ) -> impl Future<Output = Result<HashSet<Uuid>, DbErr>> + Send;
    /// Applies `decide` to the order as it is and writes its decision, with
    /// its outbox record, in one transaction, deciding again after losing a
    /// race. `None` when there is no such order.
    fn change_status<E, F>(
        &self,
        id: Uuid,
        decide: F,
    ) -> impl Future<Output = Result<Option<StatusChanged>, E>> + Send
    where
        E: From<DbErr> + Send,
        F: Fn(&Order) -> Result<StatusDecision, E> + Send + Sync;
}

/// The outbox as the relay and the sweeper work it.
pub trait OutboxRepository: Clone + Send + Sync + 'static {
    /// Claims up to `limit` unsent records, oldest first, for `lease`.
    fn claim_unsent(
        &self,
        limit: u64,
        lease: Duration,
    ) -> impl Future<Output = Result<Vec<OutboxRecord>, DbErr>> + Send;
    fn release_claims(&self, ids: &[i64]) -> impl Future<Output = Result<(), DbErr>> + Send;
    fn mark_sent(&self, ids: &[i64]) -> impl Future<Output = Result<(), DbErr>> + Send;
    /// Deletes up to `limit` records sent longer than `retention` ago.
    fn prune_sent(
        &self,
        retention: Duration,
        limit: u64,
    ) -> impl Future<Output = Result<u64, DbErr>> + Send;
    /// PENDING orders whose creation record was set aside.
    fn pending_set_aside(
        &self,
        limit: u64,
    ) -> impl Future<Output = Result<Vec<Unpublishable>, DbErr>> + Send;
    /// Unclaims the creation records of orders PENDING longer than `after`
    /// for another publish; their orders.
    fn republish_stale(
        &self,
        after: Duration,
        limit: u64,
    ) -> impl Future<Output = Result<Vec<Uuid>, DbErr>> + Send;
    fn record_failures(
        &self,
        ids: &[i64],
        error: &str,
    ) -> impl Future<Output = Result<(), DbErr>> + Send;
    /// Sets a record the Producer can never take aside.
    fn set_aside(&self, id: i64, error: &str) -> impl Future<Output = Result<(), DbErr>> + Send;
    /// Unsent records.
    fn backlog(&self) -> impl Future<Output = Result<u64, DbErr>> + Send;
}

/// Inventory as the prices of an order's products.
pub trait PriceSource: Clone + Send + Sync + 'static {
    /// The price and stock of each known product among `ids`, possibly as
    /// read a moment ago.
    fn quotes(
        &self,
        ids: &[Uuid],
    ) -> impl Future<Output = Result<HashMap<Uuid, ProductQuote>, InventoryError>> + Send;
    /// The same read now, when [`PriceSource::quotes`] may have answered
    /// from what it held (`None`: it always reads).
    fn requote(
        &self,
        ids: &[Uuid],
    ) -> impl Future<Output = Result<Option<HashMap<Uuid, ProductQuote>>, InventoryError>> + Send;
}

/// The Producer, which hands the records' events to the stream.
pub trait EventPublisher: Clone + Send + Sync + 'static {
    /// One answer per record, in their order, each published in its span.
    fn publish_batch(
        &self,
        records: &[OutboxRecord],
        spans: &[tracing::Span],
        deadline: Duration,
    ) -> impl Future<Output = Vec<Result<Published, PublishError>>> + Send;
}

/// A record as the relay reads it.
#[derive(Debug, Clone)]
pub struct OutboxRecord {
    pub id: i64,
    pub order_id: Uuid,
    /// [`ORDER_CREATED`] or [`ORDER_CANCELLED`].
    pub event_type: String,
    /// The encoded protobuf event.
    pub payload: Vec<u8>,
    /// `traceparent` / `tracestate` of the span that wrote the record.
    pub trace_context: serde_json::Value,
    pub attempts: i32,
}

/// A new PENDING order with its lines and its `order.created` record.
#[derive(Debug, Clone)]
pub struct NewOrder {
    pub order: Order,
    /// The idempotency key and the request's fingerprint, when a key was given.
    pub idempotency: Option<(String, String)>,
    pub event: OutboxEvent,
}

#[derive(Debug, thiserror::Error)]
pub enum InsertError {
    #[error("an order with this idempotency key exists already")]
    DuplicateIdempotencyKey,
    #[error(transparent)]
    Db(#[from] DbErr),
}

/// What a status change decided, given the order as it is.
pub enum StatusDecision {
    /// Leave the order as it is (the request is a replay).
    Keep,
    Set {
        to: OrderStatus,
        reason: Option<String>,
        event: Option<OutboxEvent>,
    },
}

/// The order after a status change, and whether it was a replay.
pub struct StatusChanged {
    pub order: Order,
    pub replayed: bool,
}

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

/// A PENDING order whose `order.created` record the Producer can never take.
#[derive(Debug, Clone)]
pub struct Unpublishable {
    pub order_id: Uuid,
    pub last_error: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum InventoryError {
    /// Down, busy or too slow: the caller may try again later.
    #[error("inventory is unavailable ({code:?}): {message}")]
    Unavailable { code: tonic::Code, message: String },
    /// Inventory refused the request or answered something that breaks its
    /// contract: a fault on our side or theirs, not the caller's.
    #[error("inventory answered unexpectedly: {0}")]
    Contract(String),
}

#[derive(Debug, Clone, thiserror::Error)]
pub enum PublishError {
    /// The Producer or the stream could not take it now (or the Producer is
    /// misconfigured); try again later.
    #[error("the producer is unavailable ({code:?}): {message}")]
    Unavailable { code: tonic::Code, message: String },
    /// The record itself is unusable (unknown type, undecodable, refused):
    /// retrying will not help until someone looks at it.
    #[error("the record cannot be published: {0}")]
    Unpublishable(String),
}

impl PublishError {
    pub fn is_transient(&self) -> bool {
        matches!(self, PublishError::Unavailable { .. })
    }
}

/// What the stream answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Published {
    pub sequence: u64,
    pub duplicate: bool,
}
