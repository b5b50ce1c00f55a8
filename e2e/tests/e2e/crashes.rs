//! No event lost, none applied twice: crash any service at the steps that
//! matter (fault points that abort the process), kill -9 every service in the
//! middle of a burst, restart NATS, restart PostgreSQL. Each time the flow
//! must settle (no order PENDING, outbox empty, nothing unacknowledged) with
//! every order CONFIRMED or REJECTED and, per product, initial stock = current
//! stock + confirmed quantities.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tokio::task::JoinSet;
use tonic::Status;

use e2e::flow::{
    FlowSnapshot, OrderDb, Shop, assert_stock_conserved, customer, service_metric, wait_settled,
};
use e2e::{Stack, StackOptions, eventually};
use proto::order::v1::{Order, OrderStatus};
use testkit::{PrivateNats, PrivatePostgres};

const WAIT: Duration = Duration::from_secs(90);

const FLOW: [&str; 4] = StackOptions::FLOW;

fn options(services: &[&'static str]) -> StackOptions {
    StackOptions::quick_recovery(services)
}

/// The products of a crash test: two plentiful, one scarce (so that some
/// orders are refused or REJECTED too).
struct Catalogue {
    plenty_a: String,
    plenty_b: String,
    scarce: String,
}

impl Catalogue {
    async fn create(shop: &Shop) -> Catalogue {
        Catalogue {
            plenty_a: shop.create_product("plenty a", 500, "3.00").await,
            plenty_b: shop.create_product("plenty b", 500, "7.50").await,
            scarce: shop.create_product("scarce", 4, "1.00").await,
        }
    }

    fn initial(&self) -> Vec<(String, i32)> {
        vec![
            (self.plenty_a.clone(), 500),
            (self.plenty_b.clone(), 500),
            (self.scarce.clone(), 4),
        ]
    }

    /// The lines of the n-th order of a burst: varied quantities, and every
    /// third order wants a scarce item.
    fn lines(&self, n: usize) -> Vec<(String, u32)> {
        let mut lines = vec![(self.plenty_a.clone(), 1 + (n % 3) as u32)];
        if n.is_multiple_of(2) {
            lines.push((self.plenty_b.clone(), 1));
        }
        if n.is_multiple_of(3) {
            lines.push((self.scarce.clone(), 1));
        }
        lines
    }
}

async fn place(shop: &Shop, lines: &[(String, u32)]) -> Result<Order, Status> {
    let items: Vec<(&str, u32)> = lines.iter().map(|(p, q)| (p.as_str(), *q)).collect();
    shop.place_order(&customer(), &items).await
}

/// Places `count` orders one by one, each settled before the next.
async fn warm_up(shop: &Shop, catalogue: &Catalogue, count: usize) {
    for _ in 0..count {
        let caller = customer();
        let order = shop
            .place_order(
                &caller,
                &[(&catalogue.plenty_a, 1), (&catalogue.plenty_b, 1)],
            )
            .await
            .expect("warm-up order");
        shop.wait_status(&caller, &order.id, OrderStatus::Confirmed, WAIT)
            .await;
    }
}

/// Places `count` orders at once; some may fail while a service is down.
fn burst(shop: &Shop, catalogue: &Catalogue, count: usize) -> JoinSet<Result<Order, Status>> {
    let mut set = JoinSet::new();
    for n in 0..count {
        let shop = shop.clone();
        let lines = catalogue.lines(n);
        set.spawn(async move { place(&shop, &lines).await });
    }
    set
}

/// Ids of the orders a burst was told were accepted.
async fn accepted(mut set: JoinSet<Result<Order, Status>>) -> Vec<String> {
    let mut ids = Vec::new();
    while let Some(result) = set.join_next().await {
        if let Ok(order) = result.expect("burst task") {
            ids.push(order.id);
        }
    }
    ids
}

/// Orders placed continuously by a few workers until stopped; failures (a
/// service is down) are expected and ignored.
struct Driver {
    stop: Arc<AtomicBool>,
    workers: JoinSet<Vec<String>>,
}

impl Driver {
    fn start(shop: &Shop, catalogue: &Catalogue, workers: usize) -> Driver {
        let stop = Arc::new(AtomicBool::new(false));
        let mut set = JoinSet::new();
        for worker in 0..workers {
            let shop = shop.clone();
            let lines: Vec<Vec<(String, u32)>> =
                (0..6).map(|n| catalogue.lines(n + worker)).collect();
            let stop = stop.clone();
            set.spawn(async move {
                let mut ids = Vec::new();
                let mut n = 0;
                while !stop.load(Ordering::SeqCst) {
                    match place(&shop, &lines[n % lines.len()]).await {
                        Ok(order) => ids.push(order.id),
                        Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
                    }
                    n += 1;
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                ids
            });
        }
        Driver { stop, workers: set }
    }

    async fn finish(mut self) -> Vec<String> {
        self.stop.store(true, Ordering::SeqCst);
        let mut ids = Vec::new();
        while let Some(result) = self.workers.join_next().await {
            ids.extend(result.expect("driver worker"));
        }
        ids
    }
}

/// Waits until the order database holds at least `count` orders.
async fn wait_orders(db: &OrderDb, count: usize, what: &str) -> FlowSnapshot {
    eventually(WAIT, what, || async {
        db.snapshot()
            .await
            .ok()
            .filter(|snapshot| snapshot.orders.len() >= count)
    })
    .await
}

/// Every order the callers were told was accepted exists and reached an
/// outcome.
fn assert_accepted_settled(settled: &FlowSnapshot, accepted: &[String]) {
    for id in accepted {
        let order = settled
            .order(id)
            .unwrap_or_else(|| panic!("accepted order {id} is missing"));
        assert!(
            matches!(order.status.as_str(), "CONFIRMED" | "REJECTED"),
            "{order:?}"
        );
    }
}

/// Three orders settle; then, in a burst, the fault point aborts `service`
/// at its sixth hit. The test checks the process died with some orders
/// settled and some not, restarts it without the fault and checks the
/// guarantees once the flow settled.
async fn crash_at_fault_point(service: &'static str, point: &str) -> (Stack, FlowSnapshot) {
    const WARM_UP: usize = 3;
    // Each warm-up order passes the point once (they go one at a time); the
    // burst's orders may pass it together, in one batch: so the first hit
    // after the warm-up, which comes while the burst is still being placed.
    let mut stack = Stack::start(options(&FLOW).with_service_env(
        service,
        "FAULT_POINTS",
        &format!("{point}@{}", WARM_UP + 1),
    ))
    .await;
    let shop = Shop::new(&stack).await;
    let db = OrderDb::connect(&stack).await;
    let catalogue = Catalogue::create(&shop).await;
    warm_up(&shop, &catalogue, WARM_UP).await;
    assert!(
        stack.process(service).is_running(),
        "no fault before its hit"
    );

    let placing = burst(&shop, &catalogue, 12);
    let exit = stack.process(service).wait_exit(WAIT).await;
    assert!(!exit.success(), "{service} died: {exit}");
    assert!(
        stack
            .process(service)
            .log()
            .contains(&format!("fault injection: aborting at {point}")),
        "{service} died at {point}"
    );
    // Mid-way: the warm-up settled, and the step that crashed left its order
    // unsettled (PENDING, or its outbox record unsent) until the restart.
    let at_crash = db.snapshot().await.expect("order database");
    assert!(at_crash.settled() >= WARM_UP, "{at_crash:?}");
    assert!(
        at_crash.pending() + at_crash.unsent_outbox as usize >= 1,
        "something was left to do at the crash: {at_crash:?}"
    );
    let accepted = accepted(placing).await;

    stack
        .restart_with(service, &[("FAULT_POINTS", None)], WAIT)
        .await;
    let settled = wait_settled(&stack, &db, WAIT).await;
    assert!(settled.orders.len() > WARM_UP);
    assert_accepted_settled(&settled, &accepted);
    assert_stock_conserved(&shop, &settled, &catalogue.initial()).await;
    (stack, settled)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn order_crashes_right_after_the_outbox_commit() {
    let (_stack, settled) = crash_at_fault_point("order", "order.after_outbox_commit").await;
    // The order committed at the crash was never answered, and still settled.
    assert!(settled.count("CONFIRMED") >= 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relay_crashes_after_publishing_before_marking_sent() {
    let (stack, _) = crash_at_fault_point("order", "order.relay.after_publish").await;
    // The record published before the crash went out again after the
    // restart, and the stream dropped the repeat.
    assert!(
        service_metric(
            &stack,
            "producer",
            r#"ecommerce_producer_events_published_total{event="order.created",duplicate="true"}"#
        )
        .await
            >= 1.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consumer_crashes_after_apply_before_recording_the_outcome() {
    let (stack, _) = crash_at_fault_point("consumer", "consumer.after_apply").await;
    // The message was redelivered, and Inventory recognised the order.
    assert!(
        service_metric(
            &stack,
            "consumer",
            r#"ecommerce_consumer_events_processed_total{event="order.created",outcome="confirmed",replayed="true"}"#
        )
        .await
            >= 1.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inventory_crashes_right_after_its_commit() {
    let (stack, _) = crash_at_fault_point("inventory", "inventory.after_apply_commit").await;
    // The Consumer asked again and got the recorded outcome.
    assert!(
        service_metric(
            &stack,
            "inventory",
            r#"ecommerce_inventory_apply_order_total{outcome="applied",replayed="true"}"#
        )
        .await
            >= 1.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_of_every_service_in_the_middle_of_a_burst() {
    let mut stack = Stack::start(options(&e2e::SERVICES)).await;
    let shop = Shop::new(&stack).await;
    let db = OrderDb::connect(&stack).await;
    let catalogue = Catalogue::create(&shop).await;
    warm_up(&shop, &catalogue, 2).await;

    let driver = Driver::start(&shop, &catalogue, 3);
    for service in [
        "order",
        "inventory",
        "producer",
        "consumer",
        "user",
        "gateway",
    ] {
        // The burst is under way: more orders arrived since the last kill.
        let before = db.snapshot().await.expect("order database").orders.len();
        wait_orders(&db, before + 3, "orders to keep arriving").await;
        // Hold the Consumer for a moment so that the kill is sure to find
        // orders still in flight, whatever the machine's speed.
        stack.process("consumer").freeze();
        // An order placed after the freeze: a call the Consumer sent before
        // it (a batch of outcomes, say) may still settle older ones, never
        // this one.
        let known: std::collections::HashSet<_> = db
            .snapshot()
            .await
            .expect("order database")
            .orders
            .iter()
            .map(|o| o.id)
            .collect();
        eventually(WAIT, "an order in flight", || async {
            db.snapshot().await.ok().filter(|s| {
                s.orders
                    .iter()
                    .any(|o| o.status == "PENDING" && !known.contains(&o.id))
            })
        })
        .await;
        stack.kill(service);
        assert!(!stack.process(service).is_running(), "{service} was killed");
        let at_kill = db.snapshot().await.expect("order database");
        assert!(at_kill.settled() >= 2, "{service}: {at_kill:?}");
        assert!(at_kill.pending() >= 1, "{service}: {at_kill:?}");
        if service != "consumer" {
            stack.process("consumer").thaw();
        }
        stack.restart(service, WAIT).await;
    }
    let before = db.snapshot().await.expect("order database").orders.len();
    wait_orders(&db, before + 3, "orders after the last restart").await;
    let accepted = driver.finish().await;

    let settled = wait_settled(&stack, &db, WAIT).await;
    assert_accepted_settled(&settled, &accepted);
    assert_stock_conserved(&shop, &settled, &catalogue.initial()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nats_restarts_in_the_middle_of_the_flow() {
    let mut nats = PrivateNats::start();
    let stack = Stack::start(StackOptions {
        nats_url: Some(nats.url()),
        ..options(&FLOW)
    })
    .await;
    let shop = Shop::new(&stack).await;
    let db = OrderDb::connect(&stack).await;
    let catalogue = Catalogue::create(&shop).await;
    warm_up(&shop, &catalogue, 2).await;

    nats.kill();
    // Orders are still accepted (the outbox keeps their events), but none can
    // settle while NATS is down.
    let during = accepted(burst(&shop, &catalogue, 6)).await;
    assert_eq!(during.len(), 6, "orders are accepted without NATS");
    let at_outage = db.snapshot().await.expect("order database");
    assert!(at_outage.settled() >= 2);
    for id in &during {
        assert_eq!(at_outage.order(id).unwrap().status, "PENDING");
    }

    nats.start_again();
    let after = accepted(burst(&shop, &catalogue, 6)).await;
    let settled = wait_settled(&stack, &db, WAIT).await;
    assert_accepted_settled(&settled, &during);
    assert_accepted_settled(&settled, &after);
    assert_stock_conserved(&shop, &settled, &catalogue.initial()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_restarts_in_the_middle_of_a_burst() {
    let pg = PrivatePostgres::start();
    let mut stack = Stack::start(StackOptions {
        pg: pg.server(),
        ..options(&FLOW)
    })
    .await;
    let shop = Shop::new(&stack).await;
    let db = OrderDb::connect(&stack).await;
    let catalogue = Catalogue::create(&shop).await;
    warm_up(&shop, &catalogue, 2).await;

    let driver = Driver::start(&shop, &catalogue, 3);
    wait_orders(&db, 2 + 5, "the burst to start").await;
    // Hold the Consumer so that the crash is sure to find orders in flight.
    stack.process("consumer").freeze();
    let at_crash = eventually(WAIT, "an order in flight", || async {
        db.snapshot().await.ok().filter(|s| s.pending() >= 1)
    })
    .await;
    assert!(at_crash.settled() >= 2, "{at_crash:?}");
    // A crash of the server (no checkpoint), then a start on the same data.
    pg.restart();
    stack.process("consumer").thaw();
    let after_restart = eventually(WAIT, "the order database again", || async {
        db.snapshot().await.ok()
    })
    .await;
    assert!(after_restart.settled() >= 2);
    // The services recovered: orders are accepted again.
    wait_orders(
        &db,
        after_restart.orders.len() + 5,
        "orders after the restart",
    )
    .await;
    let accepted = driver.finish().await;

    let settled = wait_settled(&stack, &db, WAIT).await;
    assert_accepted_settled(&settled, &accepted);
    assert_stock_conserved(&shop, &settled, &catalogue.initial()).await;
}
