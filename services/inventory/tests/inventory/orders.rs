//! ApplyOrder / ReleaseOrder: all or nothing, once per order id, no
//! overselling and no deadlocks under concurrency.

use std::sync::Arc;

use futures::future::join_all;
use inventory::domain::{ApplyOutcome, ReleaseOutcome};
use uuid::Uuid;

use crate::helpers::{app, applied, invalid_fields};

#[tokio::test]
async fn apply_takes_every_item_once_and_a_repeat_changes_nothing() {
    let app = app().await;
    let a = app.product("A", 10, "1.00").await;
    let b = app.product("B", 5, "2.00").await;
    let order = Uuid::new_v4();

    let first = app.apply(order, &[(&a, 3), (&b, 5)]).await;
    assert_eq!(first.outcome, ApplyOutcome::Applied);
    assert!(!first.replayed);
    assert_eq!(first.reason, "");
    assert_eq!((app.stock(&a).await, app.stock(&b).await), (7, 0));

    for _ in 0..3 {
        let again = app.apply(order, &[(&a, 3), (&b, 5)]).await;
        assert_eq!(again.outcome, ApplyOutcome::Applied);
        assert!(again.replayed);
    }
    assert_eq!((app.stock(&a).await, app.stock(&b).await), (7, 0));
}

#[tokio::test]
async fn insufficient_stock_takes_nothing_and_stays_the_answer() {
    let app = app().await;
    let a = app.product("A", 10, "1.00").await;
    let b = app.product("B", 1, "2.00").await;
    let order = Uuid::new_v4();

    let refused = app.apply(order, &[(&a, 2), (&b, 2)]).await;
    assert_eq!(refused.outcome, ApplyOutcome::InsufficientStock);
    assert!(!refused.replayed);
    assert!(
        refused.reason.contains(&b.id.to_string()),
        "{}",
        refused.reason
    );
    assert!(
        !refused.reason.contains(&a.id.to_string()),
        "{}",
        refused.reason
    );
    assert_eq!((app.stock(&a).await, app.stock(&b).await), (10, 1));

    // Restocked later: the order's first outcome stands, nothing is taken.
    app.inventory
        .update_product(&b.id.to_string(), None, None, Some(50), None)
        .await
        .unwrap();
    let again = app.apply(order, &[(&a, 2), (&b, 2)]).await;
    assert_eq!(again.outcome, ApplyOutcome::InsufficientStock);
    assert!(again.replayed);
    assert_eq!(again.reason, refused.reason);
    assert_eq!((app.stock(&a).await, app.stock(&b).await), (10, 50));
}

#[tokio::test]
async fn an_unknown_product_takes_nothing() {
    let app = app().await;
    let a = app.product("A", 10, "1.00").await;
    let gone = app.product("Gone", 10, "1.00").await;
    app.inventory
        .delete_product(&gone.id.to_string())
        .await
        .unwrap();

    let result = app.apply(Uuid::new_v4(), &[(&a, 1), (&gone, 1)]).await;
    assert_eq!(result.outcome, ApplyOutcome::UnknownProduct);
    assert!(
        result.reason.contains(&gone.id.to_string()),
        "{}",
        result.reason
    );
    assert_eq!(app.stock(&a).await, 10);
}

#[tokio::test]
async fn malformed_orders_are_invalid_arguments() {
    let app = app().await;
    let a = app.product("A", 10, "1.00").await;
    let id = a.id.to_string();
    let order = Uuid::new_v4().to_string();
    type Case<'a> = (&'a str, Vec<(String, u32)>, Vec<&'a str>);
    let cases: Vec<Case> = vec![
        (&order, vec![], vec!["items"]),
        (&order, vec![(id.clone(), 0)], vec!["items[0].quantity"]),
        (
            &order,
            vec![(id.clone(), 1), (id.clone(), 2)],
            vec!["items[1].product_id"],
        ),
        (&order, vec![("x".into(), 1)], vec!["items[0].product_id"]),
        ("not-an-order", vec![(id.clone(), 1)], vec!["order_id"]),
        (
            &order,
            vec![(id.clone(), u32::MAX)],
            vec!["items[0].quantity"],
        ),
    ];
    for (order_id, items, fields) in cases {
        let err = app
            .inventory
            .apply_order(order_id, &items)
            .await
            .unwrap_err();
        assert_eq!(invalid_fields(err), fields, "{order_id} {items:?}");
    }
    let too_many: Vec<(String, u32)> = (0..101).map(|_| (Uuid::new_v4().to_string(), 1)).collect();
    let err = app
        .inventory
        .apply_order(&order, &too_many)
        .await
        .unwrap_err();
    assert_eq!(invalid_fields(err), ["items"]);
    assert_eq!(app.stock(&a).await, 10);
    // Nothing was recorded for the order: it still applies.
    assert!(applied(
        &app.apply(order.parse().unwrap(), &[(&a, 1)]).await
    ));
}

#[tokio::test]
async fn release_returns_applied_stock_exactly_once() {
    let app = app().await;
    let a = app.product("A", 10, "1.00").await;
    let b = app.product("B", 10, "1.00").await;
    let order = Uuid::new_v4();
    assert!(applied(&app.apply(order, &[(&a, 4), (&b, 1)]).await));
    assert_eq!((app.stock(&a).await, app.stock(&b).await), (6, 9));

    let released = app
        .inventory
        .release_order(&order.to_string())
        .await
        .unwrap();
    assert_eq!(released.outcome, ReleaseOutcome::Released);
    assert!(!released.replayed);
    assert_eq!((app.stock(&a).await, app.stock(&b).await), (10, 10));

    let again = app
        .inventory
        .release_order(&order.to_string())
        .await
        .unwrap();
    assert_eq!(again.outcome, ReleaseOutcome::Released);
    assert!(again.replayed);
    assert_eq!((app.stock(&a).await, app.stock(&b).await), (10, 10));

    // A late (or republished) redelivery of the creation takes no stock
    // again, and says the stock went back: it must not confirm the order.
    let late = app.apply(order, &[(&a, 4), (&b, 1)]).await;
    assert_eq!(late.outcome, ApplyOutcome::Released);
    assert!(late.replayed);
    assert_eq!((app.stock(&a).await, app.stock(&b).await), (10, 10));
}

#[tokio::test]
async fn stock_is_bounded_and_a_release_on_top_of_it_cannot_overflow() {
    let app = app().await;
    let a = app.product("A", 10, "1.00").await;
    let order = Uuid::new_v4();
    assert!(applied(&app.apply(order, &[(&a, 5)]).await));

    // An admin may not set stock beyond the maximum...
    let too_much = app
        .inventory
        .update_product(&a.id.to_string(), None, None, Some(i32::MAX), None)
        .await
        .unwrap_err();
    assert_eq!(invalid_fields(too_much), ["stock"]);
    let max = platform::limits::MAX_STOCK;
    app.inventory
        .update_product(&a.id.to_string(), None, None, Some(max), None)
        .await
        .unwrap();
    let released = app
        .inventory
        .release_order(&order.to_string())
        .await
        .unwrap();
    assert_eq!(released.outcome, ReleaseOutcome::Released);
    assert_eq!(app.stock(&a).await, max + 5);

    // ...and even a column at its very limit (set behind the API's back)
    // takes a release: it saturates instead of failing forever (the
    // Consumer retried the overflow's INTERNAL error without end).
    let second = Uuid::new_v4();
    app.inventory
        .update_product(&a.id.to_string(), None, None, Some(10), None)
        .await
        .unwrap();
    assert!(applied(&app.apply(second, &[(&a, 5)]).await));
    sea_orm::ConnectionTrait::execute_unprepared(
        &app.conn,
        &format!(
            "UPDATE products SET stock = {} - 2 WHERE id = '{}'",
            i32::MAX,
            a.id
        ),
    )
    .await
    .unwrap();
    let saturated = app
        .inventory
        .release_order(&second.to_string())
        .await
        .unwrap();
    assert_eq!(saturated.outcome, ReleaseOutcome::Released);
    assert_eq!(app.stock(&a).await, i32::MAX);
}

#[tokio::test]
async fn release_of_an_order_that_took_no_stock_is_not_applied() {
    let app = app().await;
    let a = app.product("A", 1, "1.00").await;
    let refused = Uuid::new_v4();
    assert_eq!(
        app.apply(refused, &[(&a, 5)]).await.outcome,
        ApplyOutcome::InsufficientStock
    );
    let result = app
        .inventory
        .release_order(&refused.to_string())
        .await
        .unwrap();
    assert_eq!(result.outcome, ReleaseOutcome::NotApplied);
    assert_eq!(app.stock(&a).await, 1);

    // An order id never seen: NOT_APPLIED, and nothing recorded, so the
    // order still applies if its creation arrives later.
    let unseen = Uuid::new_v4();
    let result = app
        .inventory
        .release_order(&unseen.to_string())
        .await
        .unwrap();
    assert_eq!(result.outcome, ReleaseOutcome::NotApplied);
    assert!(applied(&app.apply(unseen, &[(&a, 1)]).await));
    assert_eq!(app.stock(&a).await, 0);

    let err = app.inventory.release_order("nope").await.unwrap_err();
    assert_eq!(invalid_fields(err), ["order_id"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn fifty_concurrent_orders_for_ten_items_apply_exactly_ten() {
    let app = Arc::new(app().await);
    let p = app.product("Last ten", 10, "5.00").await;
    app.warm_pool().await;
    let results = join_all((0..50).map(|_| {
        let app = app.clone();
        let p = p.clone();
        tokio::spawn(async move { app.apply(Uuid::new_v4(), &[(&p, 1)]).await })
    }))
    .await;
    let outcomes: Vec<ApplyOutcome> = results.into_iter().map(|r| r.unwrap().outcome).collect();
    let applied = outcomes
        .iter()
        .filter(|o| **o == ApplyOutcome::Applied)
        .count();
    let refused = outcomes
        .iter()
        .filter(|o| **o == ApplyOutcome::InsufficientStock)
        .count();
    assert_eq!((applied, refused), (10, 40));
    assert_eq!(app.stock(&p).await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn opposite_order_items_neither_deadlock_nor_lose_stock() {
    let app = Arc::new(app().await);
    let a = app.product("A", 1000, "1.00").await;
    let b = app.product("B", 1000, "1.00").await;
    let orders: Vec<Uuid> = (0..40).map(|_| Uuid::new_v4()).collect();
    app.warm_pool().await;
    // Every call must succeed: a deadlock would surface as a database error.
    let results = join_all(orders.iter().enumerate().map(|(i, order)| {
        let app = app.clone();
        let (a, b, order) = (a.clone(), b.clone(), *order);
        tokio::spawn(async move {
            if i % 2 == 0 {
                app.apply(order, &[(&a, 1), (&b, 2)]).await
            } else {
                app.apply(order, &[(&b, 2), (&a, 1)]).await
            }
        })
    }))
    .await;
    assert!(results.into_iter().all(|r| applied(&r.unwrap())));
    assert_eq!((app.stock(&a).await, app.stock(&b).await), (960, 920));

    // Releases of half of them racing new orders in both directions.
    let releases = orders[..20].iter().map(|order| {
        let app = app.clone();
        let order = *order;
        tokio::spawn(async move {
            let r = app
                .inventory
                .release_order(&order.to_string())
                .await
                .expect("release");
            assert_eq!(r.outcome, ReleaseOutcome::Released);
        })
    });
    let applies = (0..20).map(|i| {
        let app = app.clone();
        let (a, b) = (a.clone(), b.clone());
        tokio::spawn(async move {
            let result = if i % 2 == 0 {
                app.apply(Uuid::new_v4(), &[(&a, 1), (&b, 2)]).await
            } else {
                app.apply(Uuid::new_v4(), &[(&b, 2), (&a, 1)]).await
            };
            assert!(applied(&result));
        })
    });
    for handle in join_all(releases.chain(applies)).await {
        handle.unwrap();
    }
    // 40 applied, 20 released, 20 more applied: 40 orders hold stock.
    assert_eq!((app.stock(&a).await, app.stock(&b).await), (960, 920));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_same_order_delivered_five_times_at_once_changes_stock_once() {
    let app = Arc::new(app().await);
    let p = app.product("P", 100, "1.00").await;
    app.warm_pool().await;
    for round in 0..10 {
        let order = Uuid::new_v4();
        let results = join_all((0..5).map(|_| {
            let app = app.clone();
            let p = p.clone();
            tokio::spawn(async move { app.apply(order, &[(&p, 3)]).await })
        }))
        .await;
        let results: Vec<_> = results.into_iter().map(|r| r.unwrap()).collect();
        assert!(results.iter().all(applied), "round {round}: {results:?}");
        let first = results.iter().filter(|r| !r.replayed).count();
        assert_eq!(first, 1, "round {round}: one call applies, four replay");
        assert_eq!(app.stock(&p).await, 100 - 3 * (round + 1));
    }

    // The same for releases.
    let order = Uuid::new_v4();
    assert!(applied(&app.apply(order, &[(&p, 10)]).await));
    let before = app.stock(&p).await;
    let results = join_all((0..5).map(|_| {
        let app = app.clone();
        tokio::spawn(async move { app.inventory.release_order(&order.to_string()).await })
    }))
    .await;
    let results: Vec<_> = results.into_iter().map(|r| r.unwrap().unwrap()).collect();
    assert!(
        results
            .iter()
            .all(|r| r.outcome == ReleaseOutcome::Released)
    );
    assert_eq!(results.iter().filter(|r| !r.replayed).count(), 1);
    assert_eq!(app.stock(&p).await, before + 10);
}

#[tokio::test]
async fn a_batch_decides_its_orders_one_after_the_other_in_one_transaction() {
    let app = app().await;
    let a = app.product("A", 10, "1.00").await;
    let b = app.product("B", 3, "2.00").await;
    let orders: Vec<(Uuid, Vec<(&_, u32)>)> = (0..12)
        .map(|i| {
            let items = if i % 3 == 0 {
                vec![(&a, 1), (&b, 1)]
            } else {
                vec![(&a, 1)]
            };
            (Uuid::new_v4(), items)
        })
        .collect();
    let results = app.apply_batch(&orders).await;
    let outcomes: Vec<ApplyOutcome> = results
        .iter()
        .map(|r| r.as_ref().unwrap().outcome)
        .collect();
    // In order, against what the earlier ones left: 0, 3 and 6 take one of
    // B's three, so 9 (which wants B too) is refused and 10 takes A's last
    // unit; 11 finds none.
    let refused = [9, 11];
    for (i, outcome) in outcomes.iter().enumerate() {
        let expected = if refused.contains(&i) {
            ApplyOutcome::InsufficientStock
        } else {
            ApplyOutcome::Applied
        };
        assert_eq!(*outcome, expected, "order {i}: {outcomes:?}");
    }
    assert!(results.iter().all(|r| !r.as_ref().unwrap().replayed));
    assert_eq!((app.stock(&a).await, app.stock(&b).await), (0, 0));
    // Ten orders applied, three of them with two lines.
    let lines: i64 = 10 + 3;
    assert_eq!(app.ledger_rows().await, (12, lines));
}

#[tokio::test]
async fn a_batch_answers_repeats_and_bad_orders_without_changing_the_rest() {
    let app = app().await;
    let a = app.product("A", 10, "1.00").await;
    let earlier = Uuid::new_v4();
    assert!(applied(&app.apply(earlier, &[(&a, 2)]).await));
    let twice = Uuid::new_v4();
    let fresh = Uuid::new_v4();
    let results = app
        .apply_batch(&[
            (earlier, vec![(&a, 2)]),
            (twice, vec![(&a, 3)]),
            (Uuid::nil(), vec![(&a, 0)]),
            (twice, vec![(&a, 3)]),
            (fresh, vec![(&a, 1)]),
        ])
        .await;
    let earlier_again = results[0].as_ref().unwrap();
    assert!(applied(earlier_again) && earlier_again.replayed);
    let first = results[1].as_ref().unwrap();
    assert!(applied(first) && !first.replayed);
    match &results[2] {
        Err(inventory::application::InventoryError::Invalid(invalid)) => {
            assert!(!invalid.0.is_empty())
        }
        other => panic!("expected invalid input, got {other:?}"),
    }
    let repeat = results[3].as_ref().unwrap();
    assert!(
        applied(repeat) && repeat.replayed,
        "the same order twice in a batch is taken once"
    );
    assert!(applied(results[4].as_ref().unwrap()));
    assert_eq!(app.stock(&a).await, 10 - 2 - 3 - 1);
}

#[tokio::test]
async fn batches_racing_over_the_same_orders_take_each_orders_stock_once() {
    let app = Arc::new(app().await);
    app.warm_pool().await;
    let a = app.product("A", 100, "1.00").await;
    let b = app.product("B", 100, "1.00").await;
    let orders: Vec<Uuid> = (0..20).map(|_| Uuid::new_v4()).collect();
    // Four batches at once, each with all twenty orders in its own order:
    // the ledger lets each order take its stock once, whichever batch wins.
    let racing = (0..4).map(|round| {
        let app = app.clone();
        let (a, b) = (a.clone(), b.clone());
        let mut ids = orders.clone();
        ids.rotate_left(round * 5);
        async move {
            let batch: Vec<(Uuid, Vec<(&_, u32)>)> =
                ids.iter().map(|id| (*id, vec![(&a, 1), (&b, 2)])).collect();
            app.apply_batch(&batch).await
        }
    });
    for results in join_all(racing).await {
        assert!(results.iter().all(|r| applied(r.as_ref().unwrap())));
    }
    assert_eq!((app.stock(&a).await, app.stock(&b).await), (80, 60));
    assert_eq!(app.ledger_rows().await, (20, 40));
}
