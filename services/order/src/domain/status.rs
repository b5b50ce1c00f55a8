//! The order status state machine (SPEC "REST API"):
//! PENDING -> CONFIRMED | REJECTED, CONFIRMED -> CANCELLED,
//! CONFIRMED -> SHIPPED -> DELIVERED. Each way of moving an order (the order
//! flow's outcome, a cancel, the admin's fulfilment) may use only its own
//! transitions.

pub use platform::model::OrderStatus;

/// Whether the state machine has an edge from `from` to `to`.
pub fn can_become(from: OrderStatus, to: OrderStatus) -> bool {
    use OrderStatus::*;
    matches!(
        (from, to),
        (Pending, Confirmed)
            | (Pending, Rejected)
            | (Confirmed, Cancelled)
            | (Confirmed, Shipped)
            | (Shipped, Delivered)
    )
}

/// What the order flow learnt from Inventory about a PENDING order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Confirmed,
    Rejected,
}

impl Outcome {
    pub fn status(self) -> OrderStatus {
        match self {
            Outcome::Confirmed => OrderStatus::Confirmed,
            Outcome::Rejected => OrderStatus::Rejected,
        }
    }
}

/// The verdict on a requested change.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    /// Move the order to this status.
    To(OrderStatus),
    /// The order is already where the request wants it: nothing to write.
    AlreadyDone,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TransitionError {
    #[error("an order cannot go from {from} to {to}")]
    Illegal { from: OrderStatus, to: OrderStatus },
    #[error(
        "cannot change an order from {from} to {to} with a status update: it may only set SHIPPED or DELIVERED"
    )]
    NotFulfilment { from: OrderStatus, to: OrderStatus },
    #[error("the order is PENDING and cannot be cancelled yet: it can be once it is CONFIRMED")]
    NotCancellableYet,
    #[error("the order was already REJECTED; the outcome CONFIRMED contradicts it")]
    OutcomeConflict,
}

/// The admin's fulfilment path: SHIPPED and DELIVERED only, along the machine.
pub fn fulfil(from: OrderStatus, to: OrderStatus) -> Result<Change, TransitionError> {
    if !matches!(to, OrderStatus::Shipped | OrderStatus::Delivered) {
        return Err(TransitionError::NotFulfilment { from, to });
    }
    if can_become(from, to) {
        Ok(Change::To(to))
    } else {
        Err(TransitionError::Illegal { from, to })
    }
}

/// A cancel by the owner or an admin: CONFIRMED -> CANCELLED. Cancelling a
/// CANCELLED order again is an idempotent no-op, so that a retried request
/// (a lost reply) does not turn into an error; the stock is returned once
/// because only the first cancel writes an `order.cancelled` event.
pub fn cancel(from: OrderStatus) -> Result<Change, TransitionError> {
    match from {
        OrderStatus::Confirmed => Ok(Change::To(OrderStatus::Cancelled)),
        OrderStatus::Cancelled => Ok(Change::AlreadyDone),
        OrderStatus::Pending => Err(TransitionError::NotCancellableYet),
        other => Err(TransitionError::Illegal {
            from: other,
            to: OrderStatus::Cancelled,
        }),
    }
}

/// The order flow's outcome, idempotent: an order already at or past the
/// outcome answers [`Change::AlreadyDone`].
///
/// The first recorded outcome wins, as in Inventory's ledger, which keeps the
/// first outcome per order: REJECTED requested for an order already CONFIRMED
/// (or past it) comes from a stale or duplicate path after the stock was
/// taken, so the order stays as it is and the call is a replay. CONFIRMED
/// requested for a REJECTED order, though, would mean stock was taken for an
/// order the customer was told failed: that is refused ([`OutcomeConflict`]),
/// a permanent error the Consumer dead-letters, never hidden.
///
/// [`OutcomeConflict`]: TransitionError::OutcomeConflict
pub fn record_outcome(from: OrderStatus, outcome: Outcome) -> Result<Change, TransitionError> {
    use OrderStatus::*;
    match (from, outcome) {
        (Pending, outcome) => Ok(Change::To(outcome.status())),
        (Rejected, Outcome::Confirmed) => Err(TransitionError::OutcomeConflict),
        (Rejected, Outcome::Rejected) => Ok(Change::AlreadyDone),
        (Confirmed | Cancelled | Shipped | Delivered, _) => Ok(Change::AlreadyDone),
    }
}

#[cfg(test)]
mod tests {
    use super::OrderStatus::*;
    use super::*;

    #[test]
    fn names_round_trip() {
        for status in OrderStatus::ALL {
            assert_eq!(OrderStatus::parse(status.as_str()), Some(status));
        }
        assert_eq!(OrderStatus::parse("pending"), None);
    }

    #[test]
    fn the_machine_has_exactly_five_edges() {
        let edges: Vec<_> = OrderStatus::ALL
            .into_iter()
            .flat_map(|a| OrderStatus::ALL.into_iter().map(move |b| (a, b)))
            .filter(|(a, b)| can_become(*a, *b))
            .collect();
        assert_eq!(
            edges,
            vec![
                (Pending, Confirmed),
                (Pending, Rejected),
                (Confirmed, Cancelled),
                (Confirmed, Shipped),
                (Shipped, Delivered),
            ]
        );
    }

    #[test]
    fn fulfilment_table() {
        for from in OrderStatus::ALL {
            for to in OrderStatus::ALL {
                let allowed = matches!((from, to), (Confirmed, Shipped) | (Shipped, Delivered));
                let verdict = fulfil(from, to);
                if allowed {
                    assert_eq!(verdict, Ok(Change::To(to)), "{from} -> {to}");
                } else {
                    let err = verdict.expect_err("refused");
                    let text = err.to_string();
                    assert!(
                        text.contains(from.as_str()) && text.contains(to.as_str()),
                        "{from} -> {to}: {text}"
                    );
                }
            }
        }
    }

    #[test]
    fn cancel_table() {
        assert_eq!(cancel(Confirmed), Ok(Change::To(Cancelled)));
        assert_eq!(cancel(Cancelled), Ok(Change::AlreadyDone));
        assert_eq!(cancel(Pending), Err(TransitionError::NotCancellableYet));
        for from in [Rejected, Shipped, Delivered] {
            assert_eq!(
                cancel(from),
                Err(TransitionError::Illegal {
                    from,
                    to: Cancelled
                })
            );
        }
    }

    #[test]
    fn outcome_table() {
        assert_eq!(
            record_outcome(Pending, Outcome::Confirmed),
            Ok(Change::To(Confirmed))
        );
        assert_eq!(
            record_outcome(Pending, Outcome::Rejected),
            Ok(Change::To(Rejected))
        );
        for from in [Confirmed, Cancelled, Shipped, Delivered] {
            assert_eq!(
                record_outcome(from, Outcome::Confirmed),
                Ok(Change::AlreadyDone)
            );
            assert_eq!(
                record_outcome(from, Outcome::Rejected),
                Ok(Change::AlreadyDone),
                "the first outcome wins"
            );
        }
        assert_eq!(
            record_outcome(Rejected, Outcome::Rejected),
            Ok(Change::AlreadyDone)
        );
        assert_eq!(
            record_outcome(Rejected, Outcome::Confirmed),
            Err(TransitionError::OutcomeConflict)
        );
    }
}
