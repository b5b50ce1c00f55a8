//! The `EcommerceStack` custom resource: what a user asks for (spec) and what
//! the operator reports (status). The CRD in `k8s/crd.yaml` is generated from
//! these types by the `crdgen` binary.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{EnvVar, ResourceRequirements};
use k8s_openapi::api::networking::v1::NetworkPolicyPeer;
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, LabelSelector, Time};
use kube::CustomResource;
use kube::core::CustomResourceExt;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::services::Service;

/// API group of the custom resource.
pub const GROUP: &str = "ecommerce.example.com";
/// API version of the custom resource.
pub const VERSION: &str = "v1alpha1";

/// One running copy of the e-commerce platform: the six services, their
/// shared settings and the secrets they read.
#[derive(CustomResource, Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[kube(
    group = "ecommerce.example.com",
    version = "v1alpha1",
    kind = "EcommerceStack",
    plural = "ecommercestacks",
    shortname = "ecs",
    category = "ecommerce",
    namespaced,
    status = "EcommerceStackStatus",
    derive = "PartialEq",
    // Raw JSON: repeated `printcolumn(type_ = ..)` trips clippy's duplicated_attributes.
    printcolumn = r#"{"name":"Version","type":"string","description":"requested image tag","jsonPath":".spec.version"}"#,
    printcolumn = r#"{"name":"Rolled Out","type":"string","description":"version running on every service","jsonPath":".status.version"}"#,
    printcolumn = r#"{"name":"Ready","type":"string","description":"Ready condition","jsonPath":".status.conditions[?(@.type==\"Ready\")].status"}"#,
    printcolumn = r#"{"name":"Services","type":"string","description":"ready services / all services","jsonPath":".status.readyServices"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct EcommerceStackSpec {
    /// Image tag of every service (`<registry>/<prefix>/<service>:<version>`).
    /// Changing it migrates, then rolls all Deployments. At most 63
    /// characters: it is also the pods' `app.kubernetes.io/version` label.
    #[schemars(regex(pattern = r"^[A-Za-z0-9_]([A-Za-z0-9_.-]{0,61}[A-Za-z0-9_])?$"))]
    pub version: String,
    /// Registry host and path, e.g. `ghcr.io/acme`. Empty: images without a
    /// registry (`ecommerce/gateway:<version>`), as a local cluster loads them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_registry: Option<String>,
    /// Repository path between the registry and the service name.
    #[serde(default = "default_image_prefix")]
    pub image_prefix: String,
    /// Pull policy of every container; Kubernetes' default when unset.
    // The enum's own schema: an Option's would list "null" among the values.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(with = "ImagePullPolicy")]
    pub image_pull_policy: Option<ImagePullPolicy>,
    /// `production` (secrets required) or `development`.
    #[serde(default)]
    pub app_env: AppEnv,
    pub database: DatabaseSpec,
    pub nats: NatsSpec,
    /// Secret key holding the gateway's HS256 key (at least 32 bytes).
    /// Unset: the operator generates one once into the Secret `<stack>-jwt`
    /// (key `secret`), owned by the stack and never rotated.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jwt_secret_ref: Option<SecretKeyRef>,
    /// Secret key holding the token every internal gRPC call carries
    /// (`INTERNAL_AUTH_TOKEN`). Unset: the operator generates one once into
    /// the Secret `<stack>-internal-auth` (key `token`), which it owns and
    /// never rotates; delete that Secret to rotate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub internal_auth_token_secret_ref: Option<SecretKeyRef>,
    /// CIDRs of the proxies in front of the gateway (an Ingress controller),
    /// whose `X-Forwarded-For` it trusts (`TRUSTED_PROXIES`), so rate limits
    /// see real clients. Empty: the peer address is the client.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub trusted_proxies: Vec<String>,
    /// NetworkPolicies admitting only the calls the platform makes.
    #[serde(default)]
    pub network_policy: NetworkPolicySpec,
    /// The first admin, created by the user service if absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub admin: Option<AdminSpec>,
    /// Per-service replicas, resources and extra environment.
    #[serde(default)]
    pub services: ServicesSpec,
    /// Scraping, alerts and a dashboard for the stack.
    #[serde(default)]
    pub monitoring: MonitoringSpec,
}

/// The stack's PodMonitor and PrometheusRule (the chart's alerts), applied
/// when the cluster serves the Prometheus Operator's `monitoring.coreos.com/v1`,
/// and its Grafana dashboard as a ConfigMap for the dashboard sidecar.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
pub struct MonitoringSpec {
    #[serde(default)]
    pub enabled: bool,
    /// Extra labels on the PodMonitor and PrometheusRule, for Prometheus's
    /// selectors (e.g. `release: kube-prometheus-stack`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
}

fn default_image_prefix() -> String {
    "ecommerce".to_owned()
}

/// A container's `imagePullPolicy`.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum ImagePullPolicy {
    Always,
    IfNotPresent,
    Never,
}

impl ImagePullPolicy {
    pub fn as_str(self) -> &'static str {
        match self {
            ImagePullPolicy::Always => "Always",
            ImagePullPolicy::IfNotPresent => "IfNotPresent",
            ImagePullPolicy::Never => "Never",
        }
    }
}

/// The services' `APP_ENV`.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum AppEnv {
    #[default]
    Production,
    Development,
}

impl AppEnv {
    pub fn as_str(self) -> &'static str {
        match self {
            AppEnv::Production => "production",
            AppEnv::Development => "development",
        }
    }
}

/// A key of a Secret in the stack's namespace.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
pub struct SecretKeyRef {
    #[schemars(length(min = 1))]
    pub name: String,
    #[schemars(length(min = 1))]
    pub key: String,
}

/// PostgreSQL shared by inventory, order and user (one database each):
/// `managed` (the operator runs one for the stack), or `host`, `user` and
/// `passwordSecretRef` of an existing one.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [{
    "rule": "has(self.managed) ? !has(self.host) && !has(self.user) && !has(self.passwordSecretRef) : has(self.host) && has(self.user) && has(self.passwordSecretRef)",
    "message": "either managed, or host, user and passwordSecretRef of an existing PostgreSQL"
}]))]
pub struct DatabaseSpec {
    /// A PostgreSQL 15 StatefulSet `<stack>-postgresql` run by the operator
    /// (development: one pod, no replication, no backups), its password
    /// generated into the Secret `<stack>-postgresql`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub managed: Option<ManagedSpec>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1))]
    pub host: Option<String>,
    #[serde(default = "default_db_port")]
    #[schemars(range(min = 1, max = 65535))]
    pub port: i32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1))]
    pub user: Option<String>,
    /// Base of the per-service database names (`<name>_user`, ...).
    #[serde(default = "default_db_name")]
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password_secret_ref: Option<SecretKeyRef>,
}

/// A dependency the operator runs for the stack: one pod of a StatefulSet
/// with a volume. For development and trials, not production. The volume's
/// size and class are fixed once created (a StatefulSet's volume claim
/// template cannot change).
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [
    {
        "rule": "has(self.storage) == has(oldSelf.storage) && (!has(self.storage) || self.storage == oldSelf.storage)",
        "message": "storage cannot change once the volume exists (resize its PersistentVolumeClaim instead)"
    },
    {
        "rule": "has(self.storageClassName) == has(oldSelf.storageClassName) && (!has(self.storageClassName) || self.storageClassName == oldSelf.storageClassName)",
        "message": "storageClassName cannot change once the volume exists"
    }
]))]
pub struct ManagedSpec {
    /// Its image; unset: `postgres:15` or `nats:2.9-alpine`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1))]
    pub image: Option<String>,
    /// Size of its volume; unset: 2Gi for PostgreSQL, 1Gi for NATS.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storage: Option<Quantity>,
    /// The volume's StorageClass; unset: the cluster's default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storage_class_name: Option<String>,
    /// Keep the volume when the stack is deleted; a stack of the same name
    /// finds it again. (A generated database password is always kept: it is
    /// the one that opens the data.)
    #[serde(default)]
    pub retain_on_delete: bool,
}

fn default_db_port() -> i32 {
    5432
}

fn default_db_name() -> String {
    "ecommerce".to_owned()
}

/// NATS: JetStream for the order events (producer, consumer), and plain
/// subjects for Inventory's product change announcements to the gateways.
/// The stream, subject prefix and durable consumer default to names of this
/// stack's own, so that two stacks on one NATS never share events or
/// announcements; a stack whose names another stack
/// on the same NATS already uses is refused (condition `Degraded`,
/// reason `EventNamesShared`).
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [{
    "rule": "has(self.managed) != has(self.url)",
    "message": "either managed, or the url of an existing NATS"
}]))]
pub struct NatsSpec {
    /// A NATS with JetStream, StatefulSet `<stack>-nats`, run by the operator
    /// (development: one pod).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub managed: Option<ManagedSpec>,
    /// e.g. `nats://nats:4222`
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1))]
    pub url: Option<String>,
    /// `NATS_STREAM`; unset: `ORDER_EVENTS_<NAMESPACE>_<NAME>`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^[A-Za-z0-9_-]{1,200}$"))]
    pub stream: Option<String>,
    /// `NATS_SUBJECT_PREFIX`; unset: `<namespace>.<name>.order`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)*$"))]
    pub subject_prefix: Option<String>,
    /// `NATS_CONSUMER_NAME` (the durable); unset: `order-events-<namespace>-<name>`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^[A-Za-z0-9_-]{1,200}$"))]
    pub consumer_name: Option<String>,
}

/// The stack's NetworkPolicies.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct NetworkPolicySpec {
    /// Ingress and egress policies for every service (DNS allowed); on by default.
    #[serde(default = "default_true")]
    pub enabled: bool,
    /// Peers admitted to the gateway's API (an ingress controller's
    /// namespace, say); empty: everyone.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub gateway_from: Vec<NetworkPolicyPeer>,
    /// Peers admitted to the services' metrics port (and only to it).
    #[serde(default = "default_metrics_from")]
    pub metrics_from: Vec<NetworkPolicyPeer>,
}

impl Default for NetworkPolicySpec {
    fn default() -> Self {
        NetworkPolicySpec {
            enabled: true,
            gateway_from: Vec::new(),
            metrics_from: default_metrics_from(),
        }
    }
}

fn default_true() -> bool {
    true
}

/// Prometheus in the `monitoring` namespace, as the chart's default.
fn default_metrics_from() -> Vec<NetworkPolicyPeer> {
    vec![NetworkPolicyPeer {
        namespace_selector: Some(LabelSelector {
            match_labels: Some(BTreeMap::from([(
                "kubernetes.io/metadata.name".to_owned(),
                "monitoring".to_owned(),
            )])),
            ..LabelSelector::default()
        }),
        ..NetworkPolicyPeer::default()
    }]
}

/// The first admin account.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AdminSpec {
    #[schemars(length(min = 3, max = 32))]
    pub username: String,
    #[schemars(length(min = 3, max = 254))]
    pub email: String,
    /// Unset: a password generated once into the Secret `<stack>-admin`
    /// (key `password`), which `status.adminPasswordSecretRef` names.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password_secret_ref: Option<SecretKeyRef>,
}

/// Settings of each of the six services.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
pub struct ServicesSpec {
    #[serde(default)]
    pub gateway: ServiceSpec,
    #[serde(default)]
    pub inventory: ServiceSpec,
    #[serde(default)]
    pub order: ServiceSpec,
    #[serde(default)]
    pub user: ServiceSpec,
    #[serde(default)]
    pub producer: ServiceSpec,
    #[serde(default)]
    pub consumer: ServiceSpec,
}

impl ServicesSpec {
    pub fn get(&self, service: Service) -> &ServiceSpec {
        match service {
            Service::Gateway => &self.gateway,
            Service::Inventory => &self.inventory,
            Service::Order => &self.order,
            Service::User => &self.user,
            Service::Producer => &self.producer,
            Service::Consumer => &self.consumer,
        }
    }
}

/// One service's Deployment settings.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
pub struct ServiceSpec {
    /// Pods of this service; 1 when unset. Ignored with `autoscaling`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 100))]
    pub replicas: Option<i32>,
    /// A HorizontalPodAutoscaler owns the replica count (on CPU).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub autoscaling: Option<AutoscalingSpec>,
    /// Requests and limits; unset: 50m CPU and 64Mi requested, 256Mi memory limit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,
    /// Extra variables; one with the name of an operator-set variable replaces it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub env: Vec<EnvVar>,
}

/// A HorizontalPodAutoscaler on CPU, as the chart's `autoscaling`; for the
/// Consumer, the operator's autopilot on its backlog instead.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AutoscalingSpec {
    #[serde(default = "default_min_replicas")]
    #[schemars(range(min = 1, max = 100))]
    pub min_replicas: i32,
    /// At least `minReplicas` (the API server refuses the HPA otherwise).
    #[serde(default = "default_max_replicas")]
    #[schemars(range(min = 1, max = 100))]
    pub max_replicas: i32,
    #[serde(default = "default_target_cpu")]
    #[schemars(range(min = 1, max = 100))]
    pub target_cpu_utilization_percentage: i32,
    /// Consumer only: the order events pending for its durable that one
    /// replica is expected to keep up with; the operator reads the backlog
    /// from JetStream and sets the replica count (up at once, down after
    /// the cooldown).
    #[serde(default = "default_pending_per_replica")]
    #[schemars(range(min = 1))]
    pub pending_per_replica: i64,
    /// Consumer only: no scale-down sooner than this after a change.
    #[serde(default = "default_scale_down_cooldown")]
    #[schemars(range(min = 0, max = 86400))]
    pub scale_down_cooldown_seconds: i64,
}

fn default_pending_per_replica() -> i64 {
    1000
}

fn default_scale_down_cooldown() -> i64 {
    300
}

fn default_min_replicas() -> i32 {
    2
}

fn default_max_replicas() -> i32 {
    6
}

fn default_target_cpu() -> i32 {
    75
}

/// What the operator last saw of the stack.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct EcommerceStackStatus {
    /// The `metadata.generation` these conditions describe.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// `Ready`, `Progressing` and `Degraded`.
    #[serde(default)]
    pub conditions: Vec<Condition>,
    /// The version every service runs (all replicas updated and available).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// The version whose database migrations completed. The Deployments
    /// run it until the migrations of a new `spec.version` complete.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub migrated_version: Option<String>,
    /// Where the first admin's password is (given or generated).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub admin_password_secret_ref: Option<SecretKeyRef>,
    /// `<ready>/<all>` services, for `kubectl get`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ready_services: Option<String>,
    /// Each service's Deployment, in a fixed order.
    #[serde(default)]
    pub services: Vec<ServiceStatus>,
    /// What became of `spec.monitoring` (applied, or why not).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub monitoring: Option<String>,
    /// The Consumer's autopilot, when it autoscales.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub consumer_autoscaling: Option<LagScalingStatus>,
}

/// What the Consumer's autopilot last saw and decided.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct LagScalingStatus {
    /// Events pending for its durable; unset when they could not be read.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pending: Option<i64>,
    pub replicas: i32,
    /// When the count last changed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_scale_time: Option<Time>,
    pub message: String,
}

/// Readiness of one service's Deployment.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ServiceStatus {
    pub name: String,
    pub desired_replicas: i32,
    pub ready_replicas: i32,
    pub updated_replicas: i32,
    /// Every desired replica runs the current template and is ready.
    pub ready: bool,
    /// The version every replica runs (the last one rolled out while a
    /// rollout is under way).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// A HorizontalPodAutoscaler of the operator's owns its replica count.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub autoscaled: bool,
}

/// The CRD as YAML, exactly as `crdgen` prints it and `k8s/crd.yaml` holds it.
pub fn crd_yaml() -> String {
    let crd = EcommerceStack::crd();
    serde_yaml::to_string(&crd).expect("a CRD always serializes to YAML")
}
