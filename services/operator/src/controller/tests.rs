//! The reconciler against a mocked API server.
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

/// Reconciles `stack` while `scenario` plays the API server; afterwards no
/// call may be left. Returns the reconcile's result and the scenario's.
async fn reconcile_with<T, Scenario>(
    (ctx, server): (Arc<Context>, crate::fixtures::ApiServerVerifier),
    stack: EcommerceStack,
    scenario: impl FnOnce(crate::fixtures::ApiServerVerifier, EcommerceStack) -> Scenario,
) -> (crate::Result<Action>, T)
where
    Scenario:
        std::future::Future<Output = (crate::fixtures::ApiServerVerifier, T)> + Send + 'static,
    T: Send + 'static,
{
    let played = scenario(server, stack.clone());
    let scenario = tokio::spawn(async move {
        let (server, out) = played.await;
        server.expect_no_more_calls().await;
        out
    });
    let action = reconcile_in_time(stack, ctx).await;
    (action, timeout_after_1s(scenario).await)
}

/// Reconciles `stack` while `scenario` plays the API server, and stops the
/// reconcile once the scenario has what it came for (the calls after it are
/// not the test's concern). Returns the scenario's result.
async fn reconcile_until<T, Scenario>(
    (ctx, server): (Arc<Context>, crate::fixtures::ApiServerVerifier),
    stack: EcommerceStack,
    scenario: impl FnOnce(crate::fixtures::ApiServerVerifier, EcommerceStack) -> Scenario,
) -> T
where
    Scenario: std::future::Future<Output = T> + Send + 'static,
    T: Send + 'static,
{
    let scenario = tokio::spawn(scenario(server, stack.clone()));
    let reconcile = tokio::spawn(reconcile(Arc::new(stack), ctx));
    let out = timeout_after_1s(scenario).await;
    reconcile.abort();
    out
}

#[tokio::test]
async fn a_new_stack_gets_the_finalizer_first_and_nothing_else() {
    let stack = EcommerceStack::test();
    let (action, _) = reconcile_with(Context::test(), stack, |mut server, stack| async move {
        server.handle_finalizer_creation(&stack).await;
        (server, ())
    })
    .await;
    let action = action.expect("reconciled");
    assert_eq!(action, Action::await_change());
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
    let (reconciled, (event, status)) =
        reconcile_with(Context::test(), stack, |mut server, stack| async move {
            server.handle_secrets(&stack, true).await;
            server.handle_apply_children(&stack, not_rolled_out).await;
            server.handle_pod_list(Vec::new()).await;
            let event = server.handle_event("Applied").await;
            server.handle_event("Migrated").await;
            let status = server.handle_status_patch(&stack).await;
            (server, (event, status))
        })
        .await;
    reconciled.expect("reconciled");
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
    let (reconciled, status) =
        reconcile_with(Context::test(), stack, |mut server, stack| async move {
            server.handle_secrets(&stack, true).await;
            server.handle_apply_children(&stack, rolled_out).await;
            let status = server.handle_status_patch(&stack).await;
            (server, status)
        })
        .await;
    reconciled.expect("reconciled");
    // Ready was already True: its transition time is kept.
    assert_eq!(
        condition(&status, READY).unwrap().last_transition_time.0,
        Timestamp::UNIX_EPOCH
    );
}

#[tokio::test]
async fn a_deleted_stack_is_cleaned_up_and_its_finalizer_removed() {
    let stack = EcommerceStack::test().finalized().deleting();
    let (action, _) = reconcile_with(Context::test(), stack, |mut server, stack| async move {
        server.handle_event("Deleting").await;
        server.handle_finalizer_removal(&stack).await;
        (server, ())
    })
    .await;
    let action = action.expect("cleaned up");
    assert_eq!(action, Action::await_change());
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
    let stack = paused(EcommerceStack::test().finalized().with_generation(3));
    let (action, (event, status)) = reconcile_with(
        Context::test(),
        stack.clone(),
        |mut server, stack| async move {
            let event = server.handle_event("Paused").await;
            let status = server.handle_status_patch(&stack).await;
            (server, (event, status))
        },
    )
    .await;
    let action = action.expect("paused");
    assert_eq!(action, Action::await_change());
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
    let stack = paused(EcommerceStack::test().finalized().deleting());
    let (reconciled, _) = reconcile_with(Context::test(), stack, |mut server, stack| async move {
        server.handle_event("Deleting").await;
        server.handle_finalizer_removal(&stack).await;
        (server, ())
    })
    .await;
    reconciled.expect("cleaned up");
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
    let stack = autoscaled_gateway();
    let (reconciled, (applied, status)) =
        reconcile_with(Context::test(), stack, |mut server, stack| async move {
            server.handle_secrets(&stack, true).await;
            let applied = server.handle_apply_children(&stack, rolled_out).await;
            server.handle_event("Applied").await;
            server.handle_event("Migrated").await;
            server.handle_event("RolledOut").await;
            let status = server.handle_status_patch(&stack).await;
            (server, (applied, status))
        })
        .await;
    reconciled.expect("reconciled");
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
    let (ctx, server) = Context::test();
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
    // The events and status after the applies are not this test's concern.
    let calls = reconcile_until((ctx, server), stack, |mut server, stack| async move {
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
    })
    .await;
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
    let (ctx, server) = Context::test();
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
    let calls = reconcile_until((ctx, server), stack, |mut server, stack| async move {
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
    })
    .await;
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
    let stack = EcommerceStack::test().finalized();
    let (action, (event, status)) =
        reconcile_with(Context::test(), stack, |mut server, stack| async move {
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
            (server, (event, status))
        })
        .await;
    let action = action.expect("refused, not failed");
    assert_eq!(action, Action::requeue(super::REFUSED_RECHECK));
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
    let stack = EcommerceStack::test().finalized();
    let pod = serde_json::json!({
        "metadata": {"name": "shop-user-5d9c-x2"},
        "status": {"containerStatuses": [{
            "name": "user", "image": "u", "imageID": "", "ready": false, "restartCount": 0,
            "state": {"waiting": {"reason": "CreateContainerConfigError",
                "message": "secret \"shop-admin\" not found"}}
        }]}
    });
    let (action, (query, warning, status)) =
        reconcile_with(Context::test(), stack, |mut server, stack| async move {
            server.handle_secrets(&stack, true).await;
            server.handle_apply_children(&stack, not_rolled_out).await;
            let query = server.handle_pod_list(vec![pod]).await;
            let warning = server.handle_event("PodsFailing").await;
            server.handle_event("Applied").await;
            server.handle_event("Migrated").await;
            let status = server.handle_status_patch(&stack).await;
            (server, (query, warning, status))
        })
        .await;
    let action = action.expect("reconciled");
    assert_eq!(action, Action::requeue(super::ROLLOUT_RECHECK));
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
    older.metadata.creation_timestamp = Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
        Timestamp::UNIX_EPOCH,
    ));
    older.spec.nats.stream = Some("ORDER_EVENTS".into());
    let mut stack = EcommerceStack::test().finalized();
    stack.metadata.creation_timestamp = Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
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
    let stack = EcommerceStack::test().finalized();
    let (action, (jobs, status)) =
        reconcile_with(Context::test(), stack, |mut server, stack| async move {
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
            (server, (jobs, status))
        })
        .await;
    let action = action.expect("reconciled");
    assert_eq!(action, Action::requeue(super::ROLLOUT_RECHECK));
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
    let (reconciled, (applied, status)) = reconcile_with(
        Context::test(),
        stack.clone(),
        |mut server, stack| async move {
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
            (server, (applied, status))
        },
    )
    .await;
    reconciled.expect("reconciled");
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
    let stack = stack.with_status(status);
    let (reconciled, (applied, migrated, status)) =
        reconcile_with(Context::test(), stack, |mut server, stack| async move {
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
            (server, (applied, migrated, status))
        })
        .await;
    reconciled.expect("reconciled");
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
    let scenario = tokio::spawn({
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
                query
                    .iter()
                    .any(|(k, v)| k == "labelSelector" && v.contains("controller-uid%3Djob-uid-0")),
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
    let again = back.with_status(status);
    let (reconciled, _) = reconcile_with(Context::test(), again, |mut server, stack| async move {
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
        (server, ())
    })
    .await;
    reconciled.expect("reconciled");
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
    let stack = stack.with_status(status);
    let (reconciled, (jobs, status)) =
        reconcile_with(Context::test(), stack, |mut server, stack| async move {
            server.handle_secrets(&stack, true).await;
            server
                .handle_apply_shared(&desired, true, &mut Applied::default())
                .await;
            let jobs = server
                .handle_migrations(&stack, MigrationJobs::Absent)
                .await;
            server.handle_pod_list(Vec::new()).await;
            let status = server.handle_status_patch(&stack).await;
            (server, (jobs, status))
        })
        .await;
    reconciled.expect("reconciled");
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
    let mut stack = EcommerceStack::test().finalized();
    stack.spec.database.host = None;
    let (reconciled, (event, status)) =
        reconcile_with(Context::test(), stack, |mut server, stack| async move {
            let event = server.handle_event("InvalidSpec").await;
            let status = server.handle_status_patch(&stack).await;
            (server, (event, status))
        })
        .await;
    reconciled.expect("refused");
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
    let (action, (applied, event, status)) = reconcile_with(
        Context::test_with_lag(crate::fixtures::FixedLag(Ok(4_500))),
        stack,
        |mut server, stack| async move {
            server.handle_secrets(&stack, true).await;
            let applied = server.handle_apply_children(&stack, rolled_out).await;
            let event = server.handle_event("ScaledConsumer").await;
            let status = server.handle_status_patch(&stack).await;
            (server, (applied, event, status))
        },
    )
    .await;
    let action = action.expect("reconciled");
    assert_eq!(
        action,
        Action::requeue(super::LAG_RECHECK),
        "the backlog is watched"
    );
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
    let (reconciled, (applied, status)) =
        reconcile_with(Context::test(), stack, |mut server, stack| async move {
            server.handle_secrets(&stack, true).await;
            server.handle_apply_children(&stack, rolled_out).await;
            let applied = server.handle_monitoring(true).await;
            let status = server.handle_status_patch(&stack).await;
            (server, (applied, status))
        })
        .await;
    reconciled.expect("reconciled");
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
    let (reconciled, (warning, status)) = reconcile_with(
        Context::test(),
        stack.clone(),
        |mut server, stack| async move {
            server.handle_secrets(&stack, true).await;
            server.handle_apply_children(&stack, rolled_out).await;
            server.handle_monitoring(false).await;
            let warning = server.handle_event("MonitoringUnavailable").await;
            let status = server.handle_status_patch(&stack).await;
            (server, (warning, status))
        },
    )
    .await;
    reconciled.expect("reconciled");
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
    let again = stack.with_status(status);
    let (reconciled, _) = reconcile_with(Context::test(), again, |mut server, stack| async move {
        server.handle_secrets(&stack, true).await;
        server.handle_apply_children(&stack, rolled_out).await;
        server.handle_monitoring(false).await;
        server.handle_status_patch(&stack).await;
        (server, ())
    })
    .await;
    reconciled.expect("reconciled");
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
    let (action, (replicas, status)) =
        reconcile_with(Context::test(), off, |mut server, stack| async move {
            server.handle_secrets(&stack, true).await;
            let applied = server.handle_apply_children(&stack, rolled_out).await;
            let status = server.handle_status_patch(&stack).await;
            (server, (consumer_replicas(&applied), status))
        })
        .await;
    let action = action.expect("reconciled");
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
    let (reconciled, event) =
        reconcile_with(Context::test(), stack, |mut server, stack| async move {
            let event = server.handle_event("Deleting").await;
            server.handle_finalizer_removal(&stack).await;
            (server, event)
        })
        .await;
    reconciled.expect("cleaned up");
    let note = event["note"].as_str().unwrap();
    assert!(
        note.contains("kept (retainOnDelete): the managed PostgreSQL's volume"),
        "{note}"
    );
}

/// The development stack, migrated and rolled out: PostgreSQL's volume
/// exists.
fn migrated_dev_stack() -> EcommerceStack {
    let stack = dev_stack();
    let mut status = crate::status::applied_status(&stack, &[], Timestamp::UNIX_EPOCH);
    status.migrated_version = Some("1.2.0".into());
    stack.with_status(status)
}

#[tokio::test]
async fn the_generated_database_password_goes_with_its_volume() {
    let stack = migrated_dev_stack();
    let (ctx, server) = Context::test();
    let patch = reconcile_until((ctx, server), stack, |mut server, stack| async move {
        server.handle_secrets(&stack, true).await;
        let desired = crate::resources::desired_state(&stack).unwrap();
        let mut applied = Applied::default();
        let patch = server
            .handle_apply_shared_with_volume(&desired, "claim-uid-1", &mut applied)
            .await;
        // (The services' applies follow: not this test's concern.)
        patch
    })
    .await;
    assert_eq!(
        patch["metadata"]["ownerReferences"],
        serde_json::json!([{"apiVersion": "v1", "kind": "PersistentVolumeClaim",
                            "name": "data-shop-postgresql-0", "uid": "claim-uid-1"}])
    );
}

#[tokio::test]
async fn a_password_its_volume_owns_already_is_left_alone_unread() {
    let stack = migrated_dev_stack();
    let (ctx, server) = Context::test();
    let next = reconcile_until((ctx, server), stack, |mut server, stack| async move {
        // The Secrets as read: the password's is owned by its volume.
        for reference in crate::resources::secret_refs(&stack) {
            let path = format!("/api/v1/namespaces/{NAMESPACE}/secrets/{}", reference.name);
            let (_, send, _) = server.expect(http::Method::GET, &path).await;
            let mut secret = serde_json::json!({
                "apiVersion": "v1", "kind": "Secret",
                "metadata": {"name": reference.name, "namespace": NAMESPACE},
                "data": {reference.key.clone(): "c2VjcmV0"},
            });
            if reference.name == "shop-postgresql" {
                secret["metadata"]["ownerReferences"] = serde_json::json!([{
                    "apiVersion": "v1", "kind": "PersistentVolumeClaim",
                    "name": "data-shop-postgresql-0", "uid": "claim-uid-1",
                }]);
            }
            respond_json(send, &secret);
        }
        let desired = crate::resources::desired_state(&stack).unwrap();
        let mut applied = Applied::default();
        server
            .handle_apply_shared_handed_over(&desired, &mut applied)
            .await;
        // Next: the first service's apply, not the volume's or the
        // Secret's read again.
        let (request, _) = server.next_request().await.expect("a call");
        request.uri().path().to_owned()
    })
    .await;
    assert!(next.ends_with("/services/shop-gateway"), "{next}");
}

#[tokio::test]
async fn one_discovery_serves_the_monitored_stacks_for_a_while() {
    let stack = monitored();
    let (ctx, mut server) = Context::test();
    let scenario = tokio::spawn({
        let stack = stack.clone();
        async move {
            for discovery in [true, false] {
                server.handle_secrets(&stack, true).await;
                server.handle_apply_children(&stack, rolled_out).await;
                let applied = server.handle_monitoring_with(true, discovery).await;
                assert_eq!(
                    applied.len(),
                    3,
                    "the dashboard, PodMonitor and PrometheusRule"
                );
                server.handle_status_patch(&stack).await;
            }
            server.expect_no_more_calls().await;
        }
    });
    for _ in 0..2 {
        reconcile_in_time(stack.clone(), ctx.clone())
            .await
            .expect("reconciled");
    }
    timeout_after_1s(scenario).await;
}
