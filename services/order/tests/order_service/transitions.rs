//! The state machine through the API: every illegal transition refused, the
//! idempotent outcome, cancel with its event, concurrent changes.

use futures::future::join_all;
use tonic::Code;

use crate::helpers::*;
use proto::order::v1 as pb;
use proto::order::v1::OrderStatus as S;

const ALL: [S; 6] = [
    S::Pending,
    S::Confirmed,
    S::Rejected,
    S::Cancelled,
    S::Shipped,
    S::Delivered,
];

fn name(status: S) -> &'static str {
    status.as_str_name().trim_start_matches("ORDER_STATUS_")
}

/// A fresh order of `owner`, moved to `status` the ways the product allows.
async fn order_in(h: &Harness, owner: &proto::common::v1::Caller, status: S) -> pb::Order {
    let order = h.pending_order(owner).await;
    let id = order.id.clone();
    let boss = admin();
    match status {
        S::Pending => return order,
        S::Rejected => {
            h.outcome(&id, pb::OrderOutcome::Rejected, "out of stock")
                .await
                .unwrap();
        }
        _ => {
            h.outcome(&id, pb::OrderOutcome::Confirmed, "")
                .await
                .unwrap();
            match status {
                S::Cancelled => {
                    h.cancel(owner, &id).await.unwrap();
                }
                S::Shipped => {
                    h.set_status(&boss, &id, S::Shipped).await.unwrap();
                }
                S::Delivered => {
                    h.set_status(&boss, &id, S::Shipped).await.unwrap();
                    h.set_status(&boss, &id, S::Delivered).await.unwrap();
                }
                _ => {}
            }
        }
    }
    let moved = h.get(owner, &id).await.unwrap();
    assert_eq!(moved.status, status as i32);
    moved
}

#[tokio::test]
async fn status_updates_follow_the_machine_and_name_refused_transitions() {
    let h = Harness::start_with(Options {
        relay: false,
        ..Default::default()
    })
    .await;
    let owner = customer();
    let boss = admin();
    for from in ALL {
        for to in ALL {
            let order = order_in(&h, &owner, from).await;
            let result = h.set_status(&boss, &order.id, to).await;
            let allowed = matches!(
                (from, to),
                (S::Confirmed, S::Shipped) | (S::Shipped, S::Delivered)
            );
            if allowed {
                let moved = result.unwrap_or_else(|e| panic!("{from:?} -> {to:?}: {e:?}"));
                assert_eq!(moved.status, to as i32);
            } else {
                let err = result.expect_err("refused");
                assert_eq!(
                    err.code(),
                    Code::FailedPrecondition,
                    "{from:?} -> {to:?}: {err:?}"
                );
                assert_eq!(reason(&err), "ILLEGAL_TRANSITION");
                assert!(
                    err.message().contains(name(from)) && err.message().contains(name(to)),
                    "{from:?} -> {to:?}: {}",
                    err.message()
                );
                assert_eq!(
                    h.get(&owner, &order.id).await.unwrap().status,
                    from as i32,
                    "a refused change leaves the order as it was"
                );
            }
        }
    }
}

#[tokio::test]
async fn cancel_only_from_confirmed_with_one_cancelled_event() {
    let h = Harness::start_with(Options {
        relay: false,
        ..Default::default()
    })
    .await;
    let owner = customer();
    for from in ALL {
        let order = order_in(&h, &owner, from).await;
        let events_before = h
            .scalar(&format!(
                "SELECT count(*) FROM outbox WHERE order_id = '{}' AND event_type = 'order.cancelled'",
                order.id
            ))
            .await;
        let result = h.cancel(&owner, &order.id).await;
        match from {
            S::Confirmed | S::Cancelled => {
                let cancelled = result.unwrap_or_else(|e| panic!("{from:?}: {e:?}"));
                assert_eq!(cancelled.status, S::Cancelled as i32);
                assert_eq!(events_before, if from == S::Cancelled { 1 } else { 0 });
            }
            S::Pending => {
                let err = result.unwrap_err();
                assert_eq!(err.code(), Code::FailedPrecondition);
                assert_eq!(reason(&err), "ORDER_NOT_CANCELLABLE_YET");
                assert!(
                    err.message().contains("cannot be cancelled yet"),
                    "{}",
                    err.message()
                );
            }
            _ => {
                let err = result.unwrap_err();
                assert_eq!(err.code(), Code::FailedPrecondition, "{from:?}");
                assert_eq!(reason(&err), "ILLEGAL_TRANSITION");
                assert!(err.message().contains(name(from)) && err.message().contains("CANCELLED"));
            }
        }
        let events_after = h
            .scalar(&format!(
                "SELECT count(*) FROM outbox WHERE order_id = '{}' AND event_type = 'order.cancelled'",
                order.id
            ))
            .await;
        let expected = if matches!(from, S::Confirmed | S::Cancelled) {
            1
        } else {
            0
        };
        assert_eq!(
            events_after, expected,
            "cancelled events of a {from:?} order"
        );
    }

    // The event says which order, for whom.
    use order::infrastructure::entities::outbox;
    use sea_orm::{ColumnTrait, EntityTrait, QueryFilter};
    let records = outbox::Entity::find()
        .filter(outbox::Column::EventType.eq("order.cancelled"))
        .all(&h.conn)
        .await
        .unwrap();
    assert_eq!(records.len(), 2);
    for record in records {
        let event = decode_cancelled(&record.payload);
        assert_eq!(event.order_id, record.order_id.to_string());
        assert_eq!(event.user_id, owner.user_id);
        assert!(event.cancelled_at.is_some());
    }
}

#[tokio::test]
async fn record_outcome_is_idempotent_and_the_first_outcome_wins() {
    let h = Harness::start_with(Options {
        relay: false,
        ..Default::default()
    })
    .await;
    let owner = customer();

    let order = h.pending_order(&owner).await;
    let first = h
        .outcome(&order.id, pb::OrderOutcome::Confirmed, "")
        .await
        .unwrap();
    assert!(!first.replayed);
    assert_eq!(first.order.unwrap().status, S::Confirmed as i32);
    let again = h
        .outcome(&order.id, pb::OrderOutcome::Confirmed, "")
        .await
        .unwrap();
    assert!(again.replayed);
    let late_reject = h
        .outcome(&order.id, pb::OrderOutcome::Rejected, "dead-lettered late")
        .await
        .unwrap();
    assert!(late_reject.replayed);
    let kept = late_reject.order.unwrap();
    assert_eq!(kept.status, S::Confirmed as i32, "CONFIRMED stays");
    assert_eq!(kept.status_reason, "");

    let rejected = h.pending_order(&owner).await;
    let first = h
        .outcome(
            &rejected.id,
            pb::OrderOutcome::Rejected,
            "insufficient stock for product X",
        )
        .await
        .unwrap();
    assert!(!first.replayed);
    let first = first.order.unwrap();
    assert_eq!(first.status, S::Rejected as i32);
    assert_eq!(first.status_reason, "insufficient stock for product X");
    let again = h
        .outcome(&rejected.id, pb::OrderOutcome::Rejected, "other")
        .await
        .unwrap();
    assert!(again.replayed);
    assert_eq!(
        again.order.unwrap().status_reason,
        "insufficient stock for product X"
    );
    let conflict = h
        .outcome(&rejected.id, pb::OrderOutcome::Confirmed, "")
        .await
        .unwrap_err();
    assert_eq!(conflict.code(), Code::FailedPrecondition);
    assert_eq!(reason(&conflict), "OUTCOME_CONFLICT");

    // Past CONFIRMED, both outcomes are replays that change nothing.
    for status in [S::Cancelled, S::Shipped, S::Delivered] {
        let order = order_in(&h, &owner, status).await;
        for outcome in [pb::OrderOutcome::Confirmed, pb::OrderOutcome::Rejected] {
            let reply = h.outcome(&order.id, outcome, "late").await.unwrap();
            assert!(reply.replayed, "{status:?} {outcome:?}");
            assert_eq!(reply.order.unwrap().status, status as i32);
        }
    }

    let unknown = h
        .outcome(
            &uuid::Uuid::new_v4().to_string(),
            pb::OrderOutcome::Confirmed,
            "",
        )
        .await
        .unwrap_err();
    assert_eq!(unknown.code(), Code::NotFound);
    let bad = h
        .outcome(&order.id, pb::OrderOutcome::Unspecified, "")
        .await
        .unwrap_err();
    assert_eq!(bad.code(), Code::InvalidArgument);
    assert_eq!(violated_fields(&bad), vec!["outcome"]);
}

#[tokio::test]
async fn concurrent_transitions_cannot_both_win() {
    let h = Harness::start_with(Options {
        relay: false,
        ..Default::default()
    })
    .await;
    let owner = customer();

    // Confirm and reject racing on one order: exactly one wins.
    for _ in 0..5 {
        let order = h.pending_order(&owner).await;
        let replies = join_all((0..10).map(|i| {
            let outcome = if i % 2 == 0 {
                pb::OrderOutcome::Confirmed
            } else {
                pb::OrderOutcome::Rejected
            };
            let h = &h;
            let id = order.id.clone();
            async move { (outcome, h.outcome(&id, outcome, "raced").await) }
        }))
        .await;
        let winners: Vec<_> = replies
            .iter()
            .filter_map(|(outcome, reply)| match reply {
                Ok(r) if !r.replayed => Some(*outcome),
                _ => None,
            })
            .collect();
        assert_eq!(winners.len(), 1, "{replies:?}");
        let expected = match winners[0] {
            pb::OrderOutcome::Confirmed => S::Confirmed,
            _ => S::Rejected,
        };
        assert_eq!(
            h.get(&owner, &order.id).await.unwrap().status,
            expected as i32
        );
    }

    // Parallel cancels: one change, one event, every caller answered OK.
    let order = order_in(&h, &owner, S::Confirmed).await;
    let results = join_all((0..10).map(|_| h.cancel(&owner, &order.id))).await;
    assert!(results.iter().all(|r| r.is_ok()), "{results:?}");
    assert_eq!(
        h.scalar(&format!(
            "SELECT count(*) FROM outbox WHERE order_id = '{}' AND event_type = 'order.cancelled'",
            order.id
        ))
        .await,
        1
    );
}

#[tokio::test]
async fn a_rejection_reason_with_control_characters_is_recorded_not_an_internal_error() {
    let h = Harness::start_with(Options {
        relay: false,
        ..Default::default()
    })
    .await;
    let owner = customer();
    let order = h.pending_order(&owner).await;
    // PostgreSQL text cannot hold NUL: stored as sent it was INTERNAL, which
    // the Consumer retries forever as transient.
    let recorded = h
        .outcome(&order.id, pb::OrderOutcome::Rejected, "out\0of\nstock")
        .await
        .expect("the outcome is recorded");
    let order = recorded.order.unwrap();
    assert_eq!(order.status, S::Rejected as i32);
    assert_eq!(order.status_reason, "out of stock");
}

#[tokio::test]
async fn record_outcomes_answers_each_order_as_record_outcome_would() {
    let h = Harness::start_with(Options {
        relay: false,
        ..Default::default()
    })
    .await;
    let owner = customer();
    let confirm = h.pending_order(&owner).await;
    let reject = h.pending_order(&owner).await;
    let twice = h.pending_order(&owner).await;
    let done = order_in(&h, &owner, S::Confirmed).await;
    let refused = order_in(&h, &owner, S::Rejected).await;
    let item = |id: &str, outcome: pb::OrderOutcome, reason: &str| pb::RecordOutcomesItem {
        outcome: Some(pb::RecordOutcomeRequest {
            order_id: id.into(),
            outcome: outcome as i32,
            reason: reason.into(),
        }),
        trace_context: Default::default(),
    };
    let answer = h
        .client
        .clone()
        .record_outcomes(pb::RecordOutcomesRequest {
            outcomes: vec![
                item(&confirm.id, pb::OrderOutcome::Confirmed, ""),
                item(&reject.id, pb::OrderOutcome::Rejected, "insufficient stock"),
                item(&twice.id, pb::OrderOutcome::Confirmed, ""),
                item(&twice.id, pb::OrderOutcome::Confirmed, ""),
                item(&done.id, pb::OrderOutcome::Confirmed, ""),
                item(&refused.id, pb::OrderOutcome::Confirmed, ""),
                item(
                    &uuid::Uuid::new_v4().to_string(),
                    pb::OrderOutcome::Confirmed,
                    "",
                ),
                item("not-an-id", pb::OrderOutcome::Confirmed, ""),
            ],
        })
        .await
        .unwrap()
        .into_inner();
    use pb::record_outcomes_result::Result as R;
    let results: Vec<R> = answer
        .results
        .into_iter()
        .map(|r| r.result.unwrap())
        .collect();
    assert!(matches!(results[0], R::Replayed(false)), "{results:?}");
    assert!(matches!(results[1], R::Replayed(false)), "{results:?}");
    assert!(matches!(results[2], R::Replayed(false)), "{results:?}");
    assert!(
        matches!(results[3], R::Replayed(true)),
        "the same order twice: {results:?}"
    );
    assert!(matches!(results[4], R::Replayed(true)), "{results:?}");
    let code = |r: &R| match r {
        R::Error(e) => tonic::Code::from_i32(e.code),
        other => panic!("expected an error, got {other:?}"),
    };
    assert_eq!(code(&results[5]), Code::FailedPrecondition);
    assert_eq!(code(&results[6]), Code::NotFound);
    assert_eq!(code(&results[7]), Code::InvalidArgument);

    for (order, status, reason) in [
        (&confirm, S::Confirmed, ""),
        (&reject, S::Rejected, "insufficient stock"),
        (&twice, S::Confirmed, ""),
        (&refused, S::Rejected, "out of stock"),
    ] {
        let now = h.get(&owner, &order.id).await.unwrap();
        assert_eq!(now.status, status as i32, "{}", order.id);
        assert_eq!(now.status_reason, reason);
    }
}
