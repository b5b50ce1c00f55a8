//! Inventory over gRPC: the batch read of the products orders name. The
//! reads of concurrent orders are coalesced: one BatchGetProducts call (per
//! 100 products) answers all of them, each order reading its own products
//! from it; a lone read goes out at once. What a read brings back prices the
//! orders of the next `PRICE_CACHE_TTL_MS` too (default 100 ms): a product
//! ordered many times a second is read a few times a second, not each time.

use std::collections::{HashMap, HashSet};
use std::str::FromStr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rust_decimal::Decimal;
use tonic::Status;
use tracing::Instrument;
use uuid::Uuid;

use platform::batch::{BatchSettings, Batcher};
use platform::grpc::TracedChannel;
use platform::product_cache::ProductCache;
use proto::inventory::v1::inventory_service_client::InventoryServiceClient;
use proto::inventory::v1::{BatchGetProductsRequest, Product};

use crate::application::ports::{InventoryError, PriceSource};
use crate::domain::ProductQuote;

/// Reads in one batch at the most; more wait for the next one.
const MAX_READS: usize = 128;
/// Batches in flight at once: enough that a read seldom waits for a slot
/// (each wait is a round trip added to an order). With 4 slots (and 8 for
/// the inserts) the reads shared their calls, but 32 clients' orders were
/// accepted 15 % slower for the waits (BENCHMARKS.md).
const READS_IN_FLIGHT: usize = 16;
/// The most ids one BatchGetProducts call carries (Inventory's limit).
const MAX_IDS_PER_CALL: usize = platform::limits::MAX_ORDER_LINES;
/// The most products whose quotes a replica holds (about 100 bytes each).
const QUOTES_HELD: usize = 10_000;

/// One order's read: its product ids and the trace it belongs to.
struct Read {
    ids: Vec<Uuid>,
    trace_context: HashMap<String, String>,
}

#[derive(Clone)]
pub struct InventoryClient {
    reads: Batcher<Read, Vec<Product>>,
    /// The quotes read in the last `quote_ttl`.
    held: Arc<ProductCache<ProductQuote>>,
}

impl InventoryClient {
    /// Needs a Tokio runtime (the batches' task). A quote is reused for
    /// `quote_ttl` after its read started (zero: every order reads).
    pub fn new(channel: TracedChannel, quote_ttl: Duration) -> Self {
        let client = InventoryServiceClient::new(channel);
        let reads = Batcher::spawn(
            BatchSettings::eager(MAX_READS, READS_IN_FLIGHT),
            move |reads: Vec<Read>| {
                let client = client.clone();
                async move { read_batch(client, reads).await }
            },
        );
        InventoryClient {
            reads,
            held: Arc::new(ProductCache::new(quote_ttl, QUOTES_HELD)),
        }
    }
}

/// Reads the union of the batch's products (in calls of at most
/// [`MAX_IDS_PER_CALL`], made together) and answers each read with its own.
/// A failed call is every read's answer.
async fn read_batch(
    client: InventoryServiceClient<TracedChannel>,
    reads: Vec<Read>,
) -> Result<Vec<Result<Vec<Product>, Status>>, Status> {
    let span = tracing::info_span!(
        "batch",
        otel.name = "inventory.BatchGetProducts",
        otel.kind = "client",
        batch_size = reads.len()
    );
    platform::telemetry::set_parent_from(&span, &reads[0].trace_context);
    let mut seen = HashSet::new();
    let ids: Vec<String> = reads
        .iter()
        .flat_map(|read| read.ids.iter())
        .filter(|id| seen.insert(**id))
        .map(Uuid::to_string)
        .collect();
    let chunks: Vec<&[String]> = ids.chunks(MAX_IDS_PER_CALL).collect();
    let calls = chunks.iter().map(|chunk| {
        let mut client = client.clone();
        let request = BatchGetProductsRequest {
            ids: chunk.to_vec(),
        };
        async move { client.batch_get_products(request).await }
    });
    let answers = futures::future::join_all(calls).instrument(span).await;
    // Each id's product, or the failure of the call that asked for it: a
    // read fails only when one of its own ids' calls did.
    let mut found: HashMap<&str, Result<Option<Product>, Status>> = HashMap::new();
    for (chunk, answer) in chunks.iter().zip(answers) {
        match answer {
            Ok(answer) => {
                let mut products: HashMap<String, Product> = answer
                    .into_inner()
                    .products
                    .into_iter()
                    .map(|product| (product.id.clone(), product))
                    .collect();
                for id in chunk.iter() {
                    found.insert(id, Ok(products.remove(id)));
                }
            }
            Err(status) => {
                for id in chunk.iter() {
                    found.insert(id, Err(status.clone()));
                }
            }
        }
    }
    Ok(reads
        .iter()
        .map(|read| {
            let mut products = Vec::with_capacity(read.ids.len());
            for id in &read.ids {
                match &found[id.to_string().as_str()] {
                    Ok(Some(product)) => products.push(product.clone()),
                    Ok(None) => {}
                    Err(status) => return Err(status.clone()),
                }
            }
            Ok(products)
        })
        .collect())
}

impl PriceSource for InventoryClient {
    /// The price and stock of each known product among `ids`, as read at
    /// most the quote TTL ago. An unknown product is asked about each time.
    async fn quotes(&self, ids: &[Uuid]) -> Result<HashMap<Uuid, ProductQuote>, InventoryError> {
        let mut quotes = HashMap::with_capacity(ids.len());
        let mut unheld = Vec::new();
        for id in ids {
            match self.held.get(id) {
                Some(quote) => {
                    quotes.insert(*id, quote);
                }
                None => unheld.push(*id),
            }
        }
        if unheld.is_empty() {
            return Ok(quotes);
        }
        quotes.extend(self.read_and_hold(&unheld).await?);
        Ok(quotes)
    }

    async fn requote(
        &self,
        ids: &[Uuid],
    ) -> Result<Option<HashMap<Uuid, ProductQuote>>, InventoryError> {
        if !self.held.enabled() {
            return Ok(None);
        }
        Ok(Some(self.read_and_hold(ids).await?))
    }
}

impl InventoryClient {
    /// [`InventoryClient::read`], and the quotes held for the TTL.
    async fn read_and_hold(
        &self,
        ids: &[Uuid],
    ) -> Result<HashMap<Uuid, ProductQuote>, InventoryError> {
        let read_at = Instant::now();
        let quotes = self.read(ids).await?;
        for (id, quote) in &quotes {
            self.held.put(*id, *quote, read_at);
        }
        Ok(quotes)
    }

    /// The current price and stock of each known product among `ids`.
    async fn read(&self, ids: &[Uuid]) -> Result<HashMap<Uuid, ProductQuote>, InventoryError> {
        let products = self
            .reads
            .call(Read {
                ids: ids.to_vec(),
                trace_context: platform::telemetry::current_context_map(),
            })
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
            })?;
        products
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
