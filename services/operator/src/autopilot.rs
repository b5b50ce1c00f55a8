//! Autopilot: the Consumer's replica count follows its backlog, the order
//! events pending for its durable on JetStream. The decision is a pure
//! function (tested without NATS); `NatsLag` reads the backlog.

use std::collections::HashMap;
use std::time::Duration;

use futures::future::BoxFuture;
use k8s_openapi::jiff::Timestamp;
use tokio::sync::Mutex;

/// How the Consumer scales (from `spec.services.consumer.autoscaling`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LagPolicy {
    pub min_replicas: i32,
    pub max_replicas: i32,
    /// Pending events one replica is expected to keep up with.
    pub pending_per_replica: u64,
    /// No scale-down sooner than this after the last change.
    pub scale_down_cooldown: Duration,
}

/// Scaling down waits until the backlog would fit in fewer replicas with
/// this much room: between the two thresholds the count holds, so a backlog
/// hovering around a boundary does not flap.
const SCALE_DOWN_HEADROOM: f64 = 1.25;

/// What the autopilot decided, and why (for the status and the event).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    pub replicas: i32,
    /// Whether `replicas` differs from the current count.
    pub scaled: bool,
    pub reason: String,
}

fn replicas_for(pending: u64, per_replica: u64) -> i64 {
    let per_replica = per_replica.max(1);
    i64::try_from(pending.div_ceil(per_replica)).unwrap_or(i64::MAX)
}

/// Up at once to what the backlog needs; down only after the cooldown and
/// once the backlog fits fewer replicas with headroom; never outside
/// `[min, max]`.
pub fn decide(
    policy: &LagPolicy,
    current: i32,
    pending: u64,
    last_change: Option<Timestamp>,
    now: Timestamp,
) -> Decision {
    let (min, max) = (
        policy.min_replicas,
        policy.max_replicas.max(policy.min_replicas),
    );
    let clamp = |n: i64| n.clamp(i64::from(min), i64::from(max)) as i32;
    let per_replica = policy.pending_per_replica;
    let needed = clamp(replicas_for(pending, per_replica));
    let with_headroom = clamp(replicas_for(
        (pending as f64 * SCALE_DOWN_HEADROOM).ceil() as u64,
        per_replica,
    ));
    let within_bounds = current.clamp(min, max);
    let decision = |replicas: i32, reason: String| Decision {
        replicas,
        scaled: replicas != current,
        reason,
    };
    if needed > within_bounds {
        return decision(
            needed,
            format!("{pending} events pending need {needed} replicas at {per_replica} each"),
        );
    }
    if with_headroom < within_bounds {
        let cooled = last_change.is_none_or(|at| {
            now.duration_since(at).as_secs_f64() >= policy.scale_down_cooldown.as_secs_f64()
        });
        if cooled {
            return decision(
                with_headroom,
                format!("{pending} events pending fit {with_headroom} replicas"),
            );
        }
        return decision(
            within_bounds,
            format!(
                "{pending} events pending would fit {with_headroom} replicas; holding {within_bounds} until {}s after the last change",
                policy.scale_down_cooldown.as_secs()
            ),
        );
    }
    decision(
        within_bounds,
        format!("{pending} events pending: {within_bounds} replicas keep up"),
    )
}

/// Where the backlog is read from.
pub trait LagSource: Send + Sync {
    /// The durable's pending events (not yet delivered plus delivered and
    /// not yet acknowledged), or why they cannot be read.
    fn pending<'a>(
        &'a self,
        url: &'a str,
        stream: &'a str,
        durable: &'a str,
    ) -> BoxFuture<'a, Result<u64, String>>;
}

/// Bounds each look at NATS: a reconcile must not hang on it.
const NATS_TIMEOUT: Duration = Duration::from_secs(3);

/// Reads the backlog from JetStream, one connection per NATS URL, kept.
#[derive(Default)]
pub struct NatsLag {
    clients: Mutex<HashMap<String, async_nats::Client>>,
}

impl NatsLag {
    async fn client(&self, url: &str) -> Result<async_nats::Client, String> {
        if let Some(client) = self.clients.lock().await.get(url) {
            return Ok(client.clone());
        }
        // Connected outside the lock: one unreachable NATS must not hold up
        // the other stacks' reads.
        let client = tokio::time::timeout(NATS_TIMEOUT, async_nats::connect(url))
            .await
            .map_err(|_| format!("no answer from NATS at {url}"))?
            .map_err(|e| format!("cannot connect to NATS at {url}: {e}"))?;
        let mut clients = self.clients.lock().await;
        Ok(clients.entry(url.to_owned()).or_insert(client).clone())
    }
}

impl LagSource for NatsLag {
    fn pending<'a>(
        &'a self,
        url: &'a str,
        stream: &'a str,
        durable: &'a str,
    ) -> BoxFuture<'a, Result<u64, String>> {
        Box::pin(async move {
            let client = self.client(url).await?;
            let jetstream = async_nats::jetstream::new(client);
            let read = async {
                let stream = jetstream
                    .get_stream_no_info(stream)
                    .await
                    .map_err(|e| format!("stream {stream}: {e}"))?;
                let info = stream
                    .consumer_info(durable)
                    .await
                    .map_err(|e| format!("consumer {durable}: {e}"))?;
                Ok(info.num_pending + info.num_ack_pending as u64)
            };
            tokio::time::timeout(NATS_TIMEOUT, read)
                .await
                .map_err(|_| format!("no answer from NATS at {url}"))?
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const POLICY: LagPolicy = LagPolicy {
        min_replicas: 1,
        max_replicas: 8,
        pending_per_replica: 1000,
        scale_down_cooldown: Duration::from_secs(300),
    };

    fn at(seconds: i64) -> Timestamp {
        Timestamp::from_second(1_800_000_000 + seconds).unwrap()
    }

    #[test]
    fn a_rising_backlog_scales_up_at_once() {
        let d = decide(&POLICY, 1, 4_200, Some(at(0)), at(10));
        assert_eq!((d.replicas, d.scaled), (5, true), "{}", d.reason);
        // Even right after a change: a backlog is never left to grow.
        let d = decide(&POLICY, 5, 9_000, Some(at(10)), at(11));
        assert_eq!(d.replicas, 8, "at most max: {}", d.reason);
    }

    #[test]
    fn an_idle_consumer_scales_down_after_the_cooldown_never_below_min() {
        let held = decide(&POLICY, 6, 0, Some(at(0)), at(299));
        assert_eq!((held.replicas, held.scaled), (6, false), "{}", held.reason);
        assert!(held.reason.contains("holding"), "{}", held.reason);
        let down = decide(&POLICY, 6, 0, Some(at(0)), at(300));
        assert_eq!(
            (down.replicas, down.scaled),
            (1, true),
            "min 1: {}",
            down.reason
        );
        let floor = LagPolicy {
            min_replicas: 2,
            ..POLICY
        };
        assert_eq!(decide(&floor, 6, 0, None, at(0)).replicas, 2);
    }

    #[test]
    fn a_backlog_hovering_at_a_boundary_does_not_flap() {
        // 3 replicas for 3,000; at 2,100-3,000 they are kept (2 would have
        // no headroom), whatever the time since the last change.
        for pending in [2_100, 2_500, 3_000] {
            let d = decide(&POLICY, 3, pending, None, at(10_000));
            assert_eq!(
                (d.replicas, d.scaled),
                (3, false),
                "{pending}: {}",
                d.reason
            );
        }
        // Only a clearly smaller backlog takes one away.
        assert_eq!(decide(&POLICY, 3, 1_500, None, at(10_000)).replicas, 2);
        // And one more event than 3 replicas take adds the fourth.
        assert_eq!(decide(&POLICY, 3, 3_001, None, at(10_000)).replicas, 4);
    }

    #[test]
    fn a_count_outside_the_bounds_is_brought_inside() {
        let d = decide(&POLICY, 12, 0, Some(at(0)), at(1));
        assert_eq!((d.replicas, d.scaled), (8, true));
        let d = decide(&POLICY, 0, 0, Some(at(0)), at(1));
        assert_eq!((d.replicas, d.scaled), (1, true));
    }

    #[tokio::test]
    async fn the_backlog_is_read_from_jetstream() {
        let nats = testkit::TestNats::new();
        let jetstream = nats.jetstream().await;
        jetstream
            .create_stream(async_nats::jetstream::stream::Config {
                name: nats.stream.clone(),
                subjects: vec![format!("{}.>", nats.subject_prefix)],
                ..Default::default()
            })
            .await
            .unwrap();
        let stream = jetstream.get_stream(&nats.stream).await.unwrap();
        stream
            .create_consumer(async_nats::jetstream::consumer::pull::Config {
                durable_name: Some("order-events".into()),
                ..Default::default()
            })
            .await
            .unwrap();
        for i in 0..7 {
            jetstream
                .publish(
                    format!("{}.created", nats.subject_prefix),
                    format!("{i}").into(),
                )
                .await
                .unwrap()
                .await
                .unwrap();
        }
        let lag = NatsLag::default();
        assert_eq!(
            lag.pending(&nats.url, &nats.stream, "order-events").await,
            Ok(7)
        );
        let missing = lag.pending(&nats.url, &nats.stream, "nobody").await;
        assert!(missing.unwrap_err().contains("consumer nobody"));
        jetstream.delete_stream(&nats.stream).await.unwrap();
    }
}
