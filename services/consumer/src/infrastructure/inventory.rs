//! Inventory over gRPC, ApplyOrder calls coalesced into ApplyOrders batches.

use tonic::Status;
use uuid::Uuid;

use platform::batch::{BatchSettings, Batcher};
use platform::config::{CallSettings, ServiceAddr};
use platform::grpc::TracedChannel;
use platform::grpc::from_item_error;
use proto::inventory::v1::inventory_service_client::InventoryServiceClient;
use proto::inventory::v1::{
    ApplyOrderRequest, ApplyOrderResponse, ApplyOrdersItem, ApplyOrdersRequest, OrderLine,
    ReleaseOrderRequest, ReleaseOrderResponse, apply_orders_result,
};

use super::calls::{batch_span, send_batch};
use crate::application::{self};
use crate::domain::Line;

/// Inventory over gRPC. Concurrent ApplyOrder calls of this replica's
/// handlers are coalesced into ApplyOrders batches (one transaction in
/// Inventory for all of them); a call alone goes out as it is.
#[derive(Clone)]
pub struct GrpcInventory {
    client: InventoryServiceClient<TracedChannel>,
    apply: Batcher<ApplyOrdersItem, ApplyOrderResponse>,
}

impl GrpcInventory {
    pub fn new(
        addr: &ServiceAddr,
        calls: CallSettings,
        batching: BatchSettings,
    ) -> anyhow::Result<Self> {
        let client = InventoryServiceClient::new(platform::grpc::channel(addr, calls)?);
        let batch_client = client.clone();
        let apply = Batcher::spawn(batching, move |items: Vec<ApplyOrdersItem>| {
            let client = batch_client.clone();
            async move {
                let span = batch_span(
                    "inventory.apply_orders",
                    items.len(),
                    &items[0].trace_context,
                );
                let single = |item: ApplyOrdersItem| {
                    let mut client = client.clone();
                    async move {
                        let order = item.order.unwrap_or_default();
                        Ok(client.apply_order(order).await?.into_inner())
                    }
                };
                let many = |orders: Vec<ApplyOrdersItem>| {
                    let mut client = client.clone();
                    async move {
                        let answer = client.apply_orders(ApplyOrdersRequest { orders }).await?;
                        Ok(answer
                            .into_inner()
                            .results
                            .into_iter()
                            .map(|r| match r.result {
                                Some(apply_orders_result::Result::Applied(applied)) => Ok(applied),
                                Some(apply_orders_result::Result::Error(e)) => {
                                    Err(from_item_error(e))
                                }
                                None => {
                                    Err(Status::internal("ApplyOrders answered an empty result"))
                                }
                            })
                            .collect())
                    }
                };
                send_batch(items, span, single, many).await
            }
        });
        Ok(GrpcInventory { client, apply })
    }
}

impl application::Inventory for GrpcInventory {
    async fn apply_order(
        &self,
        order_id: Uuid,
        lines: &[Line],
    ) -> Result<ApplyOrderResponse, Status> {
        let order = ApplyOrderRequest {
            order_id: order_id.to_string(),
            items: lines
                .iter()
                .map(|line| OrderLine {
                    product_id: line.product_id.to_string(),
                    quantity: line.quantity,
                })
                .collect(),
        };
        self.apply
            .call(ApplyOrdersItem {
                order: Some(order),
                trace_context: platform::telemetry::current_context_map(),
            })
            .await
    }

    async fn release_order(&self, order_id: Uuid) -> Result<ReleaseOrderResponse, Status> {
        let mut client = self.client.clone();
        let request = ReleaseOrderRequest {
            order_id: order_id.to_string(),
        };
        Ok(client.release_order(request).await?.into_inner())
    }
}
