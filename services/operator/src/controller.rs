//! The reconciler: applies an `EcommerceStack`'s desired state with
//! server-side apply, reports status and events, and cleans up on deletion.

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Service as KubeService};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::runtime::finalizer::{Event as FinalizerEvent, finalizer};
use kube::runtime::reflector::ObjectRef;
use kube::runtime::watcher;
use kube::{Client, Resource, ResourceExt};
use serde_json::json;
use tracing::{info, warn};

use crate::crd::{EcommerceStack, EcommerceStackStatus, GROUP, VERSION};
use crate::error::{Error, Result};
use crate::metrics::Metrics;
use crate::resources::{DesiredState, FIELD_MANAGER, desired_state};
use crate::services::Service;
use crate::status::{applied_status, failed_status};

/// Finalizer the operator puts on every stack it manages.
pub const FINALIZER: &str = "ecommerce.example.com/cleanup";
/// Periodic re-check when nothing changed (owned objects' changes come sooner).
pub const RESYNC: Duration = Duration::from_secs(300);
/// First retry delay after a failure; doubles per consecutive failure.
pub const FAILURE_BACKOFF_BASE: Duration = Duration::from_secs(5);
pub const FAILURE_BACKOFF_MAX: Duration = Duration::from_secs(300);
/// Selects the objects the operator applied, so it watches only those.
pub const MANAGED_SELECTOR: &str = "app.kubernetes.io/managed-by=ecommerce-operator";

/// What every reconciliation shares.
pub struct Context {
    pub client: Client,
    pub recorder: Recorder,
    pub metrics: Metrics,
    /// Consecutive failures per stack, for the error policy's backoff.
    failures: Mutex<HashMap<ObjectRef<EcommerceStack>, u32>>,
}

impl Context {
    pub fn new(client: Client, metrics: Metrics) -> Arc<Self> {
        let reporter = Reporter {
            controller: FIELD_MANAGER.to_owned(),
            instance: std::env::var("POD_NAME").ok(),
        };
        Arc::new(Context {
            recorder: Recorder::new(client.clone(), reporter),
            client,
            metrics,
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
    let desired = desired_state(stack)?;
    match apply_children(&desired, &ctx.client, &namespace).await {
        Ok(deployments) => {
            let status = applied_status(stack, &deployments, Timestamp::now());
            publish_changes(stack, &status, ctx).await;
            patch_status(stack, &status, ctx).await?;
            Ok(Action::requeue(RESYNC))
        }
        Err(error) => {
            // Say so on the resource too; the error still reaches the error policy.
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
    }
}

/// Applies the ConfigMap, then each service's Service and Deployment; returns
/// the Deployments as the API server answered (with their status).
async fn apply_children(
    desired: &DesiredState,
    client: &Client,
    namespace: &str,
) -> Result<Vec<(Service, Deployment)>> {
    let params = PatchParams::apply(FIELD_MANAGER).force();
    let config_maps: Api<ConfigMap> = Api::namespaced(client.clone(), namespace);
    let kube_services: Api<KubeService> = Api::namespaced(client.clone(), namespace);
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), namespace);

    let config_map = &desired.config_map;
    config_maps
        .patch(&config_map.name_any(), &params, &Patch::Apply(config_map))
        .await?;
    let mut applied = Vec::with_capacity(desired.services.len());
    for objects in &desired.services {
        kube_services
            .patch(
                &objects.kube_service.name_any(),
                &params,
                &Patch::Apply(&objects.kube_service),
            )
            .await?;
        let deployment = deployments
            .patch(
                &objects.deployment.name_any(),
                &params,
                &Patch::Apply(&objects.deployment),
            )
            .await?;
        applied.push((objects.service, deployment));
    }
    Ok(applied)
}

/// Events for what changed: a new generation applied, a version rolled out.
async fn publish_changes(stack: &EcommerceStack, status: &EcommerceStackStatus, ctx: &Context) {
    let previous = stack.status.clone().unwrap_or_default();
    if previous.observed_generation != stack.metadata.generation {
        let note = format!(
            "applied generation {} (version {}) to {} services",
            stack.metadata.generation.unwrap_or_default(),
            stack.spec.version,
            Service::ALL.len()
        );
        publish(stack, ctx, EventType::Normal, "Applied", "Applying", note).await;
    }
    if status.version.is_some() && status.version != previous.version {
        let note = format!(
            "version {} runs on every service",
            status.version.as_deref().unwrap_or_default()
        );
        publish(
            stack,
            ctx,
            EventType::Normal,
            "RolledOut",
            "RollingOut",
            note,
        )
        .await;
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
    let note = format!(
        "deleting stack {}: its Deployments, Services and ConfigMap go with it",
        stack.name_any()
    );
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
    Controller::new(
        api::<EcommerceStack>(&client, namespace),
        watcher::Config::default(),
    )
    .owns(api::<Deployment>(&client, namespace), owned())
    .owns(api::<KubeService>(&client, namespace), owned())
    .owns(api::<ConfigMap>(&client, namespace), owned())
    .graceful_shutdown_on(shutdown)
    .run(reconcile, error_policy, ctx)
    .for_each(|result| async move {
        match result {
            Ok((stack, _)) => {
                info!(stack = %stack.name, namespace = ?stack.namespace, "reconciled")
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

    use kube::runtime::controller::Action;
    use serde_json::Value;

    use super::{Context, FAILURE_BACKOFF_BASE, RESYNC, error_policy, reconcile};
    use crate::crd::EcommerceStack;
    use crate::fixtures::{NAMESPACE, not_rolled_out, respond_error, rolled_out, timeout_after_1s};
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
                let applied = server.handle_apply_children(rolled_out).await;
                server.handle_event("Applied").await;
                server.handle_event("RolledOut").await;
                let status = server.handle_status_patch(&stack).await;
                server.expect_no_more_calls().await;
                (applied, status)
            }
        });
        let action = reconcile_in_time(stack, ctx.clone())
            .await
            .expect("reconciled");
        assert_eq!(action, Action::requeue(RESYNC));
        let (applied, status) = timeout_after_1s(scenario).await;

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
            k8s_openapi::jiff::Timestamp::UNIX_EPOCH,
        );
        let stack = EcommerceStack::test()
            .finalized()
            .with_generation(2)
            .with_status(previous);
        let scenario = tokio::spawn({
            let stack = stack.clone();
            async move {
                server.handle_apply_children(not_rolled_out).await;
                let event = server.handle_event("Applied").await;
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
        assert_ne!(
            ready.last_transition_time.0,
            k8s_openapi::jiff::Timestamp::UNIX_EPOCH
        );
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
        let status =
            crate::status::applied_status(&first, &[], k8s_openapi::jiff::Timestamp::UNIX_EPOCH);
        let status = crate::crd::EcommerceStackStatus {
            version: Some("1.2.0".into()),
            ..status
        };
        let stack = first.with_status(status);
        let scenario = tokio::spawn({
            let stack = stack.clone();
            async move {
                server.handle_apply_children(rolled_out).await;
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
            k8s_openapi::jiff::Timestamp::UNIX_EPOCH
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

    #[tokio::test]
    async fn an_api_error_is_reported_and_goes_to_the_error_policy_with_backoff() {
        let (ctx, mut server) = Context::test();
        let stack = EcommerceStack::test().finalized();
        let scenario = tokio::spawn({
            let stack = stack.clone();
            async move {
                let (_, send) = server
                    .expect_apply(&format!(
                        "/api/v1/namespaces/{NAMESPACE}/configmaps/shop-config"
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
}
