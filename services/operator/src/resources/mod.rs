//! Desired state: the ConfigMap, Services and Deployments an `EcommerceStack`
//! asks for. Pure functions of the resource, so they are tested without a
//! cluster.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{ConfigMap, Service as KubeService, ServiceAccount};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use kube::{Resource, ResourceExt};

use crate::crd::EcommerceStack;
use crate::error::{Error, Result};
use crate::services::Service;

mod dependencies;
mod env;
mod migration;
mod monitoring;
mod network;
mod secrets;
mod workload;

pub use dependencies::*;
pub use env::*;
pub use migration::*;
pub use monitoring::*;
use network::*;
pub use secrets::*;
pub use workload::*;

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
    /// The services' ServiceAccount.
    pub service_account: ServiceAccount,
    /// The managed PostgreSQL and NATS the spec asks for.
    pub dependencies: Vec<ManagedObjects>,
    pub config_map: ConfigMap,
    /// Empty when `spec.networkPolicy.enabled` is false.
    pub network_policies: Vec<NetworkPolicy>,
    /// The migration Jobs of `spec.version`, run before the Deployments
    /// roll to it.
    pub migrations: Vec<Job>,
    pub services: Vec<ServiceObjects>,
    /// When `spec.monitoring.enabled`.
    pub monitoring: Option<MonitoringObjects>,
}

/// One service's Service, Deployment and disruption budget, and its
/// autoscaler when it has one.
#[derive(Debug, Clone)]
pub struct ServiceObjects {
    pub service: Service,
    pub kube_service: KubeService,
    pub deployment: Deployment,
    pub disruption_budget: PodDisruptionBudget,
    pub autoscaler: Option<HorizontalPodAutoscaler>,
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
            disruption_budget: disruption_budget(stack, service, &owner),
            autoscaler: autoscaler(stack, service, &owner),
        })
        .collect();
    let network_policies = if stack.spec.network_policy.enabled {
        Service::ALL
            .into_iter()
            .map(|service| network_policy(stack, service, &owner))
            .chain([migration_network_policy(stack, &owner)])
            .collect()
    } else {
        Vec::new()
    };
    Ok(DesiredState {
        service_account: service_account(stack, &owner),
        dependencies: managed_dependencies(stack, &owner),
        config_map,
        network_policies,
        migrations: migration_jobs(stack, &owner),
        services,
        monitoring: monitoring(stack, &owner),
    })
}

/// The desired state with the Deployments (and everything else) at
/// `version`: the last migrated one while the migrations of `spec.version`
/// run.
pub fn desired_state_at(stack: &EcommerceStack, version: &str) -> Result<DesiredState> {
    let mut at_version = stack.clone();
    at_version.spec.version = version.to_owned();
    desired_state(&at_version)
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::core::v1::EnvVar;

    use k8s_openapi::api::core::v1::{Container, ResourceRequirements};
    use k8s_openapi::api::networking::v1::{NetworkPolicyPeer, NetworkPolicySpec};
    use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
    use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

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
        stack.spec.nats.url = Some("nats://nats.messaging:14222".into());
        let state = desired_state(&stack).unwrap();
        assert_eq!(state.network_policies.len(), 7);
        // The migration pods: no ingress; DNS and PostgreSQL out.
        let migrations = state.network_policies[6].spec.as_ref().unwrap();
        assert_eq!(
            migrations.pod_selector.as_ref().unwrap().match_labels,
            Some(BTreeMap::from([
                ("app.kubernetes.io/instance".to_owned(), "shop".to_owned()),
                (
                    "app.kubernetes.io/component".to_owned(),
                    MIGRATION_COMPONENT.to_owned()
                ),
            ]))
        );
        assert_eq!(migrations.ingress.as_deref(), Some(&[][..]));
        let out: Vec<_> = migrations
            .egress
            .as_ref()
            .unwrap()
            .iter()
            .flat_map(|rule| rule.ports.iter().flatten())
            .map(|p| (p.protocol.clone().unwrap(), p.port.clone().unwrap()))
            .collect();
        assert_eq!(
            out,
            [
                ("UDP".to_owned(), IntOrString::Int(53)),
                ("TCP".to_owned(), IntOrString::Int(53)),
                ("TCP".to_owned(), IntOrString::Int(5432)),
            ]
        );
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

    #[test]
    fn every_service_has_a_disruption_budget_and_spreads_over_nodes() {
        let state = desired_state(&stack()).unwrap();
        for o in &state.services {
            let name = o.deployment.name_any();
            let selector = &o.deployment.spec.as_ref().unwrap().selector;
            let budget = o.disruption_budget.spec.as_ref().unwrap();
            assert_eq!(o.disruption_budget.name_any(), name);
            assert_eq!(budget.max_unavailable, Some(IntOrString::Int(1)));
            assert_eq!(budget.selector.as_ref(), Some(selector), "{name}");
            let pod = o
                .deployment
                .spec
                .as_ref()
                .unwrap()
                .template
                .spec
                .as_ref()
                .unwrap();
            let spread = pod.topology_spread_constraints.as_ref().unwrap();
            assert_eq!(spread.len(), 1);
            assert_eq!(spread[0].topology_key, "kubernetes.io/hostname");
            assert_eq!(spread[0].when_unsatisfiable, "ScheduleAnyway");
            assert_eq!(spread[0].label_selector.as_ref(), Some(selector), "{name}");
        }
    }

    #[test]
    fn each_database_service_migrates_in_a_job_of_its_own_per_version() {
        let state = desired_state(&stack()).unwrap();
        let names: Vec<String> = state.migrations.iter().map(|j| j.name_any()).collect();
        assert_eq!(names.len(), 3);
        for (name, service) in names.iter().zip(["inventory", "order", "user"]) {
            assert!(
                name.starts_with(&format!("shop-{service}-migrate-")),
                "{name}"
            );
            assert!(name.len() <= 63, "fits the job-name label: {name}");
        }
        // Another version, other Jobs (a Job's template cannot change); the
        // same version, the same names.
        let later = desired_state_at(&stack(), "1.3.0").unwrap();
        assert!(
            later
                .migrations
                .iter()
                .all(|j| !names.contains(&j.name_any()))
        );
        let again = desired_state(&stack()).unwrap();
        assert!(
            again
                .migrations
                .iter()
                .all(|j| names.contains(&j.name_any()))
        );

        let order = &state.migrations[1];
        let spec = order.spec.as_ref().unwrap();
        assert_eq!(spec.backoff_limit, Some(3));
        assert_eq!(spec.active_deadline_seconds, Some(600));
        let rule = &spec.pod_failure_policy.as_ref().unwrap().rules[0];
        assert_eq!(rule.action, "FailJob", "a refused downgrade is not retried");
        assert_eq!(
            rule.on_exit_codes.as_ref().unwrap().values,
            [SCHEMA_AHEAD_EXIT_CODE]
        );
        let pod = spec.template.spec.as_ref().unwrap();
        assert_eq!(pod.restart_policy.as_deref(), Some("Never"));
        assert_eq!(pod.automount_service_account_token, Some(false));
        let labels = spec
            .template
            .metadata
            .as_ref()
            .unwrap()
            .labels
            .as_ref()
            .unwrap();
        assert_eq!(labels["app.kubernetes.io/component"], MIGRATION_COMPONENT);
        assert_eq!(labels["app.kubernetes.io/name"], "order-migrate");
        assert_eq!(labels["app.kubernetes.io/managed-by"], FIELD_MANAGER);
        let c = &pod.containers[0];
        assert_eq!(c.name, MIGRATE_CONTAINER);
        assert_eq!(c.args.as_deref(), Some(&["migrate".to_owned()][..]));
        assert_eq!(
            c.termination_message_policy.as_deref(),
            Some("FallbackToLogsOnError")
        );
        // The settings and secrets the service itself reads.
        assert_eq!(c.env, Some(container_env(&stack(), Service::Order)));
        let deployment = &objects(&state, Service::Order).deployment;
        assert_eq!(c.image, container(deployment).image);
        assert_eq!(c.security_context, container(deployment).security_context);
    }

    #[test]
    fn the_schema_ahead_exit_code_is_the_services_own() {
        assert_eq!(
            i64::from(SCHEMA_AHEAD_EXIT_CODE),
            i64::from(platform::db::SCHEMA_AHEAD_EXIT_CODE)
        );
    }

    fn managed_stack(retain: bool) -> EcommerceStack {
        let mut stack = stack();
        stack.spec.database.host = None;
        stack.spec.database.user = None;
        stack.spec.database.password_secret_ref = None;
        stack.spec.database.managed = Some(crate::crd::ManagedSpec {
            retain_on_delete: retain,
            storage: Some(Quantity("5Gi".into())),
            ..Default::default()
        });
        stack.spec.nats.url = None;
        stack.spec.nats.managed = Some(Default::default());
        stack
    }

    #[test]
    fn managed_dependencies_are_the_charts_development_statefulsets() {
        let stack = managed_stack(false);
        assert_eq!(spec_problems(&stack), Vec::<String>::new());
        let state = desired_state(&stack).unwrap();
        let [postgresql, nats] = &state.dependencies[..] else {
            panic!("two dependencies")
        };
        let spec = postgresql.stateful_set.spec.as_ref().unwrap();
        let pod = spec.template.spec.as_ref().unwrap();
        assert_eq!(pod.containers[0].image.as_deref(), Some("postgres:15"));
        let claim = &spec.volume_claim_templates.as_ref().unwrap()[0];
        assert_eq!(
            claim
                .spec
                .as_ref()
                .unwrap()
                .resources
                .as_ref()
                .unwrap()
                .requests
                .as_ref()
                .unwrap()["storage"],
            Quantity("5Gi".into())
        );
        let retention = spec
            .persistent_volume_claim_retention_policy
            .as_ref()
            .unwrap();
        assert_eq!(retention.when_deleted.as_deref(), Some("Delete"));
        // The version label would restart the database at every upgrade.
        let labels = spec
            .template
            .metadata
            .as_ref()
            .unwrap()
            .labels
            .as_ref()
            .unwrap();
        assert!(!labels.contains_key("app.kubernetes.io/version"));
        assert_eq!(
            postgresql.kube_service.spec.as_ref().unwrap().selector,
            spec.selector.match_labels
        );
        let nats_pod = nats
            .stateful_set
            .spec
            .as_ref()
            .unwrap()
            .template
            .spec
            .as_ref()
            .unwrap();
        assert_eq!(
            nats_pod.containers[0].args.as_ref().unwrap()[..2],
            ["-js".to_owned(), "-sd".to_owned()]
        );
        // Only its users (and the migrations) reach PostgreSQL; it reaches
        // nothing.
        let policy = postgresql
            .network_policy
            .as_ref()
            .unwrap()
            .spec
            .as_ref()
            .unwrap();
        let from = policy.ingress.as_ref().unwrap()[0].from.as_ref().unwrap();
        let names: Vec<String> = from
            .iter()
            .map(|peer| {
                let labels = peer
                    .pod_selector
                    .as_ref()
                    .unwrap()
                    .match_labels
                    .as_ref()
                    .unwrap();
                labels
                    .get("app.kubernetes.io/name")
                    .or(labels.get("app.kubernetes.io/component"))
                    .unwrap()
                    .clone()
            })
            .collect();
        assert_eq!(names, ["inventory", "order", "user", "migration"]);
        assert_eq!(policy.egress.as_deref(), Some(&[][..]));
        // The generated password outlives the stack whatever becomes of the
        // volume: a new one would never open the old data.
        let generated = generated_secrets(&stack);
        assert!(generated[0].retained);
        let secret = generated_secret(&stack, &generated[0], "x".into()).unwrap();
        assert_eq!(secret.metadata.owner_references, None);
        // The other generated secrets go with the stack.
        let jwt = generated_secret(&stack, &generated[1], "x".into()).unwrap();
        assert!(jwt.metadata.owner_references.is_some());
    }

    #[test]
    fn retain_on_delete_keeps_the_volume_and_the_password_that_opens_it() {
        let stack = managed_stack(true);
        let state = desired_state(&stack).unwrap();
        let spec = state.dependencies[0].stateful_set.spec.as_ref().unwrap();
        assert_eq!(
            spec.persistent_volume_claim_retention_policy
                .as_ref()
                .unwrap()
                .when_deleted
                .as_deref(),
            Some("Retain")
        );
        let generated = generated_secrets(&stack);
        assert_eq!(generated[0].reference.name, "shop-postgresql");
        assert!(generated[0].retained);
        let secret = generated_secret(&stack, &generated[0], "x".into()).unwrap();
        assert_eq!(
            secret.metadata.owner_references, None,
            "not garbage-collected"
        );
        // The other generated secrets still go with the stack.
        assert!(generated[1..].iter().all(|g| !g.retained));
    }

    #[test]
    fn a_dependency_is_managed_or_given_never_both_nor_neither() {
        let mut both = managed_stack(false);
        both.spec.database.host = Some("db".into());
        both.spec.nats.url = Some("nats://n:4222".into());
        assert_eq!(spec_problems(&both).len(), 2, "{:?}", spec_problems(&both));
        let mut neither = stack();
        neither.spec.database.user = None;
        neither.spec.nats.url = None;
        let problems = spec_problems(&neither);
        assert!(
            problems[0].starts_with("spec.database: neither"),
            "{problems:?}"
        );
        assert!(
            problems[1].starts_with("spec.nats: neither"),
            "{problems:?}"
        );
    }

    #[test]
    fn monitoring_is_off_by_default_and_embeds_the_charts_own_alerts_and_dashboard() {
        assert!(desired_state(&stack()).unwrap().monitoring.is_none());
        let mut stack = stack();
        stack.spec.monitoring.enabled = true;
        let objects = desired_state(&stack).unwrap().monitoring.unwrap();
        let alerts: Vec<&str> = objects.prometheus_rule["spec"]["groups"]
            .as_array()
            .unwrap()
            .iter()
            .flat_map(|g| g["rules"].as_array().unwrap())
            .map(|r| r["alert"].as_str().unwrap())
            .collect();
        for alert in [
            "EcommerceOrdersPendingTooLong",
            "EcommerceEventsDeadLettered",
            "EcommerceOutboxBacklog",
        ] {
            assert!(alerts.contains(&alert), "{alert} in {alerts:?}");
        }
        assert_eq!(objects.prometheus_rule["metadata"]["name"], "shop-alerts");
        let selected = &objects.pod_monitor["spec"]["selector"];
        assert_eq!(
            selected["matchLabels"]["app.kubernetes.io/instance"],
            "shop"
        );
        assert_eq!(
            selected["matchExpressions"][0]["values"]
                .as_array()
                .unwrap()
                .len(),
            6
        );
        let dashboard = &objects.dashboard.data.as_ref().unwrap()["ecommerce-order-flow.json"];
        let parsed: serde_json::Value = serde_json::from_str(dashboard).expect("JSON");
        assert_eq!(parsed["uid"], "ecommerce-order-flow");
    }
}
