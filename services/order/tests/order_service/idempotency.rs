//! Idempotency keys: a retry returns the first order, a race creates one,
//! another body with the same key is refused.

use std::sync::atomic::Ordering;
use std::time::Duration;

use futures::future::join_all;
use tonic::Code;

use crate::helpers::*;

#[tokio::test]
async fn a_retry_with_the_same_key_returns_the_first_order() {
    let h = Harness::start_with(Options {
        relay: false,
        ..Default::default()
    })
    .await;
    let a = h.inventory.add("3.00", 10);
    let b = h.inventory.add("4.00", 10);
    let me = customer();

    let first = h
        .create_keyed(&me, vec![item(&a, 1), item(&b, 2)], "checkout-1")
        .await
        .unwrap();
    assert!(!first.replayed);
    let first = first.order.unwrap();
    // Lines in another order are the same request.
    let retry = h
        .create_keyed(&me, vec![item(&b, 2), item(&a, 1)], "checkout-1")
        .await
        .unwrap();
    assert!(retry.replayed);
    let retry = retry.order.unwrap();
    assert_eq!(retry.id, first.id);
    assert_eq!(retry.total, "11.00");
    // A replay is answered from the database alone: Inventory stalling
    // (an outage, say) holds it up only until the key's look-up goes out
    // (100 ms).
    h.inventory.stalled.store(true, Ordering::SeqCst);
    let stalled_retry = tokio::time::timeout(
        Duration::from_secs(5),
        h.create_keyed(&me, vec![item(&a, 1), item(&b, 2)], "checkout-1"),
    )
    .await
    .expect("a replay waited for a stalled Inventory")
    .unwrap();
    assert!(stalled_retry.replayed);
    assert_eq!(stalled_retry.order.unwrap().id, first.id);
    h.inventory.stalled.store(false, Ordering::SeqCst);
    assert_eq!(h.scalar("SELECT count(*) FROM orders").await, 1);
    assert_eq!(h.scalar("SELECT count(*) FROM outbox").await, 1);

    // Same key, other items: refused with a reason the gateway maps to 422.
    let err = h
        .create_keyed(&me, vec![item(&a, 2), item(&b, 2)], "checkout-1")
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition, "{err:?}");
    assert_eq!(reason(&err), "IDEMPOTENCY_KEY_REUSED");

    // The key is the user's own: another user's same key is another order.
    let other = h
        .create_keyed(&customer(), vec![item(&a, 1), item(&b, 2)], "checkout-1")
        .await
        .unwrap();
    assert!(!other.replayed);
    assert_ne!(other.order.unwrap().id, first.id);

    // A replay answers with the order as it is now.
    h.outcome(&first.id, proto::order::v1::OrderOutcome::Confirmed, "")
        .await
        .unwrap();
    let later = h
        .create_keyed(&me, vec![item(&a, 1), item(&b, 2)], "checkout-1")
        .await
        .unwrap();
    assert!(later.replayed);
    assert_eq!(
        later.order.unwrap().status,
        proto::order::v1::OrderStatus::Confirmed as i32
    );

    // Without a key, every request is a new order.
    h.create(&me, vec![item(&a, 1)]).await.unwrap();
    h.create(&me, vec![item(&a, 1)]).await.unwrap();
    assert_eq!(h.scalar("SELECT count(*) FROM orders").await, 4);
}

#[tokio::test]
async fn a_retry_is_answered_even_when_its_prices_would_now_refuse_it() {
    let h = Harness::start_with(Options {
        relay: false,
        ..Default::default()
    })
    .await;
    let a = h.inventory.add("3.00", 1);
    let b = h.inventory.add("4.00", 5);
    let me = customer();
    let lines = || vec![item(&a, 1), item(&b, 2)];
    let first = h.create_keyed(&me, lines(), "checkout-1").await.unwrap();
    let first = first.order.unwrap();

    // The order took the last of a's stock, then b was withdrawn.
    h.inventory.set_stock(&a, 0);
    let sold_out = h.create_keyed(&me, lines(), "checkout-1").await.unwrap();
    assert!(sold_out.replayed);
    assert_eq!(sold_out.order.unwrap().id, first.id);
    h.inventory.remove(&b);
    let gone = h.create_keyed(&me, lines(), "checkout-1").await.unwrap();
    assert!(gone.replayed);
    assert_eq!(gone.order.unwrap().id, first.id);

    // Other lines under the key are still refused as a reused key, not for
    // the price; and a new key is refused for the price as before.
    let err = h
        .create_keyed(&me, vec![item(&b, 1)], "checkout-1")
        .await
        .unwrap_err();
    assert_eq!(reason(&err), "IDEMPOTENCY_KEY_REUSED", "{err:?}");
    let err = h
        .create_keyed(&me, lines(), "checkout-2")
        .await
        .unwrap_err();
    assert_eq!(reason(&err), "PRODUCT_NOT_FOUND", "{err:?}");
    assert_eq!(h.scalar("SELECT count(*) FROM orders").await, 1);
}

#[tokio::test]
async fn concurrent_requests_with_one_key_create_one_order() {
    let h = Harness::start_with(Options {
        relay: false,
        ..Default::default()
    })
    .await;
    let product = h.inventory.add("9.99", 1000);
    let me = customer();
    let replies =
        join_all((0..12).map(|_| h.create_keyed(&me, vec![item(&product, 2)], "double-click")))
            .await;
    let replies: Vec<_> = replies
        .into_iter()
        .map(|r| r.expect("every request answered with the order"))
        .collect();
    let first_id = replies[0].order.as_ref().unwrap().id.clone();
    assert!(
        replies
            .iter()
            .all(|r| r.order.as_ref().unwrap().id == first_id)
    );
    assert_eq!(replies.iter().filter(|r| !r.replayed).count(), 1);
    assert_eq!(h.scalar("SELECT count(*) FROM orders").await, 1);
    assert_eq!(h.scalar("SELECT count(*) FROM order_items").await, 1);
    assert_eq!(h.scalar("SELECT count(*) FROM outbox").await, 1);

    // Racing with different bodies: one order, the others refused.
    let replies =
        join_all((1..=6).map(|q| h.create_keyed(&me, vec![item(&product, q)], "race-2"))).await;
    assert_eq!(
        replies.iter().filter(|r| r.is_ok()).count(),
        1,
        "{replies:?}"
    );
    assert!(
        replies
            .iter()
            .filter_map(|r| r.as_ref().err())
            .all(|e| reason(e) == "IDEMPOTENCY_KEY_REUSED")
    );
    assert_eq!(h.scalar("SELECT count(*) FROM orders").await, 2);
    assert_eq!(h.scalar("SELECT count(*) FROM outbox").await, 2);
}
