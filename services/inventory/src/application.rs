//! The Inventory use cases: validate with the domain, then read or change
//! the store. Each returns a typed error the gRPC adapter maps once.

use std::sync::Arc;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use sea_orm::{DatabaseConnection, DbErr};
use uuid::Uuid;

use crate::domain::{
    self, ApplyOutcome, ApplyResult, Invalid, NewProduct, PageRequest, Product, ProductChanges,
    ReleaseResult, StockRequest,
};
use crate::infrastructure::store::{ProductPage, ProductStore};

#[derive(Debug, thiserror::Error)]
pub enum InventoryError {
    #[error(transparent)]
    Invalid(#[from] Invalid),
    #[error("product {0} not found")]
    ProductNotFound(Uuid),
    #[error("database error: {0}")]
    Database(#[from] DbErr),
}

/// Found products (in the order asked) and the ids that are not there.
pub struct BatchResult {
    pub products: Vec<Product>,
    pub missing_ids: Vec<Uuid>,
}

type OutcomeLabels = Vec<(&'static str, &'static str)>;

/// Where committed product changes are announced (the gateways' product
/// caches listen). Fire and forget: announcing never fails a use case.
pub trait ProductChangeFeed: Send + Sync {
    fn announce(&self, ids: Vec<Uuid>);
}

/// One order of an ApplyOrders batch: as it came in, and the span of its
/// own trace that its outcome is reported in.
pub struct BatchedOrder {
    pub order_id: String,
    /// (product id, quantity) pairs.
    pub items: Vec<(String, u32)>,
    pub span: tracing::Span,
}

/// No one listens (tests, tools).
pub struct Unannounced;

impl ProductChangeFeed for Unannounced {
    fn announce(&self, _: Vec<Uuid>) {}
}

#[derive(Clone)]
pub struct Inventory {
    store: ProductStore,
    changes: Arc<dyn ProductChangeFeed>,
    apply_outcomes: Family<OutcomeLabels, Counter>,
}

impl Inventory {
    pub fn new(db: DatabaseConnection) -> Self {
        Self::announcing(db, Arc::new(Unannounced))
    }

    /// Announces every committed product change on `changes`.
    pub fn announcing(db: DatabaseConnection, changes: Arc<dyn ProductChangeFeed>) -> Self {
        Inventory {
            store: ProductStore::new(db),
            changes,
            apply_outcomes: Family::default(),
        }
    }

    /// Registers this instance's counters in the process registry (once per
    /// process: the server calls it, tests need not).
    pub fn register_metrics(&self) {
        platform::metrics::register(
            "inventory_apply_order",
            "ApplyOrder answers by outcome and whether the outcome was replayed",
            self.apply_outcomes.clone(),
        );
    }

    pub async fn create_product(
        &self,
        name: &str,
        category: &str,
        stock: i32,
        price: &str,
    ) -> Result<Product, InventoryError> {
        let new = NewProduct::parse(name, category, stock, price)?;
        Ok(self.store.insert(new).await?)
    }

    pub async fn get_product(&self, id: &str) -> Result<Product, InventoryError> {
        let id = domain::parse_uuid("id", id)?;
        self.store
            .get(id)
            .await?
            .ok_or(InventoryError::ProductNotFound(id))
    }

    pub async fn batch_get_products(&self, ids: &[String]) -> Result<BatchResult, InventoryError> {
        let ids = domain::parse_batch_ids(ids)?;
        let mut found = self.store.get_many(&ids).await?;
        let mut products = Vec::with_capacity(found.len());
        let mut missing_ids = Vec::new();
        for id in ids {
            match found.iter().position(|p| p.id == id) {
                Some(i) => products.push(found.swap_remove(i)),
                None => missing_ids.push(id),
            }
        }
        Ok(BatchResult {
            products,
            missing_ids,
        })
    }

    pub async fn list_products(
        &self,
        page: u32,
        page_size: u32,
        category: Option<&str>,
    ) -> Result<(PageRequest, ProductPage), InventoryError> {
        let page = PageRequest::parse(page, page_size)?;
        let category = domain::parse_category_filter(category)?;
        let found = self.store.list(page, category.as_deref()).await?;
        Ok((page, found))
    }

    pub async fn update_product(
        &self,
        id: &str,
        name: Option<&str>,
        category: Option<&str>,
        stock: Option<i32>,
        price: Option<&str>,
    ) -> Result<Product, InventoryError> {
        let id = domain::parse_uuid("id", id)?;
        let changes = ProductChanges::parse(name, category, stock, price)?;
        let updated = self
            .store
            .update(id, changes)
            .await?
            .ok_or(InventoryError::ProductNotFound(id))?;
        self.changes.announce(vec![id]);
        Ok(updated)
    }

    pub async fn delete_product(&self, id: &str) -> Result<(), InventoryError> {
        let id = domain::parse_uuid("id", id)?;
        if self.store.delete(id).await? {
            self.changes.announce(vec![id]);
            Ok(())
        } else {
            Err(InventoryError::ProductNotFound(id))
        }
    }

    /// `items` are (product id, quantity) pairs.
    pub async fn apply_order(
        &self,
        order_id: &str,
        items: &[(String, u32)],
    ) -> Result<ApplyResult, InventoryError> {
        let request = StockRequest::parse(order_id, items)?;
        let result = self.store.apply_order(&request).await?;
        self.applied(&request, &result);
        Ok(result)
    }

    /// ApplyOrder for several orders in one transaction; one answer per
    /// order, in their order. An order that does not parse is answered its
    /// error and left out; the rest go on.
    pub async fn apply_orders(
        &self,
        orders: &[BatchedOrder],
    ) -> Result<Vec<Result<ApplyResult, InventoryError>>, InventoryError> {
        let parsed: Vec<Result<StockRequest, Invalid>> = orders
            .iter()
            .map(|order| StockRequest::parse(&order.order_id, &order.items))
            .collect();
        let valid: Vec<StockRequest> = parsed
            .iter()
            .filter_map(|p| p.as_ref().ok().cloned())
            .collect();
        let mut results = self.store.apply_orders(&valid).await?.into_iter();
        let mut valid = valid.iter();
        Ok(parsed
            .into_iter()
            .zip(orders)
            .map(|(p, order)| match p {
                Err(invalid) => Err(InventoryError::Invalid(invalid)),
                Ok(_) => {
                    let request = valid.next().expect("one request per valid order");
                    let result = results.next().expect("one result per request");
                    order.span.in_scope(|| self.applied(request, &result));
                    Ok(result)
                }
            })
            .collect())
    }

    /// What follows a committed (or replayed) ApplyOrder: the crash tests'
    /// fault point, the announcement, the metric and the log line.
    fn applied(&self, request: &StockRequest, result: &ApplyResult) {
        if !result.replayed {
            // The stock change is committed: a crash test may stop us here.
            platform::fault::point("inventory.after_apply_commit");
            if result.outcome == ApplyOutcome::Applied {
                self.changes
                    .announce(request.lines.iter().map(|l| l.product_id).collect());
            }
        }
        let outcome = match result.outcome {
            ApplyOutcome::Applied => "applied",
            ApplyOutcome::InsufficientStock => "insufficient_stock",
            ApplyOutcome::UnknownProduct => "unknown_product",
            ApplyOutcome::Released => "released",
        };
        let replayed = if result.replayed { "true" } else { "false" };
        self.apply_outcomes
            .get_or_create(&vec![("outcome", outcome), ("replayed", replayed)])
            .inc();
        tracing::info!(order_id = %request.order_id, outcome, replayed = result.replayed, "ApplyOrder answered");
    }

    pub async fn release_order(&self, order_id: &str) -> Result<ReleaseResult, InventoryError> {
        let order_id = domain::parse_uuid("order_id", order_id)?;
        let result = self.store.release_order(order_id).await?;
        if !result.released.is_empty() {
            self.changes.announce(result.released.clone());
        }
        tracing::info!(%order_id, outcome = ?result.outcome, replayed = result.replayed, "ReleaseOrder answered");
        Ok(result)
    }
}
