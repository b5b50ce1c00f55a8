//! How each service runs: its Deployment (probes, security context,
//! resources, graceful drain) and its autoscaler.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{
    Deployment, DeploymentSpec, DeploymentStrategy, RollingUpdateDeployment,
};
use k8s_openapi::api::autoscaling::v2::{
    CrossVersionObjectReference, HorizontalPodAutoscaler, HorizontalPodAutoscalerSpec, MetricSpec,
    MetricTarget, ResourceMetricSource,
};
use k8s_openapi::api::core::v1::{
    Capabilities, Container, ContainerPort, EmptyDirVolumeSource, ExecAction, HTTPGetAction,
    Lifecycle, LifecycleHandler, PodSecurityContext, PodSpec, PodTemplateSpec, Probe,
    ResourceRequirements, SeccompProfile, SecurityContext, ServiceAccount,
    TopologySpreadConstraint, Volume, VolumeMount,
};
use k8s_openapi::api::policy::v1::{PodDisruptionBudget, PodDisruptionBudgetSpec};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta, OwnerReference};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::ResourceExt;

use crate::crd::EcommerceStack;
use crate::services::Service;

use super::*;

/// A CPU HorizontalPodAutoscaler for a service whose spec asks for one.
pub(crate) fn autoscaler(
    stack: &EcommerceStack,
    service: Service,
    owner: &OwnerReference,
) -> Option<HorizontalPodAutoscaler> {
    // The Consumer scales on its backlog: the operator's autopilot.
    if service == Service::Consumer {
        return None;
    }
    let auto = stack.spec.services.get(service).autoscaling.as_ref()?;
    let name = child_name(&stack.name_any(), service);
    Some(HorizontalPodAutoscaler {
        metadata: metadata(stack, name.clone(), Some(service), owner),
        spec: Some(HorizontalPodAutoscalerSpec {
            scale_target_ref: CrossVersionObjectReference {
                api_version: Some("apps/v1".to_owned()),
                kind: "Deployment".to_owned(),
                name,
            },
            min_replicas: Some(auto.min_replicas),
            max_replicas: auto.max_replicas,
            metrics: Some(vec![MetricSpec {
                type_: "Resource".to_owned(),
                resource: Some(ResourceMetricSource {
                    name: "cpu".to_owned(),
                    target: MetricTarget {
                        type_: "Utilization".to_owned(),
                        average_utilization: Some(auto.target_cpu_utilization_percentage),
                        ..MetricTarget::default()
                    },
                }),
                ..MetricSpec::default()
            }]),
            ..HorizontalPodAutoscalerSpec::default()
        }),
        ..HorizontalPodAutoscaler::default()
    })
}

/// At most one pod of a service down at a time in a voluntary disruption (a
/// node drain), as the chart's `podDisruptionBudget`.
pub(crate) fn disruption_budget(
    stack: &EcommerceStack,
    service: Service,
    owner: &OwnerReference,
) -> PodDisruptionBudget {
    let name = stack.name_any();
    PodDisruptionBudget {
        metadata: metadata(stack, child_name(&name, service), Some(service), owner),
        spec: Some(PodDisruptionBudgetSpec {
            max_unavailable: Some(IntOrString::Int(1)),
            // A crash-looping pod protects nothing: it must not block a
            // node drain.
            unhealthy_pod_eviction_policy: Some("AlwaysAllow".to_owned()),
            selector: Some(LabelSelector {
                match_labels: Some(selector_labels(&name, service)),
                ..LabelSelector::default()
            }),
            ..PodDisruptionBudgetSpec::default()
        }),
        ..PodDisruptionBudget::default()
    }
}

/// Requests so the scheduler places pods sensibly, and a memory limit so a
/// leak cannot take the node down; no CPU limit (throttling hurts latency).
pub(crate) fn default_resources() -> ResourceRequirements {
    ResourceRequirements {
        requests: Some(BTreeMap::from([
            ("cpu".to_owned(), Quantity("50m".to_owned())),
            ("memory".to_owned(), Quantity("64Mi".to_owned())),
        ])),
        limits: Some(BTreeMap::from([(
            "memory".to_owned(),
            Quantity("256Mi".to_owned()),
        )])),
        ..ResourceRequirements::default()
    }
}

/// The chart's probe timing (`probes` in charts/ecommerce/values.yaml).
pub struct ProbeTiming {
    pub period_seconds: i32,
    pub failure_threshold: i32,
    pub timeout_seconds: i32,
}

/// Startup: the services migrate their database before serving; up to
/// 36 x 5 s = 3 min before liveness takes over, so a long migration is not
/// killed.
pub const STARTUP_PROBE: ProbeTiming = ProbeTiming {
    period_seconds: 5,
    failure_threshold: 36,
    timeout_seconds: 3,
};

pub const LIVENESS_PROBE: ProbeTiming = ProbeTiming {
    period_seconds: 10,
    failure_threshold: 3,
    timeout_seconds: 3,
};

pub const READINESS_PROBE: ProbeTiming = ProbeTiming {
    period_seconds: 5,
    failure_threshold: 3,
    timeout_seconds: 3,
};

/// Liveness and startup ask `/healthz` (the process serves); readiness asks
/// `/readyz` (its own ability to serve, never other services' readiness).
pub(crate) fn http_probe(service: Service, path: &str, timing: &ProbeTiming) -> Probe {
    Probe {
        http_get: Some(HTTPGetAction {
            path: Some(path.to_owned()),
            port: IntOrString::Int(service.port()),
            ..HTTPGetAction::default()
        }),
        period_seconds: Some(timing.period_seconds),
        timeout_seconds: Some(timing.timeout_seconds),
        failure_threshold: Some(timing.failure_threshold),
        ..Probe::default()
    }
}

/// `<stack>-services`: the services' ServiceAccount (the chart's
/// `<release>-ecommerce`; another name, so that moving a release to a stack
/// of the same name does not take the chart's over), which mounts no token:
/// they call no Kubernetes API.
pub fn service_account_name(stack: &str) -> String {
    format!("{stack}-services")
}

pub(crate) fn service_account(stack: &EcommerceStack, owner: &OwnerReference) -> ServiceAccount {
    ServiceAccount {
        metadata: metadata(stack, service_account_name(&stack.name_any()), None, owner),
        automount_service_account_token: Some(false),
        ..ServiceAccount::default()
    }
}

/// Every pod of the stack: not root, the runtime's seccomp profile.
pub(crate) fn pod_security_context() -> PodSecurityContext {
    pod_security_context_as(RUN_AS_USER)
}

/// A pod running as `uid` (also its group and its volumes' group).
pub(crate) fn pod_security_context_as(uid: i64) -> PodSecurityContext {
    PodSecurityContext {
        run_as_non_root: Some(true),
        run_as_user: Some(uid),
        run_as_group: Some(uid),
        fs_group: Some(uid),
        seccomp_profile: Some(SeccompProfile {
            type_: "RuntimeDefault".to_owned(),
            ..SeccompProfile::default()
        }),
        ..PodSecurityContext::default()
    }
}

/// Every container of the stack: a read-only root, no privileges (the
/// pod's settings repeated, as the chart has them).
pub(crate) fn container_security_context() -> SecurityContext {
    container_security_context_as(RUN_AS_USER)
}

/// A container running as `uid`, with a read-only root and no privileges.
pub(crate) fn container_security_context_as(uid: i64) -> SecurityContext {
    SecurityContext {
        run_as_non_root: Some(true),
        run_as_user: Some(uid),
        run_as_group: Some(uid),
        seccomp_profile: Some(SeccompProfile {
            type_: "RuntimeDefault".to_owned(),
            ..SeccompProfile::default()
        }),
        read_only_root_filesystem: Some(true),
        allow_privilege_escalation: Some(false),
        capabilities: Some(Capabilities {
            drop: Some(vec!["ALL".to_owned()]),
            ..Capabilities::default()
        }),
        ..SecurityContext::default()
    }
}

/// The root filesystem is read-only; /tmp is the one writable place.
pub(crate) fn tmp_volume() -> Volume {
    Volume {
        name: "tmp".to_owned(),
        empty_dir: Some(EmptyDirVolumeSource {
            size_limit: Some(Quantity("64Mi".to_owned())),
            ..EmptyDirVolumeSource::default()
        }),
        ..Volume::default()
    }
}

pub(crate) fn tmp_mount() -> VolumeMount {
    VolumeMount {
        name: "tmp".to_owned(),
        mount_path: "/tmp".to_owned(),
        ..VolumeMount::default()
    }
}

pub(crate) fn deployment(
    stack: &EcommerceStack,
    service: Service,
    settings: &BTreeMap<String, String>,
    owner: &OwnerReference,
) -> Deployment {
    let name = stack.name_any();
    let service_spec = stack.spec.services.get(service);
    let mut pod_labels = labels(stack, Some(service));
    pod_labels.insert("app.kubernetes.io/component".into(), service.name().into());
    let container = Container {
        name: service.name().to_owned(),
        image: Some(image(stack, service)),
        image_pull_policy: stack.spec.image_pull_policy.map(|p| p.as_str().to_owned()),
        ports: Some(vec![
            ContainerPort {
                name: Some(service.port_name().to_owned()),
                container_port: service.port(),
                protocol: Some("TCP".to_owned()),
                ..ContainerPort::default()
            },
            ContainerPort {
                name: Some("metrics".to_owned()),
                container_port: service.metrics_port(),
                protocol: Some("TCP".to_owned()),
                ..ContainerPort::default()
            },
        ]),
        env: Some(container_env(stack, service)),
        resources: Some(
            service_spec
                .resources
                .clone()
                .unwrap_or_else(default_resources),
        ),
        startup_probe: Some(http_probe(service, "/healthz", &STARTUP_PROBE)),
        liveness_probe: Some(http_probe(service, "/healthz", &LIVENESS_PROBE)),
        readiness_probe: Some(http_probe(service, "/readyz", &READINESS_PROBE)),
        // As the chart: endpoints and load balancers drop the pod before
        // SIGTERM, so no new request reaches a stopping pod.
        lifecycle: Some(Lifecycle {
            pre_stop: Some(LifecycleHandler {
                exec: Some(ExecAction {
                    command: Some(
                        ["/usr/local/bin/busybox", "sleep", PRE_STOP_SLEEP_SECONDS]
                            .map(str::to_owned)
                            .to_vec(),
                    ),
                }),
                ..LifecycleHandler::default()
            }),
            ..Lifecycle::default()
        }),
        volume_mounts: Some(vec![tmp_mount()]),
        security_context: Some(container_security_context()),
        ..Container::default()
    };
    Deployment {
        metadata: metadata(stack, child_name(&name, service), Some(service), owner),
        spec: Some(DeploymentSpec {
            // With an autoscaler the HPA owns replicas: applying a count
            // would fight it on every reconcile.
            replicas: match (&service_spec.autoscaling, service) {
                // The autopilot's last count (the reconciler applies its new one).
                (Some(auto), Service::Consumer) => Some(
                    stack
                        .status
                        .as_ref()
                        .and_then(|s| s.consumer_autoscaling.as_ref())
                        .map_or(auto.min_replicas, |s| s.replicas),
                ),
                (Some(_), _) => None,
                (None, _) => Some(service_spec.replicas.unwrap_or(1)),
            },
            revision_history_limit: Some(5),
            selector: LabelSelector {
                match_labels: Some(selector_labels(&name, service)),
                ..LabelSelector::default()
            },
            // A new pod is ready before an old one goes.
            strategy: Some(DeploymentStrategy {
                type_: Some("RollingUpdate".to_owned()),
                rolling_update: Some(RollingUpdateDeployment {
                    max_unavailable: Some(IntOrString::Int(0)),
                    max_surge: Some(IntOrString::Int(1)),
                }),
            }),
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(pod_labels),
                    annotations: Some(BTreeMap::from([
                        (
                            CONFIG_HASH_ANNOTATION.to_owned(),
                            config_hash(settings, &service.config_keys()),
                        ),
                        // For a Prometheus that scrapes by annotation, as the chart's.
                        ("prometheus.io/scrape".to_owned(), "true".to_owned()),
                        (
                            "prometheus.io/port".to_owned(),
                            service.metrics_port().to_string(),
                        ),
                        ("prometheus.io/path".to_owned(), "/metrics".to_owned()),
                    ])),
                    ..ObjectMeta::default()
                }),
                spec: Some(PodSpec {
                    containers: vec![container],
                    service_account_name: Some(service_account_name(&name)),
                    security_context: Some(pod_security_context()),
                    // Replicas on different nodes where the scheduler can,
                    // as the chart's `topologySpread`.
                    topology_spread_constraints: Some(vec![TopologySpreadConstraint {
                        max_skew: 1,
                        topology_key: "kubernetes.io/hostname".to_owned(),
                        when_unsatisfiable: "ScheduleAnyway".to_owned(),
                        // Spread each rollout's pods, not old and new together.
                        match_label_keys: Some(vec!["pod-template-hash".to_owned()]),
                        label_selector: Some(LabelSelector {
                            match_labels: Some(selector_labels(&name, service)),
                            ..LabelSelector::default()
                        }),
                        ..TopologySpreadConstraint::default()
                    }]),
                    // Services drain on SIGTERM within this (after the preStop sleep).
                    termination_grace_period_seconds: Some(30),
                    // The services never call the Kubernetes API.
                    automount_service_account_token: Some(false),
                    volumes: Some(vec![tmp_volume()]),
                    ..PodSpec::default()
                }),
            },
            ..DeploymentSpec::default()
        }),
        ..Deployment::default()
    }
}
