//! Helpers for end-to-end tests of the order flow on a running [`Stack`]:
//! gRPC clients of Inventory and Order, a raw SQL view of the order database
//! (readable while the Order service is down), waiting until the flow has
//! settled, and the stock conservation check.

use std::collections::BTreeMap;
use std::time::Duration;

use sea_orm::{ConnectionTrait, DatabaseConnection, DbBackend, DbErr, Statement};
use tonic::Status;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;
use uuid::Uuid;

use proto::common::v1::{Caller, Role};
use proto::inventory::v1::inventory_service_client::InventoryServiceClient;
use proto::inventory::v1::{CreateProductRequest, GetProductRequest};
use proto::order::v1::order_service_client::OrderServiceClient;
use proto::order::v1::{CreateOrderRequest, GetOrderRequest, Order, OrderItemInput};

use testkit::TestNats;
pub use testkit::{http_get, metric_value};

use crate::stack::Stack;

/// A customer of its own, as the gateway would pass it on.
pub fn customer() -> Caller {
    Caller {
        user_id: Uuid::new_v4().to_string(),
        role: Role::Customer as i32,
    }
}

/// An admin, as the gateway would pass it on.
pub fn admin() -> Caller {
    Caller {
        user_id: Uuid::new_v4().to_string(),
        role: Role::Admin as i32,
    }
}

/// Sends the stack's internal token, when the test gives one.
#[derive(Clone, Default)]
pub struct InternalToken(Option<tonic::metadata::MetadataValue<tonic::metadata::Ascii>>);

impl tonic::service::Interceptor for InternalToken {
    fn call(&mut self, mut request: tonic::Request<()>) -> Result<tonic::Request<()>, Status> {
        if let Some(token) = &self.0 {
            request
                .metadata_mut()
                .insert(platform::internal_auth::HEADER, token.clone());
        }
        Ok(request)
    }
}

type ShopChannel = InterceptedService<Channel, InternalToken>;

/// gRPC clients of Inventory and Order on a stack (lazily connected, so they
/// survive restarts of the services).
#[derive(Clone)]
pub struct Shop {
    pub inventory: InventoryServiceClient<ShopChannel>,
    pub orders: OrderServiceClient<ShopChannel>,
}

impl Shop {
    pub async fn new(stack: &Stack) -> Shop {
        Self::with_token(stack, None).await
    }

    /// Clients that send `token` as the internal token of the stack.
    pub async fn with_token(stack: &Stack, token: Option<&str>) -> Shop {
        let token = InternalToken(token.map(|t| t.parse().expect("an ASCII token")));
        Shop {
            inventory: InventoryServiceClient::with_interceptor(
                stack.channel("inventory").await,
                token.clone(),
            ),
            orders: OrderServiceClient::with_interceptor(stack.channel("order").await, token),
        }
    }

    /// Creates a product and returns its id.
    pub async fn create_product(&self, name: &str, stock: i32, price: &str) -> String {
        let product = self
            .inventory
            .clone()
            .create_product(CreateProductRequest {
                name: name.to_owned(),
                category: "test".to_owned(),
                stock,
                price: price.to_owned(),
            })
            .await
            .unwrap_or_else(|e| panic!("create product {name}: {e:?}"))
            .into_inner()
            .product
            .expect("the created product");
        product.id
    }

    /// The current stock of a product.
    pub async fn stock(&self, product_id: &str) -> i32 {
        self.try_stock(product_id)
            .await
            .unwrap_or_else(|e| panic!("read product {product_id}: {e:?}"))
    }

    pub async fn try_stock(&self, product_id: &str) -> Result<i32, Status> {
        let product = self
            .inventory
            .clone()
            .get_product(GetProductRequest {
                id: product_id.to_owned(),
            })
            .await?
            .into_inner()
            .product
            .ok_or_else(|| Status::internal("no product in the reply"))?;
        Ok(product.stock)
    }

    /// Places an order of `(product id, quantity)` lines for `caller`.
    pub async fn place_order(
        &self,
        caller: &Caller,
        items: &[(&str, u32)],
    ) -> Result<Order, Status> {
        let reply = self
            .orders
            .clone()
            .create_order(CreateOrderRequest {
                caller: Some(caller.clone()),
                items: items
                    .iter()
                    .map(|(product_id, quantity)| OrderItemInput {
                        product_id: product_id.to_string(),
                        quantity: *quantity,
                    })
                    .collect(),
                idempotency_key: String::new(),
            })
            .await?;
        reply
            .into_inner()
            .order
            .ok_or_else(|| Status::internal("no order in the reply"))
    }

    pub async fn order(&self, caller: &Caller, order_id: &str) -> Result<Order, Status> {
        self.orders
            .clone()
            .get_order(GetOrderRequest {
                caller: Some(caller.clone()),
                order_id: order_id.to_owned(),
            })
            .await?
            .into_inner()
            .order
            .ok_or_else(|| Status::internal("no order in the reply"))
    }

    /// Waits until the order has `status` (a `proto` `OrderStatus` value).
    pub async fn wait_status(
        &self,
        caller: &Caller,
        order_id: &str,
        status: proto::order::v1::OrderStatus,
        timeout: Duration,
    ) -> Order {
        crate::eventually(timeout, &format!("order {order_id} {status:?}"), || async {
            self.order(caller, order_id)
                .await
                .ok()
                .filter(|o| o.status == status as i32)
        })
        .await
    }
}

/// An order as stored by the Order service.
#[derive(Debug, Clone)]
pub struct OrderRow {
    pub id: Uuid,
    pub status: String,
    pub reason: Option<String>,
    /// (product id, quantity)
    pub items: Vec<(Uuid, i64)>,
}

/// What the order database holds at one moment.
#[derive(Debug, Clone, Default)]
pub struct FlowSnapshot {
    pub orders: Vec<OrderRow>,
    /// Outbox records the relay has not yet marked sent.
    pub unsent_outbox: i64,
}

impl FlowSnapshot {
    pub fn count(&self, status: &str) -> usize {
        self.orders.iter().filter(|o| o.status == status).count()
    }

    pub fn pending(&self) -> usize {
        self.count("PENDING")
    }

    /// Orders that reached an outcome.
    pub fn settled(&self) -> usize {
        self.orders.len() - self.pending()
    }

    /// Stock held by orders per product: the quantities of orders confirmed
    /// and not cancelled (SHIPPED and DELIVERED orders still hold theirs).
    pub fn stock_taken(&self) -> BTreeMap<Uuid, i64> {
        let mut taken = BTreeMap::new();
        for order in &self.orders {
            if matches!(order.status.as_str(), "CONFIRMED" | "SHIPPED" | "DELIVERED") {
                for (product, quantity) in &order.items {
                    *taken.entry(*product).or_insert(0) += quantity;
                }
            }
        }
        taken
    }

    pub fn order(&self, id: &str) -> Option<&OrderRow> {
        let id = Uuid::parse_str(id).ok()?;
        self.orders.iter().find(|o| o.id == id)
    }
}

/// The Order service's database read with raw SQL (tables `orders`,
/// `order_items`, `outbox`), independent of the service being up.
pub struct OrderDb {
    conn: DatabaseConnection,
}

impl OrderDb {
    pub async fn connect(stack: &Stack) -> OrderDb {
        OrderDb {
            conn: stack.dbs["order"].connect().await,
        }
    }

    pub async fn snapshot(&self) -> Result<FlowSnapshot, DbErr> {
        let sql = |s: &str| Statement::from_string(DbBackend::Postgres, s.to_owned());
        let rows = self
            .conn
            .query_all_raw(sql(
                "SELECT id, status, status_reason FROM orders ORDER BY created_at, id",
            ))
            .await?;
        let mut orders = Vec::with_capacity(rows.len());
        let mut index = BTreeMap::new();
        for row in rows {
            let id: Uuid = row.try_get("", "id")?;
            index.insert(id, orders.len());
            orders.push(OrderRow {
                id,
                status: row.try_get("", "status")?,
                reason: row.try_get("", "status_reason")?,
                items: Vec::new(),
            });
        }
        let items = self
            .conn
            .query_all_raw(sql(
                "SELECT order_id, product_id, quantity::bigint AS quantity FROM order_items",
            ))
            .await?;
        for row in items {
            let order_id: Uuid = row.try_get("", "order_id")?;
            // Items of an order committed after the first query: skip.
            if let Some(&i) = index.get(&order_id) {
                orders[i]
                    .items
                    .push((row.try_get("", "product_id")?, row.try_get("", "quantity")?));
            }
        }
        let unsent = self
            .conn
            .query_one_raw(sql(
                "SELECT count(*)::bigint AS unsent FROM outbox WHERE sent_at IS NULL",
            ))
            .await?
            .map(|row| row.try_get("", "unsent"))
            .transpose()?
            .unwrap_or(0);
        Ok(FlowSnapshot {
            orders,
            unsent_outbox: unsent,
        })
    }
}

/// Messages still in the work-queue order stream (unacknowledged), or `None`
/// when NATS cannot say right now.
pub async fn unacknowledged_events(nats: &TestNats) -> Option<u64> {
    let connect = async_nats::ConnectOptions::new()
        .connection_timeout(Duration::from_secs(2))
        .connect(nats.url.as_str());
    let client = tokio::time::timeout(Duration::from_secs(3), connect)
        .await
        .ok()?
        .ok()?;
    let js = async_nats::jetstream::new(client);
    let mut stream = js.get_stream(&nats.stream).await.ok()?;
    Some(stream.info().await.ok()?.state.messages)
}

/// Waits until the flow has settled: no order PENDING, the outbox empty and
/// nothing unacknowledged in the stream. Returns the settled state.
pub async fn wait_settled(stack: &Stack, db: &OrderDb, timeout: Duration) -> FlowSnapshot {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let last = match db.snapshot().await {
            Ok(snapshot) if snapshot.pending() == 0 && snapshot.unsent_outbox == 0 => {
                match unacknowledged_events(&stack.nats).await {
                    Some(0) => return snapshot,
                    other => format!("unacknowledged events in the stream: {other:?}"),
                }
            }
            Ok(snapshot) => format!(
                "{} of {} orders PENDING, {} outbox records unsent",
                snapshot.pending(),
                snapshot.orders.len(),
                snapshot.unsent_outbox
            ),
            Err(e) => format!("order database not readable: {e}"),
        };
        if tokio::time::Instant::now() >= deadline {
            panic!("the order flow did not settle within {timeout:?}: {last}");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Checks the flow's guarantees on a settled state: every order CONFIRMED or
/// REJECTED (or moved on from CONFIRMED), and per product, initial stock =
/// current stock + quantities held by orders. `initial` is (product id,
/// initial stock).
pub async fn assert_stock_conserved(
    shop: &Shop,
    settled: &FlowSnapshot,
    initial: &[(String, i32)],
) {
    for order in &settled.orders {
        assert!(
            matches!(
                order.status.as_str(),
                "CONFIRMED" | "REJECTED" | "CANCELLED" | "SHIPPED" | "DELIVERED"
            ),
            "order {} is {}",
            order.id,
            order.status
        );
    }
    let taken = settled.stock_taken();
    for (product, initial_stock) in initial {
        let current = shop.stock(product).await;
        assert!(
            current >= 0,
            "stock of {product} went below zero: {current}"
        );
        let held = taken
            .get(&Uuid::parse_str(product).expect("product id"))
            .copied()
            .unwrap_or(0);
        assert_eq!(
            i64::from(*initial_stock),
            i64::from(current) + held,
            "product {product}: initial stock {initial_stock} != current {current} + held by orders {held}"
        );
    }
}

/// The current value of a metric of a stack's service (see [`metric_value`]).
pub async fn service_metric(stack: &Stack, service: &str, prefix: &str) -> f64 {
    let text = http_get(stack.metrics_addr(service), "/metrics")
        .await
        .unwrap_or_default();
    metric_value(&text, prefix)
}
