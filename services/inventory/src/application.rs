//! The Inventory use cases: validate with the domain, then read or change
//! the store. Each returns a typed error the gRPC adapter maps once.

use std::future::Future;
use std::sync::Arc;

use sea_orm::DbErr;
use uuid::Uuid;

use crate::domain::{
    self, ApplyOutcome, ApplyResult, Invalid, NewProduct, PageRequest, Product, ProductChanges,
    ProductPage, ReleaseResult, StockRequest,
};
use crate::metrics::Metrics;

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

/// The products, their stock and the per-order ledger, as the use cases
/// need them (PostgreSQL in `infrastructure::store`). Every method is one
/// transaction.
pub trait ProductRepository: Clone + Send + Sync + 'static {
    fn insert(&self, new: NewProduct) -> impl Future<Output = Result<Product, DbErr>> + Send;
    fn get(&self, id: Uuid) -> impl Future<Output = Result<Option<Product>, DbErr>> + Send;
    fn get_many(&self, ids: &[Uuid]) -> impl Future<Output = Result<Vec<Product>, DbErr>> + Send;
    fn list(
        &self,
        page: PageRequest,
        category: Option<&str>,
    ) -> impl Future<Output = Result<ProductPage, DbErr>> + Send;
    /// The updated product, `None` when there is no such product.
    fn update(
        &self,
        id: Uuid,
        changes: ProductChanges,
    ) -> impl Future<Output = Result<Option<Product>, DbErr>> + Send;
    /// Whether there was such a product.
    fn delete(&self, id: Uuid) -> impl Future<Output = Result<bool, DbErr>> + Send;
    /// Takes an order's stock once (a repeat answers the first outcome).
    fn apply_order(
        &self,
        request: &StockRequest,
    ) -> impl Future<Output = Result<ApplyResult, DbErr>> + Send;
    /// [`Self::apply_order`] for several orders in one transaction, decided
    /// one after the other; one result per request, in their order.
    fn apply_orders(
        &self,
        requests: &[StockRequest],
    ) -> impl Future<Output = Result<Vec<ApplyResult>, DbErr>> + Send;
    /// Returns an order's stock once.
    fn release_order(
        &self,
        order_id: Uuid,
    ) -> impl Future<Output = Result<ReleaseResult, DbErr>> + Send;
}

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
pub struct Inventory<S> {
    store: S,
    changes: Arc<dyn ProductChangeFeed>,
    metrics: Metrics,
}

impl<S: ProductRepository> Inventory<S> {
    /// The use cases over `store`, announcing every committed product change
    /// on `changes`.
    pub fn new(store: S, changes: Arc<dyn ProductChangeFeed>, metrics: Metrics) -> Self {
        Inventory {
            store,
            changes,
            metrics,
        }
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
        self.metrics
            .apply_outcomes
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
