use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
#[sea_orm(table_name = "outbox")]
pub struct Model {
    #[sea_orm(primary_key)]
    pub id: i64,
    pub order_id: Uuid,
    /// `order.created` or `order.cancelled`.
    pub event_type: String,
    /// The encoded protobuf event.
    pub payload: Vec<u8>,
    /// `traceparent` / `tracestate` of the span that wrote the record.
    pub trace_context: Json,
    pub created_at: DateTimeUtc,
    pub sent_at: Option<DateTimeUtc>,
    pub attempts: i32,
    pub last_error: Option<String>,
    /// When the record was set aside as one the Producer can never take.
    pub failed_at: Option<DateTimeUtc>,
    /// Until when a relay holds the record to publish it (its claim lease).
    pub claimed_until: Option<DateTimeUtc>,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
