//! Leader election on a `coordination.k8s.io/v1` Lease, so that of several
//! operator replicas only one reconciles. The holder renews the Lease; the
//! others take it over once it has not been renewed for its duration. Every
//! write carries the `resourceVersion` read, so two replicas racing for the
//! same Lease cannot both win: the API server answers the loser 409.

use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::Api;
use kube::api::PostParams;

/// What to do with the Lease as it was read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// No Lease yet: create it, held by us.
    Create,
    /// We hold it: renew it.
    Renew,
    /// Free or expired: take it over.
    TakeOver,
    /// Another replica holds it and renewed it in time.
    Follow { holder: String },
}

fn holder(lease: &Lease) -> Option<&str> {
    lease
        .spec
        .as_ref()
        .and_then(|s| s.holder_identity.as_deref())
        .filter(|h| !h.is_empty())
}

/// Decides from the Lease as read at `now`.
pub fn decide(lease: Option<&Lease>, identity: &str, now: Timestamp) -> Decision {
    let Some(lease) = lease else {
        return Decision::Create;
    };
    let spec = lease.spec.clone().unwrap_or_default();
    match holder(lease) {
        None => Decision::TakeOver,
        Some(h) if h == identity => Decision::Renew,
        Some(h) => {
            let duration =
                SignedDuration::from_secs(i64::from(spec.lease_duration_seconds.unwrap_or(0)));
            let last_renewal = spec.renew_time.or(spec.acquire_time).map(|t| t.0);
            match last_renewal {
                Some(renewed) if renewed + duration > now => Decision::Follow {
                    holder: h.to_owned(),
                },
                _ => Decision::TakeOver,
            }
        }
    }
}

/// One replica's view of the Lease.
pub struct LeaseLock {
    api: Api<Lease>,
    name: String,
    identity: String,
    lease_duration: Duration,
}

fn is_conflict(error: &kube::Error) -> bool {
    matches!(error, kube::Error::Api(status) if status.code == 409)
}

impl LeaseLock {
    pub fn new(api: Api<Lease>, name: &str, identity: &str, lease_duration: Duration) -> Self {
        LeaseLock {
            api,
            name: name.to_owned(),
            identity: identity.to_owned(),
            lease_duration,
        }
    }

    pub fn identity(&self) -> &str {
        &self.identity
    }

    fn duration_seconds(&self) -> i32 {
        i32::try_from(self.lease_duration.as_secs()).unwrap_or(i32::MAX)
    }

    /// Acquires or renews the Lease; true while this replica is the leader.
    /// Losing a race to another replica is `Ok(false)`, not an error.
    pub async fn try_acquire_or_renew(&self, now: Timestamp) -> Result<bool, kube::Error> {
        let current = self.api.get_opt(&self.name).await?;
        let decision = decide(current.as_ref(), &self.identity, now);
        let result = match decision {
            Decision::Follow { holder } => {
                tracing::debug!(%holder, "another replica leads");
                return Ok(false);
            }
            Decision::Create => {
                let lease = Lease {
                    metadata: ObjectMeta {
                        name: Some(self.name.clone()),
                        ..ObjectMeta::default()
                    },
                    spec: Some(LeaseSpec {
                        holder_identity: Some(self.identity.clone()),
                        lease_duration_seconds: Some(self.duration_seconds()),
                        acquire_time: Some(MicroTime(now)),
                        renew_time: Some(MicroTime(now)),
                        lease_transitions: Some(0),
                        ..LeaseSpec::default()
                    }),
                };
                self.api.create(&PostParams::default(), &lease).await
            }
            Decision::Renew | Decision::TakeOver => {
                let mut lease = current.expect("decided on an existing Lease");
                let spec = lease.spec.get_or_insert_with(LeaseSpec::default);
                if decision == Decision::TakeOver {
                    spec.holder_identity = Some(self.identity.clone());
                    spec.acquire_time = Some(MicroTime(now));
                    spec.lease_transitions = Some(spec.lease_transitions.unwrap_or(0) + 1);
                }
                spec.lease_duration_seconds = Some(self.duration_seconds());
                spec.renew_time = Some(MicroTime(now));
                // metadata.resourceVersion is kept: the write fails if the
                // Lease changed since it was read.
                self.api
                    .replace(&self.name, &PostParams::default(), &lease)
                    .await
            }
        };
        match result {
            Ok(_) => Ok(true),
            // 409 on create (AlreadyExists) or replace (Conflict): another won.
            Err(e) if is_conflict(&e) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Gives the Lease up (on shutdown), so another replica takes over at
    /// once instead of after the Lease expires.
    pub async fn release(&self) -> Result<(), kube::Error> {
        let Some(mut lease) = self.api.get_opt(&self.name).await? else {
            return Ok(());
        };
        if holder(&lease) != Some(self.identity.as_str()) {
            return Ok(());
        }
        let spec = lease.spec.get_or_insert_with(LeaseSpec::default);
        spec.holder_identity = None;
        spec.lease_duration_seconds = Some(1);
        match self
            .api
            .replace(&self.name, &PostParams::default(), &lease)
            .await
        {
            Ok(_) => Ok(()),
            Err(e) if is_conflict(&e) => Ok(()),
            Err(e) => Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use http::Method;
    use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
    use k8s_openapi::jiff::{SignedDuration, Timestamp};
    use kube::Api;
    use tokio_util::sync::CancellationToken;

    use super::{Decision, LeaseLock, decide};
    use crate::fixtures::{NAMESPACE, mock_client, respond_error, respond_json, timeout_after_1s};

    const LEASE_PATH: &str =
        "/apis/coordination.k8s.io/v1/namespaces/testns/leases/operator-leader";

    fn now() -> Timestamp {
        Timestamp::from_second(1_800_000_000).unwrap()
    }

    fn lease(holder: &str, renewed: Timestamp, transitions: i32) -> Lease {
        Lease {
            metadata: ObjectMeta {
                name: Some("operator-leader".into()),
                namespace: Some(NAMESPACE.into()),
                resource_version: Some("42".into()),
                ..ObjectMeta::default()
            },
            spec: Some(LeaseSpec {
                holder_identity: Some(holder.into()),
                lease_duration_seconds: Some(15),
                acquire_time: Some(MicroTime(renewed)),
                renew_time: Some(MicroTime(renewed)),
                lease_transitions: Some(transitions),
                ..LeaseSpec::default()
            }),
        }
    }

    fn lock(client: kube::Client) -> LeaseLock {
        LeaseLock::new(
            Api::namespaced(client, NAMESPACE),
            "operator-leader",
            "replica-a",
            Duration::from_secs(15),
        )
    }

    #[test]
    fn decisions_follow_the_holder_and_the_renew_time() {
        let fresh = now() - SignedDuration::from_secs(5);
        let stale = now() - SignedDuration::from_secs(16);
        assert_eq!(decide(None, "replica-a", now()), Decision::Create);
        assert_eq!(
            decide(Some(&lease("replica-a", stale, 0)), "replica-a", now()),
            Decision::Renew
        );
        assert_eq!(
            decide(Some(&lease("replica-b", fresh, 0)), "replica-a", now()),
            Decision::Follow {
                holder: "replica-b".into()
            }
        );
        assert_eq!(
            decide(Some(&lease("replica-b", stale, 0)), "replica-a", now()),
            Decision::TakeOver
        );
        assert_eq!(
            decide(Some(&lease("", fresh, 0)), "replica-a", now()),
            Decision::TakeOver
        );
    }

    #[tokio::test]
    async fn the_first_replica_creates_the_lease_and_leads() {
        let (client, mut server) = mock_client();
        let scenario = tokio::spawn(async move {
            let (_, send, _) = server.expect(Method::GET, LEASE_PATH).await;
            respond_error(send, 404, "NotFound");
            let (created, send, _) = server
                .expect(
                    Method::POST,
                    "/apis/coordination.k8s.io/v1/namespaces/testns/leases",
                )
                .await;
            respond_json(send, &created);
            created
        });
        assert!(lock(client).try_acquire_or_renew(now()).await.unwrap());
        let created = timeout_after_1s(scenario).await;
        assert_eq!(created["metadata"]["name"], "operator-leader");
        assert_eq!(created["spec"]["holderIdentity"], "replica-a");
        assert_eq!(created["spec"]["leaseDurationSeconds"], 15);
    }

    #[tokio::test]
    async fn a_lease_renewed_in_time_by_another_replica_is_left_alone() {
        let (client, mut server) = mock_client();
        let scenario = tokio::spawn(async move {
            let (_, send, _) = server.expect(Method::GET, LEASE_PATH).await;
            respond_json(
                send,
                &lease("replica-b", now() - SignedDuration::from_secs(3), 4),
            );
            server.expect_no_more_calls().await;
        });
        assert!(!lock(client).try_acquire_or_renew(now()).await.unwrap());
        timeout_after_1s(scenario).await;
    }

    #[tokio::test]
    async fn an_expired_lease_is_taken_over_with_the_version_read() {
        let (client, mut server) = mock_client();
        let scenario = tokio::spawn(async move {
            let (_, send, _) = server.expect(Method::GET, LEASE_PATH).await;
            respond_json(
                send,
                &lease("replica-b", now() - SignedDuration::from_secs(60), 4),
            );
            let (replaced, send, _) = server.expect(Method::PUT, LEASE_PATH).await;
            respond_json(send, &replaced);
            replaced
        });
        assert!(lock(client).try_acquire_or_renew(now()).await.unwrap());
        let replaced = timeout_after_1s(scenario).await;
        assert_eq!(replaced["metadata"]["resourceVersion"], "42");
        assert_eq!(replaced["spec"]["holderIdentity"], "replica-a");
        assert_eq!(replaced["spec"]["leaseTransitions"], 5);
    }

    #[tokio::test]
    async fn losing_the_race_for_an_expired_lease_is_not_leading() {
        let (client, mut server) = mock_client();
        let scenario = tokio::spawn(async move {
            let (_, send, _) = server.expect(Method::GET, LEASE_PATH).await;
            respond_json(
                send,
                &lease("replica-b", now() - SignedDuration::from_secs(60), 4),
            );
            let (_, send, _) = server.expect(Method::PUT, LEASE_PATH).await;
            respond_error(send, 409, "Conflict");
        });
        assert!(!lock(client).try_acquire_or_renew(now()).await.unwrap());
        timeout_after_1s(scenario).await;
    }

    #[tokio::test]
    async fn release_frees_the_lease_held_by_this_replica() {
        let (client, mut server) = mock_client();
        let scenario = tokio::spawn(async move {
            let (_, send, _) = server.expect(Method::GET, LEASE_PATH).await;
            respond_json(send, &lease("replica-a", now(), 1));
            let (released, send, _) = server.expect(Method::PUT, LEASE_PATH).await;
            respond_json(send, &released);
            released
        });
        lock(client).release().await.unwrap();
        let released = timeout_after_1s(scenario).await;
        assert!(
            released["spec"].get("holderIdentity").is_none(),
            "{released}"
        );
    }

    #[tokio::test]
    async fn the_leader_stops_its_controller_when_another_replica_took_the_lease() {
        let (client, mut server) = mock_client();
        let stop = CancellationToken::new();
        let keeper = tokio::spawn(crate::runner::keep_leading(
            Arc::new(lock(client)),
            Duration::from_millis(10),
            Duration::from_secs(10),
            stop.clone(),
        ));
        // One renewal succeeds, then the Lease belongs to another replica.
        let (_, send, _) = server.expect(Method::GET, LEASE_PATH).await;
        respond_json(send, &lease("replica-a", Timestamp::now(), 1));
        let (renewed, send, _) = server.expect(Method::PUT, LEASE_PATH).await;
        respond_json(send, &renewed);
        let (_, send, _) = server.expect(Method::GET, LEASE_PATH).await;
        respond_json(send, &lease("replica-b", Timestamp::now(), 2));
        assert!(timeout_after_1s(keeper).await, "leadership lost");
        assert!(stop.is_cancelled(), "the controller is told to stop");
    }

    #[tokio::test]
    async fn a_renewal_that_hangs_stops_the_controller_within_the_renew_deadline() {
        let (client, mut server) = mock_client();
        let stop = CancellationToken::new();
        let started = std::time::Instant::now();
        let keeper = tokio::spawn(crate::runner::keep_leading(
            Arc::new(lock(client)),
            Duration::from_millis(10),
            Duration::from_millis(300),
            stop.clone(),
        ));
        // The read answers; the write is never answered, as a hung API server
        // connection would leave it. Holding the responder keeps it pending.
        let (_, send, _) = server.expect(Method::GET, LEASE_PATH).await;
        respond_json(send, &lease("replica-a", Timestamp::now(), 1));
        let (_, _stalled, _) = server.expect(Method::PUT, LEASE_PATH).await;
        assert!(timeout_after_1s(keeper).await, "leadership given up");
        assert!(stop.is_cancelled(), "the controller is told to stop");
        let elapsed = started.elapsed();
        assert!(
            elapsed >= Duration::from_millis(300) && elapsed < Duration::from_millis(1500),
            "stopped at the renew deadline, not later: {elapsed:?}"
        );
    }
}
