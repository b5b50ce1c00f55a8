//! A per-client token bucket: each client may spend `per_minute` requests in
//! a burst, and earns them back evenly over a minute.

use std::collections::HashMap;
use std::hash::Hash;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Past this many tracked clients, buckets that are full again are dropped
/// (a full bucket is the same as no bucket), so memory stays bounded by the
/// clients of the last minute. The next prune waits a minute (when every
/// bucket untouched since is full again) or until the map has grown to twice
/// what survived, so that many recently active clients do not make every
/// request scan them all under the lock.
const PRUNE_ABOVE: usize = 10_000;
/// How long an untouched bucket takes to fill up.
const REFILL: Duration = Duration::from_secs(60);

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    updated: Instant,
}

/// Rate limiter keyed by client (the IP address in the gateway).
#[derive(Debug)]
pub struct RateLimiter<K = IpAddr> {
    /// `None`: unlimited.
    capacity: Option<f64>,
    buckets: Mutex<Buckets<K>>,
}

#[derive(Debug)]
struct Buckets<K> {
    map: HashMap<K, Bucket>,
    /// Prune when the map grows past this, or a minute after the last prune.
    prune_above: usize,
    last_prune: Option<Instant>,
    /// Prunes run so far.
    prunes: u64,
}

impl<K: Eq + Hash + Copy> RateLimiter<K> {
    /// `per_minute == 0` turns the limit off.
    pub fn per_minute(per_minute: u32) -> Self {
        RateLimiter {
            capacity: (per_minute > 0).then_some(per_minute as f64),
            buckets: Mutex::new(Buckets {
                map: HashMap::new(),
                prune_above: PRUNE_ABOVE,
                last_prune: None,
                prunes: 0,
            }),
        }
    }

    pub fn check(&self, key: K) -> Result<(), Duration> {
        self.check_at(key, Instant::now())
    }

    /// Spends one request of `key` at `now`, or says how long until one is
    /// available again.
    pub fn check_at(&self, key: K, now: Instant) -> Result<(), Duration> {
        let Some(capacity) = self.capacity else {
            return Ok(());
        };
        let per_second = capacity / 60.0;
        let mut guard = self.buckets.lock().expect("rate limiter lock");
        let buckets = &mut *guard;
        let due = buckets
            .last_prune
            .is_none_or(|at| now.saturating_duration_since(at) >= REFILL);
        if buckets.map.len() > PRUNE_ABOVE && (due || buckets.map.len() > buckets.prune_above) {
            buckets
                .map
                .retain(|_, b| refill(b, now, per_second, capacity) < capacity);
            buckets.prune_above = PRUNE_ABOVE.max(2 * buckets.map.len());
            buckets.last_prune = Some(now);
            buckets.prunes += 1;
        }
        let bucket = buckets.map.entry(key).or_insert(Bucket {
            tokens: capacity,
            updated: now,
        });
        let tokens = refill(bucket, now, per_second, capacity);
        bucket.updated = now;
        if tokens >= 1.0 {
            bucket.tokens = tokens - 1.0;
            Ok(())
        } else {
            bucket.tokens = tokens;
            Err(Duration::from_secs_f64((1.0 - tokens) / per_second))
        }
    }
}

fn refill(bucket: &Bucket, now: Instant, per_second: f64, capacity: f64) -> f64 {
    let elapsed = now.saturating_duration_since(bucket.updated).as_secs_f64();
    (bucket.tokens + elapsed * per_second).min(capacity)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allows_the_burst_then_refuses_with_the_wait() {
        let limiter = RateLimiter::<u8>::per_minute(3);
        let t0 = Instant::now();
        for _ in 0..3 {
            assert!(limiter.check_at(1, t0).is_ok());
        }
        let wait = limiter.check_at(1, t0).unwrap_err();
        // One request is earned back every 20 s.
        assert!((19.9..=20.1).contains(&wait.as_secs_f64()), "{wait:?}");
    }

    #[test]
    fn refills_over_time() {
        let limiter = RateLimiter::<u8>::per_minute(3);
        let t0 = Instant::now();
        for _ in 0..3 {
            limiter.check_at(1, t0).unwrap();
        }
        assert!(limiter.check_at(1, t0 + Duration::from_secs(10)).is_err());
        // 10 s more: 20 s since the burst, one token back.
        assert!(limiter.check_at(1, t0 + Duration::from_secs(20)).is_ok());
        assert!(limiter.check_at(1, t0 + Duration::from_secs(20)).is_err());
    }

    #[test]
    fn clients_are_limited_separately() {
        let limiter = RateLimiter::<u8>::per_minute(1);
        let t0 = Instant::now();
        assert!(limiter.check_at(1, t0).is_ok());
        assert!(limiter.check_at(1, t0).is_err());
        assert!(limiter.check_at(2, t0).is_ok());
    }

    #[test]
    fn zero_means_unlimited() {
        let limiter = RateLimiter::<u8>::per_minute(0);
        let t0 = Instant::now();
        for _ in 0..1000 {
            assert!(limiter.check_at(1, t0).is_ok());
        }
    }

    #[test]
    fn memory_is_bounded_by_pruning_full_buckets() {
        let limiter = RateLimiter::<u32>::per_minute(60);
        let t0 = Instant::now();
        for key in 0..(PRUNE_ABOVE as u32 + 10) {
            limiter.check_at(key, t0).unwrap();
        }
        // A minute later every bucket is full again and gets pruned.
        limiter
            .check_at(u32::MAX, t0 + Duration::from_secs(61))
            .unwrap();
        assert!(limiter.buckets.lock().unwrap().map.len() <= 2);
    }

    #[test]
    fn many_active_clients_are_not_all_scanned_on_every_request() {
        let limiter = RateLimiter::<u32>::per_minute(60);
        let t0 = Instant::now();
        let clients = 4 * PRUNE_ABOVE as u32;
        for key in 0..clients {
            limiter.check_at(key, t0).unwrap();
        }
        // Every bucket was spent from a moment ago: nothing can be pruned,
        // and scanning them all for each new client would be quadratic.
        let buckets = limiter.buckets.lock().unwrap();
        assert_eq!(buckets.map.len(), clients as usize);
        assert!(buckets.prunes <= 3, "{} prunes", buckets.prunes);
    }
}
