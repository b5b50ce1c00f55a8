//! The reconciler: applies an `EcommerceStack`'s desired state with
//! server-side apply, reports status and events, and cleans up on deletion.

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{
    ConfigMap, PersistentVolumeClaim, Pod, Secret, Service as KubeService, ServiceAccount,
};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, DeleteParams, DynamicObject, ListParams, Patch, PatchParams, PostParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::runtime::finalizer::{Event as FinalizerEvent, finalizer};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::runtime::watcher;
use kube::{Client, Resource, ResourceExt};
use serde_json::json;
use tracing::{debug, info, warn};

use crate::autopilot::{LagPolicy, LagSource, NatsLag, decide};
use crate::crd::{EcommerceStack, EcommerceStackStatus, GROUP, LagScalingStatus, VERSION};
use crate::error::{Error, Result};
use crate::metrics::Metrics;
use crate::migration::{
    JobOutcome, Migration, deployable_version, failed_migration, job_outcome, set_migration,
};
use crate::resources::{
    DesiredState, FIELD_MANAGER, MONITORING_GROUP_VERSION, MonitoringObjects, ServiceObjects,
    data_volume_claim_name, dependency_ready, desired_state, desired_state_at, event_names,
    generated_secret, generated_secrets, nats_url, nats_url_from_operator, new_token, secret_refs,
    spec_problems,
};
use crate::services::Service;
use crate::status::{
    DEGRADED, PAUSED_REASON, PROGRESSING, applied_status, condition, failed_status, paused_status,
    pod_failures, refused_status, set_pod_failures,
};

/// Finalizer the operator puts on every stack it manages.
pub const FINALIZER: &str = "ecommerce.example.com/cleanup";
/// Periodic re-check when nothing changed (owned objects' changes come sooner).
pub const RESYNC: Duration = Duration::from_secs(300);
/// Re-check while a rollout is under way: failing pods do not change the
/// Deployment, so they are looked for again this often.
pub const ROLLOUT_RECHECK: Duration = Duration::from_secs(30);
/// Re-read of the Consumer's backlog while it autoscales.
pub const LAG_RECHECK: Duration = Duration::from_secs(15);
/// Re-check of a refused stack (a missing Secret appears without an event
/// the operator watches).
pub const REFUSED_RECHECK: Duration = Duration::from_secs(30);
/// First retry delay after a failure; doubles per consecutive failure.
pub const FAILURE_BACKOFF_BASE: Duration = Duration::from_secs(5);
pub const FAILURE_BACKOFF_MAX: Duration = Duration::from_secs(300);
/// Annotation that pauses reconciliation of a stack while its value is
/// `"true"`: nothing is applied or corrected (a manual fix of a child stays),
/// until it is removed; deleting the stack still cleans up.
pub const PAUSED_ANNOTATION: &str = "ecommerce.example.com/paused";
/// Selects the objects the operator applied, so it watches only those.
pub const MANAGED_SELECTOR: &str = "app.kubernetes.io/managed-by=ecommerce-operator";

/// What every reconciliation shares.
pub struct Context {
    pub client: Client,
    pub recorder: Recorder,
    pub metrics: Metrics,
    /// Where the Consumer's backlog is read, for its autopilot.
    pub lag: Arc<dyn LagSource>,
    /// Every stack the controller sees, to refuse two that share event names;
    /// set when the controller starts.
    pub stacks: std::sync::OnceLock<Store<EcommerceStack>>,
    /// Consecutive failures per stack, for the error policy's backoff.
    failures: Mutex<HashMap<ObjectRef<EcommerceStack>, u32>>,
}

impl Context {
    /// `instance` names this replica in the Events it records.
    pub fn new(client: Client, metrics: Metrics, instance: Option<String>) -> Arc<Self> {
        Self::with_lag_source(client, metrics, instance, Arc::new(NatsLag::default()))
    }

    /// As `new`, reading the Consumer's backlog from `lag`.
    pub fn with_lag_source(
        client: Client,
        metrics: Metrics,
        instance: Option<String>,
        lag: Arc<dyn LagSource>,
    ) -> Arc<Self> {
        let reporter = Reporter {
            controller: FIELD_MANAGER.to_owned(),
            instance,
        };
        Arc::new(Context {
            recorder: Recorder::new(client.clone(), reporter),
            client,
            metrics,
            lag,
            stacks: std::sync::OnceLock::new(),
            failures: Mutex::default(),
        })
    }

    fn forget_failures(&self, stack: &EcommerceStack) {
        self.failures
            .lock()
            .expect("failures lock")
            .remove(&ObjectRef::from_obj(stack));
    }

    /// Records one more failure and returns the delay before the next try.
    fn next_backoff(&self, stack: &EcommerceStack) -> Duration {
        let mut failures = self.failures.lock().expect("failures lock");
        let count = failures.entry(ObjectRef::from_obj(stack)).or_insert(0);
        let delay = FAILURE_BACKOFF_BASE.saturating_mul(2u32.saturating_pow(*count));
        *count = count.saturating_add(1);
        delay.min(FAILURE_BACKOFF_MAX)
    }
}

/// Reconciles one stack, inside the finalizer helper: a new stack first gets
/// the finalizer, a live one is applied, a deleted one is cleaned up.
pub async fn reconcile(stack: Arc<EcommerceStack>, ctx: Arc<Context>) -> Result<Action> {
    let _timer = ctx.metrics.reconcile_started();
    let namespace = stack
        .namespace()
        .ok_or(Error::MissingObjectKey("metadata.namespace"))?;
    let stacks: Api<EcommerceStack> = Api::namespaced(ctx.client.clone(), &namespace);
    let action = finalizer(&stacks, FINALIZER, stack.clone(), |event| async {
        match event {
            FinalizerEvent::Apply(stack) => apply(&stack, &ctx).await,
            FinalizerEvent::Cleanup(stack) => cleanup(&stack, &ctx).await,
        }
    })
    .await
    .map_err(|e| Error::Finalizer(Box::new(e)))?;
    ctx.forget_failures(&stack);
    Ok(action)
}

/// Counts the failure and retries with a doubling delay.
pub fn error_policy(stack: Arc<EcommerceStack>, error: &Error, ctx: Arc<Context>) -> Action {
    ctx.metrics.reconcile_failed(error);
    let delay = ctx.next_backoff(&stack);
    warn!(stack = %stack.name_any(), error = %error, retry_in = ?delay, "reconcile failed");
    Action::requeue(delay)
}

async fn apply(stack: &EcommerceStack, ctx: &Context) -> Result<Action> {
    let namespace = stack
        .namespace()
        .ok_or(Error::MissingObjectKey("metadata.namespace"))?;
    if stack
        .annotations()
        .get(PAUSED_ANNOTATION)
        .is_some_and(|v| v.eq_ignore_ascii_case("true"))
    {
        return pause(stack, ctx).await;
    }
    let problems = spec_problems(stack);
    if !problems.is_empty() {
        return refuse(stack, ctx, "InvalidSpec", problems.join("; ")).await;
    }
    if let Some(message) = shared_event_names(stack, ctx).await {
        return refuse(stack, ctx, "EventNamesShared", message).await;
    }
    let missing = match check_secrets(stack, &ctx.client, &namespace).await {
        Ok(missing) => missing,
        Err(error) => return report_failure(stack, ctx, error).await,
    };
    if !missing.is_empty() {
        return refuse(stack, ctx, "SecretMissing", missing.join("; ")).await;
    }
    let desired = desired_state(stack)?;
    let client = &ctx.client;
    let autopilot = consumer_autopilot(stack, ctx, Timestamp::now()).await;
    let outcome = async {
        let starting = apply_shared(&desired, client, &namespace).await?;
        keep_password_with_volume(stack, client, &namespace).await?;
        let migrated = stack
            .status
            .as_ref()
            .and_then(|s| s.migrated_version.as_ref());
        // The migrations need PostgreSQL, the services NATS too (a restart
        // of either on a migrated stack is no reason to wait).
        let migration = if starting.is_empty() || migrated == Some(&stack.spec.version) {
            migrate(stack, &desired, client, &namespace).await?
        } else {
            Migration::Waiting(starting)
        };
        // Until `spec.version` is migrated, the Deployments stay at the
        // last migrated version (or are not created yet).
        let mut services = match deployable_version(stack, &migration) {
            Some(version) if version == stack.spec.version => desired.services.clone(),
            Some(version) => desired_state_at(stack, &version)?.services,
            None => Vec::new(),
        };
        if let Some(scaling) = &autopilot {
            set_replicas(&mut services, Service::Consumer, scaling.status.replicas);
        }
        let applied = apply_services(stack, &services, client, &namespace).await?;
        let monitoring = match &desired.monitoring {
            Some(objects) => Some(apply_monitoring(objects, client, &namespace).await?),
            None => None,
        };
        Ok::<_, Error>((migration, applied, monitoring))
    }
    .await;
    let (migration, applied, monitoring) = match outcome {
        Ok(outcome) => outcome,
        Err(error) => return report_failure(stack, ctx, error).await,
    };
    let now = Timestamp::now();
    let mut status = applied_status(stack, &applied, now);
    for (service_status, objects) in status.services.iter_mut().zip(&desired.services) {
        service_status.autoscaled = objects.autoscaler.is_some();
    }
    let all_ready = !applied.is_empty() && status.services.iter().all(|s| s.ready);
    if !all_ready || matches!(migration, Migration::Running(_) | Migration::Waiting(_)) {
        // Pods that cannot start (a Deployment's, a migration Job's, a
        // managed dependency's) never
        // fail their owner until its deadline: name the cause now.
        let failures = match failing_pods(stack, &ctx.client, &namespace).await {
            Ok(failures) => failures,
            Err(error) => return report_failure(stack, ctx, error).await,
        };
        if !failures.is_empty() {
            set_pod_failures(&mut status, &failures, stack.metadata.generation, now);
            let note = failures.join("; ");
            publish(
                stack,
                ctx,
                EventType::Warning,
                "PodsFailing",
                "Observing",
                note,
            )
            .await;
        }
    }
    // After the pods: a failed migration is the cause to name first.
    set_migration(&mut status, stack, &migration, now);
    if let Migration::Failed { reason, .. } = &migration {
        let degraded = condition(&status, DEGRADED);
        let before = stack.status.as_ref().and_then(|s| condition(s, DEGRADED));
        // Once per cause and generation, not on every re-check.
        let already_said = before.is_some_and(|b| {
            degraded.is_some_and(|d| {
                b.reason == d.reason
                    && b.message == d.message
                    && b.observed_generation == d.observed_generation
            })
        });
        if let (false, Some(degraded)) = (already_said, degraded) {
            let note = degraded.message.clone();
            publish(stack, ctx, EventType::Warning, reason, "Migrating", note).await;
        }
    }
    if let Some(said) = &monitoring {
        let before = stack.status.as_ref().and_then(|s| s.monitoring.as_ref());
        if before != Some(said) && said.starts_with(NOT_SERVED) {
            publish(
                stack,
                ctx,
                EventType::Warning,
                "MonitoringUnavailable",
                "Monitoring",
                said.clone(),
            )
            .await;
        }
    }
    status.monitoring = monitoring;
    if let Some(Autopilot {
        scaled_from: Some(from),
        status: scaling,
    }) = &autopilot
    {
        let note = format!(
            "consumer scaled from {from} to {} replicas: {}",
            scaling.replicas, scaling.message
        );
        let action = format!("Scale consumer to {}", scaling.replicas);
        publish(
            stack,
            ctx,
            EventType::Normal,
            "ScaledConsumer",
            &action,
            note,
        )
        .await;
    }
    // None once autoscaling is switched off.
    status.consumer_autoscaling = autopilot.map(|a| a.status);
    publish_changes(stack, &status, ctx).await;
    patch_status(stack, &status, ctx).await?;
    let settled = all_ready && migration == Migration::Done;
    let mut recheck = if settled { RESYNC } else { ROLLOUT_RECHECK };
    if status.consumer_autoscaling.is_some() {
        recheck = recheck.min(LAG_RECHECK);
    }
    Ok(Action::requeue(recheck))
}

/// What the Consumer's autopilot decided this time.
struct Autopilot {
    status: LagScalingStatus,
    /// The count before, when it changed.
    scaled_from: Option<i32>,
}

/// The Consumer's replica count from its backlog, when it autoscales; with
/// the backlog unreadable, the count holds. The status changes only with
/// the count (or when the backlog becomes readable or unreadable): a status
/// that followed every read would wake the controller after every write.
async fn consumer_autopilot(
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

/// How `status.monitoring` begins when the Prometheus Operator is missing.
const NOT_SERVED: &str = "the cluster does not serve";

/// Applies the dashboard ConfigMap, and the PodMonitor and PrometheusRule
/// when the cluster serves their kinds; says which.
async fn apply_monitoring(
    objects: &MonitoringObjects,
    client: &Client,
    namespace: &str,
) -> Result<String> {
    let params = PatchParams::apply(FIELD_MANAGER).force();
    let config_maps: Api<ConfigMap> = Api::namespaced(client.clone(), namespace);
    let dashboard = &objects.dashboard;
    config_maps
        .patch(&dashboard.name_any(), &params, &Patch::Apply(dashboard))
        .await?;
    let group_version = MONITORING_GROUP_VERSION
        .parse()
        .expect("a valid group/version");
    let group = match kube::discovery::pinned_group(client, &group_version).await {
        Ok(group) => group,
        Err(kube::Error::Api(status)) if status.code == 404 => {
            return Ok(format!(
                "{NOT_SERVED} {MONITORING_GROUP_VERSION} (no Prometheus Operator): the dashboard ConfigMap is applied, the PodMonitor and PrometheusRule are not"
            ));
        }
        Err(error) => return Err(error.into()),
    };
    let mut applied = Vec::new();
    for object in [&objects.pod_monitor, &objects.prometheus_rule] {
        let kind = object["kind"].as_str().unwrap_or_default();
        let Some((resource, _)) = group.recommended_kind(kind) else {
            continue;
        };
        let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), namespace, &resource);
        let name = object["metadata"]["name"].as_str().unwrap_or_default();
        api.patch(name, &params, &Patch::Apply(object)).await?;
        applied.push(format!("{kind} {name}"));
    }
    Ok(format!(
        "applied {} and the dashboard ConfigMap {}",
        applied.join(", "),
        dashboard.name_any()
    ))
}

/// Sets one service's Deployment replica count.
fn set_replicas(services: &mut [ServiceObjects], service: Service, replicas: i32) {
    for objects in services.iter_mut().filter(|o| o.service == service) {
        if let Some(spec) = objects.deployment.spec.as_mut() {
            spec.replicas = Some(replicas);
        }
    }
}

/// Runs the migration Jobs of `spec.version` (created once each, never
/// changed: a Job's template is immutable) unless that version is migrated
/// already, and says where they stand.
async fn migrate(
    stack: &EcommerceStack,
    desired: &DesiredState,
    client: &Client,
    namespace: &str,
) -> Result<Migration> {
    let migrated = stack
        .status
        .as_ref()
        .and_then(|s| s.migrated_version.as_ref());
    if migrated == Some(&stack.spec.version) {
        return Ok(Migration::Done);
    }
    let jobs: Api<Job> = Api::namespaced(client.clone(), namespace);
    let mut running = Vec::new();
    let mut failed = Vec::new();
    for job in &desired.migrations {
        let name = job.name_any();
        let current = match jobs.get_opt(&name).await? {
            Some(current) => current,
            None => match jobs.create(&PostParams::default(), job).await {
                Ok(created) => created,
                // Created meanwhile by another reconcile: it runs.
                Err(kube::Error::Api(status)) if status.code == 409 => {
                    running.push(name);
                    continue;
                }
                Err(error) => return Err(error.into()),
            },
        };
        let ours = current
            .owner_references()
            .iter()
            .any(|o| Some(&o.uid) == stack.metadata.uid.as_ref());
        if !ours {
            // Left by a deleted stack of the same name: wait for the garbage
            // collector, then create this stack's own.
            running.push(format!("{name} (an earlier stack's, being deleted)"));
            continue;
        }
        match job_outcome(&current) {
            JobOutcome::Succeeded => {}
            JobOutcome::Running => running.push(name),
            JobOutcome::Failed(message) => {
                let pods: Api<Pod> = Api::namespaced(client.clone(), namespace);
                // By the Job's uid: a Job deleted and made again under the
                // same name leaves pods of its own.
                let uid = current.uid().unwrap_or_default();
                let selector = format!("batch.kubernetes.io/controller-uid={uid}");
                let pods = pods.list(&ListParams::default().labels(&selector)).await?;
                failed.push(failed_migration(&current, &message, &pods.items));
            }
        }
    }
    // Every Job is looked at: the failures are all named.
    if let Some(first) = failed.first().cloned() {
        return Ok(failed.into_iter().skip(1).fold(first, Migration::and));
    }
    Ok(if running.is_empty() {
        Migration::Done
    } else {
        Migration::Running(running)
    })
}

/// Says so on the resource (a Warning and `Degraded`); the error still
/// reaches the error policy.
async fn report_failure(stack: &EcommerceStack, ctx: &Context, error: Error) -> Result<Action> {
    let message = error.to_string();
    publish(
        stack,
        ctx,
        EventType::Warning,
        "ReconcileFailed",
        "Reconciling",
        message.clone(),
    )
    .await;
    let status = failed_status(stack, &message, Timestamp::now());
    if let Err(status_error) = patch_status(stack, &status, ctx).await {
        warn!(error = %status_error, "could not report the failure in the status");
    }
    Err(error)
}

/// Applies nothing: the stack as specified cannot work. Reported with a
/// Warning and `Degraded`; checked again after `REFUSED_RECHECK` (Secrets are
/// not watched) or when the stack changes.
async fn refuse(
    stack: &EcommerceStack,
    ctx: &Context,
    reason: &str,
    message: String,
) -> Result<Action> {
    let status = refused_status(stack, reason, &message, Timestamp::now());
    let previous = stack.status.as_ref().and_then(|s| condition(s, DEGRADED));
    // Once per cause and generation, not on every re-check.
    let already_said = previous.is_some_and(|c| {
        c.reason == reason
            && c.message == message
            && c.observed_generation == stack.metadata.generation
    });
    if !already_said {
        publish(stack, ctx, EventType::Warning, reason, "Checking", message).await;
    }
    patch_status(stack, &status, ctx).await?;
    Ok(Action::requeue(REFUSED_RECHECK))
}

/// Applies nothing while paused; says so once per generation (an event and
/// `Progressing: Paused`). Removing the annotation is a change of the stack,
/// so it resumes at once.
async fn pause(stack: &EcommerceStack, ctx: &Context) -> Result<Action> {
    let already_said = stack
        .status
        .as_ref()
        .and_then(|s| condition(s, PROGRESSING))
        .is_some_and(|c| {
            c.reason == PAUSED_REASON && c.observed_generation == stack.metadata.generation
        });
    if !already_said {
        let message = format!(
            "reconciliation paused by the annotation {PAUSED_ANNOTATION}=true: changes to the stack and its objects are not applied until it is removed"
        );
        publish(
            stack,
            ctx,
            EventType::Normal,
            PAUSED_REASON,
            "Pausing",
            message.clone(),
        )
        .await;
        patch_status(
            stack,
            &paused_status(stack, &message, Timestamp::now()),
            ctx,
        )
        .await?;
    }
    Ok(Action::await_change())
}

/// A message naming the other stack when one on the same NATS already uses
/// this stack's stream, subject prefix or durable consumer; the stack
/// created first keeps them.
async fn shared_event_names(stack: &EcommerceStack, ctx: &Context) -> Option<String> {
    let store = ctx.stacks.get()?;
    // Until the first list is in, the store is empty and would miss a clash.
    store.wait_until_ready().await.ok()?;
    let mine = event_names(stack);
    let created = |s: &EcommerceStack| {
        (
            s.metadata.creation_timestamp.clone().map(|t| t.0),
            s.namespace(),
            s.name_any(),
        )
    };
    store
        .state()
        .into_iter()
        .filter(|other| other.metadata.uid != stack.metadata.uid)
        .filter(|other| other.metadata.deletion_timestamp.is_none())
        // A managed NATS is the stack's own.
        .filter(|other| other.spec.nats.managed.is_none() && stack.spec.nats.managed.is_none())
        .filter(|other| nats_url(other) == nats_url(stack))
        .filter(|other| created(other) < created(stack))
        .find_map(|other| {
            let theirs = event_names(&other);
            let shared: Vec<String> = [
                ("stream", &mine.stream, &theirs.stream),
                ("subject prefix", &mine.subject_prefix, &theirs.subject_prefix),
                ("durable consumer", &mine.consumer_name, &theirs.consumer_name),
            ]
            .into_iter()
            .filter(|(_, a, b)| a == b)
            .map(|(what, name, _)| format!("{what} {name}"))
            .collect();
            (!shared.is_empty()).then(|| {
                format!(
                    "stack {}/{} on the same NATS already uses {}: set other spec.nats names, or leave them unset to get this stack's own",
                    other.namespace().unwrap_or_default(),
                    other.name_any(),
                    shared.join(", ")
                )
            })
        })
}

/// Reads every Secret the pods will read; returns what is missing. A
/// Secret the spec leaves to the operator is generated here when absent,
/// once: an existing one is never changed.
async fn check_secrets(
    stack: &EcommerceStack,
    client: &Client,
    namespace: &str,
) -> Result<Vec<String>> {
    let secrets: Api<Secret> = Api::namespaced(client.clone(), namespace);
    let generated = generated_secrets(stack);
    let mut missing = Vec::new();
    for reference in secret_refs(stack) {
        let found = match secrets.get_opt(&reference.name).await? {
            Some(secret) => secret,
            None => match generated.iter().find(|g| g.reference == reference) {
                Some(to_generate) => {
                    let secret = generated_secret(stack, to_generate, new_token())?;
                    match secrets.create(&PostParams::default(), &secret).await {
                        Ok(_) => {
                            info!(stack = %stack.name_any(), secret = %reference.name, "generated a secret")
                        }
                        // Another reconcile created it first: keep that one.
                        Err(kube::Error::Api(status)) if status.code == 409 => {}
                        Err(error) => return Err(error.into()),
                    }
                    continue;
                }
                None => {
                    missing.push(format!("Secret {:?} not found", reference.name));
                    continue;
                }
            },
        };
        // The API server returns every key under `data`.
        let has_key = found
            .data
            .as_ref()
            .is_some_and(|d| d.contains_key(&reference.key));
        if !has_key {
            missing.push(format!(
                "Secret {:?} has no key {:?}",
                reference.name, reference.key
            ));
        }
    }
    Ok(missing)
}

/// Failing containers of the stack's pods.
async fn failing_pods(
    stack: &EcommerceStack,
    client: &Client,
    namespace: &str,
) -> Result<Vec<String>> {
    let pods: Api<Pod> = Api::namespaced(client.clone(), namespace);
    let selector = format!(
        "app.kubernetes.io/instance={},{MANAGED_SELECTOR}",
        stack.name_any()
    );
    let list = pods.list(&ListParams::default().labels(&selector)).await?;
    Ok(pod_failures(&list.items))
}

/// Applies the ServiceAccount, the managed dependencies, the ConfigMap and
/// the NetworkPolicies:
/// what the migration Jobs need before they run. Returns the managed
/// dependencies not ready yet.
async fn apply_shared(
    desired: &DesiredState,
    client: &Client,
    namespace: &str,
) -> Result<Vec<String>> {
    let params = PatchParams::apply(FIELD_MANAGER).force();
    let config_maps: Api<ConfigMap> = Api::namespaced(client.clone(), namespace);
    let policies: Api<NetworkPolicy> = Api::namespaced(client.clone(), namespace);
    let kube_services: Api<KubeService> = Api::namespaced(client.clone(), namespace);
    let stateful_sets: Api<StatefulSet> = Api::namespaced(client.clone(), namespace);
    let accounts: Api<ServiceAccount> = Api::namespaced(client.clone(), namespace);
    let account = &desired.service_account;
    accounts
        .patch(&account.name_any(), &params, &Patch::Apply(account))
        .await?;
    let mut starting = Vec::new();
    for managed in &desired.dependencies {
        if let Some(policy) = &managed.network_policy {
            policies
                .patch(&policy.name_any(), &params, &Patch::Apply(policy))
                .await?;
        }
        let service = &managed.kube_service;
        kube_services
            .patch(&service.name_any(), &params, &Patch::Apply(service))
            .await?;
        let stateful_set = &managed.stateful_set;
        let applied = stateful_sets
            .patch(
                &stateful_set.name_any(),
                &params,
                &Patch::Apply(stateful_set),
            )
            .await?;
        if !dependency_ready(&applied) {
            starting.push(applied.name_any());
        }
    }
    let config_map = &desired.config_map;
    config_maps
        .patch(&config_map.name_any(), &params, &Patch::Apply(config_map))
        .await?;
    for policy in &desired.network_policies {
        policies
            .patch(&policy.name_any(), &params, &Patch::Apply(policy))
            .await?;
    }
    Ok(starting)
}

/// Hands a generated database password to the managed PostgreSQL's volume
/// once it exists: the volume owns it, so it goes with the data (deleted
/// with the stack, or kept by `retainOnDelete` or a cluster that keeps
/// claims), never before and never after.
async fn keep_password_with_volume(
    stack: &EcommerceStack,
    client: &Client,
    namespace: &str,
) -> Result<()> {
    if stack.spec.database.managed.is_none() {
        return Ok(());
    }
    let Some(password) = generated_secrets(stack).into_iter().find(|g| g.retained) else {
        return Ok(());
    };
    let claim_name = data_volume_claim_name(&stack.name_any());
    let claims: Api<PersistentVolumeClaim> = Api::namespaced(client.clone(), namespace);
    let Some(claim) = claims.get_opt(&claim_name).await? else {
        return Ok(());
    };
    let secrets: Api<Secret> = Api::namespaced(client.clone(), namespace);
    let Some(secret) = secrets.get_opt(&password.reference.name).await? else {
        return Ok(());
    };
    let uid = claim.uid();
    if secret
        .owner_references()
        .iter()
        .any(|o| Some(&o.uid) == uid.as_ref())
    {
        return Ok(());
    }
    let patch = json!({"metadata": {"ownerReferences": [{
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "name": claim_name,
        "uid": uid,
    }]}});
    secrets
        .patch(
            &password.reference.name,
            &PatchParams::default(),
            &Patch::Merge(&patch),
        )
        .await?;
    info!(stack = %stack.name_any(), secret = %password.reference.name, "the database password now goes with its volume");
    Ok(())
}

/// Applies each service's Service, Deployment, disruption budget and
/// autoscaler; returns the Deployments as the API server answered (with
/// their status).
async fn apply_services(
    stack: &EcommerceStack,
    services: &[ServiceObjects],
    client: &Client,
    namespace: &str,
) -> Result<Vec<(Service, Deployment)>> {
    let params = PatchParams::apply(FIELD_MANAGER).force();
    let kube_services: Api<KubeService> = Api::namespaced(client.clone(), namespace);
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), namespace);
    let autoscalers: Api<HorizontalPodAutoscaler> = Api::namespaced(client.clone(), namespace);
    let budgets: Api<PodDisruptionBudget> = Api::namespaced(client.clone(), namespace);

    let previous = stack.status.clone().unwrap_or_default();
    let mut applied = Vec::with_capacity(services.len());
    for objects in services {
        kube_services
            .patch(
                &objects.kube_service.name_any(),
                &params,
                &Patch::Apply(&objects.kube_service),
            )
            .await?;
        let previously = previous
            .services
            .iter()
            .find(|s| s.name == objects.service.name());
        if let (Some(_), Some(before)) = (&objects.autoscaler, previously)
            && !before.autoscaled
        {
            hand_replicas_over(&deployments, &objects.deployment, before.desired_replicas).await?;
        }
        let deployment = deployments
            .patch(
                &objects.deployment.name_any(),
                &params,
                &Patch::Apply(&objects.deployment),
            )
            .await?;
        let budget = &objects.disruption_budget;
        budgets
            .patch(&budget.name_any(), &params, &Patch::Apply(budget))
            .await?;
        match &objects.autoscaler {
            Some(autoscaler) => {
                autoscalers
                    .patch(&autoscaler.name_any(), &params, &Patch::Apply(autoscaler))
                    .await?;
            }
            None => {
                // Autoscaling was switched off: its HPA would go on scaling.
                if previously.is_some_and(|s| s.autoscaled) {
                    match autoscalers
                        .delete(&objects.deployment.name_any(), &DeleteParams::default())
                        .await
                    {
                        Ok(_) => {}
                        Err(kube::Error::Api(status)) if status.code == 404 => {}
                        Err(error) => return Err(error.into()),
                    }
                }
            }
        }
        applied.push((objects.service, deployment));
    }
    Ok(applied)
}

/// Field manager that keeps a Deployment's replica count while autoscaling
/// takes over.
pub const HANDOVER_MANAGER: &str = "ecommerce-operator-handover";

/// Before the operator stops applying `replicas` (its HPA takes over), a
/// second field manager applies the current count: a field no manager owns
/// any more is reset to its default, 1, which would scale the service down
/// until the HPA scales it up again. The HPA's first change of the count
/// takes the field over from this manager.
async fn hand_replicas_over(
    deployments: &Api<Deployment>,
    deployment: &Deployment,
    replicas: i32,
) -> Result<()> {
    let patch = json!({
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": deployment.name_any()},
        "spec": {"replicas": replicas},
    });
    deployments
        .patch(
            &deployment.name_any(),
            &PatchParams::apply(HANDOVER_MANAGER).force(),
            &Patch::Apply(&patch),
        )
        .await?;
    Ok(())
}

/// Events for what changed: a new generation applied, a version rolled out.
/// The action names the generation or version: the recorder folds events of
/// the same reason and action into one series that keeps the first note, so
/// without it an upgrade would still read "applied generation 1".
async fn publish_changes(stack: &EcommerceStack, status: &EcommerceStackStatus, ctx: &Context) {
    let previous = stack.status.clone().unwrap_or_default();
    let generation = stack.metadata.generation.unwrap_or_default();
    if previous.observed_generation != stack.metadata.generation {
        let note = format!(
            "applied generation {generation} (version {}) to {} services",
            stack.spec.version,
            Service::ALL.len()
        );
        let action = format!("Apply generation {generation}");
        publish(stack, ctx, EventType::Normal, "Applied", &action, note).await;
    }
    if let Some(version) = status.migrated_version.as_deref()
        && status.migrated_version != previous.migrated_version
    {
        let note = format!("the databases are migrated to version {version}");
        let action = format!("Migrate to {version}");
        publish(stack, ctx, EventType::Normal, "Migrated", &action, note).await;
    }
    if let Some(version) = status.version.as_deref()
        && status.version != previous.version
    {
        let note = format!("version {version} runs on every service");
        let action = format!("Roll out {version}");
        publish(stack, ctx, EventType::Normal, "RolledOut", &action, note).await;
    }
}

/// Events are informational: a failure to publish one is logged, not fatal.
async fn publish(
    stack: &EcommerceStack,
    ctx: &Context,
    type_: EventType,
    reason: &str,
    action: &str,
    note: String,
) {
    let event = Event {
        type_,
        reason: reason.to_owned(),
        note: Some(note),
        action: action.to_owned(),
        secondary: None,
    };
    if let Err(error) = ctx.recorder.publish(&event, &stack.object_ref(&())).await {
        warn!(%error, reason, "could not publish an event");
    }
}

/// Writes the whole status with server-side apply on the status subresource.
async fn patch_status(
    stack: &EcommerceStack,
    status: &EcommerceStackStatus,
    ctx: &Context,
) -> Result<()> {
    let namespace = stack
        .namespace()
        .ok_or(Error::MissingObjectKey("metadata.namespace"))?;
    let stacks: Api<EcommerceStack> = Api::namespaced(ctx.client.clone(), &namespace);
    let patch = Patch::Apply(json!({
        "apiVersion": format!("{GROUP}/{VERSION}"),
        "kind": "EcommerceStack",
        "status": status,
    }));
    stacks
        .patch_status(
            &stack.name_any(),
            &PatchParams::apply(FIELD_MANAGER).force(),
            &patch,
        )
        .await?;
    Ok(())
}

/// The children carry owner references, so the garbage collector deletes
/// them with the stack; cleanup only records that and forgets the stack.
async fn cleanup(stack: &EcommerceStack, ctx: &Context) -> Result<Action> {
    let mut note = format!(
        "deleting stack {}: everything it owns goes with it (Deployments, Services, disruption budgets, NetworkPolicies, autoscalers, migration Jobs, managed PostgreSQL and NATS, the ConfigMap and generated Secrets)",
        stack.name_any()
    );
    if let Some(managed) = &stack.spec.database.managed {
        note.push_str(if managed.retain_on_delete {
            "; kept (retainOnDelete): the managed PostgreSQL's volume, with the Secret of its password"
        } else {
            "; the managed PostgreSQL's volume and the Secret of its password go with it"
        });
    }
    publish(stack, ctx, EventType::Normal, "Deleting", "Deleting", note).await;
    ctx.forget_failures(stack);
    Ok(Action::await_change())
}

/// Runs the controller until `shutdown` completes, watching stacks in
/// `namespace` (all namespaces when `None`) and the objects it owns there.
pub async fn run(
    ctx: Arc<Context>,
    namespace: Option<&str>,
    shutdown: impl Future<Output = ()> + Send + Sync + 'static,
) {
    let client = ctx.client.clone();
    fn api<K>(client: &Client, namespace: Option<&str>) -> Api<K>
    where
        K: Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>,
    {
        match namespace {
            Some(ns) => Api::namespaced(client.clone(), ns),
            None => Api::all(client.clone()),
        }
    }
    let owned = || watcher::Config::default().labels(MANAGED_SELECTOR);
    let controller = Controller::new(
        api::<EcommerceStack>(&client, namespace),
        watcher::Config::default(),
    );
    // Runs once per process: a lost Lease ends the process.
    let _ = ctx.stacks.set(controller.store());
    controller
        .owns(api::<Deployment>(&client, namespace), owned())
        .owns(api::<KubeService>(&client, namespace), owned())
        .owns(api::<ConfigMap>(&client, namespace), owned())
        .owns(api::<NetworkPolicy>(&client, namespace), owned())
        .owns(api::<HorizontalPodAutoscaler>(&client, namespace), owned())
        .owns(api::<PodDisruptionBudget>(&client, namespace), owned())
        .owns(api::<Job>(&client, namespace), owned())
        .owns(api::<StatefulSet>(&client, namespace), owned())
        .owns(api::<ServiceAccount>(&client, namespace), owned())
        .graceful_shutdown_on(shutdown)
        .run(reconcile, error_policy, ctx)
        .for_each(|result| async move {
            match result {
                Ok((stack, _)) => {
                    let namespace = stack.namespace.as_deref().unwrap_or_default();
                    info!(stack = %stack.name, namespace, "reconciled")
                }
                // A change of an object deleted meanwhile (every deletion
                // ends so): nothing left to reconcile.
                Err(kube::runtime::controller::Error::ObjectNotFound(object)) => {
                    debug!(stack = %object.name, "gone before its reconcile")
                }
                Err(error) => warn!(%error, "reconcile loop error"),
            }
        })
        .await;
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use k8s_openapi::jiff::Timestamp;
    use kube::ResourceExt;
    use kube::runtime::controller::Action;
    use serde_json::Value;

    use super::{Context, FAILURE_BACKOFF_BASE, RESYNC, error_policy, reconcile};
    use crate::crd::EcommerceStack;
    use crate::fixtures::{
        Applied, MigrationJobs, NAMESPACE, not_rolled_out, respond_error, respond_json, rolled_out,
        timeout_after_1s,
    };
    use crate::resources::FIELD_MANAGER;
    use crate::status::{DEGRADED, PROGRESSING, READY, condition};

    async fn reconcile_in_time(stack: EcommerceStack, ctx: Arc<Context>) -> crate::Result<Action> {
        tokio::time::timeout(Duration::from_secs(1), reconcile(Arc::new(stack), ctx))
            .await
            .expect("reconcile finished (no call left unanswered)")
    }

    #[tokio::test]
    async fn a_new_stack_gets_the_finalizer_first_and_nothing_else() {
        let (ctx, mut server) = Context::test();
        let stack = EcommerceStack::test();
        let scenario = tokio::spawn({
            let stack = stack.clone();
            async move {
                server.handle_finalizer_creation(&stack).await;
                server.expect_no_more_calls().await;
            }
        });
        let action = reconcile_in_time(stack, ctx).await.expect("reconciled");
        assert_eq!(action, Action::await_change());
        timeout_after_1s(scenario).await;
    }

    #[tokio::test]
    async fn a_finalized_stack_is_applied_and_its_status_reports_ready() {
        let (ctx, mut server) = Context::test();
        let stack = EcommerceStack::test().finalized();
        let scenario = tokio::spawn({
            let stack = stack.clone();
            async move {
                let token_secret = server.handle_secrets(&stack, false).await.remove(0);
                let applied = server.handle_apply_children(&stack, rolled_out).await;
                server.handle_event("Applied").await;
                server.handle_event("Migrated").await;
                server.handle_event("RolledOut").await;
                let status = server.handle_status_patch(&stack).await;
                server.expect_no_more_calls().await;
                (token_secret, applied, status)
            }
        });
        let action = reconcile_in_time(stack, ctx.clone())
            .await
            .expect("reconciled");
        assert_eq!(action, Action::requeue(RESYNC));
        let (token_secret, applied, status) = timeout_after_1s(scenario).await;

        // No token was given: one is generated into a Secret the stack owns.
        assert_eq!(token_secret["metadata"]["name"], "shop-internal-auth");
        assert_eq!(
            token_secret["metadata"]["ownerReferences"][0]["name"],
            "shop"
        );
        let token = token_secret["stringData"]["token"].as_str().unwrap();
        assert_eq!(token.len(), 64, "{token}");
        assert!(token.chars().all(|c| c.is_ascii_hexdigit()));
        for deployment in &applied.deployments {
            let env = deployment["spec"]["template"]["spec"]["containers"][0]["env"]
                .as_array()
                .unwrap();
            let token_env = env
                .iter()
                .find(|e| e["name"] == "INTERNAL_AUTH_TOKEN")
                .expect("every service reads the token");
            assert_eq!(
                token_env["valueFrom"]["secretKeyRef"],
                serde_json::json!({"name": "shop-internal-auth", "key": "token", "optional": false})
            );
        }
        // NetworkPolicies are on by default: one per service, one for the
        // migration Jobs' pods.
        assert_eq!(applied.network_policies.len(), 7);
        // The Deployments carry the chart's probes: a long migration is not killed.
        for deployment in &applied.deployments {
            let container = &deployment["spec"]["template"]["spec"]["containers"][0];
            assert_eq!(container["startupProbe"]["httpGet"]["path"], "/healthz");
            assert_eq!(container["startupProbe"]["failureThreshold"], 36);
            assert_eq!(container["livenessProbe"]["httpGet"]["path"], "/healthz");
            assert_eq!(container["readinessProbe"]["httpGet"]["path"], "/readyz");
        }

        // What went to the API server is the desired state, owned by the stack.
        assert_eq!(applied.config_map["data"]["ORDER_ADDR"], "shop-order:50052");
        for object in applied.deployments.iter().chain(&applied.services) {
            assert_eq!(object["metadata"]["namespace"], NAMESPACE);
            assert_eq!(
                object["metadata"]["ownerReferences"][0]["kind"],
                "EcommerceStack"
            );
            assert_eq!(object["metadata"]["ownerReferences"][0]["controller"], true);
        }
        let images: Vec<&Value> = applied
            .deployments
            .iter()
            .map(|d| &d["spec"]["template"]["spec"]["containers"][0]["image"])
            .collect();
        assert_eq!(images[0], "registry.example.com/ecommerce/gateway:1.2.0");
        assert_eq!(images.len(), 6);

        assert_eq!(status.observed_generation, Some(1));
        assert_eq!(status.version.as_deref(), Some("1.2.0"));
        assert_eq!(status.ready_services.as_deref(), Some("6/6"));
        assert!(
            status
                .services
                .iter()
                .all(|s| s.ready && s.desired_replicas == 1)
        );
        let ready = condition(&status, READY).expect("Ready");
        assert_eq!(
            (ready.status.as_str(), ready.reason.as_str()),
            ("True", "AllServicesReady")
        );
        assert_eq!(ready.observed_generation, Some(1));
        assert_eq!(condition(&status, PROGRESSING).unwrap().status, "False");
        assert_eq!(condition(&status, DEGRADED).unwrap().status, "False");
        assert_eq!(ctx.metrics.reconciliations.get(), 1);
    }

    #[tokio::test]
    async fn a_new_version_is_progressing_until_every_deployment_runs_it() {
        let (ctx, mut server) = Context::test();
        let mut previous = crate::crd::EcommerceStackStatus {
            observed_generation: Some(1),
            version: Some("1.1.0".into()),
            ..Default::default()
        };
        crate::status::set_condition(
            &mut previous.conditions,
            READY,
            true,
            "AllServicesReady",
            "ready".into(),
            Some(1),
            Timestamp::UNIX_EPOCH,
        );
        let stack = EcommerceStack::test()
            .finalized()
            .with_generation(2)
            .with_status(previous);
        let scenario = tokio::spawn({
            let stack = stack.clone();
            async move {
                server.handle_secrets(&stack, true).await;
                server.handle_apply_children(&stack, not_rolled_out).await;
                server.handle_pod_list(Vec::new()).await;
                let event = server.handle_event("Applied").await;
                server.handle_event("Migrated").await;
                let status = server.handle_status_patch(&stack).await;
                server.expect_no_more_calls().await;
                (event, status)
            }
        });
        reconcile_in_time(stack, ctx).await.expect("reconciled");
        let (event, status) = timeout_after_1s(scenario).await;
        assert!(
            event["note"]
                .as_str()
                .unwrap()
                .contains("generation 2 (version 1.2.0)")
        );
        assert_eq!(status.observed_generation, Some(2));
        // The old version stays the one rolled out until the new one is.
        assert_eq!(status.version.as_deref(), Some("1.1.0"));
        assert_eq!(status.ready_services.as_deref(), Some("0/6"));
        let ready = condition(&status, READY).unwrap();
        assert_eq!(
            (ready.status.as_str(), ready.reason.as_str()),
            ("False", "ServicesNotReady")
        );
        assert_ne!(ready.last_transition_time.0, Timestamp::UNIX_EPOCH);
        let progressing = condition(&status, PROGRESSING).unwrap();
        assert_eq!(
            (progressing.status.as_str(), progressing.reason.as_str()),
            ("True", "RollingOut")
        );
        assert_eq!(progressing.observed_generation, Some(2));
    }

    #[tokio::test]
    async fn an_unchanged_ready_stack_is_applied_again_without_events() {
        let (ctx, mut server) = Context::test();
        let first = EcommerceStack::test().finalized();
        let status = crate::status::applied_status(&first, &[], Timestamp::UNIX_EPOCH);
        let mut status = crate::crd::EcommerceStackStatus {
            version: Some("1.2.0".into()),
            migrated_version: Some("1.2.0".into()),
            ..status
        };
        crate::status::set_condition(
            &mut status.conditions,
            READY,
            true,
            "AllServicesReady",
            "ready".into(),
            Some(1),
            Timestamp::UNIX_EPOCH,
        );
        let stack = first.with_status(status);
        let scenario = tokio::spawn({
            let stack = stack.clone();
            async move {
                server.handle_secrets(&stack, true).await;
                server.handle_apply_children(&stack, rolled_out).await;
                let status = server.handle_status_patch(&stack).await;
                server.expect_no_more_calls().await;
                status
            }
        });
        reconcile_in_time(stack, ctx).await.expect("reconciled");
        let status = timeout_after_1s(scenario).await;
        // Ready was already True: its transition time is kept.
        assert_eq!(
            condition(&status, READY).unwrap().last_transition_time.0,
            Timestamp::UNIX_EPOCH
        );
    }

    #[tokio::test]
    async fn a_deleted_stack_is_cleaned_up_and_its_finalizer_removed() {
        let (ctx, mut server) = Context::test();
        let stack = EcommerceStack::test().finalized().deleting();
        let scenario = tokio::spawn({
            let stack = stack.clone();
            async move {
                server.handle_event("Deleting").await;
                server.handle_finalizer_removal(&stack).await;
                server.expect_no_more_calls().await;
            }
        });
        let action = reconcile_in_time(stack, ctx).await.expect("cleaned up");
        assert_eq!(action, Action::await_change());
        timeout_after_1s(scenario).await;
    }

    fn paused(stack: EcommerceStack) -> EcommerceStack {
        let mut stack = stack;
        stack
            .annotations_mut()
            .insert(super::PAUSED_ANNOTATION.into(), "true".into());
        stack
    }

    #[tokio::test]
    async fn a_paused_stack_is_left_alone_and_says_so_once_per_generation() {
        let (ctx, mut server) = Context::test();
        let stack = paused(EcommerceStack::test().finalized().with_generation(3));
        let scenario = tokio::spawn({
            let stack = stack.clone();
            async move {
                let event = server.handle_event("Paused").await;
                let status = server.handle_status_patch(&stack).await;
                server.expect_no_more_calls().await;
                (event, status)
            }
        });
        let action = reconcile_in_time(stack.clone(), ctx).await.expect("paused");
        assert_eq!(action, Action::await_change());
        let (event, status) = timeout_after_1s(scenario).await;
        assert!(event["note"].as_str().unwrap().contains("paused"));
        let progressing = condition(&status, PROGRESSING).unwrap();
        assert_eq!(
            (progressing.status.as_str(), progressing.reason.as_str()),
            ("False", "Paused")
        );
        assert_eq!(progressing.observed_generation, Some(3));

        // Reconciled again (a child changed, the status was written): no
        // call at all, so nothing is applied or corrected.
        let (ctx, server) = Context::test();
        let again = stack.with_status(status);
        let scenario = tokio::spawn(server.expect_no_more_calls());
        let action = reconcile_in_time(again.clone(), ctx).await.expect("paused");
        assert_eq!(action, Action::await_change());
        timeout_after_1s(scenario).await;

        // The annotation removed: applied as usual.
        let (ctx, mut server) = Context::test();
        let mut resumed = again;
        resumed.annotations_mut().remove(super::PAUSED_ANNOTATION);
        let scenario = tokio::spawn({
            let stack = resumed.clone();
            async move {
                server.handle_secrets(&stack, true).await;
                server.handle_apply_children(&stack, rolled_out).await;
                server.handle_event("Applied").await;
                server.handle_event("Migrated").await;
                server.handle_event("RolledOut").await;
                server.handle_status_patch(&stack).await
            }
        });
        reconcile_in_time(resumed, ctx).await.expect("resumed");
        let status = timeout_after_1s(scenario).await;
        assert_eq!(condition(&status, READY).unwrap().status, "True");
    }

    #[tokio::test]
    async fn a_paused_stack_is_still_cleaned_up_on_deletion() {
        let (ctx, mut server) = Context::test();
        let stack = paused(EcommerceStack::test().finalized().deleting());
        let scenario = tokio::spawn({
            let stack = stack.clone();
            async move {
                server.handle_event("Deleting").await;
                server.handle_finalizer_removal(&stack).await;
                server.expect_no_more_calls().await;
            }
        });
        reconcile_in_time(stack, ctx).await.expect("cleaned up");
        timeout_after_1s(scenario).await;
    }

    #[tokio::test]
    async fn an_api_error_is_reported_and_goes_to_the_error_policy_with_backoff() {
        let (ctx, mut server) = Context::test();
        let stack = EcommerceStack::test().finalized();
        let scenario = tokio::spawn({
            let stack = stack.clone();
            async move {
                server.handle_secrets(&stack, true).await;
                let (_, send) = server
                    .expect_apply(&format!(
                        "/api/v1/namespaces/{NAMESPACE}/serviceaccounts/shop-services"
                    ))
                    .await;
                respond_error(send, 500, "InternalError");
                let event = server.handle_event("ReconcileFailed").await;
                let status = server.handle_status_patch(&stack).await;
                server.expect_no_more_calls().await;
                (event, status)
            }
        });
        let error = reconcile_in_time(stack.clone(), ctx.clone())
            .await
            .expect_err("the apply failed");
        let (event, status) = timeout_after_1s(scenario).await;
        assert_eq!(event["type"], "Warning");
        let degraded = condition(&status, DEGRADED).expect("Degraded");
        assert_eq!(
            (degraded.status.as_str(), degraded.reason.as_str()),
            ("True", "ReconcileFailed")
        );
        assert!(
            degraded.message.contains("InternalError"),
            "{}",
            degraded.message
        );
        // Not applied: the generation is not claimed as observed.
        assert_eq!(status.observed_generation, None);

        let stack = Arc::new(stack);
        assert_eq!(error.metric_label(), "kube_api");
        assert_eq!(
            error_policy(stack.clone(), &error, ctx.clone()),
            Action::requeue(FAILURE_BACKOFF_BASE)
        );
        assert_eq!(
            error_policy(stack, &error, ctx.clone()),
            Action::requeue(FAILURE_BACKOFF_BASE * 2)
        );
        assert_eq!(ctx.metrics.failure_count("kube_api"), 2);
    }

    fn autoscaled_gateway() -> EcommerceStack {
        let mut stack = EcommerceStack::test().finalized();
        stack.spec.services.gateway.replicas = Some(3);
        stack.spec.services.gateway.autoscaling = Some(crate::crd::AutoscalingSpec {
            min_replicas: 2,
            max_replicas: 8,
            target_cpu_utilization_percentage: 60,
            pending_per_replica: 1000,
            scale_down_cooldown_seconds: 300,
        });
        stack
    }

    #[tokio::test]
    async fn an_autoscaled_service_gets_an_hpa_and_its_deployment_no_replica_count() {
        let (ctx, mut server) = Context::test();
        let stack = autoscaled_gateway();
        let scenario = tokio::spawn({
            let stack = stack.clone();
            async move {
                server.handle_secrets(&stack, true).await;
                let applied = server.handle_apply_children(&stack, rolled_out).await;
                server.handle_event("Applied").await;
                server.handle_event("Migrated").await;
                server.handle_event("RolledOut").await;
                let status = server.handle_status_patch(&stack).await;
                server.expect_no_more_calls().await;
                (applied, status)
            }
        });
        reconcile_in_time(stack, ctx).await.expect("reconciled");
        let (applied, status) = timeout_after_1s(scenario).await;
        let gateway = &applied.deployments[0];
        assert_eq!(gateway["metadata"]["name"], "shop-gateway");
        assert!(
            gateway["spec"].get("replicas").is_none(),
            "the HPA owns replicas: {}",
            gateway["spec"]
        );
        assert_eq!(applied.deployments[1]["spec"]["replicas"], 1);
        assert_eq!(applied.autoscalers.len(), 1);
        let hpa = &applied.autoscalers[0];
        assert_eq!(hpa["spec"]["scaleTargetRef"]["name"], "shop-gateway");
        assert_eq!(hpa["spec"]["minReplicas"], 2);
        assert_eq!(hpa["spec"]["maxReplicas"], 8);
        assert_eq!(
            hpa["spec"]["metrics"][0]["resource"]["target"]["averageUtilization"],
            60
        );
        assert_eq!(hpa["metadata"]["ownerReferences"][0]["name"], "shop");
        assert!(status.services[0].autoscaled);
        assert!(!status.services[1].autoscaled);
    }

    #[tokio::test]
    async fn switching_autoscaling_off_deletes_the_hpa_and_applies_replicas_again() {
        let (ctx, mut server) = Context::test();
        let before = autoscaled_gateway();
        let mut previous = crate::status::applied_status(&before, &[], Timestamp::UNIX_EPOCH);
        previous.migrated_version = Some("1.2.0".into());
        previous.services = vec![crate::crd::ServiceStatus {
            name: "gateway".into(),
            autoscaled: true,
            ..Default::default()
        }];
        let mut stack = before.with_status(previous).with_generation(2);
        stack.spec.services.gateway.autoscaling = None;
        let scenario = tokio::spawn({
            let stack = stack.clone();
            async move {
                server.handle_secrets(&stack, true).await;
                // The applies in order, with the HPA's deletion right after
                // the gateway's Deployment and disruption budget.
                let mut calls = Vec::new();
                loop {
                    let (request, send) = server.next_request().await.expect("a call");
                    let method = request.method().clone();
                    let path = request.uri().path().to_owned();
                    let body = request.into_body().collect_bytes().await.unwrap();
                    let body: Value = if body.is_empty() {
                        Value::Null
                    } else {
                        serde_json::from_slice(&body).unwrap()
                    };
                    calls.push((method.clone(), path.clone(), body.clone()));
                    if method == http::Method::DELETE {
                        respond_json(
                            send,
                            &serde_json::json!({"kind": "Status", "apiVersion": "v1", "status": "Success"}),
                        );
                    } else if path.ends_with("/deployments/shop-consumer") {
                        let mut deployment: k8s_openapi::api::apps::v1::Deployment =
                            serde_json::from_value(body).unwrap();
                        deployment.status = Some(rolled_out(&deployment));
                        respond_json(send, &deployment);
                        return calls;
                    } else if path.contains("/deployments/") {
                        let mut deployment: k8s_openapi::api::apps::v1::Deployment =
                            serde_json::from_value(body).unwrap();
                        deployment.status = Some(rolled_out(&deployment));
                        respond_json(send, &deployment);
                    } else {
                        respond_json(send, &body);
                    }
                }
            }
        });
        // The events and status after the applies are not this test's concern.
        let reconcile = tokio::spawn(reconcile(Arc::new(stack), ctx));
        let calls = timeout_after_1s(scenario).await;
        reconcile.abort();
        let gateway = calls
            .iter()
            .position(|(_, path, _)| path.ends_with("/deployments/shop-gateway"))
            .expect("the gateway's Deployment applied");
        assert_eq!(
            calls[gateway].2["spec"]["replicas"], 3,
            "replicas applied again"
        );
        assert!(
            calls[gateway + 1]
                .1
                .ends_with("/poddisruptionbudgets/shop-gateway"),
            "then its disruption budget: {:?}",
            calls[gateway + 1].1
        );
        assert_eq!(
            (calls[gateway + 2].0.clone(), calls[gateway + 2].1.clone()),
            (
                http::Method::DELETE,
                format!(
                    "/apis/autoscaling/v2/namespaces/{NAMESPACE}/horizontalpodautoscalers/shop-gateway"
                )
            )
        );
        let deletions = calls
            .iter()
            .filter(|(method, _, _)| method == http::Method::DELETE)
            .count();
        assert_eq!(deletions, 1, "only the HPA that existed");
    }

    #[tokio::test]
    async fn switching_autoscaling_on_keeps_the_current_replica_count_until_the_hpa_owns_it() {
        let (ctx, mut server) = Context::test();
        let fixed = EcommerceStack::test().finalized();
        let mut previous = crate::status::applied_status(&fixed, &[], Timestamp::UNIX_EPOCH);
        previous.migrated_version = Some("1.2.0".into());
        previous.services = vec![crate::crd::ServiceStatus {
            name: "gateway".into(),
            desired_replicas: 4,
            ..Default::default()
        }];
        let mut stack = autoscaled_gateway()
            .with_status(previous)
            .with_generation(2);
        stack.spec.services.gateway.replicas = None;
        let scenario = tokio::spawn({
            let stack = stack.clone();
            async move {
                server.handle_secrets(&stack, true).await;
                let mut calls = Vec::new();
                loop {
                    let (request, send) = server.next_request().await.expect("a call");
                    let path = request.uri().path().to_owned();
                    let query = request.uri().query().unwrap_or("").to_owned();
                    let body = request.into_body().collect_bytes().await.unwrap();
                    let body: Value = serde_json::from_slice(&body).unwrap();
                    let done = path.ends_with("/deployments/shop-gateway")
                        && !query.contains(super::HANDOVER_MANAGER);
                    respond_json(send, &body);
                    calls.push((path, query, body));
                    if done {
                        return calls;
                    }
                }
            }
        });
        let reconcile = tokio::spawn(reconcile(Arc::new(stack), ctx));
        let calls = timeout_after_1s(scenario).await;
        reconcile.abort();
        let (handover, main) = (&calls[calls.len() - 2], &calls[calls.len() - 1]);
        assert!(handover.0.ends_with("/deployments/shop-gateway"));
        let manager = |query: &str| {
            query
                .split('&')
                .find_map(|pair| pair.strip_prefix("fieldManager="))
                .map(str::to_owned)
        };
        assert_eq!(
            manager(&handover.1).as_deref(),
            Some(super::HANDOVER_MANAGER)
        );
        assert_eq!(handover.2["spec"], serde_json::json!({"replicas": 4}));
        assert_eq!(manager(&main.1).as_deref(), Some(FIELD_MANAGER));
        assert!(main.2["spec"].get("replicas").is_none());
    }

    #[tokio::test]
    async fn a_missing_secret_or_key_is_named_and_nothing_is_applied() {
        let (ctx, mut server) = Context::test();
        let stack = EcommerceStack::test().finalized();
        let scenario = tokio::spawn({
            let stack = stack.clone();
            async move {
                for (name, answer) in [
                    ("shop-db", None),
                    ("shop-jwt", Some("other-key")),
                    ("shop-admin", Some("password")),
                    ("shop-internal-auth", Some("token")),
                ] {
                    let (_, send, _) = server
                        .expect(
                            http::Method::GET,
                            &format!("/api/v1/namespaces/{NAMESPACE}/secrets/{name}"),
                        )
                        .await;
                    match answer {
                        None => respond_error(send, 404, "NotFound"),
                        Some(key) => crate::fixtures::respond_json(
                            send,
                            &serde_json::json!({"apiVersion": "v1", "kind": "Secret",
                                "metadata": {"name": name}, "data": {key: "eA=="}}),
                        ),
                    }
                }
                let event = server.handle_event("SecretMissing").await;
                let status = server.handle_status_patch(&stack).await;
                server.expect_no_more_calls().await;
                (event, status)
            }
        });
        let action = reconcile_in_time(stack, ctx)
            .await
            .expect("refused, not failed");
        assert_eq!(action, Action::requeue(super::REFUSED_RECHECK));
        let (event, status) = timeout_after_1s(scenario).await;
        assert_eq!(event["type"], "Warning");
        let degraded = condition(&status, DEGRADED).unwrap();
        assert_eq!(
            (degraded.status.as_str(), degraded.reason.as_str()),
            ("True", "SecretMissing")
        );
        assert_eq!(
            degraded.message,
            r#"Secret "shop-db" not found; Secret "shop-jwt" has no key "secret""#
        );
        assert_eq!(condition(&status, READY).unwrap().status, "False");
    }

    #[tokio::test]
    async fn failing_pods_make_the_stack_degraded_with_their_reason_and_a_warning() {
        let (ctx, mut server) = Context::test();
        let stack = EcommerceStack::test().finalized();
        let pod = serde_json::json!({
            "metadata": {"name": "shop-user-5d9c-x2"},
            "status": {"containerStatuses": [{
                "name": "user", "image": "u", "imageID": "", "ready": false, "restartCount": 0,
                "state": {"waiting": {"reason": "CreateContainerConfigError",
                    "message": "secret \"shop-admin\" not found"}}
            }]}
        });
        let scenario = tokio::spawn({
            let stack = stack.clone();
            async move {
                server.handle_secrets(&stack, true).await;
                server.handle_apply_children(&stack, not_rolled_out).await;
                let query = server.handle_pod_list(vec![pod]).await;
                let warning = server.handle_event("PodsFailing").await;
                server.handle_event("Applied").await;
                server.handle_event("Migrated").await;
                let status = server.handle_status_patch(&stack).await;
                server.expect_no_more_calls().await;
                (query, warning, status)
            }
        });
        let action = reconcile_in_time(stack, ctx).await.expect("reconciled");
        assert_eq!(action, Action::requeue(super::ROLLOUT_RECHECK));
        let (query, warning, status) = timeout_after_1s(scenario).await;
        assert!(
            query
                .iter()
                .any(|(k, v)| k == "labelSelector"
                    && v.contains("app.kubernetes.io%2Finstance%3Dshop")),
            "{query:?}"
        );
        assert_eq!(warning["type"], "Warning");
        let degraded = condition(&status, DEGRADED).unwrap();
        assert_eq!(
            (degraded.status.as_str(), degraded.reason.as_str()),
            ("True", "PodsFailing")
        );
        assert_eq!(
            degraded.message,
            r#"shop-user-5d9c-x2/user: CreateContainerConfigError: secret "shop-admin" not found"#
        );
    }

    #[tokio::test]
    async fn events_of_an_upgrade_say_the_new_generation_and_version() {
        let (ctx, mut server) = Context::test();
        let first = EcommerceStack::test().finalized();
        let scenario = tokio::spawn({
            let first = first.clone();
            async move {
                server.handle_secrets(&first, true).await;
                server.handle_apply_children(&first, rolled_out).await;
                server.handle_event("Applied").await;
                server.handle_event("Migrated").await;
                server.handle_event("RolledOut").await;
                let status = server.handle_status_patch(&first).await;
                (server, status)
            }
        });
        reconcile_in_time(first.clone(), ctx.clone())
            .await
            .expect("first");
        let (mut server, status) = timeout_after_1s(scenario).await;

        let mut upgraded = first.with_generation(2).with_status(status);
        upgraded.spec.version = "1.3.0".into();
        let scenario = tokio::spawn({
            let upgraded = upgraded.clone();
            async move {
                server.handle_secrets(&upgraded, true).await;
                server.handle_apply_children(&upgraded, rolled_out).await;
                // New events (POST), not a series of the first ones (PATCH).
                let applied = server.handle_event("Applied").await;
                server.handle_event("Migrated").await;
                let rolled_out = server.handle_event("RolledOut").await;
                server.handle_status_patch(&upgraded).await;
                server.expect_no_more_calls().await;
                (applied, rolled_out)
            }
        });
        reconcile_in_time(upgraded, ctx).await.expect("upgrade");
        let (applied, rolled_out) = timeout_after_1s(scenario).await;
        assert!(
            applied["note"]
                .as_str()
                .unwrap()
                .contains("generation 2 (version 1.3.0)"),
            "{applied}"
        );
        assert_eq!(rolled_out["note"], "version 1.3.0 runs on every service");
    }

    #[tokio::test]
    async fn a_stack_whose_event_names_an_older_stack_uses_is_refused() {
        use kube::runtime::{reflector, watcher};
        let (ctx, mut server) = Context::test();
        let mut older = EcommerceStack::test().finalized();
        older.metadata.name = Some("old-shop".into());
        older.metadata.uid = Some("uid-old".into());
        older.metadata.creation_timestamp = Some(
            k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(Timestamp::UNIX_EPOCH),
        );
        older.spec.nats.stream = Some("ORDER_EVENTS".into());
        let mut stack = EcommerceStack::test().finalized();
        stack.metadata.creation_timestamp =
            Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
                k8s_openapi::jiff::Timestamp::now(),
            ));
        stack.spec.nats.stream = Some("ORDER_EVENTS".into());
        let (store, mut writer) = reflector::store();
        for event in [
            watcher::Event::Init,
            watcher::Event::InitApply(older.clone()),
            watcher::Event::InitApply(stack.clone()),
            watcher::Event::InitDone,
        ] {
            writer.apply_watcher_event(&event);
        }
        ctx.stacks.set(store).unwrap();
        let scenario = tokio::spawn({
            let stack = stack.clone();
            async move {
                let event = server.handle_event("EventNamesShared").await;
                let status = server.handle_status_patch(&stack).await;
                server.expect_no_more_calls().await;
                (event, status)
            }
        });
        reconcile_in_time(stack, ctx.clone())
            .await
            .expect("refused");
        let (event, status) = timeout_after_1s(scenario).await;
        assert_eq!(event["type"], "Warning");
        let degraded = condition(&status, DEGRADED).unwrap();
        assert_eq!(degraded.reason, "EventNamesShared");
        assert!(
            degraded.message.contains("testns/old-shop")
                && degraded.message.contains("stream ORDER_EVENTS"),
            "{}",
            degraded.message
        );
        // The older stack keeps its names and is applied as usual.
        assert!(super::shared_event_names(&older, &ctx).await.is_none());
    }

    /// A stack at 1.1.0 (migrated, rolled out) asked for 1.2.0.
    fn upgrading() -> EcommerceStack {
        let mut old = EcommerceStack::test().finalized();
        old.spec.version = "1.1.0".into();
        let mut status = crate::status::applied_status(&old, &[], Timestamp::UNIX_EPOCH);
        status.version = Some("1.1.0".into());
        status.migrated_version = Some("1.1.0".into());
        status.observed_generation = Some(1);
        EcommerceStack::test()
            .finalized()
            .with_generation(2)
            .with_status(status)
    }

    fn images(applied: &Applied) -> Vec<String> {
        applied
            .deployments
            .iter()
            .map(|d| {
                d["spec"]["template"]["spec"]["containers"][0]["image"]
                    .as_str()
                    .unwrap()
                    .to_owned()
            })
            .collect()
    }

    #[tokio::test]
    async fn a_new_stack_runs_its_migration_jobs_before_any_deployment_exists() {
        let (ctx, mut server) = Context::test();
        let stack = EcommerceStack::test().finalized();
        let scenario = tokio::spawn({
            let stack = stack.clone();
            async move {
                server.handle_secrets(&stack, true).await;
                let desired = crate::resources::desired_state(&stack).unwrap();
                server
                    .handle_apply_shared(&desired, true, &mut Applied::default())
                    .await;
                let jobs = server
                    .handle_migrations(&stack, MigrationJobs::Absent)
                    .await;
                server.handle_pod_list(Vec::new()).await;
                server.handle_event("Applied").await;
                let status = server.handle_status_patch(&stack).await;
                server.expect_no_more_calls().await;
                (jobs, status)
            }
        });
        let action = reconcile_in_time(stack, ctx).await.expect("reconciled");
        assert_eq!(action, Action::requeue(super::ROLLOUT_RECHECK));
        let (jobs, status) = timeout_after_1s(scenario).await;
        let names: Vec<&str> = jobs
            .iter()
            .map(|j| j["metadata"]["name"].as_str().unwrap())
            .collect();
        assert_eq!(names.len(), 3, "{names:?}");
        for (job, service) in jobs.iter().zip(["inventory", "order", "user"]) {
            let container = &job["spec"]["template"]["spec"]["containers"][0];
            assert_eq!(
                container["image"],
                format!("registry.example.com/ecommerce/{service}:1.2.0")
            );
            assert_eq!(container["args"], serde_json::json!(["migrate"]));
        }
        let progressing = condition(&status, PROGRESSING).unwrap();
        assert_eq!(
            (progressing.status.as_str(), progressing.reason.as_str()),
            ("True", "Migrating")
        );
        assert!(
            progressing.message.contains(names[0]),
            "{}",
            progressing.message
        );
        let ready = condition(&status, READY).unwrap();
        assert_eq!(
            (ready.status.as_str(), ready.reason.as_str()),
            ("False", "Migrating")
        );
        assert_eq!(status.ready_services.as_deref(), Some("0/6"));
        assert_eq!((status.version, status.migrated_version), (None, None));
    }

    #[tokio::test]
    async fn an_upgrade_keeps_the_old_version_running_until_its_migrations_complete() {
        let stack = upgrading();
        let desired_old = crate::resources::desired_state_at(&stack, "1.1.0").unwrap();
        let desired_new = crate::resources::desired_state(&stack).unwrap();

        // The migrations of 1.2.0 run: every Deployment is applied at 1.1.0.
        let (ctx, mut server) = Context::test();
        let scenario = tokio::spawn({
            let stack = stack.clone();
            async move {
                server.handle_secrets(&stack, true).await;
                let mut applied = Applied::default();
                server
                    .handle_apply_shared(&desired_new, true, &mut applied)
                    .await;
                server
                    .handle_migrations(&stack, MigrationJobs::Running)
                    .await;
                server
                    .handle_apply_services(&desired_old, rolled_out, &mut applied)
                    .await;
                server.handle_pod_list(Vec::new()).await;
                server.handle_event("Applied").await;
                let status = server.handle_status_patch(&stack).await;
                server.expect_no_more_calls().await;
                (applied, status)
            }
        });
        reconcile_in_time(stack.clone(), ctx)
            .await
            .expect("reconciled");
        let (applied, status) = timeout_after_1s(scenario).await;
        assert!(
            images(&applied).iter().all(|i| i.ends_with(":1.1.0")),
            "{:?}",
            images(&applied)
        );
        assert_eq!(status.version.as_deref(), Some("1.1.0"));
        assert_eq!(status.migrated_version.as_deref(), Some("1.1.0"));
        assert!(
            status
                .services
                .iter()
                .all(|s| s.version.as_deref() == Some("1.1.0"))
        );
        assert_eq!(
            condition(&status, READY).unwrap().status,
            "True",
            "1.1.0 serves"
        );
        assert_eq!(condition(&status, PROGRESSING).unwrap().reason, "Migrating");

        // They completed: the Deployments roll to 1.2.0.
        let (ctx, mut server) = Context::test();
        let stack = stack.with_status(status);
        let scenario = tokio::spawn({
            let stack = stack.clone();
            async move {
                server.handle_secrets(&stack, true).await;
                let mut applied = Applied::default();
                let desired = crate::resources::desired_state(&stack).unwrap();
                server
                    .handle_apply_shared(&desired, true, &mut applied)
                    .await;
                server
                    .handle_migrations(&stack, MigrationJobs::Succeeded)
                    .await;
                server
                    .handle_apply_services(&desired, not_rolled_out, &mut applied)
                    .await;
                server.handle_pod_list(Vec::new()).await;
                let migrated = server.handle_event("Migrated").await;
                let status = server.handle_status_patch(&stack).await;
                server.expect_no_more_calls().await;
                (applied, migrated, status)
            }
        });
        reconcile_in_time(stack, ctx).await.expect("reconciled");
        let (applied, migrated, status) = timeout_after_1s(scenario).await;
        assert!(images(&applied).iter().all(|i| i.ends_with(":1.2.0")));
        assert!(migrated["note"].as_str().unwrap().contains("1.2.0"));
        assert_eq!(status.migrated_version.as_deref(), Some("1.2.0"));
        // Rolling: each service still reports the version its pods run.
        assert_eq!(status.version.as_deref(), Some("1.1.0"));
        assert!(
            status
                .services
                .iter()
                .all(|s| s.version.as_deref() == Some("1.1.0"))
        );
        assert_eq!(
            condition(&status, PROGRESSING).unwrap().reason,
            "RollingOut"
        );
    }

    fn migrate_pod_exited(code: i32, last_words: &str) -> Value {
        serde_json::json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "shop-inventory-migrate-x", "namespace": NAMESPACE},
            "status": {"containerStatuses": [{
                "name": "migrate", "image": "i", "imageID": "", "ready": false, "restartCount": 0,
                "state": {"terminated": {"exitCode": code, "message": last_words}},
            }]},
        })
    }

    /// Reconciles `stack` whose first migration Job failed with `pod`'s
    /// words; the Deployments are expected at `running`.
    async fn reconcile_a_failed_migration(
        stack: EcommerceStack,
        running: &str,
        pod: Value,
    ) -> (Value, Applied, crate::crd::EcommerceStackStatus) {
        let running = running.to_owned();
        let (ctx, mut server) = Context::test();
        let scenario =
            tokio::spawn({
                let stack = stack.clone();
                async move {
                    server.handle_secrets(&stack, true).await;
                    let mut applied = Applied::default();
                    let desired = crate::resources::desired_state(&stack).unwrap();
                    server
                        .handle_apply_shared(&desired, true, &mut applied)
                        .await;
                    let query = server.handle_failed_migration(&stack, vec![pod]).await;
                    assert!(
                        query.iter().any(|(k, v)| k == "labelSelector"
                            && v.contains("controller-uid%3Djob-uid-0")),
                        "the failed Job's own pods: {query:?}"
                    );
                    let desired_old = crate::resources::desired_state_at(&stack, &running).unwrap();
                    server
                        .handle_apply_services(&desired_old, rolled_out, &mut applied)
                        .await;
                    let warning = server.next_event().await;
                    server.handle_event("Applied").await;
                    let status = server.handle_status_patch(&stack).await;
                    server.expect_no_more_calls().await;
                    (warning, applied, status)
                }
            });
        reconcile_in_time(stack, ctx).await.expect("reconciled");
        timeout_after_1s(scenario).await
    }

    #[tokio::test]
    async fn a_failed_migration_leaves_the_old_version_running_and_degrades_with_its_message() {
        let (warning, applied, status) = reconcile_a_failed_migration(upgrading(), "1.1.0", migrate_pod_exited(
            1,
            "inventory: migrations of ecommerce_inventory failed: column \"sku\" contains null values",
        ))
        .await;
        assert!(images(&applied).iter().all(|i| i.ends_with(":1.1.0")));
        let degraded = condition(&status, DEGRADED).unwrap();
        assert_eq!(
            (degraded.status.as_str(), degraded.reason.as_str()),
            ("True", "MigrationFailed")
        );
        for part in [
            "shop-inventory-migrate-",
            "backoff limit",
            "contains null values",
            "1.1.0 keeps running",
        ] {
            assert!(
                degraded.message.contains(part),
                "{part}: {}",
                degraded.message
            );
        }
        assert_eq!(warning["type"], "Warning");
        assert_eq!(warning["reason"], "MigrationFailed");
        assert_eq!(warning["note"], degraded.message.as_str());
        assert_eq!(
            condition(&status, READY).unwrap().status,
            "True",
            "1.1.0 serves"
        );
        assert_eq!(status.migrated_version.as_deref(), Some("1.1.0"));
    }

    #[tokio::test]
    async fn a_downgrade_across_a_migration_is_refused_with_its_own_reason() {
        // 1.1.0 -> 1.2.0 -> 1.3.0, and back to 1.2.0 while the Jobs of
        // the first upgrade are still there: the way back has Jobs of its own.
        let mut back = upgrading();
        let status = back.status.as_mut().unwrap();
        status.version = Some("1.3.0".into());
        status.migrated_version = Some("1.3.0".into());
        let first_upgrade = crate::resources::desired_state(&upgrading()).unwrap();
        let way_back = crate::resources::desired_state(&back).unwrap();
        for (up, down) in first_upgrade.migrations.iter().zip(&way_back.migrations) {
            assert_ne!(up.name_any(), down.name_any());
        }
        let (warning, applied, status) = reconcile_a_failed_migration(
            back.clone(),
            "1.3.0",
            migrate_pod_exited(3, DOWNGRADE_WORDS),
        )
        .await;
        assert!(
            images(&applied).iter().all(|i| i.ends_with(":1.3.0")),
            "1.3.0 stays"
        );
        let degraded = condition(&status, DEGRADED).unwrap();
        assert_eq!(degraded.reason, "DowngradeRefused");
        assert!(
            degraded
                .message
                .contains("downgrade across a migration is refused")
        );
        assert!(
            degraded.message.contains("1.3.0 keeps running"),
            "{}",
            degraded.message
        );
        assert_eq!(warning["reason"], "DowngradeRefused");
        assert_eq!(status.migrated_version.as_deref(), Some("1.3.0"));

        // Checked again: the same cause is not said again.
        let (ctx, mut server) = Context::test();
        let again = back.with_status(status);
        let scenario = tokio::spawn({
            let stack = again.clone();
            async move {
                server.handle_secrets(&stack, true).await;
                let desired = crate::resources::desired_state(&stack).unwrap();
                let mut applied = Applied::default();
                server
                    .handle_apply_shared(&desired, true, &mut applied)
                    .await;
                server
                    .handle_failed_migration(&stack, vec![migrate_pod_exited(3, DOWNGRADE_WORDS)])
                    .await;
                let desired_old = crate::resources::desired_state_at(&stack, "1.3.0").unwrap();
                server
                    .handle_apply_services(&desired_old, rolled_out, &mut applied)
                    .await;
                server.handle_status_patch(&stack).await;
                server.expect_no_more_calls().await;
            }
        });
        reconcile_in_time(again, ctx).await.expect("reconciled");
        timeout_after_1s(scenario).await;
    }

    const DOWNGRADE_WORDS: &str = "inventory: database ecommerce_inventory was migrated by a newer version (migrations unknown to this one: m3); a downgrade across a migration is refused";

    /// The dev sample's shop: PostgreSQL and NATS managed, every secret
    /// generated.
    fn dev_stack() -> EcommerceStack {
        let mut stack = EcommerceStack::test().finalized();
        stack.spec.app_env = crate::crd::AppEnv::Development;
        stack.spec.database = crate::crd::DatabaseSpec {
            managed: Some(Default::default()),
            host: None,
            port: 5432,
            user: None,
            name: "ecommerce".into(),
            password_secret_ref: None,
        };
        stack.spec.nats.url = None;
        stack.spec.nats.managed = Some(Default::default());
        stack.spec.jwt_secret_ref = None;
        stack.spec.admin.as_mut().unwrap().password_secret_ref = None;
        stack
    }

    #[tokio::test]
    async fn one_resource_makes_a_shop_with_its_own_postgresql_nats_and_secrets() {
        let stack = dev_stack();
        let desired = crate::resources::desired_state(&stack).unwrap();

        // First: the secrets are generated, PostgreSQL and NATS applied;
        // nothing migrates before they are ready.
        let (ctx, mut server) = Context::test();
        let scenario = tokio::spawn({
            let stack = stack.clone();
            let desired = desired.clone();
            async move {
                let secrets = server.handle_secrets(&stack, false).await;
                let mut applied = Applied::default();
                server
                    .handle_apply_shared(&desired, false, &mut applied)
                    .await;
                server.handle_pod_list(Vec::new()).await;
                server.handle_event("Applied").await;
                let status = server.handle_status_patch(&stack).await;
                server.expect_no_more_calls().await;
                (secrets, applied, status)
            }
        });
        let action = reconcile_in_time(stack.clone(), ctx)
            .await
            .expect("reconciled");
        assert_eq!(action, Action::requeue(super::ROLLOUT_RECHECK));
        let (secrets, applied, status) = timeout_after_1s(scenario).await;
        let names: Vec<&str> = secrets
            .iter()
            .map(|s| s["metadata"]["name"].as_str().unwrap())
            .collect();
        assert_eq!(
            names,
            [
                "shop-postgresql",
                "shop-jwt",
                "shop-admin",
                "shop-internal-auth"
            ]
        );
        // The database password outlives the stack; the others go with it.
        assert!(secrets[0]["metadata"].get("ownerReferences").is_none());
        for secret in &secrets[1..] {
            assert_eq!(secret["metadata"]["ownerReferences"][0]["name"], "shop");
        }
        for secret in &secrets {
            let (_, value) = secret["stringData"]
                .as_object()
                .unwrap()
                .iter()
                .next()
                .unwrap();
            assert_eq!(value.as_str().unwrap().len(), 64);
        }
        let stateful_sets: Vec<&str> = applied
            .stateful_sets
            .iter()
            .map(|s| s["metadata"]["name"].as_str().unwrap())
            .collect();
        assert_eq!(stateful_sets, ["shop-postgresql", "shop-nats"]);
        assert_eq!(
            status.admin_password_secret_ref,
            Some(crate::crd::SecretKeyRef {
                name: "shop-admin".into(),
                key: "password".into()
            })
        );
        let progressing = condition(&status, PROGRESSING).unwrap();
        assert_eq!(progressing.reason, "WaitingForDependencies");
        assert!(
            progressing
                .message
                .contains("shop-postgresql and shop-nats"),
            "{}",
            progressing.message
        );
        assert_eq!(condition(&status, READY).unwrap().status, "False");

        // They are ready (a change of a StatefulSet it owns wakes the
        // operator): the migrations start, with the generated password.
        let (ctx, mut server) = Context::test();
        let stack = stack.with_status(status);
        let scenario = tokio::spawn({
            let stack = stack.clone();
            async move {
                server.handle_secrets(&stack, true).await;
                server
                    .handle_apply_shared(&desired, true, &mut Applied::default())
                    .await;
                let jobs = server
                    .handle_migrations(&stack, MigrationJobs::Absent)
                    .await;
                server.handle_pod_list(Vec::new()).await;
                let status = server.handle_status_patch(&stack).await;
                server.expect_no_more_calls().await;
                (jobs, status)
            }
        });
        reconcile_in_time(stack, ctx).await.expect("reconciled");
        let (jobs, status) = timeout_after_1s(scenario).await;
        assert_eq!(jobs.len(), 3);
        let env = jobs[0]["spec"]["template"]["spec"]["containers"][0]["env"]
            .as_array()
            .unwrap();
        let password = env.iter().find(|e| e["name"] == "DB_PASSWORD").unwrap();
        assert_eq!(
            password["valueFrom"]["secretKeyRef"]["name"],
            "shop-postgresql"
        );
        assert_eq!(condition(&status, PROGRESSING).unwrap().reason, "Migrating");
    }

    #[tokio::test]
    async fn a_spec_that_names_no_database_is_refused_before_anything_is_applied() {
        let (ctx, mut server) = Context::test();
        let mut stack = EcommerceStack::test().finalized();
        stack.spec.database.host = None;
        let scenario = tokio::spawn({
            let stack = stack.clone();
            async move {
                let event = server.handle_event("InvalidSpec").await;
                let status = server.handle_status_patch(&stack).await;
                server.expect_no_more_calls().await;
                (event, status)
            }
        });
        reconcile_in_time(stack, ctx).await.expect("refused");
        let (event, status) = timeout_after_1s(scenario).await;
        assert!(event["note"].as_str().unwrap().contains("spec.database"));
        let degraded = condition(&status, DEGRADED).unwrap();
        assert_eq!(
            (degraded.status.as_str(), degraded.reason.as_str()),
            ("True", "InvalidSpec")
        );
    }

    fn consumer_on_autopilot() -> EcommerceStack {
        let mut stack = EcommerceStack::test().finalized();
        stack.spec.services.consumer.autoscaling = Some(crate::crd::AutoscalingSpec {
            min_replicas: 1,
            max_replicas: 10,
            target_cpu_utilization_percentage: 75,
            pending_per_replica: 1000,
            scale_down_cooldown_seconds: 300,
        });
        let mut status = crate::status::applied_status(&stack, &[], Timestamp::UNIX_EPOCH);
        status.version = Some("1.2.0".into());
        status.migrated_version = Some("1.2.0".into());
        status.observed_generation = Some(1);
        status.consumer_autoscaling = Some(crate::crd::LagScalingStatus {
            pending: Some(0),
            replicas: 2,
            last_scale_time: Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
                Timestamp::UNIX_EPOCH,
            )),
            message: String::new(),
        });
        stack.with_status(status)
    }

    fn consumer_replicas(applied: &Applied) -> i64 {
        applied
            .deployments
            .iter()
            .find(|d| d["metadata"]["name"] == "shop-consumer")
            .unwrap()["spec"]["replicas"]
            .as_i64()
            .unwrap()
    }

    #[tokio::test]
    async fn a_growing_backlog_scales_the_consumer_up_and_says_so() {
        let stack = consumer_on_autopilot();
        let (ctx, mut server) = Context::test_with_lag(crate::fixtures::FixedLag(Ok(4_500)));
        let scenario = tokio::spawn({
            let stack = stack.clone();
            async move {
                server.handle_secrets(&stack, true).await;
                let applied = server.handle_apply_children(&stack, rolled_out).await;
                let event = server.handle_event("ScaledConsumer").await;
                let status = server.handle_status_patch(&stack).await;
                server.expect_no_more_calls().await;
                (applied, event, status)
            }
        });
        let action = reconcile_in_time(stack, ctx).await.expect("reconciled");
        assert_eq!(
            action,
            Action::requeue(super::LAG_RECHECK),
            "the backlog is watched"
        );
        let (applied, event, status) = timeout_after_1s(scenario).await;
        assert_eq!(consumer_replicas(&applied), 5);
        assert!(
            applied
                .autoscalers
                .iter()
                .all(|hpa| hpa["metadata"]["name"] != "shop-consumer"),
            "no CPU HPA fights the autopilot"
        );
        assert!(
            event["note"].as_str().unwrap().contains("from 2 to 5"),
            "{event}"
        );
        let scaling = status.consumer_autoscaling.unwrap();
        assert_eq!((scaling.replicas, scaling.pending), (5, Some(4_500)));
        assert_ne!(scaling.last_scale_time.unwrap().0, Timestamp::UNIX_EPOCH);
    }

    #[tokio::test]
    async fn an_unreadable_backlog_holds_the_consumer_where_it_is() {
        let stack = consumer_on_autopilot();
        let (ctx, mut server) =
            Context::test_with_lag(crate::fixtures::FixedLag(Err("no answer from NATS".into())));
        let scenario = tokio::spawn({
            let stack = stack.clone();
            async move {
                server.handle_secrets(&stack, true).await;
                let applied = server.handle_apply_children(&stack, rolled_out).await;
                let status = server.handle_status_patch(&stack).await;
                server.expect_no_more_calls().await;
                (applied, status)
            }
        });
        reconcile_in_time(stack, ctx).await.expect("reconciled");
        let (applied, status) = timeout_after_1s(scenario).await;
        assert_eq!(consumer_replicas(&applied), 2);
        let scaling = status.consumer_autoscaling.unwrap();
        assert_eq!((scaling.replicas, scaling.pending), (2, None));
        assert!(
            scaling.message.contains("no answer from NATS"),
            "{}",
            scaling.message
        );
    }

    fn monitored() -> EcommerceStack {
        let mut stack = EcommerceStack::test().finalized();
        stack.spec.monitoring.enabled = true;
        stack
            .spec
            .monitoring
            .labels
            .insert("release".into(), "kube-prometheus-stack".into());
        let mut status = crate::status::applied_status(&stack, &[], Timestamp::UNIX_EPOCH);
        status.version = Some("1.2.0".into());
        status.migrated_version = Some("1.2.0".into());
        status.observed_generation = Some(1);
        stack.with_status(status)
    }

    #[tokio::test]
    async fn monitoring_applies_the_charts_alerts_a_pod_monitor_and_the_dashboard() {
        let stack = monitored();
        let (ctx, mut server) = Context::test();
        let scenario = tokio::spawn({
            let stack = stack.clone();
            async move {
                server.handle_secrets(&stack, true).await;
                server.handle_apply_children(&stack, rolled_out).await;
                let applied = server.handle_monitoring(true).await;
                let status = server.handle_status_patch(&stack).await;
                server.expect_no_more_calls().await;
                (applied, status)
            }
        });
        reconcile_in_time(stack, ctx).await.expect("reconciled");
        let (applied, status) = timeout_after_1s(scenario).await;
        let [dashboard, pod_monitor, rule] = &applied[..] else {
            panic!("three objects: {applied:?}")
        };
        assert_eq!(dashboard["metadata"]["labels"]["grafana_dashboard"], "1");
        assert_eq!(
            pod_monitor["metadata"]["labels"]["release"],
            "kube-prometheus-stack"
        );
        assert_eq!(
            pod_monitor["spec"]["podMetricsEndpoints"][0]["port"],
            "metrics"
        );
        assert_eq!(rule["metadata"]["ownerReferences"][0]["name"], "shop");
        assert!(rule["spec"]["groups"].as_array().unwrap().len() >= 3);
        let said = status.monitoring.unwrap();
        assert!(
            said.contains("PodMonitor shop-metrics") && said.contains("PrometheusRule shop-alerts"),
            "{said}"
        );
    }

    #[tokio::test]
    async fn without_the_prometheus_operator_the_stack_says_so_once() {
        let stack = monitored();
        let (ctx, mut server) = Context::test();
        let scenario = tokio::spawn({
            let stack = stack.clone();
            async move {
                server.handle_secrets(&stack, true).await;
                server.handle_apply_children(&stack, rolled_out).await;
                server.handle_monitoring(false).await;
                let warning = server.handle_event("MonitoringUnavailable").await;
                let status = server.handle_status_patch(&stack).await;
                server.expect_no_more_calls().await;
                (warning, status)
            }
        });
        reconcile_in_time(stack.clone(), ctx)
            .await
            .expect("reconciled");
        let (warning, status) = timeout_after_1s(scenario).await;
        assert!(
            warning["note"]
                .as_str()
                .unwrap()
                .contains("monitoring.coreos.com/v1")
        );
        assert!(
            status
                .monitoring
                .as_deref()
                .unwrap()
                .starts_with("the cluster does not serve")
        );
        // The next reconcile finds the same: no second warning.
        let (ctx, mut server) = Context::test();
        let again = stack.with_status(status);
        let scenario = tokio::spawn({
            let stack = again.clone();
            async move {
                server.handle_secrets(&stack, true).await;
                server.handle_apply_children(&stack, rolled_out).await;
                server.handle_monitoring(false).await;
                server.handle_status_patch(&stack).await;
                server.expect_no_more_calls().await;
            }
        });
        reconcile_in_time(again, ctx).await.expect("reconciled");
        timeout_after_1s(scenario).await;
    }

    /// Reconciles `stack` (whose status says every service is rolled out)
    /// with the backlog at `lag`; returns the consumer's replicas and the
    /// status, and the ScaledConsumer event when one is expected.
    async fn reconcile_with_lag(
        stack: EcommerceStack,
        lag: Result<u64, String>,
        scaled: bool,
    ) -> (i64, crate::crd::EcommerceStackStatus, Option<Value>) {
        let (ctx, mut server) = Context::test_with_lag(crate::fixtures::FixedLag(lag));
        let scenario = tokio::spawn({
            let stack = stack.clone();
            async move {
                server.handle_secrets(&stack, true).await;
                let applied = server.handle_apply_children(&stack, rolled_out).await;
                let event = if scaled {
                    Some(server.handle_event("ScaledConsumer").await)
                } else {
                    None
                };
                let status = server.handle_status_patch(&stack).await;
                server.expect_no_more_calls().await;
                (consumer_replicas(&applied), status, event)
            }
        });
        reconcile_in_time(stack, ctx).await.expect("reconciled");
        timeout_after_1s(scenario).await
    }

    #[tokio::test]
    async fn a_steady_backlog_leaves_the_status_as_it_was() {
        let stack = consumer_on_autopilot();
        let before = stack.status.clone().unwrap().consumer_autoscaling;
        // 1,700 pending: two replicas keep up; nothing to write.
        let (replicas, status, _) = reconcile_with_lag(stack, Ok(1_700), false).await;
        assert_eq!(replicas, 2);
        assert_eq!(
            status.consumer_autoscaling, before,
            "an unchanged status wakes nobody"
        );
    }

    #[tokio::test]
    async fn switching_the_autopilot_on_starts_from_the_running_count_and_off_clears_it() {
        let mut stack = consumer_on_autopilot();
        let status = stack.status.as_mut().unwrap();
        status.consumer_autoscaling = None;
        status.services = vec![crate::crd::ServiceStatus {
            name: "consumer".into(),
            desired_replicas: 4,
            ..Default::default()
        }];
        // 3,500 pending fits the 4 running (no cooldown has started).
        let (replicas, status, _) = reconcile_with_lag(stack.clone(), Ok(3_500), false).await;
        assert_eq!(replicas, 4, "not dropped to minReplicas");
        assert_eq!(status.consumer_autoscaling.unwrap().replicas, 4);

        let mut off = consumer_on_autopilot();
        off.spec.services.consumer.autoscaling = None;
        off.spec.services.consumer.replicas = Some(3);
        let (ctx, mut server) = Context::test();
        let scenario = tokio::spawn({
            let stack = off.clone();
            async move {
                server.handle_secrets(&stack, true).await;
                let applied = server.handle_apply_children(&stack, rolled_out).await;
                let status = server.handle_status_patch(&stack).await;
                server.expect_no_more_calls().await;
                (consumer_replicas(&applied), status)
            }
        });
        let action = reconcile_in_time(off, ctx).await.expect("reconciled");
        let (replicas, status) = timeout_after_1s(scenario).await;
        assert_eq!(replicas, 3, "spec.replicas again");
        assert_eq!(status.consumer_autoscaling, None);
        assert_eq!(action, Action::requeue(RESYNC), "no more backlog reads");
    }

    #[tokio::test]
    async fn deleting_a_stack_says_what_it_keeps() {
        let mut stack = dev_stack().deleting();
        stack
            .spec
            .database
            .managed
            .as_mut()
            .unwrap()
            .retain_on_delete = true;
        let (ctx, mut server) = Context::test();
        let scenario = tokio::spawn({
            let stack = stack.clone();
            async move {
                let event = server.handle_event("Deleting").await;
                server.handle_finalizer_removal(&stack).await;
                server.expect_no_more_calls().await;
                event
            }
        });
        reconcile_in_time(stack, ctx).await.expect("cleaned up");
        let event = timeout_after_1s(scenario).await;
        let note = event["note"].as_str().unwrap();
        assert!(
            note.contains("kept (retainOnDelete): the managed PostgreSQL's volume"),
            "{note}"
        );
    }

    #[tokio::test]
    async fn the_generated_database_password_goes_with_its_volume() {
        // Migrated and rolled out; PostgreSQL's volume now exists.
        let mut stack = dev_stack();
        let mut status = crate::status::applied_status(&stack, &[], Timestamp::UNIX_EPOCH);
        status.migrated_version = Some("1.2.0".into());
        stack = stack.with_status(status);
        let (ctx, mut server) = Context::test();
        let scenario = tokio::spawn({
            let stack = stack.clone();
            async move {
                server.handle_secrets(&stack, true).await;
                let desired = crate::resources::desired_state(&stack).unwrap();
                let mut applied = Applied::default();
                let patch = server
                    .handle_apply_shared_with_volume(&desired, "claim-uid-1", &mut applied)
                    .await;
                // (The services' applies follow: not this test's concern.)
                patch
            }
        });
        let reconcile = tokio::spawn(reconcile(Arc::new(stack), ctx));
        let patch = timeout_after_1s(scenario).await;
        reconcile.abort();
        assert_eq!(
            patch["metadata"]["ownerReferences"],
            serde_json::json!([{"apiVersion": "v1", "kind": "PersistentVolumeClaim",
                                "name": "data-shop-postgresql-0", "uid": "claim-uid-1"}])
        );
    }
}
