//! The sweeper: no order stays PENDING forever, whatever happened to its
//! event.

use std::time::Duration;

use order::SweeperSettings;
use sea_orm::ConnectionTrait;

use crate::helpers::*;

fn quick_sweeper() -> SweeperSettings {
    SweeperSettings {
        interval: Duration::from_millis(200),
        republish_after: Duration::from_secs(1),
        timeout: Duration::from_secs(4),
    }
}

async fn wait_status(h: &Harness, order_id: &str, status: &str) -> String {
    testkit::eventually(
        Duration::from_secs(20),
        &format!("order {order_id} {status}"),
        || async {
            let order = h.get(&admin(), order_id).await.ok()?;
            (order.status().as_str_name() == format!("ORDER_STATUS_{status}"))
                .then_some(order.status_reason)
        },
    )
    .await
}

#[tokio::test]
async fn an_order_whose_event_can_never_be_published_is_rejected() {
    // No relay: the record is set aside here as the relay would after the
    // Producer refused it, without racing a real hand-over.
    let h = Harness::start_with(Options {
        sweeper: quick_sweeper(),
        relay: false,
        ..Default::default()
    })
    .await;
    let order = h.pending_order(&customer()).await;
    h.conn
        .execute_unprepared(&format!(
            "UPDATE outbox SET failed_at = now(), last_error = 'refused by the Producer: bad event' \
             WHERE order_id = '{}'",
            order.id
        ))
        .await
        .unwrap();
    let reason = wait_status(&h, &order.id, "REJECTED").await;
    assert!(reason.contains("could not be published"), "{reason}");
    assert!(reason.contains("bad event"), "{reason}");
}

#[tokio::test]
async fn an_order_whose_event_was_lost_is_published_again_then_rejected_with_its_stock_returned() {
    let h = Harness::start_with(Options {
        sweeper: quick_sweeper(),
        ..Default::default()
    })
    .await;
    // Published, then nothing: no Consumer ever answers (a lost event).
    let order = h.pending_order(&customer()).await;
    let created = format!("{}.order.created", order.id);
    testkit::eventually(
        Duration::from_secs(10),
        "the event published again",
        || async { (h.producer.counts().get(&created).copied().unwrap_or(0) >= 2).then_some(()) },
    )
    .await;

    let reason = wait_status(&h, &order.id, "REJECTED").await;
    assert!(reason.contains("not processed within"), "{reason}");
    // An order.cancelled event returns whatever stock was taken for it.
    let cancelled = format!("{}.order.cancelled", order.id);
    testkit::eventually(Duration::from_secs(10), "the release published", || async {
        h.producer.counts().contains_key(&cancelled).then_some(())
    })
    .await;

    // A late verdict cannot confirm it any more.
    let late = h
        .outcome(&order.id, proto::order::v1::OrderOutcome::Confirmed, "")
        .await
        .unwrap_err();
    assert_eq!(late.code(), tonic::Code::FailedPrecondition);

    let metrics = platform::metrics::render();
    for action in ["republished", "rejected_timeout"] {
        assert!(
            metrics
                .lines()
                .any(|l| l.starts_with("ecommerce_order_pending_swept_total")
                    && l.contains(action)),
            "{action}: {metrics}"
        );
    }
    assert!(metrics.contains("ecommerce_order_pending_overdue"));
}

#[tokio::test]
async fn orders_that_reach_a_verdict_are_left_alone() {
    let h = Harness::start_with(Options {
        sweeper: quick_sweeper(),
        ..Default::default()
    })
    .await;
    let order = h.pending_order(&customer()).await;
    h.outcome(&order.id, proto::order::v1::OrderOutcome::Confirmed, "")
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_secs(5)).await;
    let order = h.get(&admin(), &order.id).await.unwrap();
    assert_eq!(order.status(), proto::order::v1::OrderStatus::Confirmed);
    assert_eq!(
        h.producer.counts()[&format!("{}.order.created", order.id)],
        1
    );
}
