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
//! A read that started before a change was announced must not store what it
//! read after the announcement: each id keeps the instant of its last
//! announcement (a tombstone) for one TTL, and a fill older than that is
//! answered but not kept.

use std::collections::HashMap;
use std::sync::RwLock;
use std::time::{Duration, Instant};

use actix_web::web::Bytes;
use uuid::Uuid;

enum Slot {
    Fresh { json: Bytes, read_at: Instant },
    Changed { at: Instant },
}

pub struct ProductCache {
    ttl: Duration,
    capacity: usize,
    held: RwLock<Held>,
}

#[derive(Default)]
struct Held {
    slots: HashMap<Uuid, Slot>,
    /// When everything was last dropped: fills that started before are not
    /// kept, whichever product they read.
    cleared_at: Option<Instant>,
}

impl ProductCache {
    /// A cache of at most `capacity` products; a TTL of zero turns it off.
    pub fn new(ttl: Duration, capacity: usize) -> Self {
        ProductCache {
            ttl,
            capacity,
            held: RwLock::new(Held::default()),
        }
    }

    pub fn enabled(&self) -> bool {
        !self.ttl.is_zero() && self.capacity > 0
    }

    /// The product's JSON when a fresh copy is held.
    pub fn get(&self, id: &Uuid) -> Option<Bytes> {
        let held = self.held.read().unwrap_or_else(|e| e.into_inner());
        match held.slots.get(id)? {
            Slot::Fresh { json, read_at } if read_at.elapsed() < self.ttl => Some(json.clone()),
            _ => None,
        }
    }

    /// Keeps `json`, read from Inventory by a request that started at
    /// `read_at`, unless the product changed since.
    pub fn put(&self, id: Uuid, json: Bytes, read_at: Instant) {
        if !self.enabled() {
            return;
        }
        let mut held = self.held.write().unwrap_or_else(|e| e.into_inner());
        if held.cleared_at.is_some_and(|at| at >= read_at) {
            return;
        }
        let slots = &mut held.slots;
        match slots.get(&id) {
            Some(Slot::Changed { at }) if *at >= read_at => return,
            Some(Slot::Fresh { read_at: held, .. }) if *held >= read_at => return,
            _ => {}
        }
        if slots.len() >= self.capacity && !slots.contains_key(&id) {
            let ttl = self.ttl;
            slots.retain(|_, slot| match slot {
                Slot::Fresh { read_at, .. } => read_at.elapsed() < ttl,
                Slot::Changed { at } => at.elapsed() < ttl,
            });
            if slots.len() >= self.capacity {
                return;
            }
        }
        slots.insert(id, Slot::Fresh { json, read_at });
    }

    /// Drops what is held of these products (they changed).
    pub fn changed(&self, ids: &[Uuid]) {
        if !self.enabled() {
            return;
        }
        let now = Instant::now();
        let mut held = self.held.write().unwrap_or_else(|e| e.into_inner());
        for id in ids {
            held.slots.insert(*id, Slot::Changed { at: now });
        }
    }

    /// Drops everything (announcements may have been missed).
    pub fn clear(&self) {
        let mut held = self.held.write().unwrap_or_else(|e| e.into_inner());
        held.slots.clear();
        held.cleared_at = Some(Instant::now());
    }
}

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

#[cfg(test)]
mod tests {
    use super::*;

    fn json(text: &'static str) -> Bytes {
        Bytes::from_static(text.as_bytes())
    }

    #[test]
    fn a_product_is_served_until_its_ttl_and_then_read_again() {
        let cache = ProductCache::new(Duration::from_millis(50), 10);
        let id = Uuid::new_v4();
        cache.put(id, json("{}"), Instant::now());
        assert_eq!(cache.get(&id), Some(json("{}")));
        std::thread::sleep(Duration::from_millis(60));
        assert_eq!(cache.get(&id), None);
    }

    #[test]
    fn a_read_that_started_before_a_change_is_not_kept() {
        let cache = ProductCache::new(Duration::from_secs(60), 10);
        let id = Uuid::new_v4();
        let started = Instant::now();
        cache.changed(&[id]);
        cache.put(id, json("old"), started);
        assert_eq!(cache.get(&id), None, "the stale read was kept");
        cache.put(id, json("new"), Instant::now());
        assert_eq!(cache.get(&id), Some(json("new")));
    }

    #[test]
    fn a_change_drops_the_product_and_clearing_drops_everything() {
        let cache = ProductCache::new(Duration::from_secs(60), 10);
        let (a, b) = (Uuid::new_v4(), Uuid::new_v4());
        let before = Instant::now();
        cache.put(a, json("a"), before);
        cache.put(b, json("b"), before);
        cache.changed(&[a]);
        assert_eq!(cache.get(&a), None);
        assert_eq!(cache.get(&b), Some(json("b")));
        cache.clear();
        assert_eq!(cache.get(&b), None);
        // A read in flight across the clear is not kept either.
        let other = Uuid::new_v4();
        cache.put(other, json("x"), before);
        assert_eq!(cache.get(&other), None);
    }

    #[test]
    fn it_holds_no_more_than_its_capacity_and_a_zero_ttl_turns_it_off() {
        let cache = ProductCache::new(Duration::from_secs(60), 2);
        let ids: Vec<Uuid> = (0..3).map(|_| Uuid::new_v4()).collect();
        for id in &ids {
            cache.put(*id, json("p"), Instant::now());
        }
        let held = ids.iter().filter(|id| cache.get(id).is_some()).count();
        assert_eq!(held, 2);
        let off = ProductCache::new(Duration::ZERO, 10);
        off.put(ids[0], json("p"), Instant::now());
        assert_eq!(off.get(&ids[0]), None);
    }
}
