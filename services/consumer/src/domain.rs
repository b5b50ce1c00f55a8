//! What the Consumer knows about order events, independent of NATS and gRPC:
//! how a message becomes a validated event, and what an Inventory answer
//! means for the order.

use prost::Message;
use uuid::Uuid;

use proto::events::v1::{OrderCancelled, OrderCreated};
use proto::inventory::v1::ApplyOutcome;

/// The only event version this Consumer understands.
pub const SUPPORTED_EVENT_VERSION: &str = "1";

/// The kinds of event on the order subjects.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EventKind {
    Created,
    Cancelled,
}

impl EventKind {
    /// The `Event-Type` header value, also the metric label.
    pub fn event_type(self) -> &'static str {
        match self {
            EventKind::Created => "order.created",
            EventKind::Cancelled => "order.cancelled",
        }
    }

    /// The last subject token, also the dead-letter subject's kind.
    pub fn subject_suffix(self) -> &'static str {
        match self {
            EventKind::Created => "created",
            EventKind::Cancelled => "cancelled",
        }
    }

    /// The kind of a message by its subject, given the subjects of both kinds.
    pub fn from_subject(subject: &str, created: &str, cancelled: &str) -> Option<Self> {
        if subject == created {
            Some(EventKind::Created)
        } else if subject == cancelled {
            Some(EventKind::Cancelled)
        } else {
            None
        }
    }
}

/// A line of an order to apply: a product and a positive quantity.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Line {
    pub product_id: Uuid,
    pub quantity: u32,
}

/// A decoded, validated event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    Created { order_id: Uuid, lines: Vec<Line> },
    Cancelled { order_id: Uuid },
}

impl Event {
    pub fn order_id(&self) -> Uuid {
        match self {
            Event::Created { order_id, .. } | Event::Cancelled { order_id } => *order_id,
        }
    }

    pub fn kind(&self) -> EventKind {
        match self {
            Event::Created { .. } => EventKind::Created,
            Event::Cancelled { .. } => EventKind::Cancelled,
        }
    }
}

/// Why a message is not an event this Consumer can apply. Every variant is
/// permanent: the same bytes will never decode differently.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("subject {0:?} is not an order event subject")]
    UnknownSubject(String),
    #[error("the Event-Version header is missing")]
    MissingVersion,
    #[error("Event-Version {0:?} is not supported (this consumer reads version 1)")]
    UnsupportedVersion(String),
    #[error("Event-Type {header:?} does not match the subject's event {subject}")]
    TypeMismatch {
        header: String,
        subject: &'static str,
    },
    #[error("the payload is not a valid {message}: {error}")]
    Undecodable {
        message: &'static str,
        error: String,
    },
    #[error("the event is invalid: {0}")]
    Invalid(String),
}

/// Decodes a message of `kind` from its headers and payload.
pub fn decode(
    kind: EventKind,
    event_type: Option<&str>,
    event_version: Option<&str>,
    payload: &[u8],
) -> Result<Event, DecodeError> {
    match event_version.map(str::trim) {
        None | Some("") => return Err(DecodeError::MissingVersion),
        Some(SUPPORTED_EVENT_VERSION) => {}
        Some(other) => return Err(DecodeError::UnsupportedVersion(other.to_owned())),
    }
    if let Some(header) = event_type
        && header.trim() != kind.event_type()
    {
        return Err(DecodeError::TypeMismatch {
            header: header.to_owned(),
            subject: kind.event_type(),
        });
    }
    match kind {
        EventKind::Created => {
            let event = OrderCreated::decode(payload).map_err(|e| DecodeError::Undecodable {
                message: "OrderCreated",
                error: e.to_string(),
            })?;
            let order_id = parse_id("order_id", &event.order_id)?;
            if event.items.is_empty() {
                return Err(DecodeError::Invalid("the order has no items".into()));
            }
            let lines = event
                .items
                .iter()
                .enumerate()
                .map(|(i, item)| {
                    let product_id = parse_id(&format!("items[{i}].product_id"), &item.product_id)?;
                    if item.quantity == 0 {
                        return Err(DecodeError::Invalid(format!(
                            "items[{i}].quantity must be at least 1"
                        )));
                    }
                    Ok(Line {
                        product_id,
                        quantity: item.quantity,
                    })
                })
                .collect::<Result<Vec<_>, _>>()?;
            Ok(Event::Created { order_id, lines })
        }
        EventKind::Cancelled => {
            let event = OrderCancelled::decode(payload).map_err(|e| DecodeError::Undecodable {
                message: "OrderCancelled",
                error: e.to_string(),
            })?;
            Ok(Event::Cancelled {
                order_id: parse_id("order_id", &event.order_id)?,
            })
        }
    }
}

fn parse_id(field: &str, value: &str) -> Result<Uuid, DecodeError> {
    Uuid::parse_str(value.trim())
        .map_err(|_| DecodeError::Invalid(format!("{field} {value:?} is not a UUID")))
}

/// The order id in a message id `<order id>.<event>`, when it is one.
pub fn order_id_from_message_id(message_id: &str) -> Option<Uuid> {
    let (head, _) = message_id.split_once('.').unwrap_or((message_id, ""));
    Uuid::parse_str(head).ok()
}

/// What Order is told about an order once Inventory answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Confirmed,
    Rejected { reason: String },
}

/// Maps Inventory's answer to the order's outcome; `None` for an answer this
/// Consumer does not know (a contract violation).
pub fn verdict(outcome: ApplyOutcome, reason: &str) -> Option<Verdict> {
    let reason_or = |default: &str| {
        if reason.trim().is_empty() {
            default.to_owned()
        } else {
            reason.to_owned()
        }
    };
    match outcome {
        ApplyOutcome::Applied => Some(Verdict::Confirmed),
        ApplyOutcome::InsufficientStock => Some(Verdict::Rejected {
            reason: reason_or("insufficient stock"),
        }),
        ApplyOutcome::UnknownProduct => Some(Verdict::Rejected {
            reason: reason_or("unknown product"),
        }),
        // Applied once, its stock returned since: never confirmed now (for
        // a CANCELLED order the rejection is a replay that keeps it).
        ApplyOutcome::Released => Some(Verdict::Rejected {
            reason: reason_or("its stock was returned"),
        }),
        ApplyOutcome::Unspecified => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proto::events::v1::OrderLine;

    fn created(order_id: &str, items: Vec<OrderLine>) -> Vec<u8> {
        OrderCreated {
            order_id: order_id.into(),
            user_id: Uuid::new_v4().to_string(),
            items,
            total: "1.00".into(),
            created_at: None,
        }
        .encode_to_vec()
    }

    fn line(product: &str, quantity: u32) -> OrderLine {
        OrderLine {
            product_id: product.into(),
            quantity,
            unit_price: "1.00".into(),
        }
    }

    #[test]
    fn decodes_a_created_event() {
        let order = Uuid::new_v4();
        let product = Uuid::new_v4();
        let payload = created(&order.to_string(), vec![line(&product.to_string(), 2)]);
        let event = decode(
            EventKind::Created,
            Some("order.created"),
            Some("1"),
            &payload,
        )
        .unwrap();
        assert_eq!(
            event,
            Event::Created {
                order_id: order,
                lines: vec![Line {
                    product_id: product,
                    quantity: 2
                }]
            }
        );
    }

    #[test]
    fn refuses_what_can_never_apply() {
        let order = Uuid::new_v4().to_string();
        let product = Uuid::new_v4().to_string();
        let good = created(&order, vec![line(&product, 1)]);
        let kind = EventKind::Created;
        assert_eq!(
            decode(kind, None, None, &good),
            Err(DecodeError::MissingVersion)
        );
        assert!(matches!(
            decode(kind, None, Some("2"), &good),
            Err(DecodeError::UnsupportedVersion(v)) if v == "2"
        ));
        assert!(matches!(
            decode(kind, Some("order.cancelled"), Some("1"), &good),
            Err(DecodeError::TypeMismatch { .. })
        ));
        assert!(matches!(
            decode(kind, None, Some("1"), b"not protobuf"),
            Err(DecodeError::Undecodable { .. })
        ));
        assert!(matches!(
            decode(
                kind,
                None,
                Some("1"),
                &created("x", vec![line(&product, 1)])
            ),
            Err(DecodeError::Invalid(_))
        ));
        assert!(matches!(
            decode(kind, None, Some("1"), &created(&order, vec![])),
            Err(DecodeError::Invalid(_))
        ));
        assert!(matches!(
            decode(
                kind,
                None,
                Some("1"),
                &created(&order, vec![line(&product, 0)])
            ),
            Err(DecodeError::Invalid(_))
        ));
    }

    #[test]
    fn order_id_comes_from_the_message_id() {
        let id = Uuid::new_v4();
        assert_eq!(
            order_id_from_message_id(&format!("{id}.order.created")),
            Some(id)
        );
        assert_eq!(order_id_from_message_id(&id.to_string()), Some(id));
        assert_eq!(order_id_from_message_id("junk.order.created"), None);
    }

    #[test]
    fn verdicts() {
        assert_eq!(verdict(ApplyOutcome::Applied, ""), Some(Verdict::Confirmed));
        assert_eq!(
            verdict(ApplyOutcome::InsufficientStock, "p1: 2 left"),
            Some(Verdict::Rejected {
                reason: "p1: 2 left".into()
            })
        );
        assert_eq!(
            verdict(ApplyOutcome::UnknownProduct, ""),
            Some(Verdict::Rejected {
                reason: "unknown product".into()
            })
        );
        assert_eq!(verdict(ApplyOutcome::Unspecified, ""), None);
        assert!(matches!(
            verdict(ApplyOutcome::Released, ""),
            Some(Verdict::Rejected { .. })
        ));
    }
}
