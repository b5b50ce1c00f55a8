//! The order flow end to end, on the real binaries against real PostgreSQL and
//! NATS: an order is placed with Order (gRPC, as the gateway would), relayed
//! through the outbox to the Producer, consumed by the Consumer, applied by
//! Inventory and confirmed or rejected by Order.

use std::time::Duration;

use async_nats::HeaderMap;
use prost::Message;
use tokio::task::JoinSet;
use tonic::Code;

use e2e::flow::{
    OrderDb, Shop, admin, assert_stock_conserved, customer, metric_value, service_metric,
    wait_settled,
};
use e2e::{Stack, StackOptions, eventually};
use proto::events::v1::{OrderCancelled, OrderCreated, OrderLine};
use proto::order::v1::{CancelOrderRequest, OrderStatus, UpdateOrderStatusRequest};
use testkit::TestNats;

const WAIT: Duration = Duration::from_secs(60);

const FLOW: [&str; 4] = StackOptions::FLOW;

fn options(services: &[&'static str]) -> StackOptions {
    StackOptions::quick_recovery(services)
}

/// Publishes an event to the order stream as the Producer would, under
/// `message_id`.
async fn publish_event(nats: &TestNats, kind: &str, message_id: &str, payload: Vec<u8>) {
    let mut headers = HeaderMap::new();
    headers.insert("Nats-Msg-Id", message_id);
    headers.insert("Event-Type", format!("order.{kind}").as_str());
    headers.insert("Event-Version", "1");
    headers.insert("Content-Type", "application/protobuf");
    let ack = nats
        .jetstream()
        .await
        .publish_with_headers(
            format!("{}.{kind}", nats.subject_prefix),
            headers,
            payload.into(),
        )
        .await
        .expect("publish")
        .await
        .expect("stream ack");
    assert!(!ack.duplicate, "{message_id} must not be a duplicate");
}

const CONFIRMED_FIRST: &str = r#"ecommerce_consumer_events_processed_total{event="order.created",outcome="confirmed",replayed="false"}"#;
const CONFIRMED_REPLAYED: &str = r#"ecommerce_consumer_events_processed_total{event="order.created",outcome="confirmed",replayed="true"}"#;
const RELEASED_REPLAYED: &str = r#"ecommerce_consumer_events_processed_total{event="order.cancelled",outcome="released",replayed="true"}"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_order_is_confirmed_and_takes_its_stock_exactly_once() {
    let mut stack = Stack::start(options(&FLOW)).await;
    let shop = Shop::new(&stack).await;
    let db = OrderDb::connect(&stack).await;
    let laptop = shop.create_product("laptop", 10, "999.99").await;
    let cable = shop.create_product("cable", 5, "0.50").await;
    let alice = customer();

    // With the Consumer stopped, the order is stored and its event published,
    // and still no stock moves: only step 4 changes stock.
    stack.kill("consumer");
    let order = shop
        .place_order(&alice, &[(&laptop, 2), (&cable, 3)])
        .await
        .unwrap();
    assert_eq!(order.status, OrderStatus::Pending as i32);
    assert_eq!(order.total, "2001.48");
    assert_eq!(order.items.len(), 2);
    eventually(WAIT, "the event to be published", || async {
        let snapshot = db.snapshot().await.ok()?;
        let in_stream = e2e::flow::unacknowledged_events(&stack.nats).await?;
        (snapshot.unsent_outbox == 0 && in_stream == 1).then_some(())
    })
    .await;
    assert_eq!(shop.stock(&laptop).await, 10);
    assert_eq!(shop.stock(&cable).await, 5);

    stack.restart("consumer", WAIT).await;
    let confirmed = shop
        .wait_status(&alice, &order.id, OrderStatus::Confirmed, WAIT)
        .await;
    assert_eq!(confirmed.status_reason, "");
    assert_eq!(confirmed.total, "2001.48");
    let settled = wait_settled(&stack, &db, WAIT).await;
    // Exactly once: the original decremented twice.
    assert_eq!(shop.stock(&laptop).await, 8);
    assert_eq!(shop.stock(&cable).await, 2);
    assert_stock_conserved(&shop, &settled, &[(laptop, 10), (cable, 5)]).await;
    assert_eq!(
        service_metric(&stack, "consumer", CONFIRMED_FIRST).await,
        1.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_orders_never_oversell() {
    let stack = Stack::start(options(&FLOW)).await;
    let shop = Shop::new(&stack).await;
    let db = OrderDb::connect(&stack).await;
    let product = shop.create_product("last items", 15, "5.00").await;
    // A second Consumer replica on the same durable: they share the work.
    let (second, _second_addr) = stack.start_replica("consumer", WAIT).await;

    let mut placing = JoinSet::new();
    for _ in 0..40 {
        let shop = shop.clone();
        let product = product.clone();
        placing.spawn(async move { shop.place_order(&customer(), &[(&product, 1)]).await });
    }
    let mut accepted = Vec::new();
    let mut refused = 0;
    while let Some(result) = placing.join_next().await {
        match result.unwrap() {
            Ok(order) => accepted.push(order.id),
            // Visibly out of stock at creation.
            Err(status) if status.code() == Code::FailedPrecondition => refused += 1,
            Err(status) => panic!("unexpected answer to an order: {status:?}"),
        }
    }

    let settled = wait_settled(&stack, &db, WAIT).await;
    assert_eq!(settled.orders.len(), accepted.len());
    assert_eq!(
        settled.count("CONFIRMED"),
        15,
        "exactly as many as in stock"
    );
    assert_eq!(
        settled.count("REJECTED") + refused,
        25,
        "the rest refused at creation or rejected"
    );
    for order in settled.orders.iter().filter(|o| o.status == "REJECTED") {
        assert!(
            order.reason.as_deref().is_some_and(|r| !r.is_empty()),
            "a rejected order says why: {order:?}"
        );
    }
    assert_eq!(shop.stock(&product).await, 0);
    assert_stock_conserved(&shop, &settled, &[(product, 15)]).await;
    // Every accepted order's event was handled by one of the replicas.
    let processed = "ecommerce_consumer_events_processed_total{event=\"order.created\"";
    let by_first = service_metric(&stack, "consumer", processed).await;
    let text = e2e::flow::http_get(&second.metrics_addr, "/metrics")
        .await
        .unwrap();
    let by_second = metric_value(&text, processed);
    assert!(
        by_first + by_second >= accepted.len() as f64,
        "{by_first} + {by_second} handled, {} accepted",
        accepted.len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_returns_stock_once_and_illegal_transitions_are_refused() {
    let mut stack = Stack::start(options(&FLOW)).await;
    let shop = Shop::new(&stack).await;
    let db = OrderDb::connect(&stack).await;
    let product = shop.create_product("chair", 10, "49.90").await;
    let bob = customer();
    let boss = admin();
    let mut orders = shop.orders.clone();

    // A PENDING order cannot be cancelled yet (the Consumer is stopped, so it
    // stays PENDING for sure).
    stack.kill("consumer");
    let order = shop.place_order(&bob, &[(&product, 4)]).await.unwrap();
    let early = orders
        .cancel_order(CancelOrderRequest {
            caller: Some(bob.clone()),
            order_id: order.id.clone(),
        })
        .await
        .unwrap_err();
    assert_eq!(early.code(), Code::FailedPrecondition, "{early:?}");
    stack.restart("consumer", WAIT).await;
    shop.wait_status(&bob, &order.id, OrderStatus::Confirmed, WAIT)
        .await;
    wait_settled(&stack, &db, WAIT).await;
    assert_eq!(shop.stock(&product).await, 6);

    // Status changes other than the fulfilment path are refused.
    let update =
        |caller: &proto::common::v1::Caller, status: OrderStatus| UpdateOrderStatusRequest {
            caller: Some(caller.clone()),
            order_id: order.id.clone(),
            status: status as i32,
        };
    for illegal in [
        OrderStatus::Delivered,
        OrderStatus::Pending,
        OrderStatus::Rejected,
        OrderStatus::Cancelled,
    ] {
        let refused = orders.update_order_status(update(&boss, illegal)).await;
        let status = refused.expect_err("an illegal transition");
        assert_eq!(
            status.code(),
            Code::FailedPrecondition,
            "{illegal:?}: {status:?}"
        );
    }
    let not_admin = orders
        .update_order_status(update(&bob, OrderStatus::Shipped))
        .await
        .unwrap_err();
    assert_eq!(not_admin.code(), Code::PermissionDenied);

    // Another customer cannot cancel it; the owner can, and the stock comes
    // back once, however often the cancel is repeated.
    let stranger = orders
        .cancel_order(CancelOrderRequest {
            caller: Some(customer()),
            order_id: order.id.clone(),
        })
        .await
        .unwrap_err();
    assert_eq!(stranger.code(), Code::NotFound);
    for _ in 0..3 {
        let cancelled = orders
            .cancel_order(CancelOrderRequest {
                caller: Some(bob.clone()),
                order_id: order.id.clone(),
            })
            .await
            .unwrap()
            .into_inner()
            .order
            .unwrap();
        assert_eq!(cancelled.status, OrderStatus::Cancelled as i32);
    }
    let settled = wait_settled(&stack, &db, WAIT).await;
    assert_eq!(shop.stock(&product).await, 10, "returned exactly once");
    let after_cancel = orders
        .update_order_status(update(&boss, OrderStatus::Shipped))
        .await
        .unwrap_err();
    assert_eq!(after_cancel.code(), Code::FailedPrecondition);
    assert_stock_conserved(&shop, &settled, &[(product.clone(), 10)]).await;

    // The fulfilment path, and no cancel after delivery.
    let second = shop.place_order(&bob, &[(&product, 3)]).await.unwrap();
    shop.wait_status(&bob, &second.id, OrderStatus::Confirmed, WAIT)
        .await;
    let ship = |status: OrderStatus| UpdateOrderStatusRequest {
        caller: Some(boss.clone()),
        order_id: second.id.clone(),
        status: status as i32,
    };
    orders
        .update_order_status(ship(OrderStatus::Shipped))
        .await
        .unwrap();
    orders
        .update_order_status(ship(OrderStatus::Delivered))
        .await
        .unwrap();
    let late = orders
        .cancel_order(CancelOrderRequest {
            caller: Some(bob.clone()),
            order_id: second.id.clone(),
        })
        .await
        .unwrap_err();
    assert_eq!(late.code(), Code::FailedPrecondition);
    let settled = wait_settled(&stack, &db, WAIT).await;
    assert_eq!(shop.stock(&product).await, 7);
    assert_stock_conserved(&shop, &settled, &[(product, 10)]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redelivered_events_change_stock_once() {
    let stack = Stack::start(options(&FLOW)).await;
    let shop = Shop::new(&stack).await;
    let db = OrderDb::connect(&stack).await;
    let product = shop.create_product("lamp", 10, "20.00").await;
    let carol = customer();
    let order = shop.place_order(&carol, &[(&product, 3)]).await.unwrap();
    shop.wait_status(&carol, &order.id, OrderStatus::Confirmed, WAIT)
        .await;
    wait_settled(&stack, &db, WAIT).await;
    assert_eq!(shop.stock(&product).await, 7);

    // The same order.created event again, under distinct message ids so the
    // stream's deduplication cannot hide them: every copy must reach the
    // Consumer and Inventory, and none may take stock again.
    let created = OrderCreated {
        order_id: order.id.clone(),
        user_id: carol.user_id.clone(),
        items: vec![OrderLine {
            product_id: product.clone(),
            quantity: 3,
            unit_price: "20.00".into(),
        }],
        total: order.total.clone(),
        created_at: None,
    };
    for copy in 1..=3 {
        publish_event(
            &stack.nats,
            "created",
            &format!("{}.order.created.copy{copy}", order.id),
            created.encode_to_vec(),
        )
        .await;
    }
    eventually(WAIT, "every copy to be delivered", || async {
        (service_metric(&stack, "consumer", CONFIRMED_REPLAYED).await == 3.0).then_some(())
    })
    .await;
    let settled = wait_settled(&stack, &db, WAIT).await;
    assert_eq!(shop.stock(&product).await, 7);
    assert_eq!(settled.order(&order.id).unwrap().status, "CONFIRMED");
    assert_eq!(
        service_metric(
            &stack,
            "inventory",
            r#"ecommerce_inventory_apply_order_total{outcome="applied",replayed="true"}"#
        )
        .await,
        3.0,
        "Inventory saw every copy and recognised it"
    );

    // A cancel delivered several times returns the stock once.
    shop.orders
        .clone()
        .cancel_order(CancelOrderRequest {
            caller: Some(carol.clone()),
            order_id: order.id.clone(),
        })
        .await
        .unwrap();
    wait_settled(&stack, &db, WAIT).await;
    assert_eq!(shop.stock(&product).await, 10);
    let cancelled = OrderCancelled {
        order_id: order.id.clone(),
        user_id: carol.user_id.clone(),
        cancelled_at: None,
    };
    for copy in 1..=2 {
        publish_event(
            &stack.nats,
            "cancelled",
            &format!("{}.order.cancelled.copy{copy}", order.id),
            cancelled.encode_to_vec(),
        )
        .await;
    }
    eventually(WAIT, "every cancel copy to be delivered", || async {
        (service_metric(&stack, "consumer", RELEASED_REPLAYED).await == 2.0).then_some(())
    })
    .await;
    let settled = wait_settled(&stack, &db, WAIT).await;
    assert_eq!(shop.stock(&product).await, 10);
    assert_stock_conserved(&shop, &settled, &[(product, 10)]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_relays_hand_each_record_to_the_producer_once() {
    let stack = Stack::start(options(&FLOW)).await;
    let db = OrderDb::connect(&stack).await;
    // A second Order replica on the same database, with its own relay.
    let (_second, second_addr) = stack.start_replica("order", WAIT).await;

    let first_shop = Shop::new(&stack).await;
    let mut second_shop = first_shop.clone();
    second_shop.orders =
        proto::order::v1::order_service_client::OrderServiceClient::with_interceptor(
            tonic::transport::Endpoint::from_shared(format!("http://{second_addr}"))
                .unwrap()
                .connect_lazy(),
            e2e::flow::InternalToken::default(),
        );
    let product = first_shop.create_product("mug", 1000, "8.00").await;
    let mut placing = JoinSet::new();
    for i in 0..30 {
        let shop = if i % 2 == 0 {
            first_shop.clone()
        } else {
            second_shop.clone()
        };
        let product = product.clone();
        placing.spawn(async move { shop.place_order(&customer(), &[(&product, 1)]).await });
    }
    while let Some(result) = placing.join_next().await {
        result.unwrap().expect("order accepted");
    }
    let settled = wait_settled(&stack, &db, WAIT).await;
    assert_eq!(settled.count("CONFIRMED"), 30);

    // The relays hand their records over in batches: each event counts once
    // in the Producer, a second hand-over of one would count as a duplicate.
    let fresh = service_metric(
        &stack,
        "producer",
        r#"ecommerce_producer_events_published_total{event="order.created",duplicate="false"}"#,
    )
    .await;
    let duplicates = service_metric(
        &stack,
        "producer",
        r#"ecommerce_producer_events_published_total{event="order.created",duplicate="true"}"#,
    )
    .await;
    assert_eq!(
        fresh + duplicates,
        30.0,
        "each outbox record reached the Producer once"
    );
    assert_eq!(duplicates, 0.0);
    assert_stock_conserved(&first_shop, &settled, &[(product, 1000)]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_poison_message_is_dead_lettered_its_order_rejected_and_the_stream_flows_on() {
    let mut stack = Stack::start(options(&FLOW)).await;
    let shop = Shop::new(&stack).await;
    let db = OrderDb::connect(&stack).await;
    let product = shop.create_product("vase", 10, "15.00").await;
    let dave = customer();

    // The Producer is down, so the order's real event waits in the outbox
    // while a corrupt one with its message id arrives first.
    stack.kill("producer");
    let order = shop.place_order(&dave, &[(&product, 2)]).await.unwrap();
    let message_id = format!("{}.order.created", order.id);
    publish_event(
        &stack.nats,
        "created",
        &message_id,
        b"\xffthis is not protobuf".to_vec(),
    )
    .await;

    let rejected = shop
        .wait_status(&dave, &order.id, OrderStatus::Rejected, WAIT)
        .await;
    assert!(
        rejected.status_reason.contains("not a valid OrderCreated"),
        "the reason is given: {:?}",
        rejected.status_reason
    );
    let dead = eventually(WAIT, "the dead letter", || async {
        let dead = stack.nats.dead_letters().await;
        (!dead.is_empty()).then_some(dead)
    })
    .await;
    assert_eq!(dead.len(), 1);
    let headers = dead[0].headers.as_ref().unwrap();
    assert_eq!(headers.get("Original-Msg-Id").unwrap().as_str(), message_id);
    assert_eq!(
        headers.get("Original-Subject").unwrap().as_str(),
        format!("{}.created", stack.nats.subject_prefix)
    );
    assert!(
        headers
            .get("Dead-Letter-Reason")
            .unwrap()
            .as_str()
            .contains("not a valid OrderCreated")
    );
    assert_eq!(&dead[0].payload[..], b"\xffthis is not protobuf");
    assert_eq!(
        service_metric(&stack, "consumer", "ecommerce_consumer_dead_lettered_total").await,
        1.0
    );

    // The real event, relayed now, is the same message id: the stream drops
    // it, and the rejected order takes no stock.
    stack.restart("producer", WAIT).await;
    wait_settled(&stack, &db, WAIT).await;
    assert_eq!(
        service_metric(
            &stack,
            "producer",
            r#"ecommerce_producer_events_published_total{event="order.created",duplicate="true"}"#
        )
        .await,
        1.0
    );
    assert_eq!(shop.stock(&product).await, 10);

    // The stream keeps flowing.
    let next = shop.place_order(&dave, &[(&product, 1)]).await.unwrap();
    shop.wait_status(&dave, &next.id, OrderStatus::Confirmed, WAIT)
        .await;
    let settled = wait_settled(&stack, &db, WAIT).await;
    assert_eq!(settled.order(&order.id).unwrap().status, "REJECTED");
    assert_eq!(shop.stock(&product).await, 9);
    assert_stock_conserved(&shop, &settled, &[(product, 10)]).await;
    assert_eq!(stack.nats.dead_letters().await.len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn while_inventory_is_down_events_are_retried_not_dead_lettered() {
    let mut stack = Stack::start(options(&FLOW)).await;
    let shop = Shop::new(&stack).await;
    let db = OrderDb::connect(&stack).await;
    let product = shop.create_product("desk", 20, "120.00").await;

    // Orders accepted and their events published while the Consumer is
    // stopped (creation needs Inventory, so it goes down after).
    stack.kill("consumer");
    let erin = customer();
    let mut ids = Vec::new();
    for _ in 0..5 {
        ids.push(shop.place_order(&erin, &[(&product, 2)]).await.unwrap().id);
    }
    eventually(WAIT, "the events to be published", || async {
        let snapshot = db.snapshot().await.ok()?;
        let in_stream = e2e::flow::unacknowledged_events(&stack.nats).await?;
        (snapshot.unsent_outbox == 0 && in_stream == 5).then_some(())
    })
    .await;
    stack.kill("inventory");
    stack.restart("consumer", WAIT).await;

    // Every event is tried, fails transiently, and is tried again.
    eventually(WAIT, "the events to be retried", || async {
        let text = e2e::flow::http_get(stack.metrics_addr("consumer"), "/metrics")
            .await
            .ok()?;
        (metric_value(
            &text,
            r#"ecommerce_consumer_failures_total{event="order.created",kind="transient"}"#,
        ) >= 15.0)
            .then_some(())
    })
    .await;
    assert!(stack.nats.dead_letters().await.is_empty());
    let snapshot = db.snapshot().await.unwrap();
    assert_eq!(snapshot.pending(), 5, "nothing settles without Inventory");

    stack.restart("inventory", WAIT).await;
    let settled = wait_settled(&stack, &db, WAIT).await;
    for id in &ids {
        assert_eq!(settled.order(id).unwrap().status, "CONFIRMED");
    }
    assert_eq!(shop.stock(&product).await, 10);
    assert_stock_conserved(&shop, &settled, &[(product, 20)]).await;
    assert!(
        stack.nats.dead_letters().await.is_empty(),
        "never dead-lettered"
    );
    assert_eq!(
        service_metric(&stack, "consumer", "ecommerce_consumer_dead_lettered_total").await,
        0.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_late_event_for_a_rejected_order_gives_its_stock_back() {
    let mut stack = Stack::start(options(&FLOW)).await;
    let shop = Shop::new(&stack).await;
    let db = OrderDb::connect(&stack).await;
    let product = shop.create_product("clock", 10, "12.00").await;
    let frank = customer();

    // A corrupt copy under another message id gets the order REJECTED
    // before its real event is relayed (the Producer is down meanwhile).
    stack.kill("producer");
    let order = shop.place_order(&frank, &[(&product, 4)]).await.unwrap();
    publish_event(
        &stack.nats,
        "created",
        &format!("{}.order.created.corrupt", order.id),
        b"\xffcorrupt".to_vec(),
    )
    .await;
    shop.wait_status(&frank, &order.id, OrderStatus::Rejected, WAIT)
        .await;

    // The real event now applies in Inventory, but Order refuses to confirm
    // a REJECTED order: the Consumer gives the stock back and dead-letters it.
    stack.restart("producer", WAIT).await;
    let settled = wait_settled(&stack, &db, WAIT).await;
    assert_eq!(settled.order(&order.id).unwrap().status, "REJECTED");
    assert_eq!(shop.stock(&product).await, 10);
    assert_stock_conserved(&shop, &settled, &[(product, 10)]).await;
    let dead = stack.nats.dead_letters().await;
    assert_eq!(dead.len(), 2, "the corrupt copy and the refused event");
    assert!(dead.iter().any(|m| {
        m.headers
            .as_ref()
            .and_then(|h| h.get("Dead-Letter-Reason"))
            .is_some_and(|r| r.as_str().contains("the stock it took was returned"))
    }));
}
