//! Desired state: the ConfigMap, Services and Deployments an `EcommerceStack`
//! asks for. Pure functions of the resource, so they are tested without a
//! cluster.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{Deployment, DeploymentSpec};
use k8s_openapi::api::autoscaling::v2::{
    CrossVersionObjectReference, HorizontalPodAutoscaler, HorizontalPodAutoscalerSpec, MetricSpec,
    MetricTarget, ResourceMetricSource,
};
use k8s_openapi::api::core::v1::{
    Capabilities, ConfigMap, ConfigMapKeySelector, Container, ContainerPort, EmptyDirVolumeSource,
    EnvVar, EnvVarSource, ExecAction, HTTPGetAction, Lifecycle, LifecycleHandler,
    PodSecurityContext, PodSpec, PodTemplateSpec, Probe, ResourceRequirements, SeccompProfile,
    Secret, SecretKeySelector, SecurityContext, Service as KubeService, ServicePort, ServiceSpec,
    Volume, VolumeMount,
};
use k8s_openapi::api::networking::v1::{
    NetworkPolicy, NetworkPolicyEgressRule, NetworkPolicyIngressRule, NetworkPolicyPeer,
    NetworkPolicyPort, NetworkPolicySpec,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta, OwnerReference};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::{Resource, ResourceExt};
use sha2::{Digest, Sha256};

use crate::crd::{EcommerceStack, SecretKeyRef};
use crate::error::{Error, Result};
use crate::services::{SecretSetting, Service};

/// Field manager of every server-side apply the operator makes.
pub const FIELD_MANAGER: &str = "ecommerce-operator";
/// Pod template annotation: a hash of the settings a service reads from the
/// ConfigMap, so a change of them rolls that service's pods.
pub const CONFIG_HASH_ANNOTATION: &str = "ecommerce.example.com/config-hash";
/// The images' non-root user (uid 10001, see the Dockerfile).
const RUN_AS_USER: i64 = 10001;
/// The chart's `lifecycle.preStopSleepSeconds`.
const PRE_STOP_SLEEP_SECONDS: &str = "5";

/// Key of the generated internal auth token in its Secret.
pub const INTERNAL_AUTH_TOKEN_KEY: &str = "token";

/// Everything one stack consists of, in the order it is applied.
#[derive(Debug, Clone)]
pub struct DesiredState {
    pub config_map: ConfigMap,
    /// Empty when `spec.networkPolicy.enabled` is false.
    pub network_policies: Vec<NetworkPolicy>,
    pub services: Vec<ServiceObjects>,
}

/// One service's Service and Deployment, and its autoscaler when it has one.
#[derive(Debug, Clone)]
pub struct ServiceObjects {
    pub service: Service,
    pub kube_service: KubeService,
    pub deployment: Deployment,
    pub autoscaler: Option<HorizontalPodAutoscaler>,
}

/// The names that keep one stack's events apart from another's on a shared NATS.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventNames {
    pub stream: String,
    pub subject_prefix: String,
    pub consumer_name: String,
}

/// The spec's names, or ones derived from the stack's namespace and name.
pub fn event_names(stack: &EcommerceStack) -> EventNames {
    let namespace = stack.namespace().unwrap_or_default();
    let name = stack.name_any();
    let nats = &stack.spec.nats;
    // Namespace and name are DNS labels: lower-case letters, digits and '-'.
    let upper = |s: &str| s.to_uppercase().replace('-', "_");
    EventNames {
        stream: nats
            .stream
            .clone()
            .unwrap_or_else(|| format!("ORDER_EVENTS_{}_{}", upper(&namespace), upper(&name))),
        subject_prefix: nats
            .subject_prefix
            .clone()
            .unwrap_or_else(|| format!("{namespace}.{name}.order")),
        consumer_name: nats
            .consumer_name
            .clone()
            .unwrap_or_else(|| format!("order-events-{namespace}-{name}")),
    }
}

/// Name of the Secret the operator generates the internal auth token into.
pub fn internal_auth_secret_name(stack: &str) -> String {
    format!("{stack}-internal-auth")
}

/// Where the services read `INTERNAL_AUTH_TOKEN` from: the spec's Secret, or
/// the one the operator generates.
pub fn internal_auth_token_ref(stack: &EcommerceStack) -> SecretKeyRef {
    stack
        .spec
        .internal_auth_token_secret_ref
        .clone()
        .unwrap_or_else(|| SecretKeyRef {
            name: internal_auth_secret_name(&stack.name_any()),
            key: INTERNAL_AUTH_TOKEN_KEY.to_owned(),
        })
}

/// The Secret holding a freshly generated token, owned by the stack. Only
/// ever created, never updated: an existing token is kept.
pub fn generated_internal_auth_secret(stack: &EcommerceStack, token: String) -> Result<Secret> {
    let owner = owner_reference(stack)?;
    Ok(Secret {
        metadata: metadata(
            stack,
            internal_auth_secret_name(&stack.name_any()),
            None,
            &owner,
        ),
        string_data: Some(BTreeMap::from([(
            INTERNAL_AUTH_TOKEN_KEY.to_owned(),
            token,
        )])),
        type_: Some("Opaque".to_owned()),
        ..Secret::default()
    })
}

/// 244 random bits as 64 hex characters (two v4 UUIDs, from the OS's CSPRNG).
pub fn new_token() -> String {
    format!(
        "{}{}",
        uuid::Uuid::new_v4().simple(),
        uuid::Uuid::new_v4().simple()
    )
}

/// Every Secret key the stack's pods read, in a fixed order without repeats.
pub fn secret_refs(stack: &EcommerceStack) -> Vec<SecretKeyRef> {
    let spec = &stack.spec;
    let mut refs = vec![
        spec.database.password_secret_ref.clone(),
        spec.jwt_secret_ref.clone(),
    ];
    if let Some(admin) = &spec.admin {
        refs.push(admin.password_secret_ref.clone());
    }
    refs.push(internal_auth_token_ref(stack));
    let mut seen = Vec::new();
    refs.retain(|r| {
        let new = !seen.contains(r);
        seen.push(r.clone());
        new
    });
    refs
}

pub fn config_map_name(stack: &str) -> String {
    format!("{stack}-config")
}

/// Name of a service's Deployment and Service: also its in-cluster host name.
pub fn child_name(stack: &str, service: Service) -> String {
    format!("{stack}-{}", service.name())
}

/// Labels that select one service's pods; never change (selectors are immutable).
pub fn selector_labels(stack: &str, service: Service) -> BTreeMap<String, String> {
    BTreeMap::from([
        (
            "app.kubernetes.io/name".to_owned(),
            service.name().to_owned(),
        ),
        ("app.kubernetes.io/instance".to_owned(), stack.to_owned()),
    ])
}

fn labels(stack: &EcommerceStack, service: Option<Service>) -> BTreeMap<String, String> {
    let name = stack.name_any();
    let mut labels = match service {
        Some(service) => selector_labels(&name, service),
        None => BTreeMap::from([("app.kubernetes.io/instance".to_owned(), name)]),
    };
    labels.insert("app.kubernetes.io/part-of".into(), "ecommerce".into());
    labels.insert("app.kubernetes.io/managed-by".into(), FIELD_MANAGER.into());
    labels.insert(
        "app.kubernetes.io/version".into(),
        stack.spec.version.clone(),
    );
    labels
}

fn metadata(
    stack: &EcommerceStack,
    name: String,
    service: Option<Service>,
    owner: &OwnerReference,
) -> ObjectMeta {
    ObjectMeta {
        name: Some(name),
        namespace: stack.namespace(),
        labels: Some(labels(stack, service)),
        owner_references: Some(vec![owner.clone()]),
        ..ObjectMeta::default()
    }
}

/// `<registry>/<prefix>/<service>:<version>` (no registry part when unset).
pub fn image(stack: &EcommerceStack, service: Service) -> String {
    let spec = &stack.spec;
    let repository = [
        spec.image_registry.as_deref().unwrap_or(""),
        spec.image_prefix.as_str(),
        service.name(),
    ]
    .iter()
    .map(|part| part.trim_matches('/'))
    .filter(|part| !part.is_empty())
    .collect::<Vec<_>>()
    .join("/");
    format!("{repository}:{}", spec.version)
}

/// The settings the services share, with in-cluster addresses.
pub fn shared_settings(stack: &EcommerceStack) -> BTreeMap<String, String> {
    let name = stack.name_any();
    let spec = &stack.spec;
    let events = event_names(stack);
    let mut settings = BTreeMap::from([
        ("APP_ENV".to_owned(), spec.app_env.as_str().to_owned()),
        ("LOG_FORMAT".to_owned(), "json".to_owned()),
        ("DB_HOST".to_owned(), spec.database.host.clone()),
        ("DB_PORT".to_owned(), spec.database.port.to_string()),
        ("DB_USER".to_owned(), spec.database.user.clone()),
        ("DB_NAME".to_owned(), spec.database.name.clone()),
        ("NATS_ADDR".to_owned(), spec.nats.url.clone()),
        ("NATS_STREAM".to_owned(), events.stream),
        ("NATS_SUBJECT_PREFIX".to_owned(), events.subject_prefix),
        ("NATS_CONSUMER_NAME".to_owned(), events.consumer_name),
    ]);
    for service in Service::ALL {
        // A host name makes the service listen on all interfaces and the
        // others dial the Service.
        settings.insert(
            service.addr_env().to_owned(),
            format!("{}:{}", child_name(&name, service), service.port()),
        );
    }
    settings
}

/// A stable hash of the settings one service reads.
pub fn config_hash(settings: &BTreeMap<String, String>, keys: &[&str]) -> String {
    let mut hasher = Sha256::new();
    for key in keys {
        hasher.update(key.as_bytes());
        hasher.update([0]);
        hasher.update(settings.get(*key).map(String::as_bytes).unwrap_or_default());
        hasher.update([0]);
    }
    hex::encode(&hasher.finalize()[..16])
}

fn owner_reference(stack: &EcommerceStack) -> Result<OwnerReference> {
    stack
        .controller_owner_ref(&())
        .ok_or(Error::MissingObjectKey("metadata.uid"))
}

pub fn desired_state(stack: &EcommerceStack) -> Result<DesiredState> {
    let owner = owner_reference(stack)?;
    let name = stack.name_any();
    let settings = shared_settings(stack);
    let config_map = ConfigMap {
        metadata: metadata(stack, config_map_name(&name), None, &owner),
        data: Some(settings.clone()),
        ..ConfigMap::default()
    };
    let services = Service::ALL
        .into_iter()
        .map(|service| ServiceObjects {
            service,
            kube_service: kube_service(stack, service, &owner),
            deployment: deployment(stack, service, &settings, &owner),
            autoscaler: autoscaler(stack, service, &owner),
        })
        .collect();
    let network_policies = if stack.spec.network_policy.enabled {
        Service::ALL
            .into_iter()
            .map(|service| network_policy(stack, service, &owner))
            .collect()
    } else {
        Vec::new()
    };
    Ok(DesiredState {
        config_map,
        network_policies,
        services,
    })
}

/// A CPU HorizontalPodAutoscaler for a service whose spec asks for one.
fn autoscaler(
    stack: &EcommerceStack,
    service: Service,
    owner: &OwnerReference,
) -> Option<HorizontalPodAutoscaler> {
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

fn tcp_port(port: i32) -> NetworkPolicyPort {
    NetworkPolicyPort {
        port: Some(IntOrString::Int(port)),
        protocol: Some("TCP".to_owned()),
        ..NetworkPolicyPort::default()
    }
}

fn pods_of(stack: &EcommerceStack, service: Service) -> NetworkPolicyPeer {
    NetworkPolicyPeer {
        pod_selector: Some(LabelSelector {
            match_labels: Some(selector_labels(&stack.name_any(), service)),
            ..LabelSelector::default()
        }),
        ..NetworkPolicyPeer::default()
    }
}

/// The port of a `scheme://host:port` address, or `default` without one.
fn url_port(url: &str, default: i32) -> i32 {
    let authority = url.split_once("://").map_or(url, |(_, rest)| rest);
    let host_port = authority.split('/').next().unwrap_or_default();
    let host_port = host_port.rsplit('@').next().unwrap_or_default();
    host_port
        .rsplit_once(':')
        .and_then(|(host, port)| (!host.ends_with('[')).then_some(port))
        .and_then(|port| port.parse().ok())
        .unwrap_or(default)
}

/// Ingress: the gateway's API from anywhere, each internal service's API from
/// its callers only, the metrics port from `metricsFrom` only. Egress: DNS,
/// the services it calls, PostgreSQL or NATS when it uses them, the OTLP
/// collector when its `OTEL_EXPORTER_OTLP_ENDPOINT` is set (by port: they
/// may live outside the cluster). As the chart's.
fn network_policy(
    stack: &EcommerceStack,
    service: Service,
    owner: &OwnerReference,
) -> NetworkPolicy {
    let spec = &stack.spec;
    let callers: Vec<NetworkPolicyPeer> = Service::ALL
        .into_iter()
        .filter(|caller| caller.dials().contains(&service))
        .map(|caller| pods_of(stack, caller))
        .collect();
    let mut ingress = Vec::new();
    if service == Service::Gateway {
        let gateway_from = &spec.network_policy.gateway_from;
        ingress.push(NetworkPolicyIngressRule {
            ports: Some(vec![tcp_port(service.port())]),
            from: (!gateway_from.is_empty()).then(|| gateway_from.clone()),
        });
    } else if !callers.is_empty() {
        ingress.push(NetworkPolicyIngressRule {
            ports: Some(vec![tcp_port(service.port())]),
            from: Some(callers),
        });
    }
    if !spec.network_policy.metrics_from.is_empty() {
        ingress.push(NetworkPolicyIngressRule {
            ports: Some(vec![tcp_port(service.metrics_port())]),
            from: Some(spec.network_policy.metrics_from.clone()),
        });
    }
    let mut egress = vec![NetworkPolicyEgressRule {
        ports: Some(vec![
            NetworkPolicyPort {
                port: Some(IntOrString::Int(53)),
                protocol: Some("UDP".to_owned()),
                ..NetworkPolicyPort::default()
            },
            tcp_port(53),
        ]),
        to: None,
    }];
    for callee in service.dials() {
        egress.push(NetworkPolicyEgressRule {
            ports: Some(vec![tcp_port(callee.port())]),
            to: Some(vec![pods_of(stack, *callee)]),
        });
    }
    if service.uses_database() {
        egress.push(NetworkPolicyEgressRule {
            ports: Some(vec![tcp_port(spec.database.port)]),
            to: None,
        });
    }
    if service.uses_nats() {
        egress.push(NetworkPolicyEgressRule {
            ports: Some(vec![tcp_port(url_port(&spec.nats.url, 4222))]),
            to: None,
        });
    }
    // Tracing is configured through the extra environment: its collector.
    let otlp_endpoint = spec
        .services
        .get(service)
        .env
        .iter()
        .find(|e| e.name == "OTEL_EXPORTER_OTLP_ENDPOINT")
        .and_then(|e| e.value.as_deref());
    if let Some(endpoint) = otlp_endpoint {
        egress.push(NetworkPolicyEgressRule {
            ports: Some(vec![tcp_port(url_port(endpoint, 4317))]),
            to: None,
        });
    }
    NetworkPolicy {
        metadata: metadata(
            stack,
            child_name(&stack.name_any(), service),
            Some(service),
            owner,
        ),
        spec: Some(NetworkPolicySpec {
            pod_selector: Some(LabelSelector {
                match_labels: Some(selector_labels(&stack.name_any(), service)),
                ..LabelSelector::default()
            }),
            policy_types: Some(vec!["Ingress".to_owned(), "Egress".to_owned()]),
            ingress: Some(ingress),
            egress: Some(egress),
        }),
    }
}

fn kube_service(stack: &EcommerceStack, service: Service, owner: &OwnerReference) -> KubeService {
    let name = stack.name_any();
    KubeService {
        metadata: metadata(stack, child_name(&name, service), Some(service), owner),
        spec: Some(ServiceSpec {
            selector: Some(selector_labels(&name, service)),
            ports: Some(vec![ServicePort {
                name: Some(service.port_name().to_owned()),
                port: service.port(),
                target_port: Some(IntOrString::String(service.port_name().to_owned())),
                protocol: Some("TCP".to_owned()),
                app_protocol: (service != Service::Gateway).then(|| "grpc".to_owned()),
                ..ServicePort::default()
            }]),
            ..ServiceSpec::default()
        }),
        ..KubeService::default()
    }
}

fn secret_env(name: &str, reference: &SecretKeyRef) -> EnvVar {
    EnvVar {
        name: name.to_owned(),
        value_from: Some(EnvVarSource {
            secret_key_ref: Some(SecretKeySelector {
                name: reference.name.clone(),
                key: reference.key.clone(),
                optional: Some(false),
            }),
            ..EnvVarSource::default()
        }),
        ..EnvVar::default()
    }
}

/// The variables a service reads: shared settings from the ConfigMap, its
/// secrets from Secrets, then the spec's extra variables (which replace
/// operator-set ones of the same name; duplicates would break the apply).
pub fn container_env(stack: &EcommerceStack, service: Service) -> Vec<EnvVar> {
    let config_map = config_map_name(&stack.name_any());
    let spec = &stack.spec;
    let internal_token = internal_auth_token_ref(stack);
    let mut env: Vec<EnvVar> = service
        .config_keys()
        .into_iter()
        .map(|key| EnvVar {
            name: key.to_owned(),
            value_from: Some(EnvVarSource {
                config_map_key_ref: Some(ConfigMapKeySelector {
                    name: config_map.clone(),
                    key: key.to_owned(),
                    optional: Some(false),
                }),
                ..EnvVarSource::default()
            }),
            ..EnvVar::default()
        })
        .collect();
    for secret in service.secrets() {
        let reference = match secret {
            SecretSetting::DbPassword => Some(&spec.database.password_secret_ref),
            SecretSetting::JwtSecret => Some(&spec.jwt_secret_ref),
            SecretSetting::AdminPassword => spec.admin.as_ref().map(|a| &a.password_secret_ref),
            SecretSetting::InternalAuthToken => Some(&internal_token),
        };
        if let Some(reference) = reference {
            env.push(secret_env(secret.env_name(), reference));
        }
    }
    let mut plain = vec![("METRICS_PORT", service.metrics_port().to_string())];
    if service == Service::Gateway && !spec.trusted_proxies.is_empty() {
        plain.push(("TRUSTED_PROXIES", spec.trusted_proxies.join(",")));
    }
    for (name, value) in plain {
        env.push(EnvVar {
            name: name.to_owned(),
            value: Some(value),
            ..EnvVar::default()
        });
    }
    if let (Service::User, Some(admin)) = (service, &spec.admin) {
        for (name, value) in [
            ("ADMIN_USERNAME", &admin.username),
            ("ADMIN_EMAIL", &admin.email),
        ] {
            env.push(EnvVar {
                name: name.to_owned(),
                value: Some(value.clone()),
                ..EnvVar::default()
            });
        }
    }
    for extra in &spec.services.get(service).env {
        match env.iter_mut().find(|e| e.name == extra.name) {
            Some(existing) => *existing = extra.clone(),
            None => env.push(extra.clone()),
        }
    }
    env
}

/// Requests so the scheduler places pods sensibly, and a memory limit so a
/// leak cannot take the node down; no CPU limit (throttling hurts latency).
fn default_resources() -> ResourceRequirements {
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
fn http_probe(service: Service, path: &str, timing: &ProbeTiming) -> Probe {
    Probe {
        http_get: Some(HTTPGetAction {
            path: Some(path.to_owned()),
            port: IntOrString::Int(service.port()),
            scheme: Some("HTTP".to_owned()),
            ..HTTPGetAction::default()
        }),
        period_seconds: Some(timing.period_seconds),
        timeout_seconds: Some(timing.timeout_seconds),
        failure_threshold: Some(timing.failure_threshold),
        ..Probe::default()
    }
}

fn deployment(
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
        // The root filesystem is read-only; /tmp is the one writable place.
        volume_mounts: Some(vec![VolumeMount {
            name: "tmp".to_owned(),
            mount_path: "/tmp".to_owned(),
            ..VolumeMount::default()
        }]),
        security_context: Some(SecurityContext {
            run_as_non_root: Some(true),
            read_only_root_filesystem: Some(true),
            allow_privilege_escalation: Some(false),
            capabilities: Some(Capabilities {
                drop: Some(vec!["ALL".to_owned()]),
                ..Capabilities::default()
            }),
            ..SecurityContext::default()
        }),
        ..Container::default()
    };
    Deployment {
        metadata: metadata(stack, child_name(&name, service), Some(service), owner),
        spec: Some(DeploymentSpec {
            // With an autoscaler the HPA owns replicas: applying a count
            // would fight it on every reconcile.
            replicas: match service_spec.autoscaling {
                Some(_) => None,
                None => Some(service_spec.replicas.unwrap_or(1)),
            },
            selector: LabelSelector {
                match_labels: Some(selector_labels(&name, service)),
                ..LabelSelector::default()
            },
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(pod_labels),
                    annotations: Some(BTreeMap::from([(
                        CONFIG_HASH_ANNOTATION.to_owned(),
                        config_hash(settings, &service.config_keys()),
                    )])),
                    ..ObjectMeta::default()
                }),
                spec: Some(PodSpec {
                    containers: vec![container],
                    security_context: Some(PodSecurityContext {
                        run_as_non_root: Some(true),
                        run_as_user: Some(RUN_AS_USER),
                        run_as_group: Some(RUN_AS_USER),
                        seccomp_profile: Some(SeccompProfile {
                            type_: "RuntimeDefault".to_owned(),
                            ..SeccompProfile::default()
                        }),
                        ..PodSecurityContext::default()
                    }),
                    // Services drain on SIGTERM within this (after the preStop sleep).
                    termination_grace_period_seconds: Some(30),
                    // The services never call the Kubernetes API.
                    automount_service_account_token: Some(false),
                    volumes: Some(vec![Volume {
                        name: "tmp".to_owned(),
                        empty_dir: Some(EmptyDirVolumeSource {
                            size_limit: Some(Quantity("64Mi".to_owned())),
                            ..EmptyDirVolumeSource::default()
                        }),
                        ..Volume::default()
                    }]),
                    ..PodSpec::default()
                }),
            },
            ..DeploymentSpec::default()
        }),
        ..Deployment::default()
    }
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::core::v1::EnvVar;

    use super::*;
    use crate::crd::AppEnv;

    fn stack() -> EcommerceStack {
        EcommerceStack::test()
    }

    fn objects(state: &DesiredState, service: Service) -> &ServiceObjects {
        state
            .services
            .iter()
            .find(|o| o.service == service)
            .unwrap()
    }

    fn env<'a>(deployment: &'a Deployment, name: &str) -> Option<&'a EnvVar> {
        container(deployment)
            .env
            .as_ref()
            .unwrap()
            .iter()
            .find(|e| e.name == name)
    }

    fn container(deployment: &Deployment) -> &Container {
        &deployment
            .spec
            .as_ref()
            .unwrap()
            .template
            .spec
            .as_ref()
            .unwrap()
            .containers[0]
    }

    fn config_hash_of(deployment: &Deployment) -> String {
        deployment
            .spec
            .as_ref()
            .unwrap()
            .template
            .metadata
            .as_ref()
            .unwrap()
            .annotations
            .as_ref()
            .unwrap()[CONFIG_HASH_ANNOTATION]
            .clone()
    }

    #[test]
    fn every_service_gets_a_service_and_deployment_named_after_the_stack() {
        let state = desired_state(&stack()).unwrap();
        let names: Vec<String> = state
            .services
            .iter()
            .map(|o| o.deployment.name_any())
            .collect();
        assert_eq!(
            names,
            [
                "shop-gateway",
                "shop-inventory",
                "shop-order",
                "shop-user",
                "shop-producer",
                "shop-consumer"
            ]
        );
        assert_eq!(state.config_map.name_any(), "shop-config");
        for o in &state.services {
            assert_eq!(o.kube_service.name_any(), o.deployment.name_any());
            assert_eq!(o.deployment.namespace().as_deref(), Some("testns"));
        }
    }

    #[test]
    fn selectors_match_pod_labels_and_the_service_selects_the_same_pods() {
        let state = desired_state(&stack()).unwrap();
        for o in &state.services {
            let spec = o.deployment.spec.as_ref().unwrap();
            let selector = spec.selector.match_labels.as_ref().unwrap();
            let pod_labels = spec
                .template
                .metadata
                .as_ref()
                .unwrap()
                .labels
                .as_ref()
                .unwrap();
            for (key, value) in selector {
                assert_eq!(
                    pod_labels.get(key),
                    Some(value),
                    "{key} on {}",
                    o.service.name()
                );
            }
            assert_eq!(
                o.kube_service.spec.as_ref().unwrap().selector.as_ref(),
                Some(selector)
            );
            // The version label is on pods, never in the immutable selector.
            assert!(!selector.contains_key("app.kubernetes.io/version"));
            assert_eq!(pod_labels["app.kubernetes.io/version"], "1.2.0");
        }
        let gateway = objects(&state, Service::Gateway);
        assert_eq!(
            gateway
                .deployment
                .spec
                .as_ref()
                .unwrap()
                .selector
                .match_labels
                .as_ref()
                .unwrap()["app.kubernetes.io/name"],
            "gateway"
        );
    }

    #[test]
    fn everything_is_owned_by_the_stack_as_controller() {
        let state = desired_state(&stack()).unwrap();
        let mut metas = vec![&state.config_map.metadata];
        for o in &state.services {
            metas.push(&o.deployment.metadata);
            metas.push(&o.kube_service.metadata);
        }
        for meta in metas {
            let owners = meta.owner_references.as_ref().unwrap();
            assert_eq!(owners.len(), 1);
            assert_eq!(owners[0].kind, "EcommerceStack");
            assert_eq!(owners[0].api_version, "ecommerce.example.com/v1alpha1");
            assert_eq!(owners[0].name, "shop");
            assert_eq!(owners[0].uid, "7f9c1a52-0d4e-4a43-9a57-0d1f5a3c2b10");
            assert_eq!(owners[0].controller, Some(true));
        }
    }

    #[test]
    fn a_stack_without_uid_cannot_own_anything() {
        let mut stack = stack();
        stack.metadata.uid = None;
        assert!(matches!(
            desired_state(&stack),
            Err(Error::MissingObjectKey(_))
        ));
    }

    #[test]
    fn images_carry_registry_prefix_service_and_version() {
        let mut stack = stack();
        assert_eq!(
            image(&stack, Service::Order),
            "registry.example.com/ecommerce/order:1.2.0"
        );
        stack.spec.image_registry = None;
        assert_eq!(image(&stack, Service::Order), "ecommerce/order:1.2.0");
        stack.spec.image_registry = Some("ghcr.io/acme/".into());
        stack.spec.version = "2.0.0".into();
        let state = desired_state(&stack).unwrap();
        let images: Vec<String> = state
            .services
            .iter()
            .map(|o| container(&o.deployment).image.clone().unwrap())
            .collect();
        assert_eq!(images[0], "ghcr.io/acme/ecommerce/gateway:2.0.0");
        assert!(images.iter().all(|i| i.ends_with(":2.0.0")), "{images:?}");
    }

    #[test]
    fn the_config_map_has_in_cluster_addresses_and_the_shared_settings() {
        let mut stack = stack();
        stack.spec.app_env = AppEnv::Development;
        let state = desired_state(&stack).unwrap();
        let data = state.config_map.data.as_ref().unwrap();
        assert_eq!(data["API_GATEWAY_ADDR"], "shop-gateway:8080");
        assert_eq!(data["INVENTORY_ADDR"], "shop-inventory:50051");
        assert_eq!(data["ORDER_ADDR"], "shop-order:50052");
        assert_eq!(data["USER_ADDR"], "shop-user:50053");
        assert_eq!(data["PRODUCER_ADDR"], "shop-producer:50054");
        assert_eq!(data["CONSUMER_ADDR"], "shop-consumer:50055");
        assert_eq!(data["DB_HOST"], "postgres.db");
        assert_eq!(data["DB_PORT"], "5432");
        assert_eq!(data["NATS_ADDR"], "nats://nats.messaging:4222");
        assert_eq!(data["APP_ENV"], "development");
        assert!(
            data.keys()
                .all(|k| !k.contains("PASSWORD") && !k.contains("SECRET"))
        );
    }

    #[test]
    fn env_reads_the_config_map_and_secrets_by_reference() {
        let state = desired_state(&stack()).unwrap();
        let gateway = &objects(&state, Service::Gateway).deployment;
        let jwt = env(gateway, "JWT_SECRET")
            .unwrap()
            .value_from
            .as_ref()
            .unwrap();
        let secret = jwt.secret_key_ref.as_ref().unwrap();
        assert_eq!(
            (secret.name.as_str(), secret.key.as_str()),
            ("shop-jwt", "secret")
        );
        assert!(
            env(gateway, "DB_PASSWORD").is_none(),
            "the gateway has no database"
        );
        let order_addr = env(gateway, "ORDER_ADDR")
            .unwrap()
            .value_from
            .as_ref()
            .unwrap();
        let key = order_addr.config_map_key_ref.as_ref().unwrap();
        assert_eq!(
            (key.name.as_str(), key.key.as_str()),
            ("shop-config", "ORDER_ADDR")
        );

        let user = &objects(&state, Service::User).deployment;
        let db = env(user, "DB_PASSWORD")
            .unwrap()
            .value_from
            .as_ref()
            .unwrap()
            .secret_key_ref
            .as_ref()
            .unwrap();
        assert_eq!((db.name.as_str(), db.key.as_str()), ("shop-db", "password"));
        let admin = env(user, "ADMIN_PASSWORD")
            .unwrap()
            .value_from
            .as_ref()
            .unwrap()
            .secret_key_ref
            .as_ref()
            .unwrap();
        assert_eq!(admin.name, "shop-admin");
        assert_eq!(
            env(user, "ADMIN_USERNAME").unwrap().value.as_deref(),
            Some("admin")
        );
        assert!(env(user, "JWT_SECRET").is_none());
        assert!(
            env(
                &objects(&state, Service::Inventory).deployment,
                "ADMIN_PASSWORD"
            )
            .is_none()
        );

        let producer = &objects(&state, Service::Producer).deployment;
        assert!(env(producer, "NATS_STREAM").is_some());
        assert!(env(producer, "DB_PASSWORD").is_none());
        // Inventory announces product changes, the gateway's cache hears
        // them: both on the stack's own subject prefix, as the producer's.
        for service in [Service::Gateway, Service::Inventory, Service::Producer] {
            let deployment = &objects(&state, service).deployment;
            for name in ["NATS_ADDR", "NATS_SUBJECT_PREFIX"] {
                let key = env(deployment, name)
                    .unwrap_or_else(|| panic!("{} reads {name}", service.name()))
                    .value_from
                    .as_ref()
                    .unwrap()
                    .config_map_key_ref
                    .as_ref()
                    .unwrap();
                assert_eq!((key.name.as_str(), key.key.as_str()), ("shop-config", name));
            }
        }
        assert!(env(gateway, "NATS_STREAM").is_none());
        assert!(env(&objects(&state, Service::Order).deployment, "NATS_ADDR").is_none());
        assert_eq!(
            state.config_map.data.as_ref().unwrap()["NATS_SUBJECT_PREFIX"],
            "testns.shop.order"
        );
        // No secret value is ever written into a Deployment.
        for o in &state.services {
            for e in container(&o.deployment).env.as_ref().unwrap() {
                if e.name.contains("PASSWORD") || e.name.contains("SECRET") {
                    assert!(e.value.is_none(), "{} on {}", e.name, o.service.name());
                }
            }
        }
    }

    #[test]
    fn no_admin_means_no_admin_variables() {
        let mut stack = stack();
        stack.spec.admin = None;
        let state = desired_state(&stack).unwrap();
        let user = &objects(&state, Service::User).deployment;
        assert!(env(user, "ADMIN_USERNAME").is_none());
        assert!(env(user, "ADMIN_PASSWORD").is_none());
    }

    #[test]
    fn extra_env_replaces_same_named_variables_and_adds_others() {
        let mut stack = stack();
        stack.spec.services.consumer.env = vec![
            EnvVar {
                name: "APP_ENV".into(),
                value: Some("development".into()),
                ..EnvVar::default()
            },
            EnvVar {
                name: "RUST_LOG".into(),
                value: Some("debug".into()),
                ..EnvVar::default()
            },
        ];
        let state = desired_state(&stack).unwrap();
        let consumer = &objects(&state, Service::Consumer).deployment;
        let all = container(consumer).env.as_ref().unwrap();
        assert_eq!(all.iter().filter(|e| e.name == "APP_ENV").count(), 1);
        assert_eq!(
            env(consumer, "APP_ENV").unwrap().value.as_deref(),
            Some("development")
        );
        assert_eq!(
            env(consumer, "RUST_LOG").unwrap().value.as_deref(),
            Some("debug")
        );
        assert!(env(&objects(&state, Service::Gateway).deployment, "RUST_LOG").is_none());
    }

    #[test]
    fn probes_and_ports_use_each_services_own_port() {
        let state = desired_state(&stack()).unwrap();
        let expected = [
            (Service::Gateway, 8080),
            (Service::Inventory, 50051),
            (Service::Order, 50052),
            (Service::User, 50053),
            (Service::Producer, 50054),
            (Service::Consumer, 50055),
        ];
        for (service, port) in expected {
            let o = objects(&state, service);
            let c = container(&o.deployment);
            assert_eq!(c.ports.as_ref().unwrap()[0].container_port, port);
            let live = c
                .liveness_probe
                .as_ref()
                .unwrap()
                .http_get
                .as_ref()
                .unwrap();
            assert_eq!(
                (live.path.as_deref(), &live.port),
                (Some("/healthz"), &IntOrString::Int(port))
            );
            let ready = c
                .readiness_probe
                .as_ref()
                .unwrap()
                .http_get
                .as_ref()
                .unwrap();
            assert_eq!(
                (ready.path.as_deref(), &ready.port),
                (Some("/readyz"), &IntOrString::Int(port))
            );
            let service_port = &o
                .kube_service
                .spec
                .as_ref()
                .unwrap()
                .ports
                .as_ref()
                .unwrap()[0];
            assert_eq!(service_port.port, port);
        }
    }

    #[test]
    fn containers_run_locked_down() {
        let state = desired_state(&stack()).unwrap();
        for o in &state.services {
            let pod = o
                .deployment
                .spec
                .as_ref()
                .unwrap()
                .template
                .spec
                .as_ref()
                .unwrap();
            assert_eq!(pod.automount_service_account_token, Some(false));
            let tmp = &pod.volumes.as_ref().unwrap()[0];
            assert!(tmp.empty_dir.is_some());
            let mount = &container(&o.deployment).volume_mounts.as_ref().unwrap()[0];
            assert_eq!(
                (mount.name.as_str(), mount.mount_path.as_str()),
                ("tmp", "/tmp")
            );
            let pre_stop = container(&o.deployment)
                .lifecycle
                .as_ref()
                .unwrap()
                .pre_stop
                .as_ref()
                .unwrap();
            assert_eq!(
                pre_stop.exec.as_ref().unwrap().command.as_deref().unwrap(),
                ["/usr/local/bin/busybox", "sleep", "5"]
            );
            let sc = container(&o.deployment).security_context.as_ref().unwrap();
            assert_eq!(sc.run_as_non_root, Some(true));
            assert_eq!(sc.read_only_root_filesystem, Some(true));
            assert_eq!(sc.allow_privilege_escalation, Some(false));
            assert_eq!(
                sc.capabilities.as_ref().unwrap().drop.as_deref(),
                Some(&["ALL".to_owned()][..])
            );
        }
    }

    #[test]
    fn replicas_and_resources_come_from_the_service_spec() {
        let mut stack = stack();
        stack.spec.services.gateway.replicas = Some(3);
        stack.spec.services.order.resources = Some(ResourceRequirements {
            limits: Some([("memory".to_owned(), Quantity("256Mi".into()))].into()),
            ..ResourceRequirements::default()
        });
        let state = desired_state(&stack).unwrap();
        let replicas = |s| {
            objects(&state, s)
                .deployment
                .spec
                .as_ref()
                .unwrap()
                .replicas
        };
        assert_eq!(replicas(Service::Gateway), Some(3));
        assert_eq!(replicas(Service::Inventory), Some(1));
        let limits = container(&objects(&state, Service::Order).deployment)
            .resources
            .as_ref()
            .unwrap()
            .limits
            .clone()
            .unwrap();
        assert_eq!(limits["memory"], Quantity("256Mi".into()));
        let defaults = container(&objects(&state, Service::User).deployment)
            .resources
            .clone()
            .expect("defaults when unset");
        assert_eq!(defaults.limits.unwrap()["memory"], Quantity("256Mi".into()));
        assert_eq!(defaults.requests.unwrap()["cpu"], Quantity("50m".into()));
    }

    #[test]
    fn a_config_change_rolls_only_the_services_that_read_it() {
        let before = desired_state(&stack()).unwrap();
        let mut changed = stack();
        changed.spec.nats.stream = Some("OTHER_EVENTS".into());
        let after = desired_state(&changed).unwrap();
        for service in Service::ALL {
            let old = config_hash_of(&objects(&before, service).deployment);
            let new = config_hash_of(&objects(&after, service).deployment);
            let reads_stream = matches!(service, Service::Producer | Service::Consumer);
            assert_eq!(old != new, reads_stream, "{}", service.name());
        }
        // The subject prefix is read by every NATS user: the order events'
        // producer and consumer, and the product change announcements'
        // Inventory and gateway.
        let mut changed = stack();
        changed.spec.nats.subject_prefix = Some("other.order".into());
        let after = desired_state(&changed).unwrap();
        for service in Service::ALL {
            let old = config_hash_of(&objects(&before, service).deployment);
            let new = config_hash_of(&objects(&after, service).deployment);
            assert_eq!(old != new, service.uses_nats(), "{}", service.name());
        }
        // Stable: the same spec gives the same hash.
        assert_eq!(
            config_hash_of(&objects(&before, Service::Order).deployment),
            config_hash_of(&objects(&desired_state(&stack()).unwrap(), Service::Order).deployment)
        );
    }

    #[test]
    fn a_version_change_changes_only_images_and_version_labels() {
        let before = desired_state(&stack()).unwrap();
        let mut upgraded = stack();
        upgraded.spec.version = "1.3.0".into();
        let after = desired_state(&upgraded).unwrap();
        for service in Service::ALL {
            let (b, a) = (
                &objects(&before, service).deployment,
                &objects(&after, service).deployment,
            );
            assert_eq!(
                container(a).image.as_deref().unwrap().rsplit(':').next(),
                Some("1.3.0")
            );
            assert_eq!(config_hash_of(a), config_hash_of(b));
            assert_eq!(
                a.spec.as_ref().unwrap().selector,
                b.spec.as_ref().unwrap().selector
            );
        }
    }

    fn policy(state: &DesiredState, service: Service) -> &NetworkPolicySpec {
        state
            .network_policies
            .iter()
            .find(|p| p.name_any() == format!("shop-{}", service.name()))
            .and_then(|p| p.spec.as_ref())
            .unwrap()
    }

    /// (port, component selected or None for any destination) of each rule.
    fn egress(spec: &NetworkPolicySpec) -> Vec<(i32, Option<String>)> {
        let mut out = Vec::new();
        for rule in spec.egress.as_ref().unwrap() {
            for port in rule.ports.as_ref().unwrap() {
                let IntOrString::Int(number) = port.port.clone().unwrap() else {
                    panic!("numeric ports")
                };
                let peers = rule.to.clone().unwrap_or_default();
                if peers.is_empty() {
                    out.push((number, None));
                }
                for peer in peers {
                    let labels = peer.pod_selector.unwrap().match_labels.unwrap();
                    out.push((number, Some(labels["app.kubernetes.io/name"].clone())));
                }
            }
        }
        out
    }

    #[test]
    fn network_policies_admit_callers_and_scrapers_and_let_out_only_what_is_called() {
        let mut stack = stack();
        stack.spec.services.order.env = vec![EnvVar {
            name: "OTEL_EXPORTER_OTLP_ENDPOINT".into(),
            value: Some("http://otel-collector.observability:4317".into()),
            ..EnvVar::default()
        }];
        stack.spec.nats.url = "nats://nats.messaging:14222".into();
        let state = desired_state(&stack).unwrap();
        assert_eq!(state.network_policies.len(), 6);
        for service in Service::ALL {
            let spec = policy(&state, service);
            assert_eq!(
                spec.policy_types.as_deref(),
                Some(&["Ingress".to_owned(), "Egress".to_owned()][..])
            );
            let ingress = spec.ingress.as_ref().unwrap();
            // The scrapers reach the metrics port and nothing else.
            let metrics = ingress
                .iter()
                .find(|r| r.from == Some(stack.spec.network_policy.metrics_from.clone()))
                .expect("a metrics rule");
            assert_eq!(
                metrics.ports.as_ref().unwrap()[0].port,
                Some(IntOrString::Int(service.metrics_port()))
            );
            let api_rules: Vec<_> = ingress
                .iter()
                .filter(|r| !std::ptr::eq(*r, metrics))
                .collect();
            let admitted: Vec<String> = api_rules
                .iter()
                .flat_map(|r| r.from.clone().unwrap_or_default())
                .map(|p| {
                    p.pod_selector.unwrap().match_labels.unwrap()["app.kubernetes.io/name"].clone()
                })
                .collect();
            let callers: Vec<String> = Service::ALL
                .into_iter()
                .filter(|c| c.dials().contains(&service))
                .map(|c| c.name().to_owned())
                .collect();
            assert_eq!(admitted, callers, "{} admits its callers", service.name());
            if service == Service::Gateway {
                assert_eq!(api_rules.len(), 1);
                assert!(api_rules[0].from.is_none(), "the public API");
            }
            for rule in &api_rules {
                assert_eq!(
                    rule.ports.as_ref().unwrap()[0].port,
                    Some(IntOrString::Int(service.port()))
                );
            }
            let out = egress(spec);
            assert!(out.contains(&(53, None)), "DNS for {}", service.name());
            let called: Vec<(i32, Option<String>)> = service
                .dials()
                .iter()
                .map(|c| (c.port(), Some(c.name().to_owned())))
                .collect();
            let mut open: Vec<i32> = out
                .iter()
                .filter(|(port, to)| to.is_none() && *port != 53)
                .map(|(port, _)| *port)
                .collect();
            open.sort();
            let mut expected_open = Vec::new();
            if service.uses_database() {
                expected_open.push(5432);
            }
            if service.uses_nats() {
                expected_open.push(14222);
            }
            if service == Service::Order {
                expected_open.push(4317);
            }
            expected_open.sort();
            assert_eq!(
                open,
                expected_open,
                "{} opens only its dependencies",
                service.name()
            );
            let to_pods: Vec<_> = out.into_iter().filter(|(_, to)| to.is_some()).collect();
            assert_eq!(
                to_pods,
                called,
                "{} reaches only what it calls",
                service.name()
            );
        }
        // The gateway admits only gatewayFrom when it is set.
        let ingress_controllers = NetworkPolicyPeer {
            namespace_selector: Some(LabelSelector::default()),
            ..NetworkPolicyPeer::default()
        };
        stack.spec.network_policy.gateway_from = vec![ingress_controllers.clone()];
        let state = desired_state(&stack).unwrap();
        let gateway_api = &policy(&state, Service::Gateway).ingress.as_ref().unwrap()[0];
        assert_eq!(gateway_api.from, Some(vec![ingress_controllers]));
        // Off on request.
        stack.spec.network_policy.enabled = false;
        assert!(desired_state(&stack).unwrap().network_policies.is_empty());
    }

    #[test]
    fn metrics_have_their_own_port_and_the_gateway_trusts_the_configured_proxies() {
        let mut stack = stack();
        let state = desired_state(&stack).unwrap();
        for o in &state.services {
            let c = container(&o.deployment);
            let metrics = c
                .ports
                .as_ref()
                .unwrap()
                .iter()
                .find(|p| p.name.as_deref() == Some("metrics"))
                .unwrap();
            assert_eq!(metrics.container_port, o.service.metrics_port());
            assert_eq!(
                env(&o.deployment, "METRICS_PORT").unwrap().value,
                Some(o.service.metrics_port().to_string())
            );
            assert!(env(&o.deployment, "TRUSTED_PROXIES").is_none());
        }
        stack.spec.trusted_proxies = vec!["10.0.0.0/8".into(), "192.168.0.0/16".into()];
        let state = desired_state(&stack).unwrap();
        assert_eq!(
            env(
                &objects(&state, Service::Gateway).deployment,
                "TRUSTED_PROXIES"
            )
            .unwrap()
            .value
            .as_deref(),
            Some("10.0.0.0/8,192.168.0.0/16")
        );
        assert!(
            env(
                &objects(&state, Service::Order).deployment,
                "TRUSTED_PROXIES"
            )
            .is_none()
        );
    }

    #[test]
    fn event_names_are_the_stacks_own_unless_given() {
        let shop = stack();
        let mut other = stack();
        other.metadata.name = Some("outlet".into());
        let (a, b) = (event_names(&shop), event_names(&other));
        assert_eq!(a.stream, "ORDER_EVENTS_TESTNS_SHOP");
        assert_eq!(a.subject_prefix, "testns.shop.order");
        assert_eq!(a.consumer_name, "order-events-testns-shop");
        assert_ne!(a.stream, b.stream);
        assert_ne!(a.subject_prefix, b.subject_prefix);
        assert_ne!(a.consumer_name, b.consumer_name);
        other.spec.nats.stream = Some("ORDERS".into());
        assert_eq!(event_names(&other).stream, "ORDERS");
        let data = desired_state(&shop).unwrap().config_map.data.unwrap();
        assert_eq!(data["NATS_STREAM"], "ORDER_EVENTS_TESTNS_SHOP");
        assert_eq!(data["NATS_CONSUMER_NAME"], "order-events-testns-shop");
        assert!(
            Service::Consumer
                .config_keys()
                .contains(&"NATS_CONSUMER_NAME")
        );
    }

    #[test]
    fn url_ports_are_read_or_defaulted() {
        assert_eq!(url_port("nats://nats:4222", 1), 4222);
        assert_eq!(url_port("nats://user:pw@nats.messaging:14222", 1), 14222);
        assert_eq!(url_port("nats://nats", 4222), 4222);
        assert_eq!(url_port("http://collector:4317/", 1), 4317);
    }

    #[test]
    fn probes_give_a_migration_three_minutes_before_liveness_counts() {
        let state = desired_state(&stack()).unwrap();
        for o in &state.services {
            let c = container(&o.deployment);
            let startup = c.startup_probe.as_ref().expect("a startupProbe");
            assert_eq!(
                startup.http_get.as_ref().unwrap().path.as_deref(),
                Some("/healthz")
            );
            assert_eq!(
                startup.period_seconds.unwrap() * startup.failure_threshold.unwrap(),
                180
            );
            let live = c.liveness_probe.as_ref().unwrap();
            assert_eq!(
                (
                    live.period_seconds,
                    live.failure_threshold,
                    live.timeout_seconds
                ),
                (Some(10), Some(3), Some(3))
            );
        }
    }
}
