//! A product cache bounded in time: what a service read of Inventory's
//! products, kept at most a TTL and at most a number of products.
//!
//! The gateway keeps each product's JSON for `GET /products/{id}` and drops
//! it when Inventory announces a change; Order keeps the prices and stock it
//! prices orders from (its TTL alone bounds them).
//!
//! A read that started before a change was announced must not store what it
//! read after the announcement: each id keeps the instant of its last
//! announcement (a tombstone) for one TTL, and a fill older than that is
//! answered but not kept.

use std::collections::HashMap;
use std::sync::RwLock;
use std::time::{Duration, Instant};

use uuid::Uuid;

enum Slot<V> {
    Fresh { value: V, read_at: Instant },
    Changed { at: Instant },
}

pub struct ProductCache<V> {
    ttl: Duration,
    capacity: usize,
    held: RwLock<Held<V>>,
}

struct Held<V> {
    slots: HashMap<Uuid, Slot<V>>,
    /// When everything was last dropped: fills that started before are not
    /// kept, whichever product they read.
    cleared_at: Option<Instant>,
}

impl<V: Clone> ProductCache<V> {
    /// A cache of at most `capacity` products; a TTL of zero turns it off.
    pub fn new(ttl: Duration, capacity: usize) -> Self {
        ProductCache {
            ttl,
            capacity,
            held: RwLock::new(Held {
                slots: HashMap::new(),
                cleared_at: None,
            }),
        }
    }

    pub fn enabled(&self) -> bool {
        !self.ttl.is_zero() && self.capacity > 0
    }

    /// What is held of the product, when it is fresh.
    pub fn get(&self, id: &Uuid) -> Option<V> {
        let held = self.held.read().unwrap_or_else(|e| e.into_inner());
        match held.slots.get(id)? {
            Slot::Fresh { value, read_at } if read_at.elapsed() < self.ttl => Some(value.clone()),
            _ => None,
        }
    }

    /// Keeps `value`, read from Inventory by a request that started at
    /// `read_at`, unless the product changed since.
    pub fn put(&self, id: Uuid, value: V, read_at: Instant) {
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
        slots.insert(id, Slot::Fresh { value, read_at });
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

#[cfg(test)]
mod tests {
    use super::*;

    fn json(text: &'static str) -> String {
        text.to_owned()
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
