//! The real Consumer binary against a real NATS server, with in-process fake
//! Inventory and Order servers that count calls and fail on demand.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_nats::HeaderMap;
use async_nats::jetstream;
use prost::Message;
use tokio::sync::watch;
use tonic::{Request, Response, Status};
use uuid::Uuid;

use proto::events::v1::{OrderCancelled, OrderCreated, OrderLine};
use proto::inventory::v1::inventory_service_server::{InventoryService, InventoryServiceServer};
use proto::inventory::v1::*;
use proto::order::v1::order_service_server::{OrderService, OrderServiceServer};
use proto::order::v1::*;
use testkit::{ServiceProcess, TestNats, eventually, free_port};

const WAIT: Duration = Duration::from_secs(30);

/// How a fake answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Normal,
    /// UNAVAILABLE, as when the service is down.
    Unavailable,
    /// UNIMPLEMENTED, as when the address reaches another service (or a
    /// proxy with no route to it yet).
    Unimplemented,
}

/// The trace id in a `traceparent` value.
fn trace_id(traceparent: &str) -> Option<String> {
    traceparent.split('-').nth(1).map(str::to_owned)
}

fn incoming_trace(metadata: &tonic::metadata::MetadataMap) -> Option<String> {
    metadata
        .get("traceparent")
        .and_then(|v| v.to_str().ok())
        .and_then(trace_id)
}

#[derive(Default)]
struct InventoryState {
    mode: Option<Mode>,
    /// Order ids answered INVALID_ARGUMENT (a permanent failure).
    refuse: Vec<String>,
    /// Every ApplyOrder call, by order id (failed ones included).
    apply_calls: HashMap<String, u32>,
    release_calls: HashMap<String, u32>,
    /// Trace ids of incoming calls, by order id.
    traces: HashMap<String, String>,
    /// How long each ApplyOrder takes.
    delay: Duration,
}

#[derive(Clone, Default)]
struct FakeInventory(Arc<Mutex<InventoryState>>);

impl FakeInventory {
    fn set_mode(&self, mode: Mode) {
        self.0.lock().unwrap().mode = Some(mode);
    }
    fn refuse(&self, order_id: &str) {
        self.0.lock().unwrap().refuse.push(order_id.to_owned());
    }
    fn set_delay(&self, delay: Duration) {
        self.0.lock().unwrap().delay = delay;
    }
    fn applies(&self, order_id: &str) -> u32 {
        *self
            .0
            .lock()
            .unwrap()
            .apply_calls
            .get(order_id)
            .unwrap_or(&0)
    }
    fn releases(&self, order_id: &str) -> u32 {
        *self
            .0
            .lock()
            .unwrap()
            .release_calls
            .get(order_id)
            .unwrap_or(&0)
    }
    fn trace(&self, order_id: &str) -> Option<String> {
        self.0.lock().unwrap().traces.get(order_id).cloned()
    }
}

#[tonic::async_trait]
impl InventoryService for FakeInventory {
    async fn create_product(
        &self,
        _: Request<CreateProductRequest>,
    ) -> Result<Response<CreateProductResponse>, Status> {
        Err(Status::unimplemented("not used by the consumer"))
    }
    async fn get_product(
        &self,
        _: Request<GetProductRequest>,
    ) -> Result<Response<GetProductResponse>, Status> {
        Err(Status::unimplemented("not used by the consumer"))
    }
    async fn batch_get_products(
        &self,
        _: Request<BatchGetProductsRequest>,
    ) -> Result<Response<BatchGetProductsResponse>, Status> {
        Err(Status::unimplemented("not used by the consumer"))
    }
    async fn list_products(
        &self,
        _: Request<ListProductsRequest>,
    ) -> Result<Response<ListProductsResponse>, Status> {
        Err(Status::unimplemented("not used by the consumer"))
    }
    async fn update_product(
        &self,
        _: Request<UpdateProductRequest>,
    ) -> Result<Response<UpdateProductResponse>, Status> {
        Err(Status::unimplemented("not used by the consumer"))
    }
    async fn delete_product(
        &self,
        _: Request<DeleteProductRequest>,
    ) -> Result<Response<DeleteProductResponse>, Status> {
        Err(Status::unimplemented("not used by the consumer"))
    }

    async fn apply_order(
        &self,
        request: Request<ApplyOrderRequest>,
    ) -> Result<Response<ApplyOrderResponse>, Status> {
        let trace = incoming_trace(request.metadata());
        let request = request.into_inner();
        let delay = {
            let mut state = self.0.lock().unwrap();
            let calls = state
                .apply_calls
                .entry(request.order_id.clone())
                .or_default();
            *calls += 1;
            if let Some(trace) = trace {
                state.traces.insert(request.order_id.clone(), trace);
            }
            if state.mode == Some(Mode::Unavailable) {
                return Err(Status::unavailable("inventory is down"));
            }
            if state.refuse.contains(&request.order_id) {
                return Err(Status::invalid_argument(
                    "items[0].quantity is out of range",
                ));
            }
            state.delay
        };
        tokio::time::sleep(delay).await;
        let replayed = self.applies(&request.order_id) > 1;
        Ok(Response::new(ApplyOrderResponse {
            outcome: ApplyOutcome::Applied as i32,
            reason: String::new(),
            replayed,
        }))
    }

    /// Each order as its own ApplyOrder, with the trace it carries.
    async fn apply_orders(
        &self,
        request: Request<ApplyOrdersRequest>,
    ) -> Result<Response<ApplyOrdersResponse>, Status> {
        let calls = request.into_inner().orders.into_iter().map(|item| {
            self.apply_order(with_trace(
                item.order.unwrap_or_default(),
                &item.trace_context,
            ))
        });
        let results = futures::future::join_all(calls)
            .await
            .into_iter()
            .map(|answer| ApplyOrdersResult {
                result: Some(match answer {
                    Ok(answer) => apply_orders_result::Result::Applied(answer.into_inner()),
                    Err(status) => {
                        apply_orders_result::Result::Error(platform::grpc::item_error(&status))
                    }
                }),
            })
            .collect();
        Ok(Response::new(ApplyOrdersResponse { results }))
    }

    async fn release_order(
        &self,
        request: Request<ReleaseOrderRequest>,
    ) -> Result<Response<ReleaseOrderResponse>, Status> {
        let request = request.into_inner();
        let mut state = self.0.lock().unwrap();
        *state.release_calls.entry(request.order_id).or_default() += 1;
        if state.mode == Some(Mode::Unavailable) {
            return Err(Status::unavailable("inventory is down"));
        }
        Ok(Response::new(ReleaseOrderResponse {
            outcome: ReleaseOutcome::Released as i32,
            replayed: false,
        }))
    }
}

/// A call of a batch as the single call it stands for, its trace context
/// in the metadata as the client would have sent it.
fn with_trace<T>(
    message: T,
    trace_context: &std::collections::HashMap<String, String>,
) -> Request<T> {
    let mut request = Request::new(message);
    for (key, value) in trace_context {
        if let (Ok(key), Ok(value)) = (
            key.parse::<tonic::metadata::MetadataKey<tonic::metadata::Ascii>>(),
            value.parse(),
        ) {
            request.metadata_mut().insert(key, value);
        }
    }
    request
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Recorded {
    order_id: String,
    outcome: OrderOutcome,
    reason: String,
}

struct OrdersState {
    mode: Mode,
    /// Calls that arrived (answered or not yet).
    received: Vec<Recorded>,
    /// Calls answered OK.
    recorded: Vec<Recorded>,
}

/// A fake Order whose RecordOutcome can be held until the test opens a gate.
#[derive(Clone)]
struct FakeOrders {
    state: Arc<Mutex<OrdersState>>,
    gate: Arc<watch::Sender<bool>>,
}

impl FakeOrders {
    fn new() -> Self {
        FakeOrders {
            state: Arc::new(Mutex::new(OrdersState {
                mode: Mode::Normal,
                received: Vec::new(),
                recorded: Vec::new(),
            })),
            gate: Arc::new(watch::channel(true).0),
        }
    }
    fn set_mode(&self, mode: Mode) {
        self.state.lock().unwrap().mode = mode;
    }
    fn hold(&self) {
        self.gate.send_replace(false);
    }
    fn release(&self) {
        self.gate.send_replace(true);
    }
    fn received(&self, order_id: &str) -> usize {
        let state = self.state.lock().unwrap();
        state
            .received
            .iter()
            .filter(|r| r.order_id == order_id)
            .count()
    }
    fn recorded(&self, order_id: &str) -> Vec<Recorded> {
        let state = self.state.lock().unwrap();
        state
            .recorded
            .iter()
            .filter(|r| r.order_id == order_id)
            .cloned()
            .collect()
    }
}

#[tonic::async_trait]
impl OrderService for FakeOrders {
    async fn create_order(
        &self,
        _: Request<CreateOrderRequest>,
    ) -> Result<Response<CreateOrderResponse>, Status> {
        Err(Status::unimplemented("not used by the consumer"))
    }
    async fn get_order(
        &self,
        _: Request<GetOrderRequest>,
    ) -> Result<Response<GetOrderResponse>, Status> {
        Err(Status::unimplemented("not used by the consumer"))
    }
    async fn list_orders(
        &self,
        _: Request<ListOrdersRequest>,
    ) -> Result<Response<ListOrdersResponse>, Status> {
        Err(Status::unimplemented("not used by the consumer"))
    }
    async fn update_order_status(
        &self,
        _: Request<UpdateOrderStatusRequest>,
    ) -> Result<Response<UpdateOrderStatusResponse>, Status> {
        Err(Status::unimplemented("not used by the consumer"))
    }
    async fn cancel_order(
        &self,
        _: Request<CancelOrderRequest>,
    ) -> Result<Response<CancelOrderResponse>, Status> {
        Err(Status::unimplemented("not used by the consumer"))
    }

    async fn record_outcome(
        &self,
        request: Request<RecordOutcomeRequest>,
    ) -> Result<Response<RecordOutcomeResponse>, Status> {
        let request = request.into_inner();
        let call = Recorded {
            order_id: request.order_id.clone(),
            outcome: OrderOutcome::try_from(request.outcome).unwrap_or_default(),
            reason: request.reason,
        };
        {
            let mut state = self.state.lock().unwrap();
            state.received.push(call.clone());
            if state.mode == Mode::Unavailable {
                return Err(Status::unavailable("order is down"));
            }
            if state.mode == Mode::Unimplemented {
                return Err(Status::unimplemented("no route to order"));
            }
        }
        let mut gate = self.gate.subscribe();
        let _ = gate.wait_for(|open| *open).await;
        self.state.lock().unwrap().recorded.push(call);
        Ok(Response::new(RecordOutcomeResponse {
            order: None,
            replayed: false,
        }))
    }

    /// Each outcome as its own RecordOutcome, at the same time (the gate
    /// holds them all alike).
    async fn record_outcomes(
        &self,
        request: Request<RecordOutcomesRequest>,
    ) -> Result<Response<RecordOutcomesResponse>, Status> {
        let calls = request.into_inner().outcomes.into_iter().map(|item| {
            self.record_outcome(with_trace(
                item.outcome.unwrap_or_default(),
                &item.trace_context,
            ))
        });
        let results = futures::future::join_all(calls)
            .await
            .into_iter()
            .map(|answer| RecordOutcomesResult {
                result: Some(match answer {
                    Ok(answer) => {
                        record_outcomes_result::Result::Replayed(answer.into_inner().replayed)
                    }
                    Err(status) => {
                        record_outcomes_result::Result::Error(platform::grpc::item_error(&status))
                    }
                }),
            })
            .collect();
        Ok(Response::new(RecordOutcomesResponse { results }))
    }
}

/// Serves a fake on 127.0.0.1:0 in this test's runtime; returns its address.
async fn serve_fakes(inventory: FakeInventory, orders: FakeOrders) -> (String, String) {
    let inventory_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let order_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let inventory_addr = inventory_listener.local_addr().unwrap().to_string();
    let order_addr = order_listener.local_addr().unwrap().to_string();
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(InventoryServiceServer::new(inventory))
            .serve_with_incoming(platform::grpc::accepted_without_delay(inventory_listener)),
    );
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(OrderServiceServer::new(orders))
            .serve_with_incoming(platform::grpc::accepted_without_delay(order_listener)),
    );
    (inventory_addr, order_addr)
}

struct Harness {
    nats: TestNats,
    inventory: FakeInventory,
    orders: FakeOrders,
    env: Vec<(String, String)>,
}

impl Harness {
    async fn new() -> Harness {
        Self::on(TestNats::new()).await
    }

    async fn on(nats: TestNats) -> Harness {
        let inventory = FakeInventory::default();
        let orders = FakeOrders::new();
        let (inventory_addr, order_addr) = serve_fakes(inventory.clone(), orders.clone()).await;
        let mut env = nats.service_env();
        env.extend([
            ("INVENTORY_ADDR".into(), inventory_addr),
            ("ORDER_ADDR".into(), order_addr),
            ("GRPC_REQUEST_TIMEOUT_MS".into(), "2000".into()),
            ("CONSUMER_RETRY_BASE_MS".into(), "50".into()),
            ("CONSUMER_RETRY_MAX_MS".into(), "200".into()),
            ("CONSUMER_FETCH_WAIT_MS".into(), "1000".into()),
            ("CONSUMER_LAG_INTERVAL_MS".into(), "200".into()),
            ("NATS_CONNECT_WAIT_MS".into(), "10000".into()),
            ("APP_ENV".into(), "development".into()),
        ]);
        Harness {
            nats,
            inventory,
            orders,
            env,
        }
    }

    /// Starts one consumer process and waits until it is bound.
    async fn start_consumer(&self, extra: &[(&str, &str)]) -> Consumer {
        let addr = format!("127.0.0.1:{}", free_port());
        let mut env = self.env.clone();
        env.push(("CONSUMER_ADDR".into(), addr.clone()));
        for (k, v) in extra {
            env.retain(|(key, _)| key != k);
            env.push((k.to_string(), v.to_string()));
        }
        let mut process = ServiceProcess::spawn("consumer", env);
        process.wait_grpc_healthy(&addr, WAIT).await;
        Consumer { process }
    }

    async fn js(&self) -> jetstream::Context {
        self.nats.jetstream().await
    }

    /// Publishes raw bytes as an event and waits for the stream's ack.
    async fn publish_raw(&self, kind: &str, message_id: &str, payload: Vec<u8>) -> u64 {
        let mut headers = HeaderMap::new();
        headers.insert("Nats-Msg-Id", message_id);
        headers.insert("Event-Type", format!("order.{kind}").as_str());
        headers.insert("Event-Version", "1");
        headers.insert(
            "traceparent",
            format!("00-{}-00f067aa0ba902b7-01", trace_of(message_id)).as_str(),
        );
        let subject = format!("{}.{kind}", self.nats.subject_prefix);
        let ack = self
            .js()
            .await
            .publish_with_headers(subject, headers, payload.into())
            .await
            .unwrap()
            .await
            .unwrap();
        ack.sequence
    }

    async fn publish_created(&self, order_id: &str, message_id: &str) -> u64 {
        self.publish_raw("created", message_id, created(order_id).encode_to_vec())
            .await
    }

    /// Messages still in the (work-queue) order stream: not yet acknowledged.
    async fn unacknowledged(&self) -> u64 {
        let mut stream = self.js().await.get_stream(&self.nats.stream).await.unwrap();
        stream.info().await.unwrap().state.messages
    }

    async fn consumer_info(&self) -> jetstream::consumer::Info {
        let stream = self.js().await.get_stream(&self.nats.stream).await.unwrap();
        stream.consumer_info("order-events").await.unwrap()
    }

    /// Every message of the dead-letter stream.
    async fn dead_letters(&self) -> Vec<jetstream::Message> {
        self.nats.dead_letters().await
    }
}

struct Consumer {
    process: ServiceProcess,
}

impl Consumer {
    async fn metrics(&self) -> String {
        testkit::http_get(&self.process.metrics_addr, "/metrics")
            .await
            .unwrap()
    }
}

/// The value of a metric line starting with `prefix` (labels included).
fn metric(text: &str, prefix: &str) -> f64 {
    text.lines()
        .find(|line| line.starts_with(prefix))
        .and_then(|line| line.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0)
}

/// A trace id derived from a message id, so each message carries its own.
fn trace_of(message_id: &str) -> String {
    use std::hash::{Hash, Hasher};
    let half = |salt: u8| {
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        (salt, message_id).hash(&mut hasher);
        hasher.finish()
    };
    format!("{:016x}{:016x}", half(1), half(2))
}

fn created(order_id: &str) -> OrderCreated {
    OrderCreated {
        order_id: order_id.to_owned(),
        user_id: Uuid::new_v4().to_string(),
        items: vec![OrderLine {
            product_id: Uuid::new_v4().to_string(),
            quantity: 2,
            unit_price: "10.00".into(),
        }],
        total: "20.00".into(),
        created_at: None,
    }
}

fn new_id() -> String {
    Uuid::new_v4().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn applies_then_records_then_acks_once() {
    let harness = Harness::new().await;
    let consumer = harness.start_consumer(&[]).await;
    let order = new_id();
    let message_id = format!("{order}.order.created");

    // Hold Order's answer: until it comes, the message must stay unacknowledged.
    harness.orders.hold();
    harness.publish_created(&order, &message_id).await;
    eventually(WAIT, "RecordOutcome to arrive", || async {
        (harness.orders.received(&order) == 1).then_some(())
    })
    .await;
    assert_eq!(
        harness.inventory.applies(&order),
        1,
        "ApplyOrder came first"
    );
    assert_eq!(
        harness.unacknowledged().await,
        1,
        "no ack before Order answered"
    );
    assert_eq!(harness.consumer_info().await.num_ack_pending, 1);

    harness.orders.release();
    eventually(WAIT, "the message to be acknowledged", || async {
        (harness.unacknowledged().await == 0).then_some(())
    })
    .await;
    assert_eq!(
        harness.orders.recorded(&order),
        vec![Recorded {
            order_id: order.clone(),
            outcome: OrderOutcome::Confirmed,
            reason: String::new(),
        }]
    );
    let info = harness.consumer_info().await;
    assert_eq!(info.config.durable_name.as_deref(), Some("order-events"));
    assert_eq!(
        info.config.ack_policy,
        jetstream::consumer::AckPolicy::Explicit
    );
    assert_eq!(info.config.max_ack_pending, 1024);
    assert_eq!(info.config.ack_wait, Duration::from_secs(30));
    assert_eq!(info.num_ack_pending, 0);
    assert_eq!(
        info.num_redelivered, 0,
        "acknowledged on the first delivery"
    );
    assert_eq!(harness.inventory.applies(&order), 1);
    // The trace continued from the message headers into the gRPC calls.
    assert_eq!(harness.inventory.trace(&order), Some(trace_of(&message_id)));

    // A cancel returns the stock, and is acknowledged.
    let cancel = OrderCancelled {
        order_id: order.clone(),
        user_id: String::new(),
        cancelled_at: None,
    };
    harness
        .publish_raw(
            "cancelled",
            &format!("{order}.order.cancelled"),
            cancel.encode_to_vec(),
        )
        .await;
    eventually(WAIT, "the cancel to be acknowledged", || async {
        (harness.unacknowledged().await == 0 && harness.inventory.releases(&order) == 1)
            .then_some(())
    })
    .await;

    let metrics = consumer.metrics().await;
    assert_eq!(
        metric(
            &metrics,
            r#"ecommerce_consumer_events_processed_total{event="order.created",outcome="confirmed",replayed="false"}"#
        ),
        1.0,
        "{metrics}"
    );
    assert_eq!(
        metric(
            &metrics,
            r#"ecommerce_consumer_events_processed_total{event="order.cancelled",outcome="released",replayed="false"}"#
        ),
        1.0,
        "{metrics}"
    );
    assert!(metrics.contains("ecommerce_consumer_pending"), "{metrics}");
    assert!(harness.dead_letters().await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transient_failures_are_retried_and_never_dead_lettered() {
    let harness = Harness::new().await;
    let consumer = harness
        .start_consumer(&[("CONSUMER_MAX_PERMANENT_ATTEMPTS", "2")])
        .await;
    let order = new_id();

    harness.inventory.set_mode(Mode::Unavailable);
    harness
        .publish_created(&order, &format!("{order}.order.created"))
        .await;
    // Many more failures than the permanent bound.
    eventually(WAIT, "ApplyOrder to be retried", || async {
        (harness.inventory.applies(&order) >= 6).then_some(())
    })
    .await;
    assert_eq!(harness.orders.received(&order), 0);
    assert_eq!(harness.unacknowledged().await, 1);

    // Inventory back, Order down: still retried, still not dead-lettered.
    harness.orders.set_mode(Mode::Unavailable);
    harness.inventory.set_mode(Mode::Normal);
    eventually(WAIT, "RecordOutcome to be retried", || async {
        (harness.orders.received(&order) >= 6).then_some(())
    })
    .await;
    assert_eq!(harness.unacknowledged().await, 1);

    harness.orders.set_mode(Mode::Normal);
    eventually(WAIT, "the order to be confirmed", || async {
        (harness.unacknowledged().await == 0).then_some(())
    })
    .await;
    let recorded = harness.orders.recorded(&order);
    assert_eq!(recorded.len(), 1);
    assert_eq!(recorded[0].outcome, OrderOutcome::Confirmed);
    assert!(
        harness.dead_letters().await.is_empty(),
        "never dead-lettered"
    );

    let metrics = consumer.metrics().await;
    assert!(
        metric(
            &metrics,
            r#"ecommerce_consumer_failures_total{event="order.created",kind="transient"}"#
        ) >= 12.0,
        "{metrics}"
    );
    assert_eq!(
        metric(&metrics, "ecommerce_consumer_dead_lettered_total"),
        0.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_receiver_answering_unimplemented_is_retried_never_dead_lettered() {
    let harness = Harness::new().await;
    let _consumer = harness
        .start_consumer(&[("CONSUMER_MAX_PERMANENT_ATTEMPTS", "2")])
        .await;
    let order = new_id();
    // Order's address answers UNIMPLEMENTED (another service there, a proxy
    // without its route yet): a fault of the set-up, not of the event.
    harness.orders.set_mode(Mode::Unimplemented);
    harness
        .publish_created(&order, &format!("{order}.order.created"))
        .await;
    eventually(WAIT, "RecordOutcome to be retried", || async {
        (harness.orders.received(&order) >= 6).then_some(())
    })
    .await;
    assert_eq!(harness.unacknowledged().await, 1);
    assert_eq!(
        harness.inventory.releases(&order),
        0,
        "the stock stays taken"
    );

    harness.orders.set_mode(Mode::Normal);
    eventually(WAIT, "the order to be confirmed", || async {
        (harness.unacknowledged().await == 0).then_some(())
    })
    .await;
    let recorded = harness.orders.recorded(&order);
    assert_eq!(recorded.len(), 1);
    assert_eq!(recorded[0].outcome, OrderOutcome::Confirmed);
    assert!(
        harness.dead_letters().await.is_empty(),
        "never dead-lettered"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn poison_messages_are_dead_lettered_and_the_stream_keeps_flowing() {
    let harness = Harness::new().await;
    let consumer = harness.start_consumer(&[]).await;

    // Undecodable, under its own message id naming its order.
    let poisoned = new_id();
    let poison_id = format!("{poisoned}.order.created");
    harness
        .publish_raw("created", &poison_id, b"\xffnot protobuf".to_vec())
        .await;
    // Decodable, but refused permanently by Inventory.
    let refused = new_id();
    harness.inventory.refuse(&refused);
    harness
        .publish_created(&refused, &format!("{refused}.order.created"))
        .await;
    // A good one behind them.
    let good = new_id();
    harness
        .publish_created(&good, &format!("{good}.order.created"))
        .await;

    eventually(WAIT, "everything to be settled", || async {
        (harness.unacknowledged().await == 0
            && harness.orders.recorded(&poisoned).len() == 1
            && harness.orders.recorded(&refused).len() == 1
            && harness.orders.recorded(&good).len() == 1)
            .then_some(())
    })
    .await;

    assert_eq!(
        harness.inventory.applies(&refused),
        3,
        "tried exactly CONSUMER_MAX_PERMANENT_ATTEMPTS times"
    );
    assert_eq!(harness.inventory.applies(&poisoned), 0);
    assert_eq!(
        harness.orders.recorded(&good)[0].outcome,
        OrderOutcome::Confirmed
    );
    for order in [&poisoned, &refused] {
        let recorded = &harness.orders.recorded(order)[0];
        assert_eq!(recorded.outcome, OrderOutcome::Rejected);
        assert!(!recorded.reason.is_empty());
    }
    assert!(
        harness.orders.recorded(&poisoned)[0]
            .reason
            .contains("OrderCreated"),
        "{:?}",
        harness.orders.recorded(&poisoned)
    );
    assert!(
        harness.orders.recorded(&refused)[0]
            .reason
            .contains("out of range")
    );

    let dead = harness.dead_letters().await;
    assert_eq!(dead.len(), 2, "each dead-lettered once");
    let poison = dead
        .iter()
        .find(|m| {
            m.headers
                .as_ref()
                .and_then(|h| h.get("Original-Msg-Id"))
                .map(|v| v.as_str())
                == Some(poison_id.as_str())
        })
        .expect("the poison message in the dead-letter stream");
    assert_eq!(
        poison.subject.as_str(),
        format!("{}_dead.created", harness.nats.subject_prefix)
    );
    assert_eq!(&poison.payload[..], b"\xffnot protobuf");
    let headers = poison.headers.as_ref().unwrap();
    assert!(
        headers
            .get("Dead-Letter-Reason")
            .unwrap()
            .as_str()
            .contains("not a valid OrderCreated")
    );
    assert_eq!(
        headers.get("Original-Subject").unwrap().as_str(),
        format!("{}.created", harness.nats.subject_prefix)
    );
    assert_eq!(headers.get("Event-Type").unwrap().as_str(), "order.created");
    assert_eq!(headers.get("Event-Version").unwrap().as_str(), "1");
    assert!(headers.get("traceparent").is_some());

    let metrics = consumer.metrics().await;
    assert_eq!(
        metric(
            &metrics,
            r#"ecommerce_consumer_dead_lettered_total{event="order.created"}"#
        ),
        2.0,
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_redelivery_reaches_the_receivers() {
    let harness = Harness::new().await;
    let _consumer = harness.start_consumer(&[]).await;
    let order = new_id();
    let event = created(&order).encode_to_vec();
    // Distinct message ids: the stream's dedup cannot hide them.
    for copy in 1..=3 {
        harness
            .publish_raw(
                "created",
                &format!("{order}.order.created.{copy}"),
                event.clone(),
            )
            .await;
    }
    // The same id again is a duplicate the stream drops.
    harness
        .publish_raw(
            "created",
            &format!("{order}.order.created.1"),
            event.clone(),
        )
        .await;
    eventually(WAIT, "every copy to be handled", || async {
        (harness.unacknowledged().await == 0 && harness.orders.recorded(&order).len() == 3)
            .then_some(())
    })
    .await;
    assert_eq!(harness.inventory.applies(&order), 3);
    assert_eq!(harness.orders.received(&order), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_share_the_durable() {
    let harness = Harness::new().await;
    // One message at a time each, and slow: a busy replica cannot take more.
    harness.inventory.set_delay(Duration::from_millis(300));
    let extra = [("CONSUMER_CONCURRENCY", "1")];
    let first = harness.start_consumer(&extra).await;
    let second = harness.start_consumer(&extra).await;
    let orders: Vec<String> = (0..8).map(|_| new_id()).collect();
    for order in &orders {
        harness
            .publish_created(order, &format!("{order}.order.created"))
            .await;
    }
    eventually(WAIT, "all orders to be handled", || async {
        (harness.unacknowledged().await == 0).then_some(())
    })
    .await;
    for order in &orders {
        assert_eq!(harness.inventory.applies(order), 1, "each delivered once");
        assert_eq!(harness.orders.recorded(order).len(), 1);
    }
    let handled = |text: String| {
        metric(
            &text,
            r#"ecommerce_consumer_events_processed_total{event="order.created",outcome="confirmed",replayed="false"}"#,
        )
    };
    let by_first = handled(first.metrics().await);
    let by_second = handled(second.metrics().await);
    assert_eq!(by_first + by_second, 8.0);
    assert!(
        by_first >= 1.0 && by_second >= 1.0,
        "both replicas worked: {by_first} and {by_second}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resumes_by_itself_after_a_nats_restart() {
    let mut private = testkit::PrivateNats::start();
    let harness = Harness::on(TestNats::on(private.url())).await;
    let _consumer = harness.start_consumer(&[]).await;
    let before = new_id();
    harness
        .publish_created(&before, &format!("{before}.order.created"))
        .await;
    eventually(WAIT, "the first order", || async {
        (harness.orders.recorded(&before).len() == 1).then_some(())
    })
    .await;

    private.kill();
    private.start_again();

    let after = new_id();
    // Publishing may need the test's own client to reconnect first.
    eventually(WAIT, "a publish after the restart", || async {
        let js = harness.js().await;
        let mut headers = HeaderMap::new();
        headers.insert("Nats-Msg-Id", format!("{after}.order.created").as_str());
        headers.insert("Event-Type", "order.created");
        headers.insert("Event-Version", "1");
        let subject = format!("{}.created", harness.nats.subject_prefix);
        let ack = js
            .publish_with_headers(subject, headers, created(&after).encode_to_vec().into())
            .await
            .ok()?;
        ack.await.ok()
    })
    .await;
    eventually(WAIT, "the order published after the restart", || async {
        (harness.orders.recorded(&after).len() == 1).then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_finishes_the_message_in_hand_and_exits_zero() {
    let harness = Harness::new().await;
    let mut consumer = harness.start_consumer(&[]).await;
    let order = new_id();
    harness.orders.hold();
    harness
        .publish_created(&order, &format!("{order}.order.created"))
        .await;
    eventually(WAIT, "the message to be in hand", || async {
        (harness.orders.received(&order) == 1).then_some(())
    })
    .await;

    let process = &mut consumer.process;
    let pid = process.pid().unwrap().to_string();
    let sent = std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap();
    assert!(sent.success());
    // Order answers only after the consumer saw the signal.
    eventually(WAIT, "the consumer to see SIGTERM", || async {
        process.log().contains("SIGTERM received").then_some(())
    })
    .await;
    harness.orders.release();
    let status = process.wait_exit(WAIT).await;
    assert!(status.success(), "exit status {status}");
    assert_eq!(harness.orders.recorded(&order).len(), 1);
    // The server applies acks as it reads them; a lost one would leave the
    // message unacknowledged (no consumer is left to take it again).
    eventually(
        WAIT,
        "the message in hand acknowledged before exiting",
        || async { (harness.unacknowledged().await == 0).then_some(()) },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_malformed_setting_stops_start_up_naming_it() {
    let harness = Harness::new().await;
    let mut env = harness.env.clone();
    env.push(("CONSUMER_ADDR".into(), format!("127.0.0.1:{}", free_port())));
    env.push(("CONSUMER_MAX_PERMANENT_ATTEMPTS".into(), "three".into()));
    let mut process = ServiceProcess::spawn("consumer", env);
    let status = process.wait_exit(WAIT).await;
    assert_eq!(status.code(), Some(1));
    assert!(
        process.log().contains("CONSUMER_MAX_PERMANENT_ATTEMPTS"),
        "{}",
        process.log()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_lag_gauge_counts_messages_not_yet_delivered() {
    let harness = Harness::new().await;
    let consumer = harness
        .start_consumer(&[("CONSUMER_CONCURRENCY", "1")])
        .await;
    // One message in hand (Order holds its answer), two waiting behind it.
    harness.orders.hold();
    let orders: Vec<String> = (0..3).map(|_| new_id()).collect();
    for order in &orders {
        harness
            .publish_created(order, &format!("{order}.order.created"))
            .await;
    }
    eventually(WAIT, "the lag to show two waiting", || async {
        let text = consumer.metrics().await;
        (metric(&text, "ecommerce_consumer_pending ") == 2.0
            && metric(&text, "ecommerce_consumer_ack_pending ") == 1.0)
            .then_some(())
    })
    .await;
    harness.orders.release();
    eventually(WAIT, "the lag to drain", || async {
        let text = consumer.metrics().await;
        (harness.unacknowledged().await == 0
            && metric(&text, "ecommerce_consumer_pending ") == 0.0
            && metric(&text, "ecommerce_consumer_ack_pending ") == 0.0)
            .then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dead_letter_is_written_before_the_original_is_terminated() {
    let harness = Harness::new().await;
    let consumer = harness.start_consumer(&[]).await;
    let js = harness.js().await;
    let settings = harness.nats.settings();

    // A full dead-letter stream that an operator set to discard new
    // messages (by default it drops the oldest) refuses the dead letter.
    let full = jetstream::stream::Config {
        max_messages: 1,
        discard: jetstream::stream::DiscardPolicy::New,
        ..platform::nats::dead_letter_stream_config(&settings)
    };
    js.update_stream(full).await.unwrap();
    js.publish(settings.dead_letter_subject("created"), "filler".into())
        .await
        .unwrap()
        .await
        .unwrap();

    let poisoned = new_id();
    harness
        .publish_raw(
            "created",
            &format!("{poisoned}.order.created"),
            b"\xffnot protobuf".to_vec(),
        )
        .await;
    eventually(WAIT, "the dead letter to be refused", || async {
        consumer
            .process
            .log()
            .contains("cannot write to the dead-letter stream yet")
            .then_some(())
    })
    .await;
    // Neither terminated nor rejected while the dead letter is not written.
    assert_eq!(harness.unacknowledged().await, 1);
    assert_eq!(harness.orders.received(&poisoned), 0);

    js.update_stream(platform::nats::dead_letter_stream_config(&settings))
        .await
        .unwrap();
    eventually(
        WAIT,
        "the dead letter, the rejection, the termination",
        || async {
            (harness.unacknowledged().await == 0 && harness.orders.recorded(&poisoned).len() == 1)
                .then_some(())
        },
    )
    .await;
    assert_eq!(harness.dead_letters().await.len(), 2, "filler and poison");
    assert_eq!(
        harness.orders.recorded(&poisoned)[0].outcome,
        OrderOutcome::Rejected
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn binds_again_when_the_stream_and_durable_are_gone() {
    let harness = Harness::new().await;
    let consumer = harness.start_consumer(&[]).await;
    let js = harness.js().await;
    // An operator (or a server that lost its store) removes everything.
    js.delete_stream(&harness.nats.stream).await.unwrap();
    js.delete_stream(&harness.nats.dead_letter_stream)
        .await
        .unwrap();

    eventually(WAIT, "the stream to be declared again", || async {
        let js = harness.js().await;
        let stream = js.get_stream(&harness.nats.stream).await.ok()?;
        stream.consumer_info("order-events").await.ok()
    })
    .await;
    let order = new_id();
    harness
        .publish_created(&order, &format!("{order}.order.created"))
        .await;
    eventually(WAIT, "the order to be handled", || async {
        (harness.orders.recorded(&order).len() == 1).then_some(())
    })
    .await;
    assert!(consumer.process.log().contains("binding again"));
}
