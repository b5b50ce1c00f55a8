//! The operator process: settings, the metrics endpoint, leader election,
//! the controller, and shutdown on SIGTERM.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::jiff::Timestamp;
use kube::Client;
use kube::api::{Api, ListParams};
use prometheus_client::registry::Registry;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::controller::{self, Context};
use crate::crd::EcommerceStack;
use crate::leader::LeaseLock;
use crate::metrics::{self, Health, Metrics};

/// The operator's settings, from the environment.
#[derive(Debug, Clone, PartialEq)]
pub struct Settings {
    /// Watch stacks in this namespace only; all namespaces when unset.
    pub watch_namespace: Option<String>,
    /// Where `/metrics`, `/healthz` and `/readyz` are served.
    pub metrics_addr: SocketAddr,
    /// `None` when `LEADER_ELECTION=false` (a single replica).
    pub leader_election: Option<LeaderElection>,
    /// `POD_NAME`: this replica, named in the Events it records.
    pub pod_name: Option<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct LeaderElection {
    pub namespace: String,
    pub lease_name: String,
    pub identity: String,
    pub lease_duration: Duration,
    pub renew_interval: Duration,
}

impl Settings {
    pub fn from_env() -> anyhow::Result<Self> {
        Self::from_lookup(|name| std::env::var(name).ok().filter(|v| !v.trim().is_empty()))
    }

    /// Reads settings through `lookup` (the environment, or a map in tests).
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> anyhow::Result<Self> {
        let metrics_addr = lookup("METRICS_ADDR")
            .unwrap_or_else(|| "0.0.0.0:8080".to_owned())
            .parse()
            .context("METRICS_ADDR must be host:port, e.g. 0.0.0.0:8080")?;
        let leader_election = match lookup("LEADER_ELECTION").as_deref() {
            None | Some("true") => true,
            Some("false") => false,
            Some(other) => bail!("LEADER_ELECTION must be true or false, not {other:?}"),
        };
        let seconds = |name: &str, default: u64| -> anyhow::Result<Duration> {
            match lookup(name) {
                None => Ok(Duration::from_secs(default)),
                Some(raw) => raw
                    .parse::<u64>()
                    .ok()
                    .filter(|s| *s > 0)
                    .map(Duration::from_secs)
                    .with_context(|| {
                        format!("{name} must be a positive number of seconds, not {raw:?}")
                    }),
            }
        };
        let leader_election = if leader_election {
            let lease_duration = seconds("LEASE_DURATION_SECONDS", 15)?;
            let renew_interval = seconds("LEASE_RENEW_SECONDS", 5)?;
            if renew_interval >= lease_duration {
                bail!("LEASE_RENEW_SECONDS must be less than LEASE_DURATION_SECONDS");
            }
            Some(LeaderElection {
                namespace: lookup("POD_NAMESPACE")
                    .context("POD_NAMESPACE must be set (the Lease lives there) unless LEADER_ELECTION=false")?,
                lease_name: lookup("LEASE_NAME").unwrap_or_else(|| "ecommerce-operator-leader".to_owned()),
                identity: lookup("POD_NAME")
                    .or_else(|| lookup("HOSTNAME"))
                    .context("POD_NAME (or HOSTNAME) must be set: it names this replica in the Lease")?,
                lease_duration,
                renew_interval,
            })
        } else {
            None
        };
        Ok(Settings {
            watch_namespace: lookup("WATCH_NAMESPACE"),
            metrics_addr,
            leader_election,
            pod_name: lookup("POD_NAME"),
        })
    }
}

/// Completes on SIGTERM (Kubernetes stopping the pod) or Ctrl-C.
pub async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("SIGTERM handler");
        tokio::select! {
            _ = ctrl_c => {},
            _ = term.recv() => {},
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}

/// Runs until `stop` completes (then exits cleanly, giving the Lease up) or
/// leadership is lost (an error: the process restarts as a follower).
pub async fn run(
    settings: Settings,
    stop: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let client = Client::try_default()
        .await
        .context("no Kubernetes configuration (in-cluster or kubeconfig)")?;
    run_with_client(client, settings, stop).await
}

/// `run` with a given client (a mock in tests).
pub async fn run_with_client(
    client: Client,
    settings: Settings,
    stop: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let mut registry = Registry::default();
    let metrics = Metrics::register(&mut registry);
    let health = Health::new(registry);

    let shutdown = CancellationToken::new();
    tokio::spawn({
        let shutdown = shutdown.clone();
        async move {
            stop.await;
            info!("shutting down");
            shutdown.cancel();
        }
    });
    let listener = tokio::net::TcpListener::bind(settings.metrics_addr)
        .await
        .with_context(|| format!("binding METRICS_ADDR {}", settings.metrics_addr))?;
    let server = tokio::spawn({
        let shutdown = shutdown.clone();
        let app = metrics::router(health.clone());
        async move {
            axum::serve(listener, app)
                .with_graceful_shutdown(shutdown.cancelled_owned())
                .await
        }
    });

    let result = operate(client, settings, &health, &metrics, &shutdown).await;
    shutdown.cancel();
    let _ = server.await;
    result
}

/// Checks the CRD is served, then leads (or just runs) the controller.
async fn operate(
    client: Client,
    settings: Settings,
    health: &Health,
    metrics: &Metrics,
    shutdown: &CancellationToken,
) -> anyhow::Result<()> {
    // Where the operator may list: with WATCH_NAMESPACE its RBAC is a Role there.
    let stacks: Api<EcommerceStack> = match &settings.watch_namespace {
        Some(namespace) => Api::namespaced(client.clone(), namespace),
        None => Api::all(client.clone()),
    };
    stacks.list(&ListParams::default().limit(1)).await.context(
        "the EcommerceStack CRD is not served; install it: kubectl apply -f k8s/crd.yaml",
    )?;
    health.set_ready();

    let ctx = Context::new(client.clone(), metrics.clone(), settings.pod_name.clone());
    let namespace = settings.watch_namespace.clone();
    match settings.leader_election {
        None => {
            controller::run(
                ctx,
                namespace.as_deref(),
                shutdown.clone().cancelled_owned(),
            )
            .await;
            Ok(())
        }
        Some(election) => {
            let lock = Arc::new(LeaseLock::new(
                Api::<Lease>::namespaced(client, &election.namespace),
                &election.lease_name,
                &election.identity,
                election.lease_duration,
            ));
            lead(
                lock,
                &election,
                ctx,
                namespace.as_deref(),
                shutdown,
                metrics,
            )
            .await
        }
    }
}

/// Waits to become leader, runs the controller while renewing the Lease.
async fn lead(
    lock: Arc<LeaseLock>,
    election: &LeaderElection,
    ctx: Arc<Context>,
    namespace: Option<&str>,
    shutdown: &CancellationToken,
    metrics: &Metrics,
) -> anyhow::Result<()> {
    info!(identity = lock.identity(), lease = %election.lease_name, "waiting to lead");
    let renew_deadline = election
        .lease_duration
        .saturating_sub(election.renew_interval);
    loop {
        // A hung call must not keep a follower from ever trying again.
        match tokio::time::timeout(renew_deadline, lock.try_acquire_or_renew(Timestamp::now()))
            .await
        {
            Ok(Ok(true)) => break,
            Ok(Ok(false)) => {}
            Ok(Err(error)) => warn!(%error, "could not read or write the Lease"),
            Err(_) => warn!(timeout = ?renew_deadline, "the Lease call did not answer in time"),
        }
        tokio::select! {
            _ = shutdown.cancelled() => return Ok(()),
            _ = tokio::time::sleep(election.renew_interval) => {}
        }
    }
    info!(identity = lock.identity(), "leading");
    metrics.leader.set(1);

    let controller_stop = shutdown.child_token();
    let mut keeper = tokio::spawn(keep_leading(
        lock.clone(),
        election.renew_interval,
        renew_deadline,
        controller_stop.clone(),
    ));
    let controller = controller::run(ctx, namespace, controller_stop.clone().cancelled_owned());
    // On shutdown the controller drains its running reconciliations; when the
    // Lease is lost it is dropped at once, aborting them: another replica
    // may already be reconciling the same stacks.
    let lost = tokio::select! {
        () = controller => {
            controller_stop.cancel();
            keeper.await.unwrap_or(true)
        }
        lost = &mut keeper => lost.unwrap_or(true),
    };
    metrics.leader.set(0);
    if lost {
        bail!("lost the leader Lease; restarting as a follower");
    }
    match tokio::time::timeout(renew_deadline, lock.release()).await {
        Ok(Ok(())) => {}
        Ok(Err(error)) => warn!(%error, "could not release the Lease; it expires by itself"),
        Err(_) => warn!("releasing the Lease did not answer in time; it expires by itself"),
    }
    Ok(())
}

/// Renews the Lease every `renew_interval`. Returns true (and stops the
/// controller) when another replica took it or leadership can no longer be
/// proven: no renewal succeeded within `renew_deadline` of the last one sent.
/// Every call is bounded by that deadline, so a hung API call cannot keep an
/// old leader reconciling after its Lease expired. False when stopped.
pub async fn keep_leading(
    lock: Arc<LeaseLock>,
    renew_interval: Duration,
    renew_deadline: Duration,
    stop: CancellationToken,
) -> bool {
    // The Lease's renewTime is taken before the call is sent: count from there.
    let mut held_since = Instant::now();
    loop {
        tokio::select! {
            _ = stop.cancelled() => return false,
            _ = tokio::time::sleep(renew_interval) => {}
        }
        let sent = Instant::now();
        let remaining = (held_since + renew_deadline).saturating_duration_since(sent);
        let renewal = tokio::select! {
            _ = stop.cancelled() => return false,
            renewal = tokio::time::timeout(remaining, lock.try_acquire_or_renew(Timestamp::now())) => renewal,
        };
        match renewal {
            Ok(Ok(true)) => held_since = sent,
            Ok(Ok(false)) => {
                warn!("another replica holds the Lease");
                stop.cancel();
                return true;
            }
            Ok(Err(error)) => {
                warn!(%error, "could not renew the Lease");
                if held_since.elapsed() >= renew_deadline {
                    stop.cancel();
                    return true;
                }
            }
            Err(_) => {
                warn!(deadline = ?renew_deadline, "no Lease renewal answered within the renew deadline");
                stop.cancel();
                return true;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::time::Duration;

    use http::Method;
    use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
    use k8s_openapi::jiff::Timestamp;
    use serde_json::json;

    use super::{LeaderElection, Settings, run_with_client};
    use crate::fixtures::{mock_client, respond_error, respond_json, timeout_after_1s};

    fn settings(vars: &[(&str, &str)]) -> anyhow::Result<Settings> {
        let vars: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Settings::from_lookup(|name| vars.get(name).cloned())
    }

    #[test]
    fn leader_election_is_on_by_default_and_needs_the_pod_identity() {
        let s = settings(&[("POD_NAMESPACE", "ops"), ("POD_NAME", "op-1")]).unwrap();
        assert_eq!(
            s.leader_election,
            Some(LeaderElection {
                namespace: "ops".into(),
                lease_name: "ecommerce-operator-leader".into(),
                identity: "op-1".into(),
                lease_duration: Duration::from_secs(15),
                renew_interval: Duration::from_secs(5),
            })
        );
        assert_eq!(s.metrics_addr.to_string(), "0.0.0.0:8080");
        assert_eq!(s.watch_namespace, None);
        let missing = settings(&[("POD_NAME", "op-1")]).unwrap_err();
        assert!(format!("{missing:#}").contains("POD_NAMESPACE"));
    }

    #[test]
    fn malformed_settings_name_the_variable() {
        for (vars, name) in [
            (vec![("LEADER_ELECTION", "yes")], "LEADER_ELECTION"),
            (
                vec![("LEADER_ELECTION", "false"), ("METRICS_ADDR", "8080")],
                "METRICS_ADDR",
            ),
            (
                vec![
                    ("POD_NAMESPACE", "ops"),
                    ("POD_NAME", "a"),
                    ("LEASE_DURATION_SECONDS", "0"),
                ],
                "LEASE_DURATION_SECONDS",
            ),
            (
                vec![
                    ("POD_NAMESPACE", "ops"),
                    ("POD_NAME", "a"),
                    ("LEASE_RENEW_SECONDS", "20"),
                ],
                "LEASE_RENEW_SECONDS",
            ),
        ] {
            let error = settings(&vars).unwrap_err();
            assert!(format!("{error:#}").contains(name), "{error:#}");
        }
        let single =
            settings(&[("LEADER_ELECTION", "false"), ("WATCH_NAMESPACE", "shop")]).unwrap();
        assert_eq!(single.leader_election, None);
        assert_eq!(single.watch_namespace.as_deref(), Some("shop"));
    }

    fn follower_settings() -> Settings {
        Settings {
            watch_namespace: None,
            metrics_addr: "127.0.0.1:0".parse().unwrap(),
            leader_election: Some(LeaderElection {
                namespace: "testns".into(),
                lease_name: "operator-leader".into(),
                identity: "replica-a".into(),
                lease_duration: Duration::from_secs(15),
                renew_interval: Duration::from_millis(20),
            }),
            pod_name: Some("replica-a".into()),
        }
    }

    #[tokio::test]
    async fn without_the_crd_the_operator_stops_with_a_hint() {
        let (client, mut server) = mock_client();
        let scenario = tokio::spawn(async move {
            let (_, send, _) = server
                .expect(
                    Method::GET,
                    "/apis/ecommerce.example.com/v1alpha1/ecommercestacks",
                )
                .await;
            respond_error(send, 404, "NotFound");
        });
        let error = run_with_client(client, follower_settings(), std::future::pending())
            .await
            .unwrap_err();
        timeout_after_1s(scenario).await;
        assert!(
            format!("{error:#}").contains("kubectl apply -f k8s/crd.yaml"),
            "{error:#}"
        );
    }

    #[tokio::test]
    async fn a_follower_waits_for_the_lease_and_exits_cleanly_on_shutdown() {
        let (client, mut server) = mock_client();
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let scenario = tokio::spawn(async move {
            let (_, send, _) = server
                .expect(
                    Method::GET,
                    "/apis/ecommerce.example.com/v1alpha1/ecommercestacks",
                )
                .await;
            respond_json(
                send,
                &json!({"apiVersion": "ecommerce.example.com/v1alpha1", "kind": "EcommerceStackList", "metadata": {}, "items": []}),
            );
            // Another replica holds the Lease: twice asked, twice left alone.
            for _ in 0..2 {
                let (_, send, _) = server
                    .expect(
                        Method::GET,
                        "/apis/coordination.k8s.io/v1/namespaces/testns/leases/operator-leader",
                    )
                    .await;
                respond_json(
                    send,
                    &Lease {
                        metadata: ObjectMeta {
                            name: Some("operator-leader".into()),
                            resource_version: Some("7".into()),
                            ..ObjectMeta::default()
                        },
                        spec: Some(LeaseSpec {
                            holder_identity: Some("replica-b".into()),
                            lease_duration_seconds: Some(15),
                            renew_time: Some(MicroTime(Timestamp::now())),
                            ..LeaseSpec::default()
                        }),
                    },
                );
            }
            // SIGTERM, as Kubernetes stops the pod.
            stop_tx.send(()).unwrap();
            server.expect_no_more_calls().await;
        });
        let operator = tokio::spawn(run_with_client(client, follower_settings(), async {
            let _ = stop_rx.await;
        }));
        timeout_after_1s(scenario).await;
        timeout_after_1s(operator).await.expect("a clean exit");
    }

    /// A Lease held by `holder`, as the mock API server answers it.
    fn held_by(holder: Option<&str>) -> Lease {
        Lease {
            metadata: ObjectMeta {
                name: Some("operator-leader".into()),
                resource_version: Some("8".into()),
                ..ObjectMeta::default()
            },
            spec: Some(LeaseSpec {
                holder_identity: holder.map(str::to_owned),
                lease_duration_seconds: Some(15),
                renew_time: Some(MicroTime(Timestamp::now())),
                ..LeaseSpec::default()
            }),
        }
    }

    #[tokio::test]
    async fn the_leader_watches_stacks_and_owned_objects_then_releases_the_lease_on_shutdown() {
        const LEASE: &str = "/apis/coordination.k8s.io/v1/namespaces/testns/leases/operator-leader";
        let (client, mut server) = mock_client();
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let scenario = tokio::spawn(async move {
            let (_, send, _) = server
                .expect(
                    Method::GET,
                    "/apis/ecommerce.example.com/v1alpha1/ecommercestacks",
                )
                .await;
            respond_json(
                send,
                &json!({"apiVersion": "v1", "kind": "List", "metadata": {}, "items": []}),
            );
            let (_, send, _) = server.expect(Method::GET, LEASE).await;
            respond_error(send, 404, "NotFound");
            let (created, send, _) = server
                .expect(
                    Method::POST,
                    "/apis/coordination.k8s.io/v1/namespaces/testns/leases",
                )
                .await;
            respond_json(send, &created);

            // Leading: the controller lists and watches; the Lease is renewed.
            let mut lists: Vec<(String, String)> = Vec::new();
            let mut open_watches = Vec::new();
            let mut stop_tx = Some(stop_tx);
            loop {
                let (request, send) = server.next_request().await.expect("a request");
                let path = request.uri().path().to_owned();
                let query = request.uri().query().unwrap_or("").to_owned();
                if path == LEASE && request.method() == Method::GET {
                    respond_json(send, &held_by(Some("replica-a")));
                } else if path == LEASE && request.method() == Method::PUT {
                    let body = request.into_body().collect_bytes().await.unwrap();
                    let lease: Lease = serde_json::from_slice(&body).unwrap();
                    let released = lease.spec.as_ref().unwrap().holder_identity.is_none();
                    respond_json(send, &lease);
                    if released {
                        break;
                    }
                } else if query.contains("watch=true") {
                    open_watches.push(send); // held open, as a quiet watch
                } else {
                    respond_json(
                        send,
                        &json!({"apiVersion": "v1", "kind": "List", "metadata": {"resourceVersion": "1"}, "items": []}),
                    );
                    lists.push((path, query));
                    if lists.len() == 6 {
                        // SIGTERM once all six watches are set up.
                        stop_tx.take().unwrap().send(()).unwrap();
                    }
                }
            }
            lists
        });
        let mut settings = follower_settings();
        settings.leader_election.as_mut().unwrap().renew_interval = Duration::from_millis(50);
        let operator = tokio::spawn(run_with_client(client, settings, async {
            let _ = stop_rx.await;
        }));
        let lists = tokio::time::timeout(Duration::from_secs(5), scenario)
            .await
            .expect("the scenario finished")
            .expect("the scenario passed");
        tokio::time::timeout(Duration::from_secs(5), operator)
            .await
            .expect("the operator stopped")
            .unwrap()
            .expect("a clean exit");

        let selector = "labelSelector=app.kubernetes.io%2Fmanaged-by%3Decommerce-operator";
        for resource in [
            "/apis/apps/v1/deployments",
            "/api/v1/services",
            "/api/v1/configmaps",
            "/apis/networking.k8s.io/v1/networkpolicies",
            "/apis/autoscaling/v2/horizontalpodautoscalers",
            "/apis/policy/v1/poddisruptionbudgets",
            "/apis/batch/v1/jobs",
            "/apis/apps/v1/statefulsets",
            "/api/v1/serviceaccounts",
        ] {
            let (_, query) = lists
                .iter()
                .find(|(path, _)| path == resource)
                .unwrap_or_else(|| panic!("{resource} listed: {lists:?}"));
            assert!(
                query.contains(selector),
                "{resource} only managed objects: {query}"
            );
        }
        assert!(
            lists
                .iter()
                .any(|(path, _)| path == "/apis/ecommerce.example.com/v1alpha1/ecommercestacks")
        );
    }

    #[tokio::test]
    async fn with_a_watched_namespace_the_operator_lists_stacks_there_only() {
        // Its RBAC is then a Role in that namespace: a cluster-wide list
        // would be forbidden and stop the operator at start.
        let (client, mut server) = mock_client();
        let scenario = tokio::spawn(async move {
            let (_, send, _) = server
                .expect(
                    Method::GET,
                    "/apis/ecommerce.example.com/v1alpha1/namespaces/shop/ecommercestacks",
                )
                .await;
            respond_error(send, 404, "NotFound");
        });
        let mut settings = follower_settings();
        settings.watch_namespace = Some("shop".into());
        run_with_client(client, settings, std::future::pending())
            .await
            .unwrap_err();
        timeout_after_1s(scenario).await;
    }

    #[tokio::test]
    async fn a_lost_lease_stops_reconciling_at_once_even_mid_reconcile() {
        const LEASE: &str = "/apis/coordination.k8s.io/v1/namespaces/testns/leases/operator-leader";
        const STACKS: &str = "/apis/ecommerce.example.com/v1alpha1/ecommercestacks";
        let (client, mut server) = mock_client();
        let stack = crate::EcommerceStack::test().finalized();
        let scenario = tokio::spawn(async move {
            let (_, send, _) = server.expect(Method::GET, STACKS).await;
            respond_json(
                send,
                &json!({"apiVersion": "v1", "kind": "List", "metadata": {}, "items": []}),
            );
            let (_, send, _) = server.expect(Method::GET, LEASE).await;
            respond_error(send, 404, "NotFound");
            let (created, send, _) = server
                .expect(
                    Method::POST,
                    "/apis/coordination.k8s.io/v1/namespaces/testns/leases",
                )
                .await;
            respond_json(send, &created);
            // Leading: the stack is listed and its reconcile starts, then
            // hangs on its first call; meanwhile another replica takes the
            // Lease.
            let mut held = Vec::new();
            loop {
                let (request, send) = server.next_request().await.expect("a request");
                let path = request.uri().path().to_owned();
                let query = request.uri().query().unwrap_or("").to_owned();
                if path == LEASE {
                    respond_json(send, &held_by(Some("replica-b")));
                    break;
                } else if query.contains("watch=true") || path.contains("/secrets/") {
                    held.push(send); // a quiet watch; the reconcile's hung call
                } else if path == STACKS {
                    respond_json(
                        send,
                        &json!({"apiVersion": "ecommerce.example.com/v1alpha1", "kind": "EcommerceStackList",
                                "metadata": {"resourceVersion": "1"}, "items": [stack]}),
                    );
                } else {
                    respond_json(
                        send,
                        &json!({"apiVersion": "v1", "kind": "List", "metadata": {"resourceVersion": "1"}, "items": []}),
                    );
                }
            }
            held
        });
        let mut settings = follower_settings();
        settings.leader_election.as_mut().unwrap().renew_interval = Duration::from_millis(200);
        let operator = tokio::spawn(run_with_client(client, settings, std::future::pending()));
        let _held = tokio::time::timeout(Duration::from_secs(5), scenario)
            .await
            .expect("the scenario finished")
            .expect("the scenario passed");
        let error = tokio::time::timeout(Duration::from_secs(1), operator)
            .await
            .expect("the operator stopped without waiting for the hung reconcile")
            .unwrap()
            .expect_err("lost leadership is an error: the process restarts as a follower");
        assert!(
            format!("{error:#}").contains("lost the leader Lease"),
            "{error:#}"
        );
    }
}
