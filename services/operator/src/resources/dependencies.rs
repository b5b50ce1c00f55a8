//! PostgreSQL and NATS: where the services find them, and, when the spec
//! says `managed`, the single-pod StatefulSets the operator runs for the
//! stack (as the chart's development profile does).

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{
    StatefulSet, StatefulSetPersistentVolumeClaimRetentionPolicy, StatefulSetSpec,
};
use k8s_openapi::api::core::v1::{
    Container, ContainerPort, EmptyDirVolumeSource, EnvVar, EnvVarSource, ExecAction,
    HTTPGetAction, PersistentVolumeClaim, PersistentVolumeClaimSpec, PodSpec, PodTemplateSpec,
    Probe, ResourceRequirements, SecretKeySelector, Service as KubeService, ServicePort,
    ServiceSpec, Volume, VolumeMount, VolumeResourceRequirements,
};
use k8s_openapi::api::networking::v1::{
    NetworkPolicy, NetworkPolicyIngressRule, NetworkPolicyPeer, NetworkPolicySpec,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta, OwnerReference};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::ResourceExt;

use crate::crd::{EcommerceStack, ManagedSpec};
use crate::services::Service;

use super::*;

/// PostgreSQL's port, the managed one's and an existing one's default.
pub const POSTGRESQL_PORT: i32 = 5432;
/// NATS's client port.
pub const NATS_PORT: i32 = 4222;
const NATS_MONITOR_PORT: i32 = 8222;

/// A dependency the operator can run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dependency {
    PostgreSql,
    Nats,
}

impl Dependency {
    pub fn name(self) -> &'static str {
        match self {
            Dependency::PostgreSql => "postgresql",
            Dependency::Nats => "nats",
        }
    }

    fn managed(self, stack: &EcommerceStack) -> Option<&ManagedSpec> {
        match self {
            Dependency::PostgreSql => stack.spec.database.managed.as_ref(),
            Dependency::Nats => stack.spec.nats.managed.as_ref(),
        }
    }

    /// The services that reach it (and, for PostgreSQL, the migration Jobs).
    fn users(self) -> Vec<Service> {
        Service::ALL
            .into_iter()
            .filter(|s| match self {
                Dependency::PostgreSql => s.uses_database(),
                Dependency::Nats => s.uses_nats(),
            })
            .collect()
    }
}

/// `<stack>-postgresql`, `<stack>-nats`: the StatefulSet, its Service (the
/// host name) and, for PostgreSQL, the generated password's Secret.
pub fn managed_name(stack: &str, dependency: &str) -> String {
    format!("{stack}-{dependency}")
}

/// The managed PostgreSQL's volume: the StatefulSet's claim `data` of pod 0.
pub fn data_volume_claim_name(stack: &str) -> String {
    format!(
        "data-{}-0",
        managed_name(stack, Dependency::PostgreSql.name())
    )
}

/// Where the services find PostgreSQL: host, port and user.
pub fn database_address(stack: &EcommerceStack) -> (String, i32, String) {
    let database = &stack.spec.database;
    match &database.managed {
        Some(_) => (
            managed_name(&stack.name_any(), Dependency::PostgreSql.name()),
            POSTGRESQL_PORT,
            "postgres".to_owned(),
        ),
        None => (
            database.host.clone().unwrap_or_default(),
            database.port,
            database.user.clone().unwrap_or_default(),
        ),
    }
}

/// Where the services find NATS.
pub fn nats_url(stack: &EcommerceStack) -> String {
    match &stack.spec.nats.managed {
        Some(_) => format!(
            "nats://{}:{NATS_PORT}",
            managed_name(&stack.name_any(), Dependency::Nats.name())
        ),
        None => stack.spec.nats.url.clone().unwrap_or_default(),
    }
}

/// Where the operator, in its own namespace, finds the stack's NATS: a
/// managed one by its full name; a given URL as it is (so it must resolve
/// from the operator's namespace too).
pub fn nats_url_from_operator(stack: &EcommerceStack) -> String {
    match &stack.spec.nats.managed {
        Some(_) => format!(
            "nats://{}.{}.svc:{NATS_PORT}",
            managed_name(&stack.name_any(), Dependency::Nats.name()),
            stack.namespace().unwrap_or_default()
        ),
        None => nats_url(stack),
    }
}

/// What the spec says that cannot work, each as a sentence (the CRD's
/// validation rules say the same; a CRD older than the operator may not).
pub fn spec_problems(stack: &EcommerceStack) -> Vec<String> {
    let spec = &stack.spec;
    let mut problems = Vec::new();
    let database = &spec.database;
    let external = database.host.is_some()
        || database.user.is_some()
        || database.password_secret_ref.is_some();
    let complete = database.host.is_some()
        && database.user.is_some()
        && database.password_secret_ref.is_some();
    match (&database.managed, external, complete) {
        (Some(_), true, _) => problems.push(
            "spec.database: managed, and host, user or passwordSecretRef too: choose one".to_owned(),
        ),
        (None, _, false) => problems.push(
            "spec.database: neither managed nor host, user and passwordSecretRef of an existing PostgreSQL".to_owned(),
        ),
        _ => {}
    }
    match (&spec.nats.managed, &spec.nats.url) {
        (Some(_), Some(_)) => {
            problems.push("spec.nats: managed, and a url too: choose one".to_owned())
        }
        (None, None) => {
            problems.push("spec.nats: neither managed nor the url of an existing NATS".to_owned())
        }
        _ => {}
    }
    problems
}

/// One managed dependency's objects.
#[derive(Debug, Clone)]
pub struct ManagedObjects {
    pub dependency: Dependency,
    pub kube_service: KubeService,
    pub stateful_set: StatefulSet,
    /// None when the stack's NetworkPolicies are off.
    pub network_policy: Option<NetworkPolicy>,
}

fn dependency_selector(stack: &EcommerceStack, dependency: Dependency) -> BTreeMap<String, String> {
    BTreeMap::from([
        (
            "app.kubernetes.io/name".to_owned(),
            dependency.name().to_owned(),
        ),
        ("app.kubernetes.io/instance".to_owned(), stack.name_any()),
    ])
}

/// Without the version label: a new version of the services must not
/// restart the database.
fn dependency_labels(stack: &EcommerceStack, dependency: Dependency) -> BTreeMap<String, String> {
    let mut labels = dependency_selector(stack, dependency);
    labels.insert("app.kubernetes.io/part-of".into(), "ecommerce".into());
    labels.insert("app.kubernetes.io/managed-by".into(), FIELD_MANAGER.into());
    labels.insert(
        "app.kubernetes.io/component".into(),
        dependency.name().into(),
    );
    labels
}

fn dependency_metadata(
    stack: &EcommerceStack,
    dependency: Dependency,
    owner: &OwnerReference,
) -> ObjectMeta {
    ObjectMeta {
        name: Some(managed_name(&stack.name_any(), dependency.name())),
        namespace: stack.namespace(),
        labels: Some(dependency_labels(stack, dependency)),
        owner_references: Some(vec![owner.clone()]),
        ..ObjectMeta::default()
    }
}

/// The managed dependencies the spec asks for, PostgreSQL first.
pub(crate) fn managed_dependencies(
    stack: &EcommerceStack,
    owner: &OwnerReference,
) -> Vec<ManagedObjects> {
    [Dependency::PostgreSql, Dependency::Nats]
        .into_iter()
        .filter_map(|dependency| {
            let managed = dependency.managed(stack)?;
            let port = match dependency {
                Dependency::PostgreSql => POSTGRESQL_PORT,
                Dependency::Nats => NATS_PORT,
            };
            Some(ManagedObjects {
                dependency,
                kube_service: KubeService {
                    metadata: dependency_metadata(stack, dependency, owner),
                    spec: Some(ServiceSpec {
                        selector: Some(dependency_selector(stack, dependency)),
                        ports: Some(vec![ServicePort {
                            name: Some(port_name(dependency).to_owned()),
                            port,
                            target_port: Some(IntOrString::String(port_name(dependency).into())),
                            protocol: Some("TCP".to_owned()),
                            ..ServicePort::default()
                        }]),
                        ..ServiceSpec::default()
                    }),
                    ..KubeService::default()
                },
                stateful_set: stateful_set(stack, dependency, managed, owner),
                network_policy: stack
                    .spec
                    .network_policy
                    .enabled
                    .then(|| dependency_network_policy(stack, dependency, port, owner)),
            })
        })
        .collect()
}

fn port_name(dependency: Dependency) -> &'static str {
    match dependency {
        Dependency::PostgreSql => "postgresql",
        Dependency::Nats => "client",
    }
}

/// Its users' pods reach its port; it reaches nothing.
fn dependency_network_policy(
    stack: &EcommerceStack,
    dependency: Dependency,
    port: i32,
    owner: &OwnerReference,
) -> NetworkPolicy {
    let mut from: Vec<NetworkPolicyPeer> = dependency
        .users()
        .into_iter()
        .map(|service| pods_of(stack, service))
        .collect();
    // The operator reads the Consumer's backlog for its autopilot.
    if dependency == Dependency::Nats && stack.spec.services.consumer.autoscaling.is_some() {
        from.push(NetworkPolicyPeer {
            namespace_selector: Some(LabelSelector::default()),
            pod_selector: Some(LabelSelector {
                match_labels: Some(BTreeMap::from([(
                    "app.kubernetes.io/name".to_owned(),
                    "ecommerce-operator".to_owned(),
                )])),
                ..LabelSelector::default()
            }),
            ..NetworkPolicyPeer::default()
        });
    }
    if dependency == Dependency::PostgreSql {
        from.push(NetworkPolicyPeer {
            pod_selector: Some(LabelSelector {
                match_labels: Some(migration_selector(stack)),
                ..LabelSelector::default()
            }),
            ..NetworkPolicyPeer::default()
        });
    }
    NetworkPolicy {
        metadata: dependency_metadata(stack, dependency, owner),
        spec: Some(NetworkPolicySpec {
            pod_selector: Some(LabelSelector {
                match_labels: Some(dependency_selector(stack, dependency)),
                ..LabelSelector::default()
            }),
            policy_types: Some(vec!["Ingress".to_owned(), "Egress".to_owned()]),
            ingress: Some(vec![NetworkPolicyIngressRule {
                ports: Some(vec![tcp_port(port)]),
                from: Some(from),
            }]),
            egress: Some(Vec::new()),
        }),
    }
}

/// The chart's `postgresql` and `nats` StatefulSets, with the volume kept
/// or deleted with the stack as `retainOnDelete` says.
fn stateful_set(
    stack: &EcommerceStack,
    dependency: Dependency,
    managed: &ManagedSpec,
    owner: &OwnerReference,
) -> StatefulSet {
    let name = managed_name(&stack.name_any(), dependency.name());
    let (uid, default_image, default_storage, data_path) = match dependency {
        Dependency::PostgreSql => (999, "postgres:15", "2Gi", "/var/lib/postgresql/data"),
        Dependency::Nats => (1000, "nats:2.9-alpine", "1Gi", "/data"),
    };
    let mut mounts = vec![VolumeMount {
        name: "data".to_owned(),
        mount_path: data_path.to_owned(),
        ..VolumeMount::default()
    }];
    let mut volumes = Vec::new();
    let container = match dependency {
        Dependency::PostgreSql => {
            // The entrypoint writes its socket and temporary files here
            // under the read-only root.
            for (volume, path) in [("run", "/var/run/postgresql"), ("tmp", "/tmp")] {
                mounts.push(VolumeMount {
                    name: volume.to_owned(),
                    mount_path: path.to_owned(),
                    ..VolumeMount::default()
                });
                volumes.push(Volume {
                    name: volume.to_owned(),
                    empty_dir: Some(EmptyDirVolumeSource::default()),
                    ..Volume::default()
                });
            }
            let password = db_password_ref(stack);
            let pg_isready = |period, failures, timeout| Probe {
                exec: Some(ExecAction {
                    command: Some(
                        ["pg_isready", "-U", "postgres", "-h", "127.0.0.1"]
                            .map(str::to_owned)
                            .to_vec(),
                    ),
                }),
                period_seconds: Some(period),
                failure_threshold: Some(failures),
                timeout_seconds: Some(timeout),
                ..Probe::default()
            };
            Container {
                name: dependency.name().to_owned(),
                ports: Some(vec![container_port("postgresql", POSTGRESQL_PORT)]),
                env: Some(vec![
                    plain_env("POSTGRES_USER", "postgres"),
                    EnvVar {
                        name: "POSTGRES_PASSWORD".to_owned(),
                        value_from: Some(EnvVarSource {
                            secret_key_ref: Some(SecretKeySelector {
                                name: password.name,
                                key: password.key,
                                optional: Some(false),
                            }),
                            ..EnvVarSource::default()
                        }),
                        ..EnvVar::default()
                    },
                    plain_env("PGDATA", "/var/lib/postgresql/data/pgdata"),
                ]),
                startup_probe: Some(pg_isready(5, 30, 3)),
                liveness_probe: Some(pg_isready(10, 6, 5)),
                readiness_probe: Some(pg_isready(5, 3, 3)),
                resources: Some(resources(("100m", "256Mi"), ("1", "1Gi"))),
                ..Container::default()
            }
        }
        Dependency::Nats => {
            let healthz = |period, failures| Probe {
                http_get: Some(HTTPGetAction {
                    path: Some("/healthz".to_owned()),
                    port: IntOrString::String("monitor".to_owned()),
                    ..HTTPGetAction::default()
                }),
                period_seconds: Some(period),
                failure_threshold: Some(failures),
                timeout_seconds: Some(3),
                ..Probe::default()
            };
            Container {
                name: dependency.name().to_owned(),
                command: Some(vec!["nats-server".to_owned()]),
                args: Some(
                    ["-js", "-sd", "/data", "-p", "4222", "-m", "8222"]
                        .map(str::to_owned)
                        .to_vec(),
                ),
                ports: Some(vec![
                    container_port("client", NATS_PORT),
                    container_port("monitor", NATS_MONITOR_PORT),
                ]),
                startup_probe: Some(healthz(2, 30)),
                liveness_probe: Some(healthz(10, 3)),
                readiness_probe: Some(healthz(5, 3)),
                resources: Some(resources(("50m", "64Mi"), ("500m", "512Mi"))),
                ..Container::default()
            }
        }
    };
    let container = Container {
        image: Some(
            managed
                .image
                .clone()
                .unwrap_or_else(|| default_image.to_owned()),
        ),
        image_pull_policy: Some("IfNotPresent".to_owned()),
        volume_mounts: Some(mounts),
        security_context: Some(container_security_context_as(uid)),
        ..container
    };
    let kept_or_deleted = if managed.retain_on_delete {
        "Retain"
    } else {
        "Delete"
    };
    StatefulSet {
        metadata: dependency_metadata(stack, dependency, owner),
        spec: Some(StatefulSetSpec {
            service_name: Some(name),
            replicas: Some(1),
            selector: LabelSelector {
                match_labels: Some(dependency_selector(stack, dependency)),
                ..LabelSelector::default()
            },
            persistent_volume_claim_retention_policy: Some(
                StatefulSetPersistentVolumeClaimRetentionPolicy {
                    when_deleted: Some(kept_or_deleted.to_owned()),
                    when_scaled: Some("Retain".to_owned()),
                },
            ),
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(dependency_labels(stack, dependency)),
                    ..ObjectMeta::default()
                }),
                spec: Some(PodSpec {
                    containers: vec![container],
                    automount_service_account_token: Some(false),
                    security_context: Some(pod_security_context_as(uid)),
                    volumes: (!volumes.is_empty()).then_some(volumes),
                    ..PodSpec::default()
                }),
            },
            volume_claim_templates: Some(vec![PersistentVolumeClaim {
                metadata: ObjectMeta {
                    name: Some("data".to_owned()),
                    labels: Some(dependency_selector(stack, dependency)),
                    ..ObjectMeta::default()
                },
                spec: Some(PersistentVolumeClaimSpec {
                    access_modes: Some(vec!["ReadWriteOnce".to_owned()]),
                    storage_class_name: managed.storage_class_name.clone(),
                    resources: Some(VolumeResourceRequirements {
                        requests: Some(BTreeMap::from([(
                            "storage".to_owned(),
                            managed
                                .storage
                                .clone()
                                .unwrap_or_else(|| Quantity(default_storage.to_owned())),
                        )])),
                        ..VolumeResourceRequirements::default()
                    }),
                    ..PersistentVolumeClaimSpec::default()
                }),
                ..PersistentVolumeClaim::default()
            }]),
            ..StatefulSetSpec::default()
        }),
        ..StatefulSet::default()
    }
}

fn container_port(name: &str, port: i32) -> ContainerPort {
    ContainerPort {
        name: Some(name.to_owned()),
        container_port: port,
        protocol: Some("TCP".to_owned()),
        ..ContainerPort::default()
    }
}

fn plain_env(name: &str, value: &str) -> EnvVar {
    EnvVar {
        name: name.to_owned(),
        value: Some(value.to_owned()),
        ..EnvVar::default()
    }
}

/// The chart's requests and limits of its development PostgreSQL and NATS.
fn resources(requests: (&str, &str), limits: (&str, &str)) -> ResourceRequirements {
    let pair = |(cpu, memory): (&str, &str)| {
        BTreeMap::from([
            ("cpu".to_owned(), Quantity(cpu.to_owned())),
            ("memory".to_owned(), Quantity(memory.to_owned())),
        ])
    };
    ResourceRequirements {
        requests: Some(pair(requests)),
        limits: Some(pair(limits)),
        ..ResourceRequirements::default()
    }
}

/// Whether a managed dependency's pod is ready, from the StatefulSet the
/// API server returned.
pub fn dependency_ready(stateful_set: &StatefulSet) -> bool {
    stateful_set
        .status
        .as_ref()
        .and_then(|s| s.ready_replicas)
        .unwrap_or(0)
        >= 1
}
