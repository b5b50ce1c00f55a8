//! Desired state: the ConfigMap, Services and Deployments an `EcommerceStack`
//! asks for. Pure functions of the resource, so they are tested without a
//! cluster.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{Deployment, DeploymentSpec};
use k8s_openapi::api::core::v1::{
    Capabilities, ConfigMap, ConfigMapKeySelector, Container, ContainerPort, EnvVar, EnvVarSource,
    HTTPGetAction, PodSecurityContext, PodSpec, PodTemplateSpec, Probe, SeccompProfile,
    SecretKeySelector, SecurityContext, Service as KubeService, ServicePort, ServiceSpec,
};
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
/// Non-root user the pods run as (the images' user must not need root).
const RUN_AS_USER: i64 = 65532;

/// Everything one stack consists of, in the order it is applied.
#[derive(Debug, Clone)]
pub struct DesiredState {
    pub config_map: ConfigMap,
    pub services: Vec<ServiceObjects>,
}

/// One service's Service and Deployment.
#[derive(Debug, Clone)]
pub struct ServiceObjects {
    pub service: Service,
    pub kube_service: KubeService,
    pub deployment: Deployment,
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
    let mut settings = BTreeMap::from([
        ("APP_ENV".to_owned(), spec.app_env.as_str().to_owned()),
        ("LOG_FORMAT".to_owned(), "json".to_owned()),
        ("DB_HOST".to_owned(), spec.database.host.clone()),
        ("DB_PORT".to_owned(), spec.database.port.to_string()),
        ("DB_USER".to_owned(), spec.database.user.clone()),
        ("DB_NAME".to_owned(), spec.database.name.clone()),
        ("NATS_ADDR".to_owned(), spec.nats.url.clone()),
        ("NATS_STREAM".to_owned(), spec.nats.stream.clone()),
        (
            "NATS_SUBJECT_PREFIX".to_owned(),
            spec.nats.subject_prefix.clone(),
        ),
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
        })
        .collect();
    Ok(DesiredState {
        config_map,
        services,
    })
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
        };
        if let Some(reference) = reference {
            env.push(secret_env(secret.env_name(), reference));
        }
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

fn http_probe(service: Service, path: &str, period_seconds: i32, failure_threshold: i32) -> Probe {
    Probe {
        http_get: Some(HTTPGetAction {
            path: Some(path.to_owned()),
            port: IntOrString::Int(service.port()),
            scheme: Some("HTTP".to_owned()),
            ..HTTPGetAction::default()
        }),
        period_seconds: Some(period_seconds),
        timeout_seconds: Some(2),
        failure_threshold: Some(failure_threshold),
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
        image_pull_policy: stack.spec.image_pull_policy.clone(),
        ports: Some(vec![ContainerPort {
            name: Some(service.port_name().to_owned()),
            container_port: service.port(),
            protocol: Some("TCP".to_owned()),
            ..ContainerPort::default()
        }]),
        env: Some(container_env(stack, service)),
        resources: service_spec.resources.clone(),
        liveness_probe: Some(http_probe(service, "/healthz", 10, 3)),
        readiness_probe: Some(http_probe(service, "/readyz", 5, 3)),
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
            replicas: Some(service_spec.replicas.unwrap_or(1)),
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
                    // Services drain on SIGTERM within this.
                    termination_grace_period_seconds: Some(30),
                    ..PodSpec::default()
                }),
            },
            ..DeploymentSpec::default()
        }),
        ..Deployment::default()
    }
}
