use inventory::application::{BatchedOrder, InventoryError, Unannounced};
use inventory::infrastructure::store::ProductStore;
use inventory::metrics::Metrics;

/// The use cases over PostgreSQL.
pub type Inventory = inventory::application::Inventory<ProductStore>;
use inventory::domain::{ApplyOutcome, ApplyResult, Product};
use sea_orm::{ConnectionTrait, DatabaseConnection};
use testkit::TestDb;

/// The use cases on a migrated database of the test's own.
pub struct App {
    // Declared first: the pool closes before the database is dropped.
    pub inventory: Inventory,
    pub conn: DatabaseConnection,
    _db: TestDb,
}

/// Connections of the pool the concurrency tests open before they start:
/// without them, calls queue for the one warm connection while new ones are
/// still being opened, and nothing really runs at the same time.
pub const POOL_SIZE: u32 = 12;

pub async fn app() -> App {
    let db = TestDb::create().await;
    platform::db::migrate::<inventory::Migrator>(&db.settings())
        .await
        .expect("migrations");
    let mut settings = db.settings();
    // Room for the concurrency tests: 50 callers share these.
    settings.max_connections = POOL_SIZE;
    let conn = platform::db::connect(&settings).await.expect("connect");
    App {
        inventory: Inventory::new(
            ProductStore::new(conn.clone()),
            std::sync::Arc::new(Unannounced),
            Metrics::default(),
        ),
        conn,
        _db: db,
    }
}

impl App {
    /// Opens every connection of the pool (each held at once for a moment),
    /// so that concurrent calls really overlap in the database.
    pub async fn warm_pool(&self) {
        let sleeps = (0..POOL_SIZE).map(|_| self.conn.execute_unprepared("SELECT pg_sleep(0.2)"));
        for result in futures::future::join_all(sleeps).await {
            result.expect("warm the pool");
        }
    }

    pub async fn product(&self, name: &str, stock: i32, price: &str) -> Product {
        self.inventory
            .create_product(name, "Test", stock, price)
            .await
            .expect("create product")
    }

    pub async fn stock(&self, product: &Product) -> i32 {
        self.inventory
            .get_product(&product.id.to_string())
            .await
            .expect("get product")
            .stock
    }

    pub async fn apply(&self, order_id: uuid::Uuid, items: &[(&Product, u32)]) -> ApplyResult {
        let items: Vec<(String, u32)> = items.iter().map(|(p, q)| (p.id.to_string(), *q)).collect();
        self.inventory
            .apply_order(&order_id.to_string(), &items)
            .await
            .expect("apply order")
    }
}

/// The field names of an INVALID_ARGUMENT error.
pub fn invalid_fields(error: InventoryError) -> Vec<String> {
    match error {
        InventoryError::Invalid(invalid) => invalid.0.into_iter().map(|e| e.field).collect(),
        other => panic!("expected invalid input, got {other:?}"),
    }
}

pub fn applied(result: &ApplyResult) -> bool {
    result.outcome == ApplyOutcome::Applied
}

impl App {
    /// One ApplyOrders batch: each order's answer, in their order.
    pub async fn apply_batch(
        &self,
        orders: &[(uuid::Uuid, Vec<(&Product, u32)>)],
    ) -> Vec<Result<ApplyResult, InventoryError>> {
        let batch: Vec<BatchedOrder> = orders
            .iter()
            .map(|(order_id, items)| BatchedOrder {
                order_id: order_id.to_string(),
                items: items.iter().map(|(p, q)| (p.id.to_string(), *q)).collect(),
                span: tracing::Span::none(),
            })
            .collect();
        self.inventory
            .apply_orders(&batch)
            .await
            .expect("apply the batch")
    }

    /// Rows of the ledger (one per order recorded) and of its lines.
    pub async fn ledger_rows(&self) -> (i64, i64) {
        let count = |table: &'static str| async move {
            self.conn
                .query_one_raw(sea_orm::Statement::from_string(
                    sea_orm::DbBackend::Postgres,
                    format!("SELECT count(*) AS n FROM {table}"),
                ))
                .await
                .unwrap()
                .unwrap()
                .try_get::<i64>("", "n")
                .unwrap()
        };
        (
            count("order_ledger").await,
            count("order_ledger_lines").await,
        )
    }
}
