//! Inventory over gRPC: the one batch read of the products an order names.

use std::collections::HashMap;
use std::str::FromStr;

use rust_decimal::Decimal;
use uuid::Uuid;

use platform::grpc::TracedChannel;
use proto::inventory::v1::BatchGetProductsRequest;
use proto::inventory::v1::inventory_service_client::InventoryServiceClient;

use crate::application::ports::{InventoryError, PriceSource};
use crate::domain::ProductQuote;

#[derive(Clone)]
pub struct InventoryClient {
    client: InventoryServiceClient<TracedChannel>,
}

impl InventoryClient {
    pub fn new(channel: TracedChannel) -> Self {
        InventoryClient {
            client: InventoryServiceClient::new(channel),
        }
    }
}

impl PriceSource for InventoryClient {
    /// The current price and stock of each known product among `ids`.
    async fn quotes(&self, ids: &[Uuid]) -> Result<HashMap<Uuid, ProductQuote>, InventoryError> {
        let request = BatchGetProductsRequest {
            ids: ids.iter().map(Uuid::to_string).collect(),
        };
        let response = self
            .client
            .clone()
            .batch_get_products(request)
            .await
            .map_err(|status| {
                if platform::grpc::is_transient(&status) {
                    InventoryError::Unavailable {
                        code: status.code(),
                        message: status.message().to_owned(),
                    }
                } else {
                    InventoryError::Contract(format!(
                        "BatchGetProducts failed with {:?}: {}",
                        status.code(),
                        status.message()
                    ))
                }
            })?
            .into_inner();
        response
            .products
            .into_iter()
            .map(|product| {
                let product_id = Uuid::parse_str(&product.id).map_err(|_| {
                    InventoryError::Contract(format!("product id {:?} is not a UUID", product.id))
                })?;
                let price = Decimal::from_str(&product.price)
                    .ok()
                    .filter(|p| !p.is_sign_negative() && p.scale() <= 2)
                    .ok_or_else(|| {
                        InventoryError::Contract(format!(
                            "product {product_id} has the invalid price {:?}",
                            product.price
                        ))
                    })?;
                Ok((
                    product_id,
                    ProductQuote {
                        product_id,
                        price,
                        stock: i64::from(product.stock),
                    },
                ))
            })
            .collect()
    }
}
