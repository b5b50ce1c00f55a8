//! The Consumer's autopilot: its backlog read, the decision applied
//! (`crate::autopilot` decides).

use super::*;

/// What the Consumer's autopilot decided this time.
pub(super) struct Autopilot {
    pub(super) status: LagScalingStatus,
    /// The count before, when it changed.
    pub(super) scaled_from: Option<i32>,
}

/// The Consumer's replica count from its backlog, when it autoscales; with
/// the backlog unreadable, the count holds. The status changes only with
/// the count (or when the backlog becomes readable or unreadable): a status
/// that followed every read would wake the controller after every write.
pub(super) async fn consumer_autopilot(
    stack: &EcommerceStack,
    ctx: &Context,
    now: Timestamp,
) -> Option<Autopilot> {
    let auto = stack.spec.services.consumer.autoscaling.as_ref()?;
    let policy = LagPolicy {
        min_replicas: auto.min_replicas,
        max_replicas: auto.max_replicas,
        pending_per_replica: u64::try_from(auto.pending_per_replica).unwrap_or(1),
        scale_down_cooldown: Duration::from_secs(
            u64::try_from(auto.scale_down_cooldown_seconds).unwrap_or(0),
        ),
    };
    let status = stack.status.as_ref();
    let previous = status.and_then(|s| s.consumer_autoscaling.clone());
    // Just switched on: from the count the Consumer runs now.
    let running = status
        .and_then(|s| {
            s.services
                .iter()
                .find(|s| s.name == Service::Consumer.name())
        })
        .map(|s| s.desired_replicas);
    let current = previous
        .as_ref()
        .map(|p| p.replicas)
        .or(running)
        .unwrap_or(auto.min_replicas);
    let last_change = previous
        .as_ref()
        .and_then(|p| p.last_scale_time.as_ref())
        .map(|t| t.0);
    let names = event_names(stack);
    let url = nats_url_from_operator(stack);
    let read = ctx
        .lag
        .pending(&url, &names.stream, &names.consumer_name)
        .await;
    let next = match read {
        Ok(pending) => {
            let decision = decide(&policy, current, pending, last_change, now);
            LagScalingStatus {
                pending: Some(i64::try_from(pending).unwrap_or(i64::MAX)),
                replicas: decision.replicas,
                last_scale_time: if decision.scaled {
                    Some(Time(now))
                } else {
                    last_change.map(Time)
                },
                message: decision.reason,
            }
        }
        Err(why) => {
            let max = auto.max_replicas.max(auto.min_replicas);
            let replicas = current.clamp(auto.min_replicas, max);
            LagScalingStatus {
                pending: None,
                replicas,
                last_scale_time: last_change.map(Time),
                message: format!("backlog unknown ({why}): holding {replicas} replicas"),
            }
        }
    };
    let scaled_from = (next.replicas != current).then_some(current);
    let unchanged = previous.as_ref().is_some_and(|p| {
        p.replicas == next.replicas && p.pending.is_some() == next.pending.is_some()
    });
    Some(Autopilot {
        status: match (scaled_from, unchanged, previous) {
            (None, true, Some(previous)) => previous,
            _ => next,
        },
        scaled_from,
    })
}
