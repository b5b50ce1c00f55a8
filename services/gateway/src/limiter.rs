//! A per-client token bucket: each client may spend `per_minute` requests in
//! a burst, and earns them back evenly over a minute.

use std::collections::HashMap;
use std::hash::Hash;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Past this many tracked clients, buckets that are full again are dropped
/// (a full bucket is the same as no bucket), so memory stays bounded.
const PRUNE_ABOVE: usize = 10_000;

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
    buckets: Mutex<HashMap<K, Bucket>>,
}

impl<K: Eq + Hash + Copy> RateLimiter<K> {
    /// `per_minute == 0` turns the limit off.
    pub fn per_minute(per_minute: u32) -> Self {
        RateLimiter {
            capacity: (per_minute > 0).then_some(per_minute as f64),
            buckets: Mutex::new(HashMap::new()),
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
        let mut buckets = self.buckets.lock().expect("rate limiter lock");
        if buckets.len() > PRUNE_ABOVE {
            buckets.retain(|_, b| refill(b, now, per_second, capacity) < capacity);
        }
        let bucket = buckets.entry(key).or_insert(Bucket {
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
        assert!(limiter.buckets.lock().unwrap().len() <= 2);
    }
}
