//! The real `order` binary: migrate, health, metrics, SIGTERM, two relays on
//! one database, and crashes at the fault points.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use sea_orm::{DatabaseConnection, EntityTrait};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::helpers::*;
use order::infrastructure::entities::outbox;
use testkit::{ServiceProcess, TestDb, free_port};

/// A database and the fakes, shared by the processes of one test.
struct Fixture {
    db: TestDb,
    conn: DatabaseConnection,
    inventory: Arc<FakeInventory>,
    inventory_addr: String,
    producer: Arc<FakeProducer>,
    producer_addr: String,
}

impl Fixture {
    async fn new() -> Fixture {
        let inventory = Arc::new(FakeInventory::default());
        let inventory_addr = serve_inventory(inventory.clone()).await;
        let producer = Arc::new(FakeProducer::default());
        let producer_addr = reserve_addr();
        serve_producer_at(producer.clone(), producer_addr).await;
        let db = TestDb::create().await;
        let conn = db.connect().await;
        Fixture {
            db,
            conn,
            inventory,
            inventory_addr,
            producer,
            producer_addr: producer_addr.to_string(),
        }
    }

    fn env(&self, addr: &str) -> Vec<(String, String)> {
        binary_env(&self.db, addr, &self.inventory_addr, &self.producer_addr)
    }

    /// Starts an Order process; returns it, its address and a client.
    async fn spawn(&self, extra: &[(&str, &str)]) -> (ServiceProcess, String, OrderClient) {
        let addr = format!("127.0.0.1:{}", free_port());
        let mut env = self.env(&addr);
        env.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        let process = spawn_order(env, &addr).await;
        let client = client_for(&addr);
        (process, addr, client)
    }

    async fn scalar(&self, sql: &str) -> i64 {
        scalar(&self.conn, sql).await
    }
}

async fn create(
    client: &OrderClient,
    caller: &proto::common::v1::Caller,
    product: &str,
) -> Result<proto::order::v1::Order, tonic::Status> {
    client
        .clone()
        .create_order(proto::order::v1::CreateOrderRequest {
            caller: Some(caller.clone()),
            items: vec![item(product, 1)],
            idempotency_key: String::new(),
        })
        .await
        .map(|r| r.into_inner().order.unwrap())
}

async fn http_get(addr: &str, path: &str) -> String {
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut body = String::new();
    stream.read_to_string(&mut body).await.unwrap();
    body
}

#[tokio::test]
async fn migrate_then_serve_with_health_and_metrics_and_exit_0_on_sigterm() {
    let fixture = Fixture::new().await;
    let addr = format!("127.0.0.1:{}", free_port());
    let mut migrate = ServiceProcess::spawn_with_args("order", &["migrate"], fixture.env(&addr));
    let status = migrate.wait_exit(Duration::from_secs(60)).await;
    assert!(
        status.success(),
        "order migrate: {status}\n{}",
        migrate.log_tail(20)
    );
    assert_eq!(
        fixture
            .scalar("SELECT count(*) FROM information_schema.tables WHERE table_name IN ('orders', 'order_items', 'outbox')")
            .await,
        3
    );

    let (mut process, _, client) = fixture.spawn(&[]).await;
    let product = fixture.inventory.add("12.34", 5);
    let order = create(&client, &customer(), &product).await.unwrap();
    assert_eq!(order.total, "12.34");
    testkit::eventually(Duration::from_secs(10), "the event relayed", || async {
        (fixture.producer.calls().len() == 1).then_some(())
    })
    .await;

    let metrics = http_get(&process.metrics_addr, "/metrics").await;
    assert!(metrics.starts_with("HTTP/1.1 200"), "{metrics}");
    for name in [
        "ecommerce_order_outbox_backlog",
        "ecommerce_order_outbox_relayed_total",
        "ecommerce_order_outbox_relay_errors_total",
    ] {
        assert!(metrics.contains(name), "{name} missing:\n{metrics}");
    }

    let status = process.terminate(Duration::from_secs(15)).await;
    assert!(
        status.success(),
        "order exits 0 on SIGTERM: {status}\n{}",
        process.log_tail(20)
    );
    assert!(process.log().contains("outbox relay stopped"));
}

#[tokio::test]
async fn a_bad_setting_stops_the_start_naming_the_variable() {
    let fixture = Fixture::new().await;
    let addr = format!("127.0.0.1:{}", free_port());
    let mut env = fixture.env(&addr);
    env.push(("OUTBOX_POLL_INTERVAL_MS".into(), "soon".into()));
    let mut process = ServiceProcess::spawn("order", env);
    let status = process.wait_exit(Duration::from_secs(30)).await;
    assert!(!status.success());
    assert!(
        process.log().contains("OUTBOX_POLL_INTERVAL_MS"),
        "{}",
        process.log()
    );
}

#[tokio::test]
async fn two_relays_on_one_database_deliver_each_record_exactly_once() {
    let fixture = Fixture::new().await;
    // A slow Producer keeps each relay's batch locked for a while.
    fixture.producer.delay_ms.store(5, Ordering::SeqCst);
    let batch = [("OUTBOX_BATCH_SIZE", "5")];
    let (mut first, _, first_client) = fixture.spawn(&batch).await;
    let (mut second, _, second_client) = fixture.spawn(&batch).await;
    let product = fixture.inventory.add("1.00", 10_000);
    let caller = customer();
    let mut orders = Vec::new();
    for round in 0..30 {
        let clients = [&first_client, &second_client];
        let creates = futures::future::join_all(
            clients
                .iter()
                .map(|client| create(client, &caller, &product)),
        )
        .await;
        for created in creates {
            orders.push(created.unwrap_or_else(|e| panic!("round {round}: {e:?}")));
        }
    }
    let expected = orders.len() as i64;
    testkit::eventually(Duration::from_secs(60), "every record sent", || async {
        (fixture
            .scalar("SELECT count(*) FROM outbox WHERE sent_at IS NOT NULL")
            .await
            == expected)
            .then_some(())
    })
    .await;
    let counts = fixture.producer.counts();
    assert_eq!(counts.len(), orders.len());
    let repeated: Vec<_> = counts.iter().filter(|(_, n)| **n != 1).collect();
    assert!(
        repeated.is_empty(),
        "published more than once: {repeated:?}"
    );
    assert_eq!(fixture.producer.calls().len(), orders.len());
    assert!(first.is_running() && second.is_running(), "no crash");
    // Both relays did part of the work.
    let relayed = |metrics: String| {
        metrics
            .lines()
            .find_map(|l| l.strip_prefix("ecommerce_order_outbox_relayed_total "))
            .and_then(|v| v.trim().parse::<usize>().ok())
            .unwrap_or(0)
    };
    let by_first = relayed(http_get(&first.metrics_addr, "/metrics").await);
    let by_second = relayed(http_get(&second.metrics_addr, "/metrics").await);
    assert_eq!(by_first + by_second, orders.len());
    assert!(
        by_first > 0 && by_second > 0,
        "both relays worked: {by_first} + {by_second}"
    );

    // The relay's call continues the trace of the request that wrote the record.
    let records = outbox::Entity::find().all(&fixture.conn).await.unwrap();
    let record = &records[0];
    let stored = record.trace_context["traceparent"]
        .as_str()
        .expect("the outbox record carries a traceparent")
        .to_owned();
    let call = fixture
        .producer
        .calls()
        .into_iter()
        .find(|c| c.order_id == record.order_id.to_string())
        .unwrap();
    let sent = call
        .traceparent
        .expect("the Producer call carries a traceparent");
    let trace_id = |tp: &str| tp.split('-').nth(1).unwrap().to_owned();
    assert_eq!(
        trace_id(&sent),
        trace_id(&stored),
        "one trace: {stored} / {sent}"
    );
    assert_ne!(
        sent, stored,
        "the relay's span is a child, not the same span"
    );
}

#[tokio::test]
async fn a_crash_after_publish_publishes_again_after_restart_then_marks_sent() {
    let fixture = Fixture::new().await;
    let (mut process, addr, client) = fixture
        .spawn(&[("FAULT_POINTS", "order.relay.after_publish")])
        .await;
    let product = fixture.inventory.add("5.00", 10);
    // The reply may or may not beat the crash; the order is in the database.
    let _ = create(&client, &customer(), &product).await;
    let status = process.wait_exit(Duration::from_secs(20)).await;
    assert!(!status.success(), "aborted at the fault point: {status}");
    assert!(process.log().contains("order.relay.after_publish"));

    let order_id = fixture
        .conn
        .query_one_raw(sea_orm::Statement::from_string(
            sea_orm::DbBackend::Postgres,
            "SELECT id::text FROM orders".to_owned(),
        ))
        .await
        .unwrap()
        .unwrap()
        .try_get_by_index::<String>(0)
        .unwrap();
    let key = format!("{order_id}.order.created");
    assert_eq!(
        fixture.producer.counts()[&key],
        1,
        "the Producer confirmed once"
    );
    assert_eq!(
        fixture
            .scalar("SELECT count(*) FROM outbox WHERE sent_at IS NULL")
            .await,
        1,
        "the mark was lost with the crash"
    );

    process.restart_with(&[("FAULT_POINTS", None)]);
    process
        .wait_grpc_healthy(&addr, Duration::from_secs(60))
        .await;
    testkit::eventually(
        Duration::from_secs(20),
        "the record marked sent",
        || async {
            (fixture
                .scalar("SELECT count(*) FROM outbox WHERE sent_at IS NOT NULL")
                .await
                == 1)
                .then_some(())
        },
    )
    .await;
    assert_eq!(
        fixture.producer.counts()[&key],
        2,
        "published again; the stream drops the repeat by its message id"
    );
    let status = process.terminate(Duration::from_secs(15)).await;
    assert!(status.success());
}

#[tokio::test]
async fn a_crash_right_after_the_outbox_commit_loses_nothing() {
    let fixture = Fixture::new().await;
    let (mut process, addr, client) = fixture
        .spawn(&[("FAULT_POINTS", "order.after_outbox_commit")])
        .await;
    let product = fixture.inventory.add("5.00", 10);
    let err = create(&client, &customer(), &product).await.unwrap_err();
    assert_ne!(err.code(), tonic::Code::Ok);
    let status = process.wait_exit(Duration::from_secs(20)).await;
    assert!(!status.success(), "aborted at the fault point: {status}");
    assert_eq!(
        fixture
            .scalar("SELECT count(*) FROM orders WHERE status = 'PENDING'")
            .await,
        1
    );
    assert_eq!(
        fixture
            .scalar("SELECT count(*) FROM outbox WHERE sent_at IS NULL")
            .await,
        1
    );
    assert!(fixture.producer.calls().is_empty());

    process.restart_with(&[("FAULT_POINTS", None)]);
    process
        .wait_grpc_healthy(&addr, Duration::from_secs(60))
        .await;
    testkit::eventually(
        Duration::from_secs(20),
        "the event relayed after restart",
        || async { (fixture.producer.calls().len() == 1).then_some(()) },
    )
    .await;
}

#[tokio::test]
async fn a_postgres_outage_is_unavailable_and_the_relay_resumes_after_it() {
    let pg = testkit::PrivatePostgres::start();
    let db = TestDb::create_on(pg.server()).await;
    let inventory = Arc::new(FakeInventory::default());
    let inventory_addr = serve_inventory(inventory.clone()).await;
    let producer = Arc::new(FakeProducer::default());
    let producer_addr = reserve_addr();
    serve_producer_at(producer.clone(), producer_addr).await;
    let addr = format!("127.0.0.1:{}", free_port());
    let mut env = binary_env(&db, &addr, &inventory_addr, &producer_addr.to_string());
    env.push(("GRPC_REQUEST_TIMEOUT_MS".into(), "10000".into()));
    let mut process = spawn_order(env, &addr).await;
    let client = client_for(&addr);
    let product = inventory.add("7.00", 100);
    let caller = customer();

    let before = create(&client, &caller, &product).await.unwrap();
    testkit::eventually(Duration::from_secs(10), "first event relayed", || async {
        (producer.calls().len() == 1).then_some(())
    })
    .await;
    // Marked sent too: stopped between the Producer's answer and the relay's
    // commit, the record would (rightly) be handed over again.
    let conn = db.connect().await;
    testkit::eventually(
        Duration::from_secs(10),
        "first record marked sent",
        || async {
            (scalar(
                &conn,
                "SELECT count(*) FROM outbox WHERE sent_at IS NOT NULL",
            )
            .await
                == 1)
                .then_some(())
        },
    )
    .await;
    conn.close().await.unwrap();

    pg.stop(false);
    let err = create(&client, &caller, &product).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::Unavailable, "{err:?}");
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(process.is_running(), "a database outage is not a crash");

    pg.start_again();
    let after = testkit::eventually(Duration::from_secs(30), "orders accepted again", || {
        let client = client.clone();
        let caller = caller.clone();
        let product = product.clone();
        async move { create(&client, &caller, &product).await.ok() }
    })
    .await;
    testkit::eventually(Duration::from_secs(30), "the new event relayed", || async {
        let counts = producer.counts();
        counts
            .contains_key(&format!("{}.order.created", after.id))
            .then_some(())
    })
    .await;
    let counts = producer.counts();
    assert_eq!(counts[&format!("{}.order.created", before.id)], 1);
    assert_eq!(counts[&format!("{}.order.created", after.id)], 1);
    assert_eq!(counts.len(), 2, "the refused order left nothing behind");
    let status = process.terminate(Duration::from_secs(15)).await;
    assert!(status.success());
    drop(db);
}

/// PostgreSQL dying under a request (the server crashed, the network cut)
/// is UNAVAILABLE, like PostgreSQL being down, not INTERNAL.
#[tokio::test]
async fn a_connection_lost_mid_request_is_unavailable() {
    use sea_orm::{ConnectionTrait, DbBackend, Statement, TransactionTrait};

    let pg = testkit::PrivatePostgres::start();
    let db = TestDb::create_on(pg.server()).await;
    let inventory = Arc::new(FakeInventory::default());
    let inventory_addr = serve_inventory(inventory.clone()).await;
    let producer = Arc::new(FakeProducer::default());
    let producer_addr = reserve_addr();
    serve_producer_at(producer.clone(), producer_addr).await;
    let addr = format!("127.0.0.1:{}", free_port());
    let env = binary_env(&db, &addr, &inventory_addr, &producer_addr.to_string());
    let mut process = spawn_order(env, &addr).await;
    let client = client_for(&addr);
    let product = inventory.add("7.00", 100);
    let caller = customer();
    let order = create(&client, &caller, &product).await.unwrap();

    // Hold the order's row so that RecordOutcome waits inside its UPDATE...
    let conn = db.connect().await;
    let txn = conn.begin().await.unwrap();
    txn.execute_unprepared(&format!(
        "SELECT 1 FROM orders WHERE id = '{}' FOR UPDATE",
        order.id
    ))
    .await
    .unwrap();
    let call = tokio::spawn({
        let mut client = client.clone();
        let id = order.id.clone();
        async move {
            client
                .record_outcome(proto::order::v1::RecordOutcomeRequest {
                    order_id: id,
                    outcome: proto::order::v1::OrderOutcome::Confirmed as i32,
                    reason: String::new(),
                })
                .await
        }
    });
    let pid = testkit::eventually(Duration::from_secs(10), "RecordOutcome waiting", || {
        let conn = &conn;
        let name = db.name.clone();
        async move {
            let row = conn
                .query_one_raw(Statement::from_string(
                    DbBackend::Postgres,
                    format!(
                        "SELECT pid FROM pg_stat_activity WHERE datname = '{name}' \
                         AND wait_event_type = 'Lock' LIMIT 1"
                    ),
                ))
                .await
                .ok()??;
            row.try_get_by_index::<i32>(0).ok()
        }
    })
    .await;
    // ...and kill its backend: the connection breaks mid-statement.
    let killed = std::process::Command::new("kill")
        .args(["-9", &pid.to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    let err = call.await.unwrap().unwrap_err();
    assert_eq!(
        err.code(),
        tonic::Code::Unavailable,
        "{err:?}\n{}",
        process.log_tail(20)
    );
    drop(txn);
    let status = process.terminate(Duration::from_secs(15)).await;
    assert!(status.success());
    drop(db);
}
