//! The stack's status, computed from the Deployments the API server returned
//! after the apply: per-service readiness, the `Ready`, `Progressing` and
//! `Degraded` conditions and the version rolled out.

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use k8s_openapi::jiff::Timestamp;
use kube::ResourceExt;

use crate::crd::{EcommerceStack, EcommerceStackStatus, ServiceStatus};
use crate::services::Service;

pub const READY: &str = "Ready";
pub const PROGRESSING: &str = "Progressing";
pub const DEGRADED: &str = "Degraded";

/// Readiness of one service from its Deployment as the API server sees it.
pub fn service_status(service: Service, deployment: &Deployment) -> ServiceStatus {
    let desired = deployment
        .spec
        .as_ref()
        .and_then(|s| s.replicas)
        .unwrap_or(1);
    let status = deployment.status.clone().unwrap_or_default();
    let ready_replicas = status.ready_replicas.unwrap_or(0);
    let updated_replicas = status.updated_replicas.unwrap_or(0);
    let available = status.available_replicas.unwrap_or(0);
    let total = status.replicas.unwrap_or(0);
    // The Deployment controller has seen the current template...
    let observed = match (deployment.metadata.generation, status.observed_generation) {
        (Some(generation), Some(observed)) => observed >= generation,
        (None, _) => true,
        (Some(_), None) => false,
    };
    // ...and every pod runs it, ready, with no old pod left.
    let ready = observed
        && updated_replicas >= desired
        && ready_replicas >= desired
        && available >= desired
        && total <= updated_replicas;
    ServiceStatus {
        name: service.name().to_owned(),
        desired_replicas: desired,
        ready_replicas,
        updated_replicas,
        ready,
        // Known when every replica runs the template; otherwise the
        // reconciler keeps what it last saw.
        version: ready.then(|| template_version(deployment)).flatten(),
        // Known from the desired state, not the Deployment: set by the reconciler.
        autoscaled: false,
    }
}

/// The version a Deployment's pod template runs (its version label).
pub fn template_version(deployment: &Deployment) -> Option<String> {
    deployment
        .spec
        .as_ref()?
        .template
        .metadata
        .as_ref()?
        .labels
        .as_ref()?
        .get("app.kubernetes.io/version")
        .cloned()
}

/// Why a Deployment cannot make progress, if it says so.
fn deployment_failure(deployment: &Deployment) -> Option<String> {
    let conditions = deployment.status.as_ref()?.conditions.as_ref()?;
    conditions.iter().find_map(|c| {
        let failed = (c.type_ == "Progressing"
            && c.status == "False"
            && c.reason.as_deref() == Some("ProgressDeadlineExceeded"))
            || (c.type_ == "ReplicaFailure" && c.status == "True");
        failed.then(|| {
            format!(
                "{}: {}",
                deployment.name_any(),
                c.message.clone().unwrap_or_else(|| c.type_.clone())
            )
        })
    })
}

/// Sets a condition, keeping its transition time when its status is unchanged.
pub fn set_condition(
    conditions: &mut Vec<Condition>,
    type_: &str,
    status: bool,
    reason: &str,
    message: String,
    generation: Option<i64>,
    now: Timestamp,
) {
    let status = if status { "True" } else { "False" }.to_owned();
    let last_transition_time = conditions
        .iter()
        .find(|c| c.type_ == type_ && c.status == status)
        .map(|c| c.last_transition_time.clone())
        .unwrap_or(Time(now));
    let condition = Condition {
        type_: type_.to_owned(),
        status,
        reason: reason.to_owned(),
        message,
        observed_generation: generation,
        last_transition_time,
    };
    match conditions.iter_mut().find(|c| c.type_ == type_) {
        Some(existing) => *existing = condition,
        None => conditions.push(condition),
    }
}

/// The status after a successful apply of `deployments` (in `Service::ALL` order).
pub fn applied_status(
    stack: &EcommerceStack,
    deployments: &[(Service, Deployment)],
    now: Timestamp,
) -> EcommerceStackStatus {
    let previous = stack.status.clone().unwrap_or_default();
    let generation = stack.metadata.generation;
    let services: Vec<ServiceStatus> = deployments
        .iter()
        .map(|(service, deployment)| {
            let mut status = service_status(*service, deployment);
            if status.version.is_none() {
                status.version = previous
                    .services
                    .iter()
                    .find(|s| s.name == status.name)
                    .and_then(|s| s.version.clone());
            }
            status
        })
        .collect();
    let not_ready: Vec<&str> = services
        .iter()
        .filter(|s| !s.ready)
        .map(|s| s.name.as_str())
        .collect();
    let failures: Vec<String> = deployments
        .iter()
        .filter_map(|(_, d)| deployment_failure(d))
        .collect();
    // Nothing applied (a new stack's first migrations run) is not ready.
    let all_ready = !services.is_empty() && not_ready.is_empty();
    let ready_count = services.len() - not_ready.len();

    let mut conditions = previous.conditions.clone();
    // What the Deployments were given: `spec.version`, or the last migrated
    // version while the migrations of `spec.version` run.
    let version = &deployments
        .first()
        .and_then(|(_, d)| template_version(d))
        .unwrap_or_else(|| stack.spec.version.clone());
    if all_ready {
        set_condition(
            &mut conditions,
            READY,
            true,
            "AllServicesReady",
            format!("all {} services run version {version}", services.len()),
            generation,
            now,
        );
        set_condition(
            &mut conditions,
            PROGRESSING,
            false,
            "RolloutComplete",
            format!("version {version} is rolled out"),
            generation,
            now,
        );
    } else {
        set_condition(
            &mut conditions,
            READY,
            false,
            "ServicesNotReady",
            format!("not ready: {}", not_ready.join(", ")),
            generation,
            now,
        );
        set_condition(
            &mut conditions,
            PROGRESSING,
            true,
            "RollingOut",
            format!("rolling out version {version} to {}", not_ready.join(", ")),
            generation,
            now,
        );
    }
    if failures.is_empty() {
        set_condition(
            &mut conditions,
            DEGRADED,
            false,
            "Reconciled",
            "every object is applied".to_owned(),
            generation,
            now,
        );
    } else {
        set_condition(
            &mut conditions,
            DEGRADED,
            true,
            "DeploymentFailing",
            failures.join("; "),
            generation,
            now,
        );
    }

    EcommerceStackStatus {
        observed_generation: generation,
        conditions,
        version: if all_ready {
            Some(version.clone())
        } else {
            previous.version
        },
        consumer_autoscaling: previous.consumer_autoscaling.clone(),
        monitoring: previous.monitoring.clone(),
        migrated_version: previous.migrated_version,
        admin_password_secret_ref: crate::resources::admin_password_ref(stack),
        ready_services: Some(format!("{ready_count}/{}", services.len())),
        services,
    }
}

/// The status after a failed apply: the last readiness seen, `Degraded`
/// with the error. `observedGeneration` stays where it was, because this
/// generation was not applied.
pub fn failed_status(stack: &EcommerceStack, error: &str, now: Timestamp) -> EcommerceStackStatus {
    let mut status = stack.status.clone().unwrap_or_default();
    set_condition(
        &mut status.conditions,
        DEGRADED,
        true,
        "ReconcileFailed",
        error.to_owned(),
        stack.metadata.generation,
        now,
    );
    status
}

/// The status of a paused stack: `Progressing` false with reason `Paused`;
/// readiness stays as last seen, since nothing is looked at.
pub fn paused_status(
    stack: &EcommerceStack,
    message: &str,
    now: Timestamp,
) -> EcommerceStackStatus {
    let mut status = stack.status.clone().unwrap_or_default();
    set_condition(
        &mut status.conditions,
        PROGRESSING,
        false,
        PAUSED_REASON,
        message.to_owned(),
        stack.metadata.generation,
        now,
    );
    status
}

/// Whether the stack's status says this already: its condition `type_` has
/// this reason and message for the current generation. Events are recorded
/// once per cause and generation, not at every re-check.
pub fn already_said(stack: &EcommerceStack, type_: &str, reason: &str, message: &str) -> bool {
    stack
        .status
        .as_ref()
        .and_then(|s| condition(s, type_))
        .is_some_and(|c| {
            c.reason == reason
                && c.message == message
                && c.observed_generation == stack.metadata.generation
        })
}

/// The reason of `Progressing` while reconciliation is paused.
pub const PAUSED_REASON: &str = "Paused";

/// The status of a stack the operator will not apply as it is (a Secret
/// missing, event names another stack uses): `Degraded` and not `Ready`,
/// with `reason` and what to change. Nothing was applied, so
/// `observedGeneration` stays where it was.
pub fn refused_status(
    stack: &EcommerceStack,
    reason: &str,
    message: &str,
    now: Timestamp,
) -> EcommerceStackStatus {
    let mut status = failed_status(stack, message, now);
    let generation = stack.metadata.generation;
    for (type_, value) in [(DEGRADED, true), (READY, false)] {
        set_condition(
            &mut status.conditions,
            type_,
            value,
            reason,
            message.to_owned(),
            generation,
            now,
        );
    }
    status
}

/// Pods of the stack that cannot run, as `pod/container: reason: message`:
/// a missing Secret or key (CreateContainerConfigError), an image that
/// cannot be pulled, a crash loop. These never fail the Deployment until its
/// progress deadline, so they are read from the pods.
pub fn pod_failures(pods: &[Pod]) -> Vec<String> {
    const FAILING: [&str; 6] = [
        "CreateContainerConfigError",
        "CreateContainerError",
        "ErrImagePull",
        "ImagePullBackOff",
        "InvalidImageName",
        "CrashLoopBackOff",
    ];
    let mut failures = Vec::new();
    for pod in pods {
        let statuses = pod.status.iter().flat_map(|s| {
            s.init_container_statuses
                .iter()
                .flatten()
                .chain(s.container_statuses.iter().flatten())
        });
        for container in statuses {
            let Some(waiting) = container.state.as_ref().and_then(|s| s.waiting.as_ref()) else {
                continue;
            };
            let reason = waiting.reason.as_deref().unwrap_or_default();
            if FAILING.contains(&reason) {
                failures.push(format!(
                    "{}/{}: {reason}: {}",
                    pod.name_any(),
                    container.name,
                    waiting.message.as_deref().unwrap_or("no message")
                ));
            }
        }
    }
    failures
}

/// Marks the stack Degraded for failing pods (the rest of `status` stands).
pub fn set_pod_failures(
    status: &mut EcommerceStackStatus,
    failures: &[String],
    generation: Option<i64>,
    now: Timestamp,
) {
    set_condition(
        &mut status.conditions,
        DEGRADED,
        true,
        "PodsFailing",
        failures.join("; "),
        generation,
        now,
    );
}

/// The condition of a type, if set.
pub fn condition<'a>(status: &'a EcommerceStackStatus, type_: &str) -> Option<&'a Condition> {
    status.conditions.iter().find(|c| c.type_ == type_)
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::apps::v1::{
        Deployment, DeploymentCondition, DeploymentSpec, DeploymentStatus,
    };

    use super::*;

    fn deployment(replicas: i32, generation: i64, status: DeploymentStatus) -> Deployment {
        let mut d = Deployment {
            spec: Some(DeploymentSpec {
                replicas: Some(replicas),
                ..DeploymentSpec::default()
            }),
            status: Some(status),
            ..Deployment::default()
        };
        d.metadata.name = Some("shop-order".into());
        d.metadata.generation = Some(generation);
        d
    }

    fn counts(
        observed: i64,
        total: i32,
        updated: i32,
        ready: i32,
        available: i32,
    ) -> DeploymentStatus {
        DeploymentStatus {
            observed_generation: Some(observed),
            replicas: Some(total),
            updated_replicas: Some(updated),
            ready_replicas: Some(ready),
            available_replicas: Some(available),
            ..DeploymentStatus::default()
        }
    }

    #[test]
    fn a_service_is_ready_only_when_every_replica_runs_the_current_template() {
        let ready = |d: Deployment| service_status(Service::Order, &d).ready;
        assert!(ready(deployment(2, 3, counts(3, 2, 2, 2, 2))));
        assert!(
            !ready(deployment(2, 3, counts(2, 2, 2, 2, 2))),
            "template not yet observed"
        );
        assert!(
            !ready(deployment(2, 3, counts(3, 3, 2, 2, 2))),
            "an old pod is left"
        );
        assert!(
            !ready(deployment(2, 3, counts(3, 2, 2, 1, 1))),
            "one replica not ready"
        );
        let status = service_status(Service::Order, &deployment(2, 3, counts(3, 2, 1, 2, 2)));
        assert_eq!(
            (
                status.desired_replicas,
                status.updated_replicas,
                status.ready_replicas
            ),
            (2, 1, 2)
        );
    }

    #[test]
    fn a_deployment_past_its_progress_deadline_degrades_the_stack() {
        let mut status = counts(1, 1, 0, 0, 0);
        status.conditions = Some(vec![DeploymentCondition {
            type_: "Progressing".into(),
            status: "False".into(),
            reason: Some("ProgressDeadlineExceeded".into()),
            message: Some("ReplicaSet has timed out progressing".into()),
            ..DeploymentCondition::default()
        }]);
        let stack = EcommerceStack::test();
        let result = applied_status(
            &stack,
            &[(Service::Order, deployment(1, 1, status))],
            Timestamp::now(),
        );
        let degraded = condition(&result, DEGRADED).unwrap();
        assert_eq!(
            (degraded.status.as_str(), degraded.reason.as_str()),
            ("True", "DeploymentFailing")
        );
        assert!(
            degraded
                .message
                .contains("shop-order: ReplicaSet has timed out"),
            "{}",
            degraded.message
        );
        assert_eq!(condition(&result, READY).unwrap().status, "False");
        assert_eq!(result.version, None);
    }
}
