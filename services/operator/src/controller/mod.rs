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

mod apply;
mod checks;
mod scaling;
mod upgrade;

use apply::*;
use checks::*;
use scaling::*;
use upgrade::*;

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
    DEGRADED, PAUSED_REASON, PROGRESSING, already_said, applied_status, condition, failed_status,
    paused_status, pod_failures, refused_status, set_pod_failures,
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
/// The Prometheus Operator's kinds the cluster serves (None: not served).
type MonitoringKinds = Option<HashMap<String, kube::discovery::ApiResource>>;

/// How long a discovery of the Prometheus Operator's kinds is trusted (it
/// is installed or removed rarely; a new one is seen within this).
pub const DISCOVERY_TTL: Duration = Duration::from_secs(300);
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
    /// The Prometheus Operator's kinds as last discovered, and when: one
    /// discovery serves every monitored stack for `DISCOVERY_TTL`.
    monitoring_kinds: Mutex<Option<(std::time::Instant, MonitoringKinds)>>,
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
            monitoring_kinds: Mutex::default(),
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
    let (missing, secrets) = match check_secrets(stack, &ctx.client, &namespace).await {
        Ok(checked) => checked,
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
        keep_password_with_volume(stack, &secrets, client, &namespace).await?;
        let migrated = stack
            .status
            .as_ref()
            .and_then(|s| s.migrated_version.as_ref());
        // The migrations need PostgreSQL, the services NATS too (a restart
        // of either on a migrated stack is no reason to wait).
        let migration = if migrated == Some(&stack.spec.version) {
            Migration::Done
        } else if starting.is_empty() {
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
            Some(objects) => Some(apply_monitoring(objects, ctx, &namespace).await?),
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
    if let Migration::Failed { reason, .. } = &migration
        && let Some(degraded) = condition(&status, DEGRADED)
        && !already_said(stack, DEGRADED, &degraded.reason, &degraded.message)
    {
        // Once per cause and generation, not on every re-check.
        let note = degraded.message.clone();
        publish(stack, ctx, EventType::Warning, reason, "Migrating", note).await;
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
mod tests;
