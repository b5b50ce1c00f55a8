//! The harness: fake Inventory and Producer servers inside the test (so a
//! test controls stock, prices and failures, and counts calls), the Order
//! service in-process or as the real binary, and a direct connection to its
//! database.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use prost::Message;
pub use sea_orm::ConnectionTrait;
use sea_orm::{DatabaseConnection, DbBackend, Statement};
use tokio::net::TcpListener;
use tonic::transport::Channel;
use tonic::{Request, Response, Status};

use order::{Config, RelaySettings, SweeperSettings};
use platform::config::{AppEnv, CallSettings};
use proto::common::v1::{Caller, Role};
use proto::events::v1::{OrderCancelled, OrderCreated};
use proto::inventory::v1 as inv;
use proto::inventory::v1::inventory_service_server::{InventoryService, InventoryServiceServer};
use proto::order::v1 as pb;
use proto::order::v1::order_service_client::OrderServiceClient;
use proto::producer::v1 as prod;
use proto::producer::v1::producer_service_server::{ProducerService, ProducerServiceServer};
use testkit::{ServiceProcess, TestDb, free_port};

pub type OrderClient = OrderServiceClient<Channel>;

// ---------------------------------------------------------------- callers

pub fn customer() -> Caller {
    Caller {
        user_id: uuid::Uuid::new_v4().to_string(),
        role: Role::Customer as i32,
    }
}

pub fn admin() -> Caller {
    Caller {
        user_id: uuid::Uuid::new_v4().to_string(),
        role: Role::Admin as i32,
    }
}

pub fn item(product_id: &str, quantity: u32) -> pb::OrderItemInput {
    pb::OrderItemInput {
        product_id: product_id.to_owned(),
        quantity,
    }
}

// ---------------------------------------------------------- fake Inventory

#[derive(Default)]
pub struct FakeInventory {
    products: Mutex<HashMap<String, inv::Product>>,
    pub batch_calls: AtomicUsize,
    /// While set, BatchGetProducts answers nothing (a stalled Inventory).
    pub stalled: std::sync::atomic::AtomicBool,
}

impl FakeInventory {
    /// Adds a product and returns its id.
    pub fn add(&self, price: &str, stock: i32) -> String {
        let id = uuid::Uuid::new_v4().to_string();
        self.products.lock().unwrap().insert(
            id.clone(),
            inv::Product {
                id: id.clone(),
                name: format!("product {id}"),
                category: "test".into(),
                stock,
                price: price.into(),
                created_at: None,
                updated_at: None,
            },
        );
        id
    }

    pub fn set_price(&self, id: &str, price: &str) {
        self.products.lock().unwrap().get_mut(id).unwrap().price = price.into();
    }

    pub fn set_stock(&self, id: &str, stock: i32) {
        self.products.lock().unwrap().get_mut(id).unwrap().stock = stock;
    }

    pub fn remove(&self, id: &str) {
        self.products.lock().unwrap().remove(id);
    }

    pub fn calls(&self) -> usize {
        self.batch_calls.load(Ordering::SeqCst)
    }
}

#[derive(Clone)]
struct InventoryFace(Arc<FakeInventory>);

fn unimplemented<T>() -> Result<Response<T>, Status> {
    Err(Status::unimplemented("not part of the fake"))
}

#[tonic::async_trait]
impl InventoryService for InventoryFace {
    async fn create_product(
        &self,
        _: Request<inv::CreateProductRequest>,
    ) -> Result<Response<inv::CreateProductResponse>, Status> {
        unimplemented()
    }
    async fn get_product(
        &self,
        _: Request<inv::GetProductRequest>,
    ) -> Result<Response<inv::GetProductResponse>, Status> {
        unimplemented()
    }
    async fn batch_get_products(
        &self,
        request: Request<inv::BatchGetProductsRequest>,
    ) -> Result<Response<inv::BatchGetProductsResponse>, Status> {
        self.0.batch_calls.fetch_add(1, Ordering::SeqCst);
        if self.0.stalled.load(Ordering::SeqCst) {
            std::future::pending::<()>().await;
        }
        let products = self.0.products.lock().unwrap();
        let mut response = inv::BatchGetProductsResponse::default();
        for id in request.into_inner().ids {
            match products.get(&id) {
                Some(p) => response.products.push(p.clone()),
                None => response.missing_ids.push(id),
            }
        }
        Ok(Response::new(response))
    }
    async fn list_products(
        &self,
        _: Request<inv::ListProductsRequest>,
    ) -> Result<Response<inv::ListProductsResponse>, Status> {
        unimplemented()
    }
    async fn update_product(
        &self,
        _: Request<inv::UpdateProductRequest>,
    ) -> Result<Response<inv::UpdateProductResponse>, Status> {
        unimplemented()
    }
    async fn delete_product(
        &self,
        _: Request<inv::DeleteProductRequest>,
    ) -> Result<Response<inv::DeleteProductResponse>, Status> {
        unimplemented()
    }
    async fn apply_order(
        &self,
        _: Request<inv::ApplyOrderRequest>,
    ) -> Result<Response<inv::ApplyOrderResponse>, Status> {
        unimplemented()
    }
    async fn apply_orders(
        &self,
        _: Request<inv::ApplyOrdersRequest>,
    ) -> Result<Response<inv::ApplyOrdersResponse>, Status> {
        unimplemented()
    }
    async fn release_order(
        &self,
        _: Request<inv::ReleaseOrderRequest>,
    ) -> Result<Response<inv::ReleaseOrderResponse>, Status> {
        unimplemented()
    }
}

// ----------------------------------------------------------- fake Producer

/// One call the fake Producer received.
#[derive(Debug, Clone)]
pub struct Publish {
    pub event_type: &'static str,
    pub order_id: String,
    pub traceparent: Option<String>,
    pub created: Option<OrderCreated>,
}

#[derive(Default)]
pub struct FakeProducer {
    pub calls: Mutex<Vec<Publish>>,
    /// The events of each PublishBatch call, by call.
    pub batch_sizes: Mutex<Vec<usize>>,
    seen: Mutex<HashSet<String>>,
    /// Answer UNAVAILABLE (the stream is down).
    pub failing: AtomicBool,
    /// Answer UNIMPLEMENTED (another service at the Producer's address).
    pub unimplemented: AtomicBool,
    /// Answer only after this many milliseconds.
    pub delay_ms: AtomicU64,
}

impl FakeProducer {
    pub fn calls(&self) -> Vec<Publish> {
        self.calls.lock().unwrap().clone()
    }

    /// How many times each `<order id>.<event>` was published.
    pub fn counts(&self) -> HashMap<String, usize> {
        let mut counts = HashMap::new();
        for call in self.calls() {
            *counts
                .entry(format!("{}.{}", call.order_id, call.event_type))
                .or_default() += 1;
        }
        counts
    }

    async fn accept(
        &self,
        event_type: &'static str,
        order_id: String,
        traceparent: Option<String>,
        created: Option<OrderCreated>,
    ) -> Result<Response<prod::PublishResponse>, Status> {
        let delay = self.delay_ms.load(Ordering::SeqCst);
        if delay > 0 {
            tokio::time::sleep(Duration::from_millis(delay)).await;
        }
        if self.failing.load(Ordering::SeqCst) {
            return Err(Status::unavailable("fake stream is down"));
        }
        if self.unimplemented.load(Ordering::SeqCst) {
            return Err(Status::unimplemented("not the producer"));
        }
        let message_id = format!("{order_id}.{event_type}");
        let duplicate = !self.seen.lock().unwrap().insert(message_id);
        let mut calls = self.calls.lock().unwrap();
        calls.push(Publish {
            event_type,
            order_id,
            traceparent,
            created,
        });
        Ok(Response::new(prod::PublishResponse {
            stream: "FAKE".into(),
            sequence: calls.len() as u64,
            duplicate,
        }))
    }
}

#[derive(Clone)]
struct ProducerFace(Arc<FakeProducer>);

fn traceparent<T>(request: &Request<T>) -> Option<String> {
    request
        .metadata()
        .get("traceparent")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
}

#[tonic::async_trait]
impl ProducerService for ProducerFace {
    async fn publish_order_created(
        &self,
        request: Request<prod::PublishOrderCreatedRequest>,
    ) -> Result<Response<prod::PublishResponse>, Status> {
        let trace = traceparent(&request);
        let event = request.into_inner().event.expect("event");
        self.0
            .accept("order.created", event.order_id.clone(), trace, Some(event))
            .await
    }
    async fn publish_order_cancelled(
        &self,
        request: Request<prod::PublishOrderCancelledRequest>,
    ) -> Result<Response<prod::PublishResponse>, Status> {
        let trace = traceparent(&request);
        let event = request.into_inner().event.expect("event");
        self.0
            .accept("order.cancelled", event.order_id, trace, None)
            .await
    }
    /// Each event as its own publish, one after the other, with the trace
    /// context it carries; a failure of the fake fails the whole call, as a
    /// Producer that cannot reach the stream would.
    async fn publish_batch(
        &self,
        request: Request<prod::PublishBatchRequest>,
    ) -> Result<Response<prod::PublishBatchResponse>, Status> {
        let events = request.into_inner().events;
        self.0.batch_sizes.lock().unwrap().push(events.len());
        let mut results = Vec::new();
        for event in events {
            let trace = event.trace_context.get("traceparent").cloned();
            let answer = match event.event.expect("event") {
                prod::batch_event::Event::Created(created) => {
                    self.0
                        .accept(
                            "order.created",
                            created.order_id.clone(),
                            trace,
                            Some(created),
                        )
                        .await?
                }
                prod::batch_event::Event::Cancelled(cancelled) => {
                    self.0
                        .accept("order.cancelled", cancelled.order_id, trace, None)
                        .await?
                }
            };
            results.push(prod::PublishBatchResult {
                result: Some(prod::publish_batch_result::Result::Published(
                    answer.into_inner(),
                )),
            });
        }
        Ok(Response::new(prod::PublishBatchResponse { results }))
    }
}

// ------------------------------------------------------------ fake servers

/// Serves `fake` as Inventory on a port of its own; returns `host:port`.
pub async fn serve_inventory(fake: Arc<FakeInventory>) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(InventoryServiceServer::new(InventoryFace(fake)))
            .serve_with_incoming(platform::grpc::accepted_without_delay(listener)),
    );
    addr.to_string()
}

/// Serves `fake` as the Producer on `addr` (a port picked before, so the
/// Order service may be pointed at it while it is still down).
pub async fn serve_producer_at(fake: Arc<FakeProducer>, addr: SocketAddr) {
    let listener = TcpListener::bind(addr).await.unwrap();
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(ProducerServiceServer::new(ProducerFace(fake)))
            .serve_with_incoming(platform::grpc::accepted_without_delay(listener)),
    );
}

pub fn reserve_addr() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], free_port()))
}

// ------------------------------------------------------- the Order service

pub struct Options {
    pub relay: bool,
    /// Start the fake Producer (else its address stays closed until the
    /// test calls [`Harness::start_producer`]).
    pub producer_up: bool,
    /// Point Inventory at a closed port.
    pub inventory_down: bool,
    /// The deadline of the service's outgoing calls.
    pub request_timeout: Duration,
    pub relay_settings: RelaySettings,
    pub sweeper: SweeperSettings,
    /// How long a quote prices orders (zero here unless a test asks: the
    /// tests change the fake's products between orders).
    pub price_cache_ttl: Duration,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            relay: true,
            producer_up: true,
            inventory_down: false,
            request_timeout: Duration::from_secs(3),
            relay_settings: relay_settings(true),
            sweeper: idle_sweeper(),
            price_cache_ttl: Duration::ZERO,
        }
    }
}

/// The Order service in this process, with its fakes and its database.
pub struct Harness {
    /// Dropped (with its database) when the harness is.
    _db: TestDb,
    pub conn: DatabaseConnection,
    pub client: OrderClient,
    pub inventory: Arc<FakeInventory>,
    pub producer: Arc<FakeProducer>,
    pub producer_addr: SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<anyhow::Result<()>>>,
}

pub fn relay_settings(enabled: bool) -> RelaySettings {
    RelaySettings {
        enabled,
        poll_interval: Duration::from_millis(100),
        batch_size: 50,
        linger: Duration::from_millis(10),
        retry_min: Duration::from_millis(50),
        retry_max: Duration::from_millis(400),
        claim_lease: Duration::from_secs(10),
        publish_timeout: Duration::from_secs(3),
        retention: Duration::from_secs(86_400),
    }
}

/// A sweeper that does not get to act within a test, unless it asks.
pub fn idle_sweeper() -> SweeperSettings {
    SweeperSettings {
        interval: Duration::from_secs(3600),
        republish_after: Duration::from_secs(3600),
        timeout: Duration::from_secs(7200),
    }
}

pub fn client_for(addr: &str) -> OrderClient {
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .unwrap()
        .timeout(Duration::from_secs(15))
        .connect_lazy();
    OrderServiceClient::new(channel)
}

impl Harness {
    pub async fn start() -> Harness {
        Self::start_with(Options::default()).await
    }

    pub async fn start_with(options: Options) -> Harness {
        let db = TestDb::create().await;
        let inventory = Arc::new(FakeInventory::default());
        let inventory_addr = if options.inventory_down {
            reserve_addr().to_string()
        } else {
            serve_inventory(inventory.clone()).await
        };
        let producer = Arc::new(FakeProducer::default());
        let producer_addr = reserve_addr();
        if options.producer_up {
            serve_producer_at(producer.clone(), producer_addr).await;
        }
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let config = Config {
            listen: addr.parse().unwrap(),
            inventory: inventory_addr.parse().unwrap(),
            producer: producer_addr.to_string().parse().unwrap(),
            app_env: AppEnv::Development,
            db: db.settings(),
            calls: CallSettings {
                connect_timeout: Duration::from_millis(500),
                request_timeout: options.request_timeout,
            },
            price_cache_ttl: options.price_cache_ttl,
            relay: RelaySettings {
                enabled: options.relay,
                ..options.relay_settings
            },
            sweeper: options.sweeper,
        };
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(order::serve(config, listener, async move {
            let _ = stopped.await;
        }));
        let client = client_for(&addr);
        wait_serving(&addr).await;
        let conn = db.connect().await;
        Harness {
            _db: db,
            conn,
            client,
            inventory,
            producer,
            producer_addr,
            stop: Some(stop),
            task: Some(task),
        }
    }

    pub async fn start_producer(&self) {
        serve_producer_at(self.producer.clone(), self.producer_addr).await;
    }

    /// Stops the service as SIGTERM would, and returns how it ended.
    pub async fn shutdown(mut self) -> anyhow::Result<()> {
        let _ = self.stop.take().unwrap().send(());
        tokio::time::timeout(Duration::from_secs(15), self.task.take().unwrap())
            .await
            .expect("order stops within 15 s")
            .expect("order task")
    }

    /// Creates an order of `items` for `caller`.
    pub async fn create(
        &self,
        caller: &Caller,
        items: Vec<pb::OrderItemInput>,
    ) -> Result<pb::CreateOrderResponse, Status> {
        self.create_keyed(caller, items, "").await
    }

    pub async fn create_keyed(
        &self,
        caller: &Caller,
        items: Vec<pb::OrderItemInput>,
        key: &str,
    ) -> Result<pb::CreateOrderResponse, Status> {
        self.client
            .clone()
            .create_order(pb::CreateOrderRequest {
                caller: Some(caller.clone()),
                items,
                idempotency_key: key.into(),
            })
            .await
            .map(|r| r.into_inner())
    }

    /// A new PENDING order of one unit of a fresh product.
    pub async fn pending_order(&self, caller: &Caller) -> pb::Order {
        let product = self.inventory.add("10.00", 100);
        self.create(caller, vec![item(&product, 1)])
            .await
            .unwrap()
            .order
            .unwrap()
    }

    pub async fn outcome(
        &self,
        order_id: &str,
        outcome: pb::OrderOutcome,
        reason: &str,
    ) -> Result<pb::RecordOutcomeResponse, Status> {
        self.client
            .clone()
            .record_outcome(pb::RecordOutcomeRequest {
                order_id: order_id.into(),
                outcome: outcome as i32,
                reason: reason.into(),
            })
            .await
            .map(|r| r.into_inner())
    }

    pub async fn get(&self, caller: &Caller, order_id: &str) -> Result<pb::Order, Status> {
        self.client
            .clone()
            .get_order(pb::GetOrderRequest {
                caller: Some(caller.clone()),
                order_id: order_id.into(),
            })
            .await
            .map(|r| r.into_inner().order.unwrap())
    }

    pub async fn cancel(&self, caller: &Caller, order_id: &str) -> Result<pb::Order, Status> {
        self.client
            .clone()
            .cancel_order(pb::CancelOrderRequest {
                caller: Some(caller.clone()),
                order_id: order_id.into(),
            })
            .await
            .map(|r| r.into_inner().order.unwrap())
    }

    pub async fn set_status(
        &self,
        caller: &Caller,
        order_id: &str,
        status: pb::OrderStatus,
    ) -> Result<pb::Order, Status> {
        self.client
            .clone()
            .update_order_status(pb::UpdateOrderStatusRequest {
                caller: Some(caller.clone()),
                order_id: order_id.into(),
                status: status as i32,
            })
            .await
            .map(|r| r.into_inner().order.unwrap())
    }

    pub async fn scalar(&self, sql: &str) -> i64 {
        scalar(&self.conn, sql).await
    }
}

impl Drop for Harness {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

/// Waits until the gRPC health service at `addr` answers SERVING.
pub async fn wait_serving(addr: &str) {
    use tonic_health::pb::health_check_response::ServingStatus;
    use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};
    let uri = format!("http://{addr}");
    testkit::eventually(Duration::from_secs(30), "order serving", || {
        let uri = uri.clone();
        async move {
            let channel = tonic::transport::Endpoint::from_shared(uri)
                .unwrap()
                .timeout(Duration::from_secs(1))
                .connect()
                .await
                .ok()?;
            let status = HealthClient::new(channel)
                .check(HealthCheckRequest::default())
                .await
                .ok()?
                .into_inner()
                .status;
            (status == ServingStatus::Serving as i32).then_some(())
        }
    })
    .await;
}

/// The first column of the first row of `sql`, as an integer.
pub async fn scalar(conn: &DatabaseConnection, sql: &str) -> i64 {
    let row = conn
        .query_one_raw(Statement::from_string(DbBackend::Postgres, sql.to_owned()))
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
        .expect("a row");
    row.try_get_by_index::<i64>(0).expect("an integer")
}

/// The field names of an INVALID_ARGUMENT's violations.
pub fn violated_fields(status: &Status) -> Vec<String> {
    platform::grpc::error_detail(status)
        .map(|d| d.field_violations.into_iter().map(|v| v.field).collect())
        .unwrap_or_default()
}

pub fn reason(status: &Status) -> String {
    platform::grpc::error_detail(status)
        .map(|d| d.reason)
        .unwrap_or_default()
}

/// Decodes an outbox payload of the given type.
pub fn decode_created(payload: &[u8]) -> OrderCreated {
    OrderCreated::decode(payload).expect("an OrderCreated payload")
}

pub fn decode_cancelled(payload: &[u8]) -> OrderCancelled {
    OrderCancelled::decode(payload).expect("an OrderCancelled payload")
}

// --------------------------------------------------------- the real binary

/// The `order` binary with the fakes, on `db`.
pub fn binary_env(
    db: &TestDb,
    addr: &str,
    inventory_addr: &str,
    producer_addr: &str,
) -> Vec<(String, String)> {
    let mut env = db.server.service_env();
    env.extend(
        [
            ("APP_ENV", "development"),
            ("ORDER_ADDR", addr),
            ("INVENTORY_ADDR", inventory_addr),
            ("PRODUCER_ADDR", producer_addr),
            ("ORDER_DB_NAME", db.name.as_str()),
            ("OUTBOX_POLL_INTERVAL_MS", "50"),
            ("OUTBOX_RETRY_MIN_MS", "50"),
            ("OUTBOX_RETRY_MAX_MS", "500"),
            ("GRPC_REQUEST_TIMEOUT_MS", "3000"),
            ("DB_CONNECT_WAIT_MS", "20000"),
        ]
        .map(|(k, v)| (k.to_owned(), v.to_owned())),
    );
    env
}

pub async fn spawn_order(env: Vec<(String, String)>, addr: &str) -> ServiceProcess {
    let mut process = ServiceProcess::spawn("order", env);
    process
        .wait_grpc_healthy(addr, Duration::from_secs(60))
        .await;
    process
}
