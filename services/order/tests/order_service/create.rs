//! CreateOrder: validation, pricing from Inventory, one transaction.

use tonic::Code;

use crate::helpers::*;
use proto::order::v1 as pb;

#[tokio::test]
async fn each_bad_input_is_invalid_argument_naming_its_field() {
    let h = Harness::start().await;
    let product = h.inventory.add("1.00", 10);
    let other = h.inventory.add("1.00", 10);
    let me = customer();
    let many: Vec<pb::OrderItemInput> = (0..101)
        .map(|_| item(&uuid::Uuid::new_v4().to_string(), 1))
        .collect();
    let request = |caller, items, key: &str| pb::CreateOrderRequest {
        caller,
        items,
        idempotency_key: key.to_owned(),
    };
    let cases: Vec<(&str, pb::CreateOrderRequest, &str)> = vec![
        (
            "no caller",
            request(None, vec![item(&product, 1)], ""),
            "caller",
        ),
        (
            "caller id not a UUID",
            request(
                Some(proto::common::v1::Caller {
                    user_id: "bob".into(),
                    role: 1,
                }),
                vec![item(&product, 1)],
                "",
            ),
            "caller.user_id",
        ),
        (
            "no role",
            request(
                Some(proto::common::v1::Caller {
                    user_id: me.user_id.clone(),
                    role: 0,
                }),
                vec![item(&product, 1)],
                "",
            ),
            "caller.role",
        ),
        ("no items", request(Some(me.clone()), vec![], ""), "items"),
        ("101 items", request(Some(me.clone()), many, ""), "items"),
        (
            "quantity 0",
            request(
                Some(me.clone()),
                vec![item(&product, 1), item(&other, 0)],
                "",
            ),
            "items[1].quantity",
        ),
        (
            "quantity 1001",
            request(Some(me.clone()), vec![item(&product, 1001)], ""),
            "items[0].quantity",
        ),
        (
            "product id not a UUID",
            request(Some(me.clone()), vec![item("laptop", 1)], ""),
            "items[0].product_id",
        ),
        (
            "empty product id",
            request(Some(me.clone()), vec![item(&product, 1), item("", 1)], ""),
            "items[1].product_id",
        ),
        (
            "duplicate product",
            request(
                Some(me.clone()),
                vec![
                    item(&product, 1),
                    item(&other, 1),
                    item(&product, 2),
                    item(&other, 1),
                    item(&product, 3),
                ],
                "",
            ),
            "items[4].product_id",
        ),
        (
            "idempotency key too long",
            request(Some(me.clone()), vec![item(&product, 1)], &"k".repeat(256)),
            "idempotency_key",
        ),
    ];
    for (what, request, field) in cases {
        let err = h
            .client
            .clone()
            .create_order(request)
            .await
            .expect_err(what);
        assert_eq!(err.code(), Code::InvalidArgument, "{what}: {err:?}");
        assert!(
            violated_fields(&err).iter().any(|f| f == field),
            "{what}: expected a violation of {field}, got {:?} ({})",
            violated_fields(&err),
            err.message()
        );
        assert!(err.message().contains(field), "{what}: {}", err.message());
    }
    assert_eq!(h.inventory.calls(), 0, "bad input never reaches Inventory");
    assert_eq!(h.scalar("SELECT count(*) FROM orders").await, 0);
}

#[tokio::test]
async fn unknown_products_are_not_found_naming_them() {
    let h = Harness::start().await;
    let known = h.inventory.add("1.00", 10);
    let ghost = uuid::Uuid::new_v4().to_string();
    let err = h
        .create(&customer(), vec![item(&known, 1), item(&ghost, 1)])
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound, "{err:?}");
    assert_eq!(reason(&err), "PRODUCT_NOT_FOUND");
    assert_eq!(violated_fields(&err), vec!["items[1].product_id"]);
    assert!(err.message().contains(&ghost), "{}", err.message());
    assert!(!err.message().contains(&known), "{}", err.message());
    assert_eq!(h.scalar("SELECT count(*) FROM orders").await, 0);
}

#[tokio::test]
async fn visibly_insufficient_stock_is_refused_naming_the_products() {
    let h = Harness::start().await;
    let plenty = h.inventory.add("1.00", 10);
    let scarce = h.inventory.add("1.00", 2);
    let err = h
        .create(&customer(), vec![item(&plenty, 10), item(&scarce, 3)])
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition, "{err:?}");
    assert_eq!(reason(&err), "INSUFFICIENT_STOCK");
    assert_eq!(violated_fields(&err), vec!["items[1].quantity"]);
    assert!(err.message().contains(&scarce), "{}", err.message());
    assert!(!err.message().contains(&plenty), "{}", err.message());
    assert_eq!(h.scalar("SELECT count(*) FROM orders").await, 0);

    // Exactly the stock there is: accepted.
    let ok = h.create(&customer(), vec![item(&scarce, 2)]).await.unwrap();
    assert_eq!(ok.order.unwrap().status, pb::OrderStatus::Pending as i32);
}

#[tokio::test]
async fn totals_are_exact_and_unit_prices_are_kept() {
    let h = Harness::start().await;
    let dime = h.inventory.add("0.10", 100);
    let twenty = h.inventory.add("0.20", 100);
    let laptop = h.inventory.add("999.99", 100);
    let me = customer();

    let small = h
        .create(&me, vec![item(&dime, 1), item(&twenty, 1)])
        .await
        .unwrap()
        .order
        .unwrap();
    assert_eq!(small.total, "0.30");
    assert_eq!(h.inventory.calls(), 1, "one BatchGetProducts per order");

    let big = h
        .create(&me, vec![item(&laptop, 3)])
        .await
        .unwrap()
        .order
        .unwrap();
    assert_eq!(big.total, "2999.97");
    assert_eq!(big.items[0].unit_price, "999.99");
    assert_eq!(big.status, pb::OrderStatus::Pending as i32);
    assert_eq!(big.user_id, me.user_id);
    assert_eq!(h.inventory.calls(), 2);

    // Stored as NUMERIC(12,2), exactly.
    let stored = h
        .scalar(&format!(
            "SELECT (total = 2999.97)::int::bigint FROM orders WHERE id = '{}'",
            big.id
        ))
        .await;
    assert_eq!(stored, 1);

    // A later price change does not touch a placed order.
    h.inventory.set_price(&laptop, "1200.00");
    let again = h.get(&me, &big.id).await.unwrap();
    assert_eq!(again.total, "2999.97");
    assert_eq!(again.items[0].unit_price, "999.99");
    assert_eq!(again.items[0].quantity, 3);
}

#[tokio::test]
async fn order_items_and_outbox_record_are_written_together() {
    let h = Harness::start_with(Options {
        relay: false,
        ..Default::default()
    })
    .await;
    let a = h.inventory.add("2.50", 10);
    let b = h.inventory.add("1.25", 10);
    let me = customer();
    let order = h
        .create(&me, vec![item(&b, 2), item(&a, 1)])
        .await
        .unwrap()
        .order
        .unwrap();
    assert_eq!(order.total, "5.00");
    // Lines read back in the order they were given.
    assert_eq!(order.items[0].product_id, b);
    assert_eq!(order.items[1].product_id, a);
    assert_eq!(h.scalar("SELECT count(*) FROM order_items").await, 2);
    assert_eq!(
        h.scalar(
            "SELECT count(*) FROM outbox WHERE event_type = 'order.created' AND sent_at IS NULL"
        )
        .await,
        1
    );

    // The stored event is the order, exactly.
    use sea_orm::EntityTrait;
    let records = order::infrastructure::entities::outbox::Entity::find()
        .all(&h.conn)
        .await
        .unwrap();
    let event = decode_created(&records[0].payload);
    assert_eq!(event.order_id, order.id);
    assert_eq!(event.user_id, me.user_id);
    assert_eq!(event.total, "5.00");
    assert_eq!(event.items.len(), 2);
    assert_eq!(event.items[0].unit_price, "1.25");
    assert_eq!(event.items[0].quantity, 2);
    assert_eq!(
        event.created_at.unwrap().seconds,
        order.created_at.unwrap().seconds
    );

    // When the outbox write fails, nothing of the order remains.
    h.conn
        .execute_unprepared(
            "CREATE FUNCTION refuse() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN RAISE EXCEPTION 'outbox refused'; END $$;
             CREATE TRIGGER refuse_outbox BEFORE INSERT ON outbox FOR EACH ROW EXECUTE FUNCTION refuse();",
        )
        .await
        .unwrap();
    let err = h.create(&me, vec![item(&a, 1)]).await.unwrap_err();
    assert_eq!(err.code(), Code::Internal, "{err:?}");
    assert!(
        !err.message().contains("outbox refused"),
        "no SQL leaks: {}",
        err.message()
    );
    assert_eq!(h.scalar("SELECT count(*) FROM orders").await, 1);
    assert_eq!(h.scalar("SELECT count(*) FROM order_items").await, 2);
    assert_eq!(h.scalar("SELECT count(*) FROM outbox").await, 1);

    // And no outbox record can exist without its order.
    let orphan = h
        .conn
        .execute_unprepared(&format!(
            "INSERT INTO outbox (order_id, event_type, payload) VALUES ('{}', 'order.created', '')",
            uuid::Uuid::new_v4()
        ))
        .await;
    assert!(orphan.is_err());
}

#[tokio::test]
async fn inventory_down_is_unavailable() {
    let h = Harness::start_with(Options {
        inventory_down: true,
        ..Default::default()
    })
    .await;
    let err = h
        .create(
            &customer(),
            vec![item(&uuid::Uuid::new_v4().to_string(), 1)],
        )
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unavailable, "{err:?}");
    assert_eq!(reason(&err), "INVENTORY_UNAVAILABLE");
    assert_eq!(h.scalar("SELECT count(*) FROM orders").await, 0);
}

/// Concurrent creations share an insert statement and its commit, and each
/// is answered as if it had been alone: an order the database refuses (here
/// a trigger refuses the outbox record of any order totalling 13.13) fails
/// alone, the rest of its batch is stored, and racing requests with one key
/// make one order.
#[tokio::test]
async fn concurrent_orders_share_a_commit_and_each_gets_its_own_answer() {
    let h = Harness::start_with(Options {
        relay: false,
        ..Default::default()
    })
    .await;
    let plain = h.inventory.add("2.00", 10_000);
    let marked = h.inventory.add("13.13", 10_000);

    // Orders go in together: fewer inserting transactions than orders.
    let together = (0..40).map(|_| {
        let (h, plain) = (&h, plain.clone());
        async move { h.create(&customer(), vec![item(&plain, 1)]).await }
    });
    for answer in futures::future::join_all(together).await {
        answer.expect("an order");
    }
    let transactions = h
        .scalar("SELECT count(DISTINCT xmin::text) FROM orders")
        .await;
    assert!(
        transactions < 40,
        "40 orders in {transactions} transactions: no batch formed"
    );
    h.conn
        .execute_unprepared("DELETE FROM outbox; DELETE FROM orders")
        .await
        .unwrap();

    h.conn
        .execute_unprepared(
            "CREATE FUNCTION refuse_marked() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN \
               IF position('13.13'::bytea in NEW.payload) > 0 THEN RAISE EXCEPTION 'marked order'; END IF; \
               RETURN NEW; END $$;
             CREATE TRIGGER refuse_marked BEFORE INSERT ON outbox FOR EACH ROW EXECUTE FUNCTION refuse_marked();",
        )
        .await
        .unwrap();

    let keyed = customer();
    let creations = (0..60).map(|i| {
        let h = &h;
        let (plain, marked, keyed) = (plain.clone(), marked.clone(), keyed.clone());
        async move {
            match i % 10 {
                // Six refused by the database, wherever their batch.
                3 => h.create(&customer(), vec![item(&marked, 1)]).await,
                // Twelve racing on one key with one body.
                5 | 7 => {
                    h.create_keyed(&keyed, vec![item(&plain, 2)], "same-key")
                        .await
                }
                _ => h.create(&customer(), vec![item(&plain, 1)]).await,
            }
        }
    });
    let answers = futures::future::join_all(creations).await;

    let mut created = 0;
    let mut keyed_orders = std::collections::BTreeSet::new();
    for (i, answer) in answers.into_iter().enumerate() {
        match i % 10 {
            3 => {
                let err = answer.expect_err("the marked order is refused");
                assert_eq!(err.code(), Code::Internal, "{err:?}");
            }
            5 | 7 => {
                keyed_orders.insert(answer.expect("a keyed order").order.unwrap().id);
            }
            _ => {
                let order = answer.expect("a plain order").order.unwrap();
                assert_eq!(order.total, "2.00");
                created += 1;
            }
        }
    }
    assert_eq!(created, 42);
    assert_eq!(keyed_orders.len(), 1, "one key, one order");
    let stored = h.scalar("SELECT count(*) FROM orders").await;
    assert_eq!(stored, 43);
    assert_eq!(h.scalar("SELECT count(*) FROM outbox").await, 43);
    assert_eq!(
        h.scalar("SELECT count(*) FROM orders WHERE total = 13.13")
            .await,
        0,
        "nothing of a refused order remains"
    );
}

#[tokio::test]
async fn a_quote_prices_the_orders_of_its_ttl_and_is_read_again_after_it() {
    let ttl = std::time::Duration::from_secs(2);
    let h = Harness::start_with(Options {
        relay: false,
        price_cache_ttl: ttl,
        ..Default::default()
    })
    .await;
    let lamp = h.inventory.add("10.00", 100);
    let me = customer();
    let total = |reply: pb::CreateOrderResponse| reply.order.unwrap().total;

    let read_at = std::time::Instant::now();
    let first = h.create(&me, vec![item(&lamp, 1)]).await.unwrap();
    // The quote was read between the two instants.
    let held_since = std::time::Instant::now();
    assert_eq!(total(first), "10.00");
    assert_eq!(h.inventory.calls(), 1);

    // Within the TTL the quote read for the first order prices the next
    // ones: a price change is not seen yet, and Inventory is not asked.
    h.inventory.set_price(&lamp, "12.00");
    let second = h.create(&me, vec![item(&lamp, 2)]).await.unwrap();
    let calls_then = h.inventory.calls();

    // An order naming a held product and another is read for the other only,
    // and an unknown product is asked about again, never held as missing.
    let mug = h.inventory.add("3.00", 100);
    let both = h
        .create(&me, vec![item(&lamp, 1), item(&mug, 1)])
        .await
        .unwrap();
    assert!(
        read_at.elapsed() < ttl,
        "the test ran too slowly to check the TTL"
    );
    assert_eq!(total(second), "20.00");
    assert_eq!(calls_then, 1, "a held quote was read again");
    assert_eq!(total(both), "13.00");
    assert_eq!(h.inventory.calls(), 2);
    let unknown = uuid::Uuid::new_v4().to_string();
    for _ in 0..2 {
        let err = h.create(&me, vec![item(&unknown, 1)]).await.unwrap_err();
        assert_eq!(err.code(), Code::NotFound, "{err:?}");
    }
    assert_eq!(h.inventory.calls(), 4);

    // After the TTL the product is read again, with its new price.
    tokio::time::sleep(ttl.saturating_sub(held_since.elapsed()) + ttl / 10).await;
    let later = h.create(&me, vec![item(&lamp, 1)]).await.unwrap();
    assert_eq!(total(later), "12.00");
    assert_eq!(h.inventory.calls(), 5);
}

#[tokio::test]
async fn a_shortage_in_a_held_quote_is_read_again_before_the_order_is_refused() {
    let h = Harness::start_with(Options {
        relay: false,
        // Longer than the test: nothing expires within it.
        price_cache_ttl: std::time::Duration::from_secs(60),
        ..Default::default()
    })
    .await;
    let kettle = h.inventory.add("20.00", 1);
    let me = customer();
    h.create(&me, vec![item(&kettle, 1)]).await.unwrap();
    assert_eq!(h.inventory.calls(), 1);

    // Restocked: the held quote says 1, Inventory 5. The order is not
    // refused on the held quote; the fresh one prices it, and is held.
    h.inventory.set_stock(&kettle, 5);
    let restocked = h.create(&me, vec![item(&kettle, 3)]).await.unwrap();
    assert_eq!(restocked.order.unwrap().total, "60.00");
    assert_eq!(h.inventory.calls(), 2, "the shortage was not read again");
    h.create(&me, vec![item(&kettle, 4)]).await.unwrap();
    assert_eq!(h.inventory.calls(), 2);

    // A shortage the fresh read confirms is refused as before.
    let err = h.create(&me, vec![item(&kettle, 6)]).await.unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition, "{err:?}");
    assert_eq!(reason(&err), "INSUFFICIENT_STOCK");
    assert_eq!(h.inventory.calls(), 3);
}
