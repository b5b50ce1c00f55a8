//! The gRPC face of the Inventory service: wire types in, domain results out,
//! and the one mapping of errors to statuses.

use tonic::{Code, Request, Response, Status};

use platform::grpc::{invalid_argument, status_with_detail, timestamp, violation};
use proto::inventory::v1 as pb;
use proto::inventory::v1::inventory_service_server::InventoryService;

use crate::application::{BatchedOrder, Inventory, InventoryError, ProductRepository};
use crate::domain::{ApplyOutcome, ApplyResult, Product, ReleaseOutcome};

pub struct InventoryGrpc<S> {
    inventory: Inventory<S>,
}

impl<S: ProductRepository> InventoryGrpc<S> {
    pub fn new(inventory: Inventory<S>) -> Self {
        InventoryGrpc { inventory }
    }
}

/// Maps an error to its status: bad input INVALID_ARGUMENT with a violation
/// per field, a missing product NOT_FOUND, a database outage UNAVAILABLE.
pub fn to_status(error: InventoryError) -> Status {
    match error {
        InventoryError::Invalid(invalid) => invalid_argument(
            invalid
                .0
                .into_iter()
                .map(|e| violation(e.field, e.description))
                .collect(),
        ),
        InventoryError::ProductNotFound(id) => status_with_detail(
            Code::NotFound,
            format!("product {id} not found"),
            "PRODUCT_NOT_FOUND",
            vec![],
        ),
        InventoryError::Database(e) => platform::db::status_from_db(&e),
    }
}

/// The most orders one ApplyOrders call may carry.
pub const MAX_BATCH_ORDERS: usize = platform::batch::MAX_BATCH_CALLS;

fn apply_response(result: ApplyResult) -> pb::ApplyOrderResponse {
    let outcome = match result.outcome {
        ApplyOutcome::Applied => pb::ApplyOutcome::Applied,
        ApplyOutcome::InsufficientStock => pb::ApplyOutcome::InsufficientStock,
        ApplyOutcome::UnknownProduct => pb::ApplyOutcome::UnknownProduct,
        ApplyOutcome::Released => pb::ApplyOutcome::Released,
    };
    pb::ApplyOrderResponse {
        outcome: outcome as i32,
        reason: result.reason,
        replayed: result.replayed,
    }
}

pub fn to_proto(product: Product) -> pb::Product {
    pb::Product {
        id: product.id.to_string(),
        name: product.name,
        category: product.category,
        stock: product.stock,
        price: product.price.to_string(),
        created_at: Some(timestamp(product.created_at)),
        updated_at: Some(timestamp(product.updated_at)),
    }
}

#[tonic::async_trait]
impl<S: ProductRepository> InventoryService for InventoryGrpc<S> {
    #[tracing::instrument(skip_all)]
    async fn create_product(
        &self,
        request: Request<pb::CreateProductRequest>,
    ) -> Result<Response<pb::CreateProductResponse>, Status> {
        let r = request.into_inner();
        let product = self
            .inventory
            .create_product(&r.name, &r.category, r.stock, &r.price)
            .await
            .map_err(to_status)?;
        tracing::info!(product_id = %product.id, "product created");
        Ok(Response::new(pb::CreateProductResponse {
            product: Some(to_proto(product)),
        }))
    }

    #[tracing::instrument(skip_all)]
    async fn get_product(
        &self,
        request: Request<pb::GetProductRequest>,
    ) -> Result<Response<pb::GetProductResponse>, Status> {
        let product = self
            .inventory
            .get_product(&request.into_inner().id)
            .await
            .map_err(to_status)?;
        Ok(Response::new(pb::GetProductResponse {
            product: Some(to_proto(product)),
        }))
    }

    #[tracing::instrument(skip_all)]
    async fn batch_get_products(
        &self,
        request: Request<pb::BatchGetProductsRequest>,
    ) -> Result<Response<pb::BatchGetProductsResponse>, Status> {
        let found = self
            .inventory
            .batch_get_products(&request.into_inner().ids)
            .await
            .map_err(to_status)?;
        Ok(Response::new(pb::BatchGetProductsResponse {
            products: found.products.into_iter().map(to_proto).collect(),
            missing_ids: found.missing_ids.iter().map(|id| id.to_string()).collect(),
        }))
    }

    #[tracing::instrument(skip_all)]
    async fn list_products(
        &self,
        request: Request<pb::ListProductsRequest>,
    ) -> Result<Response<pb::ListProductsResponse>, Status> {
        let r = request.into_inner();
        let (page, found) = self
            .inventory
            .list_products(r.page, r.page_size, r.category.as_deref())
            .await
            .map_err(to_status)?;
        Ok(Response::new(pb::ListProductsResponse {
            products: found.products.into_iter().map(to_proto).collect(),
            page: page.page,
            page_size: page.size,
            total: found.total,
        }))
    }

    #[tracing::instrument(skip_all)]
    async fn update_product(
        &self,
        request: Request<pb::UpdateProductRequest>,
    ) -> Result<Response<pb::UpdateProductResponse>, Status> {
        let r = request.into_inner();
        let product = self
            .inventory
            .update_product(
                &r.id,
                r.name.as_deref(),
                r.category.as_deref(),
                r.stock,
                r.price.as_deref(),
            )
            .await
            .map_err(to_status)?;
        Ok(Response::new(pb::UpdateProductResponse {
            product: Some(to_proto(product)),
        }))
    }

    #[tracing::instrument(skip_all)]
    async fn delete_product(
        &self,
        request: Request<pb::DeleteProductRequest>,
    ) -> Result<Response<pb::DeleteProductResponse>, Status> {
        self.inventory
            .delete_product(&request.into_inner().id)
            .await
            .map_err(to_status)?;
        Ok(Response::new(pb::DeleteProductResponse {}))
    }

    #[tracing::instrument(skip_all)]
    async fn apply_order(
        &self,
        request: Request<pb::ApplyOrderRequest>,
    ) -> Result<Response<pb::ApplyOrderResponse>, Status> {
        let r = request.into_inner();
        let items: Vec<(String, u32)> = r
            .items
            .into_iter()
            .map(|line| (line.product_id, line.quantity))
            .collect();
        let result = self
            .inventory
            .apply_order(&r.order_id, &items)
            .await
            .map_err(to_status)?;
        Ok(Response::new(apply_response(result)))
    }

    #[tracing::instrument(skip_all, fields(batch_size))]
    async fn apply_orders(
        &self,
        request: Request<pb::ApplyOrdersRequest>,
    ) -> Result<Response<pb::ApplyOrdersResponse>, Status> {
        let items = request.into_inner().orders;
        tracing::Span::current().record("batch_size", items.len());
        if items.len() > MAX_BATCH_ORDERS {
            return Err(invalid_argument(vec![violation(
                "orders",
                format!("at most {MAX_BATCH_ORDERS} orders, got {}", items.len()),
            )]));
        }
        let orders: Vec<BatchedOrder> = items
            .into_iter()
            .map(|item| {
                let order = item.order.unwrap_or_default();
                let span = tracing::info_span!(
                    "apply_order",
                    otel.name = "/ecommerce.inventory.v1.InventoryService/ApplyOrders item",
                    order_id = %order.order_id,
                );
                platform::telemetry::set_parent_from(&span, &item.trace_context);
                BatchedOrder {
                    order_id: order.order_id,
                    items: order
                        .items
                        .into_iter()
                        .map(|line| (line.product_id, line.quantity))
                        .collect(),
                    span,
                }
            })
            .collect();
        let results = self
            .inventory
            .apply_orders(&orders)
            .await
            .map_err(to_status)?;
        Ok(Response::new(pb::ApplyOrdersResponse {
            results: results
                .into_iter()
                .map(|result| pb::ApplyOrdersResult {
                    result: Some(match result {
                        Ok(applied) => {
                            pb::apply_orders_result::Result::Applied(apply_response(applied))
                        }
                        Err(error) => pb::apply_orders_result::Result::Error(
                            platform::grpc::item_error(&to_status(error)),
                        ),
                    }),
                })
                .collect(),
        }))
    }

    #[tracing::instrument(skip_all)]
    async fn release_order(
        &self,
        request: Request<pb::ReleaseOrderRequest>,
    ) -> Result<Response<pb::ReleaseOrderResponse>, Status> {
        let result = self
            .inventory
            .release_order(&request.into_inner().order_id)
            .await
            .map_err(to_status)?;
        let outcome = match result.outcome {
            ReleaseOutcome::Released => pb::ReleaseOutcome::Released,
            ReleaseOutcome::NotApplied => pb::ReleaseOutcome::NotApplied,
        };
        Ok(Response::new(pb::ReleaseOrderResponse {
            outcome: outcome as i32,
            replayed: result.replayed,
        }))
    }
}
