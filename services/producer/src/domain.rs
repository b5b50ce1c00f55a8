//! What the Producer publishes: order events as they go on the wire, what
//! the stream answers, and the rules an event must meet to be published.

use prost::Message;
use proto::events::v1::{OrderCancelled, OrderCreated};

/// An order event ready to go on the wire. Its message id
/// `<order id>.order.<kind>` makes a repeated publish a no-op in the stream.
pub struct OutgoingEvent<'a, M: Message> {
    pub order_id: &'a str,
    /// `created` or `cancelled`.
    pub kind: &'static str,
    pub subject: String,
    pub payload: &'a M,
}

/// What the stream answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Published {
    pub stream: String,
    pub sequence: u64,
    pub duplicate: bool,
}

/// Why an event cannot be published, whenever it is tried.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field} {message}")]
pub struct InvalidEvent {
    pub field: &'static str,
    pub message: String,
}

impl InvalidEvent {
    pub fn new(field: &'static str, message: impl Into<String>) -> Self {
        InvalidEvent {
            field,
            message: message.into(),
        }
    }
}

fn check_order_id(order_id: &str) -> Result<(), InvalidEvent> {
    uuid::Uuid::parse_str(order_id.trim())
        .map(|_| ())
        .map_err(|_| InvalidEvent::new("event.order_id", format!("{order_id:?} is not a UUID")))
}

/// An `order.created` needs its order's id and at least one line.
pub fn check_created(event: &OrderCreated) -> Result<(), InvalidEvent> {
    check_order_id(&event.order_id)?;
    if event.items.is_empty() {
        return Err(InvalidEvent::new("event.items", "must not be empty"));
    }
    Ok(())
}

/// An `order.cancelled` needs its order's id.
pub fn check_cancelled(event: &OrderCancelled) -> Result<(), InvalidEvent> {
    check_order_id(&event.order_id)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_event_needs_an_order_id_and_a_created_one_lines() {
        let id = uuid::Uuid::new_v4().to_string();
        let created = OrderCreated {
            order_id: id.clone(),
            ..Default::default()
        };
        assert_eq!(check_created(&created).unwrap_err().field, "event.items");
        let cancelled = OrderCancelled {
            order_id: "nope".into(),
            ..Default::default()
        };
        assert_eq!(
            check_cancelled(&cancelled).unwrap_err().field,
            "event.order_id"
        );
        assert!(
            check_cancelled(&OrderCancelled {
                order_id: id,
                ..Default::default()
            })
            .is_ok()
        );
    }
}
