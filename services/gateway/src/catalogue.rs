//! The product cache: `GET /products/{id}` answered from memory.
//!
//! Each entry is the product's JSON exactly as the handler would write it,
//! kept at most `PRODUCT_CACHE_TTL_MS` (default 1 s): that bound holds
//! whatever happens to notifications. Inventory announces every committed
//! product change (an admin write, stock taken by an order or returned by a
//! cancel) on NATS ([`platform::nats::product_changes_subject`]); each
//! gateway drops the entries named, so a change is usually visible in
//! milliseconds on every replica. When the NATS connection drops or comes
//! back, every entry goes (announcements may have been missed meanwhile).
//!
//! The cache itself, tombstones and all, is [`platform::product_cache`].

use uuid::Uuid;

/// Keeps `cache` in step with Inventory's announcements until the process
/// ends; runs beside the HTTP server. Without NATS the cache still serves,
/// within its TTL.
pub async fn follow_changes(
    settings: platform::config::NatsSettings,
    cache: std::sync::Arc<ProductCache>,
) -> anyhow::Result<()> {
    let on_event = {
        let cache = cache.clone();
        move |event: &async_nats::Event| {
            if matches!(
                event,
                async_nats::Event::Connected
                    | async_nats::Event::Disconnected
                    | async_nats::Event::SlowConsumer(_)
            ) {
                cache.clear();
            }
        }
    };
    let client = platform::nats::connect_in_background(&settings, "gateway", on_event).await?;
    let mut changes = client
        .subscribe(settings.product_changes_subject())
        .await
        .map_err(|e| anyhow::anyhow!("cannot subscribe to product changes: {e}"))?;
    tokio::spawn(async move {
        use futures::StreamExt;
        // Holds the client: dropping it would close the connection.
        let _client = client;
        while let Some(message) = changes.next().await {
            let ids: Vec<Uuid> = String::from_utf8_lossy(&message.payload)
                .lines()
                .filter_map(|line| line.trim().parse().ok())
                .collect();
            cache.changed(&ids);
        }
    });
    Ok(())
}

/// The gateway's products: each one's JSON as `GET /products/{id}` writes it.
pub type ProductCache = platform::product_cache::ProductCache<actix_web::web::Bytes>;
