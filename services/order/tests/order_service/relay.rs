//! The outbox relay inside one Order process: delivery, retries, shutdown.

use std::sync::atomic::Ordering;
use std::time::Duration;

use order::RelaySettings;
use sea_orm::{ConnectionTrait, TransactionTrait};

use crate::helpers::*;
use proto::order::v1 as pb;

async fn wait_all_sent(h: &Harness, expected: i64) {
    testkit::eventually(
        Duration::from_secs(20),
        "every outbox record sent",
        || async {
            let sent = h
                .scalar("SELECT count(*) FROM outbox WHERE sent_at IS NOT NULL")
                .await;
            let all = h.scalar("SELECT count(*) FROM outbox").await;
            (all == expected && sent == expected).then_some(())
        },
    )
    .await;
}

#[tokio::test]
async fn relay_delivers_every_record_once_and_marks_it_sent() {
    let h = Harness::start().await;
    let me = customer();
    let mut orders = Vec::new();
    for _ in 0..30 {
        orders.push(h.pending_order(&me).await);
    }
    for order in &orders[..3] {
        h.outcome(&order.id, pb::OrderOutcome::Confirmed, "")
            .await
            .unwrap();
        h.cancel(&me, &order.id).await.unwrap();
    }
    wait_all_sent(&h, 33).await;

    let counts = h.producer.counts();
    assert_eq!(counts.len(), 33);
    assert!(counts.values().all(|n| *n == 1), "{counts:?}");
    for order in &orders {
        assert_eq!(counts[&format!("{}.order.created", order.id)], 1);
    }
    for order in &orders[..3] {
        assert_eq!(counts[&format!("{}.order.cancelled", order.id)], 1);
    }
    // What reached the Producer is the order as stored.
    let call = h
        .producer
        .calls()
        .into_iter()
        .find(|c| c.order_id == orders[7].id)
        .unwrap();
    let event = call.created.unwrap();
    assert_eq!(event.total, orders[7].total);
    assert_eq!(event.user_id, me.user_id);
    assert_eq!(event.items[0].product_id, orders[7].items[0].product_id);

    assert_eq!(
        h.scalar("SELECT count(*) FROM outbox WHERE attempts = 1 AND last_error IS NULL")
            .await,
        33
    );
    testkit::eventually(Duration::from_secs(5), "backlog gauge at zero", || async {
        let metrics = platform::metrics::render();
        metrics
            .lines()
            .any(|l| l == "ecommerce_order_outbox_backlog 0")
            .then_some(())
    })
    .await;
    let metrics = platform::metrics::render();
    assert!(
        metrics.contains("ecommerce_order_outbox_relayed_total 33"),
        "{metrics}"
    );
    assert!(metrics.contains("ecommerce_order_outbox_relay_errors_total"));
}

/// Orders created one by one within the linger go out in one pass.
#[tokio::test]
async fn records_written_during_the_linger_go_out_in_one_pass() {
    let h = Harness::start_with(Options {
        relay_settings: RelaySettings {
            // Only the wake-ups start a pass: no poll comes in between.
            poll_interval: Duration::from_secs(600),
            linger: Duration::from_secs(1),
            ..relay_settings(true)
        },
        ..Default::default()
    })
    .await;
    let me = customer();
    // The relay's first pass at start-up may or may not see a first order;
    // once that one is sent, the relay waits for a wake-up.
    h.pending_order(&me).await;
    wait_all_sent(&h, 1).await;
    let before = h.producer.batch_sizes.lock().unwrap().len();
    for _ in 0..5 {
        h.pending_order(&me).await;
    }
    wait_all_sent(&h, 6).await;
    assert_eq!(h.producer.batch_sizes.lock().unwrap()[before..], [5]);
}

#[tokio::test]
async fn relay_retries_while_the_producer_is_down_and_delivers_once_it_is_up() {
    let h = Harness::start_with(Options {
        producer_up: false,
        ..Default::default()
    })
    .await;
    let me = customer();
    for _ in 0..3 {
        h.pending_order(&me).await;
    }
    // The relay keeps trying, and says why it failed.
    testkit::eventually(Duration::from_secs(20), "failed attempts recorded", || async {
        (h.scalar("SELECT count(*) FROM outbox WHERE sent_at IS NULL AND attempts >= 2 AND last_error IS NOT NULL")
            .await
            >= 1)
            .then_some(())
    })
    .await;
    assert_eq!(
        h.scalar("SELECT count(*) FROM outbox WHERE sent_at IS NOT NULL")
            .await,
        0
    );

    h.start_producer().await;
    wait_all_sent(&h, 3).await;
    assert!(h.producer.counts().values().all(|n| *n == 1));
    assert_eq!(
        h.scalar("SELECT count(*) FROM outbox WHERE last_error IS NOT NULL")
            .await,
        0,
        "a delivered record clears its last error"
    );

    // The stream refusing (the Producer answers UNAVAILABLE): same story.
    h.producer.failing.store(true, Ordering::SeqCst);
    let order = h.pending_order(&me).await;
    testkit::eventually(Duration::from_secs(20), "the refusal recorded", || async {
        (h.scalar(&format!(
            "SELECT count(*) FROM outbox WHERE order_id = '{}' AND attempts >= 2 AND last_error LIKE '%fake stream is down%'",
            order.id
        ))
        .await
            == 1)
            .then_some(())
    })
    .await;
    h.producer.failing.store(false, Ordering::SeqCst);
    wait_all_sent(&h, 4).await;
    assert_eq!(
        h.producer.counts()[&format!("{}.order.created", order.id)],
        1
    );
}

#[tokio::test]
async fn a_producer_slower_than_the_deadline_is_retried_until_it_answers() {
    let h = Harness::start_with(Options {
        request_timeout: Duration::from_millis(300),
        ..Default::default()
    })
    .await;
    h.producer.delay_ms.store(1000, Ordering::SeqCst);
    h.pending_order(&customer()).await;
    testkit::eventually(Duration::from_secs(20), "timeouts recorded", || async {
        (h.scalar("SELECT count(*) FROM outbox WHERE sent_at IS NULL AND attempts >= 2 AND last_error IS NOT NULL")
            .await
            == 1)
            .then_some(())
    })
    .await;
    h.producer.delay_ms.store(0, Ordering::SeqCst);
    wait_all_sent(&h, 1).await;
    assert_eq!(
        h.scalar("SELECT count(*) FROM outbox WHERE last_error IS NULL")
            .await,
        1
    );
}

#[tokio::test]
async fn a_disabled_relay_sends_nothing() {
    let h = Harness::start_with(Options {
        relay: false,
        ..Default::default()
    })
    .await;
    h.pending_order(&customer()).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(h.producer.calls().is_empty());
    assert_eq!(
        h.scalar("SELECT count(*) FROM outbox WHERE sent_at IS NULL")
            .await,
        1
    );
}

#[tokio::test]
async fn shutdown_stops_the_server_and_the_relay() {
    let h = Harness::start().await;
    h.producer.delay_ms.store(200, Ordering::SeqCst);
    for _ in 0..5 {
        h.pending_order(&customer()).await;
    }
    let started = std::time::Instant::now();
    h.shutdown().await.expect("a clean stop");
    assert!(started.elapsed() < Duration::from_secs(10));
}

#[tokio::test]
async fn unpublishable_records_are_set_aside_and_never_hold_up_the_ones_behind_them() {
    let h = Harness::start().await;
    let me = customer();
    let first = h.pending_order(&me).await;
    wait_all_sent(&h, 1).await;
    // More records than one batch that can never be published (their
    // payload does not decode), oldest first, ahead of a good one.
    h.conn
        .execute_unprepared(&format!(
            "INSERT INTO outbox (order_id, event_type, payload) \
             SELECT '{}', 'order.created', decode('ff', 'hex') FROM generate_series(1, 60)",
            first.id
        ))
        .await
        .unwrap();
    let order = h.pending_order(&me).await;
    testkit::eventually(
        Duration::from_secs(10),
        "the good record behind the bad ones relayed",
        || async {
            h.producer
                .counts()
                .contains_key(&format!("{}.order.created", order.id))
                .then_some(())
        },
    )
    .await;
    // Each bad record was tried once, kept with its error, and is not tried
    // again on every pass.
    tokio::time::sleep(Duration::from_millis(1000)).await;
    assert_eq!(
        h.scalar(
            "SELECT count(*) FROM outbox WHERE sent_at IS NULL AND attempts = 1 \
             AND last_error LIKE '%does not decode%'"
        )
        .await,
        60
    );
}

#[tokio::test]
async fn a_producer_answering_unimplemented_is_retried_not_set_aside() {
    let h = Harness::start().await;
    // Another service at the Producer's address: a fault of the set-up, not
    // of the record, which must go out once the address is mended.
    h.producer.unimplemented.store(true, Ordering::SeqCst);
    let order = h.pending_order(&customer()).await;
    testkit::eventually(Duration::from_secs(20), "the refusals recorded", || async {
        (h.scalar("SELECT count(*) FROM outbox WHERE attempts >= 2 AND failed_at IS NULL")
            .await
            == 1)
            .then_some(())
    })
    .await;
    h.producer.unimplemented.store(false, Ordering::SeqCst);
    wait_all_sent(&h, 1).await;
    assert_eq!(
        h.producer.counts()[&format!("{}.order.created", order.id)],
        1
    );
}

#[tokio::test]
async fn the_relay_holds_no_row_lock_while_the_producer_answers() {
    let h = Harness::start().await;
    // A slow Producer: the call is in flight for two seconds.
    h.producer.delay_ms.store(2000, Ordering::SeqCst);
    let order = h.pending_order(&customer()).await;
    testkit::eventually(Duration::from_secs(5), "the record claimed", || async {
        (h.scalar("SELECT count(*) FROM outbox WHERE claimed_until > now()")
            .await
            == 1)
            .then_some(())
    })
    .await;
    // Mid-call, the record's row is not locked (a pass used to hold one
    // transaction and its locks across every Producer call of a batch).
    let txn = h.conn.begin().await.unwrap();
    let locked = txn
        .execute_unprepared("SELECT id FROM outbox FOR UPDATE NOWAIT")
        .await;
    txn.rollback().await.unwrap();
    assert!(locked.is_ok(), "the outbox row is locked: {locked:?}");
    assert!(
        h.producer.calls().is_empty(),
        "the call had already ended; the test proves nothing"
    );
    h.producer.delay_ms.store(0, Ordering::SeqCst);
    wait_all_sent(&h, 1).await;
    assert_eq!(
        h.producer.counts()[&format!("{}.order.created", order.id)],
        1
    );
    assert_eq!(
        h.scalar("SELECT count(*) FROM outbox WHERE claimed_until IS NOT NULL")
            .await,
        0
    );
}

#[tokio::test]
async fn sent_records_are_pruned_after_the_retention_and_unsent_ones_kept() {
    let h = Harness::start_with(Options {
        relay_settings: RelaySettings {
            retention: Duration::from_secs(1),
            ..relay_settings(true)
        },
        ..Default::default()
    })
    .await;
    let me = customer();
    let mut last = None;
    for _ in 0..5 {
        last = Some(h.pending_order(&me).await);
    }
    // One the Producer can never take stays, set aside, for someone to see.
    h.conn
        .execute_unprepared(&format!(
            "INSERT INTO outbox (order_id, event_type, payload) \
             VALUES ('{}', 'order.created', decode('ff', 'hex'))",
            last.unwrap().id
        ))
        .await
        .unwrap();
    testkit::eventually(
        Duration::from_secs(20),
        "sent records deleted after their retention",
        || async {
            let left = h.scalar("SELECT count(*) FROM outbox").await;
            (h.producer.calls().len() == 5 && left == 1).then_some(())
        },
    )
    .await;
    assert_eq!(
        h.scalar("SELECT count(*) FROM outbox WHERE failed_at IS NOT NULL")
            .await,
        1
    );
    let metrics = platform::metrics::render();
    assert!(
        metrics.contains("ecommerce_order_outbox_pruned_total"),
        "{metrics}"
    );
}
