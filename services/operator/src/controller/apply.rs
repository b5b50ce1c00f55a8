//! Server-side apply of the desired state: the ServiceAccount, managed
//! dependencies, ConfigMap and NetworkPolicies first, then each service's
//! objects, and monitoring.

use super::*;

/// Applies the ServiceAccount, the managed dependencies, the ConfigMap and
/// the NetworkPolicies:
/// what the migration Jobs need before they run. Returns the managed
/// dependencies not ready yet.
pub(super) async fn apply_shared(
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
pub(super) async fn keep_password_with_volume(
    stack: &EcommerceStack,
    read: &[Secret],
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
    // Handed over already (its volume's deletion would have deleted it):
    // nothing to read.
    let handed_over = read
        .iter()
        .filter(|s| s.name_any() == password.reference.name)
        .flat_map(|s| s.owner_references())
        .any(|o| o.kind == "PersistentVolumeClaim" && o.name == claim_name);
    if handed_over {
        return Ok(());
    }
    let claims: Api<PersistentVolumeClaim> = Api::namespaced(client.clone(), namespace);
    let Some(claim) = claims.get_opt(&claim_name).await? else {
        return Ok(());
    };
    let secrets: Api<Secret> = Api::namespaced(client.clone(), namespace);
    let uid = claim.uid();
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
pub(super) async fn apply_services(
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
pub(super) async fn hand_replicas_over(
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

/// The Prometheus Operator's kinds the cluster serves, by kind (None: not
/// served), from the last discovery while it is younger than DISCOVERY_TTL.
async fn monitoring_kinds(ctx: &Context) -> Result<MonitoringKinds> {
    if let Some((at, kinds)) = ctx
        .monitoring_kinds
        .lock()
        .expect("discovery lock")
        .as_ref()
        && at.elapsed() < DISCOVERY_TTL
    {
        return Ok(kinds.clone());
    }
    let group_version = MONITORING_GROUP_VERSION
        .parse()
        .expect("a valid group/version");
    let kinds = match kube::discovery::pinned_group(&ctx.client, &group_version).await {
        Ok(group) => Some(
            ["PodMonitor", "PrometheusRule"]
                .into_iter()
                .filter_map(|kind| Some((kind.to_owned(), group.recommended_kind(kind)?.0)))
                .collect(),
        ),
        Err(kube::Error::Api(status)) if status.code == 404 => None,
        Err(error) => return Err(error.into()),
    };
    *ctx.monitoring_kinds.lock().expect("discovery lock") =
        Some((std::time::Instant::now(), kinds.clone()));
    Ok(kinds)
}

/// Sets one service's Deployment replica count.
pub(super) fn set_replicas(services: &mut [ServiceObjects], service: Service, replicas: i32) {
    for objects in services.iter_mut().filter(|o| o.service == service) {
        if let Some(spec) = objects.deployment.spec.as_mut() {
            spec.replicas = Some(replicas);
        }
    }
}

/// How `status.monitoring` begins when the Prometheus Operator is missing.
pub(super) const NOT_SERVED: &str = "the cluster does not serve";

/// Applies the dashboard ConfigMap, and the PodMonitor and PrometheusRule
/// when the cluster serves their kinds; says which.
pub(super) async fn apply_monitoring(
    objects: &MonitoringObjects,
    ctx: &Context,
    namespace: &str,
) -> Result<String> {
    let client = &ctx.client;
    let params = PatchParams::apply(FIELD_MANAGER).force();
    let config_maps: Api<ConfigMap> = Api::namespaced(client.clone(), namespace);
    let dashboard = &objects.dashboard;
    config_maps
        .patch(&dashboard.name_any(), &params, &Patch::Apply(dashboard))
        .await?;
    let Some(kinds) = monitoring_kinds(ctx).await? else {
        return Ok(format!(
            "{NOT_SERVED} {MONITORING_GROUP_VERSION} (no Prometheus Operator): the dashboard ConfigMap is applied, the PodMonitor and PrometheusRule are not"
        ));
    };
    let mut applied = Vec::new();
    for object in [&objects.pod_monitor, &objects.prometheus_rule] {
        let kind = object["kind"].as_str().unwrap_or_default();
        let Some(resource) = kinds.get(kind) else {
            continue;
        };
        let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), namespace, resource);
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
