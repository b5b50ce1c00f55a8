//! Test helpers: stacks in the states the reconciler meets, and an API server
//! stand-in (`tower_test::mock`) that expects the reconciler's calls in order
//! and answers them as the real one would.

use std::sync::Arc;
use std::time::Duration;

use http::{Method, Request, Response, StatusCode};
use k8s_openapi::api::apps::v1::{Deployment, DeploymentStatus};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::client::Body;
use kube::{Client, Resource, ResourceExt};
use prometheus_client::registry::Registry;
use serde_json::{Value, json};
use tokio::task::JoinHandle;
use tower_test::mock::{self, Handle, SendResponse};

use crate::autopilot::LagSource;
use crate::controller::{Context, FINALIZER};
use crate::crd::{
    AdminSpec, AppEnv, DatabaseSpec, EcommerceStack, EcommerceStackSpec, EcommerceStackStatus,
    NatsSpec, NetworkPolicySpec, SecretKeyRef, ServicesSpec,
};
use crate::metrics::Metrics;
use crate::resources::{
    Dependency, DesiredState, FIELD_MANAGER, desired_state, generated_secrets, secret_refs,
};

pub const NAMESPACE: &str = "testns";
pub const NAME: &str = "shop";
const STACKS_PATH: &str = "/apis/ecommerce.example.com/v1alpha1/namespaces/testns/ecommercestacks";

pub fn test_spec() -> EcommerceStackSpec {
    EcommerceStackSpec {
        version: "1.2.0".into(),
        image_registry: Some("registry.example.com".into()),
        image_prefix: "ecommerce".into(),
        image_pull_policy: None,
        app_env: AppEnv::Production,
        database: DatabaseSpec {
            managed: None,
            host: Some("postgres.db".into()),
            port: 5432,
            user: Some("shop".into()),
            name: "ecommerce".into(),
            password_secret_ref: Some(SecretKeyRef {
                name: "shop-db".into(),
                key: "password".into(),
            }),
        },
        nats: NatsSpec {
            managed: None,
            url: Some("nats://nats.messaging:4222".into()),
            stream: None,
            subject_prefix: None,
            consumer_name: None,
        },
        jwt_secret_ref: Some(SecretKeyRef {
            name: "shop-jwt".into(),
            key: "secret".into(),
        }),
        internal_auth_token_secret_ref: None,
        trusted_proxies: Vec::new(),
        network_policy: NetworkPolicySpec::default(),
        admin: Some(AdminSpec {
            username: "admin".into(),
            email: "admin@example.com".into(),
            password_secret_ref: Some(SecretKeyRef {
                name: "shop-admin".into(),
                key: "password".into(),
            }),
        }),
        services: ServicesSpec::default(),
        monitoring: Default::default(),
    }
}

impl EcommerceStack {
    /// A stack as first created: generation 1, no finalizer, no status.
    pub fn test() -> Self {
        let mut stack = EcommerceStack::new(NAME, test_spec());
        let meta = stack.meta_mut();
        meta.namespace = Some(NAMESPACE.into());
        meta.uid = Some("7f9c1a52-0d4e-4a43-9a57-0d1f5a3c2b10".into());
        meta.generation = Some(1);
        meta.resource_version = Some("100".into());
        stack
    }

    pub fn finalized(mut self) -> Self {
        self.finalizers_mut().push(FINALIZER.to_owned());
        self
    }

    pub fn deleting(mut self) -> Self {
        self.meta_mut().deletion_timestamp = Some(Time(Timestamp::now()));
        self
    }

    pub fn with_generation(mut self, generation: i64) -> Self {
        self.meta_mut().generation = Some(generation);
        self
    }

    pub fn with_status(mut self, status: EcommerceStackStatus) -> Self {
        self.status = Some(status);
        self
    }
}

/// How the mock Deployment controller answers: every replica of the current
/// template ready, or a rollout that has not started.
pub fn rolled_out(deployment: &Deployment) -> DeploymentStatus {
    let replicas = deployment
        .spec
        .as_ref()
        .and_then(|s| s.replicas)
        .unwrap_or(1);
    DeploymentStatus {
        observed_generation: Some(1),
        replicas: Some(replicas),
        updated_replicas: Some(replicas),
        ready_replicas: Some(replicas),
        available_replicas: Some(replicas),
        ..DeploymentStatus::default()
    }
}

pub fn not_rolled_out(deployment: &Deployment) -> DeploymentStatus {
    let replicas = deployment
        .spec
        .as_ref()
        .and_then(|s| s.replicas)
        .unwrap_or(1);
    DeploymentStatus {
        observed_generation: Some(1),
        replicas: Some(replicas),
        updated_replicas: Some(0),
        ready_replicas: Some(replicas),
        available_replicas: Some(replicas),
        ..DeploymentStatus::default()
    }
}

/// The managed PostgreSQL's volume, as the mock API server has it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Volume<'a> {
    Absent,
    /// It exists, with this uid; the password's Secret is not its yet.
    Exists(&'a str),
    /// The password's Secret (as read before) is owned by it already.
    HandedOver,
}

/// What the mock API server says of the migration Jobs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MigrationJobs {
    Absent,
    Running,
    Succeeded,
}

/// Bodies the reconciler applied, by object name.
#[derive(Debug, Default)]
pub struct Applied {
    pub config_map: Value,
    pub network_policies: Vec<Value>,
    pub services: Vec<Value>,
    pub deployments: Vec<Value>,
    pub disruption_budgets: Vec<Value>,
    pub stateful_sets: Vec<Value>,
    pub autoscalers: Vec<Value>,
}

pub struct ApiServerVerifier(Handle<Request<Body>, Response<Body>>);

pub type Responder = SendResponse<Response<Body>>;

fn query_pairs(request: &Request<Body>) -> Vec<(String, String)> {
    request
        .uri()
        .query()
        .unwrap_or("")
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| match p.split_once('=') {
            Some((k, v)) => (k.to_owned(), v.to_owned()),
            None => (p.to_owned(), String::new()),
        })
        .collect()
}

pub fn respond_json(send: Responder, body: &impl serde::Serialize) {
    send.send_response(
        Response::builder()
            .body(Body::from(serde_json::to_vec(body).unwrap()))
            .unwrap(),
    );
}

pub fn respond_error(send: Responder, code: u16, reason: &str) {
    let status = json!({
        "kind": "Status", "apiVersion": "v1", "status": "Failure",
        "message": format!("mock API server: {reason}"), "reason": reason, "code": code,
    });
    send.send_response(
        Response::builder()
            .status(StatusCode::from_u16(code).unwrap())
            .body(Body::from(serde_json::to_vec(&status).unwrap()))
            .unwrap(),
    );
}

impl ApiServerVerifier {
    /// The next request, whatever it is (for scenarios with concurrent calls).
    pub async fn next_request(&mut self) -> Option<(Request<Body>, Responder)> {
        self.0.next_request().await
    }

    /// The next request: it must have this method and path; returns its JSON
    /// body (Null when empty) and the means to answer.
    pub async fn expect(
        &mut self,
        method: Method,
        path: &str,
    ) -> (Value, Responder, Vec<(String, String)>) {
        let (request, send) = self
            .0
            .next_request()
            .await
            .unwrap_or_else(|| panic!("expected {method} {path}, but the client hung up"));
        assert_eq!(
            request.method(),
            method,
            "method of the call to {}",
            request.uri()
        );
        assert_eq!(request.uri().path(), path, "path of the {method} call");
        let query = query_pairs(&request);
        let bytes = request.into_body().collect_bytes().await.unwrap();
        let body = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes).expect("request body is JSON")
        };
        (body, send, query)
    }

    /// A server-side apply: PATCH with our field manager, forced.
    pub async fn expect_apply(&mut self, path: &str) -> (Value, Responder) {
        let (body, send, query) = self.expect(Method::PATCH, path).await;
        assert!(
            query.contains(&("fieldManager".into(), FIELD_MANAGER.into())),
            "{path}: field manager in {query:?}"
        );
        assert!(
            query.contains(&("force".into(), "true".into())),
            "{path}: forced in {query:?}"
        );
        (body, send)
    }

    pub async fn handle_finalizer_creation(&mut self, stack: &EcommerceStack) {
        let (patch, send, _) = self
            .expect(Method::PATCH, &format!("{STACKS_PATH}/{NAME}"))
            .await;
        let adds_finalizer = patch.as_array().is_some_and(|ops| {
            ops.iter().any(|op| {
                op["op"] == "add"
                    && op["path"] == "/metadata/finalizers"
                    && op["value"] == json!([FINALIZER])
            })
        });
        assert!(adds_finalizer, "JSON patch adding the finalizer: {patch}");
        respond_json(send, &stack.clone().finalized());
    }

    pub async fn handle_finalizer_removal(&mut self, stack: &EcommerceStack) {
        let (patch, send, _) = self
            .expect(Method::PATCH, &format!("{STACKS_PATH}/{NAME}"))
            .await;
        let ops = patch.as_array().expect("a JSON patch");
        assert!(
            ops.iter()
                .any(|op| op["op"] == "remove" && op["path"] == "/metadata/finalizers/0"),
            "JSON patch removing the finalizer: {patch}"
        );
        let mut removed = stack.clone();
        removed.finalizers_mut().clear();
        respond_json(send, &removed);
    }

    /// The reads of every Secret the stack references, each answered with
    /// its key present; those the operator generates are absent, then
    /// created, unless `generated_exist`. Returns the created Secrets.
    pub async fn handle_secrets(
        &mut self,
        stack: &EcommerceStack,
        generated_exist: bool,
    ) -> Vec<Value> {
        let generated: Vec<String> = generated_secrets(stack)
            .into_iter()
            .map(|g| g.reference.name)
            .collect();
        let mut created = Vec::new();
        for reference in secret_refs(stack) {
            let path = format!("/api/v1/namespaces/{NAMESPACE}/secrets/{}", reference.name);
            let (_, send, _) = self.expect(Method::GET, &path).await;
            if generated.contains(&reference.name) && !generated_exist {
                respond_error(send, 404, "NotFound");
                let (secret, send, _) = self
                    .expect(
                        Method::POST,
                        &format!("/api/v1/namespaces/{NAMESPACE}/secrets"),
                    )
                    .await;
                respond_json(send, &secret);
                created.push(secret);
            } else {
                respond_json(
                    send,
                    &json!({
                        "apiVersion": "v1", "kind": "Secret",
                        "metadata": {"name": reference.name, "namespace": NAMESPACE},
                        "data": {reference.key.clone(): "c2VjcmV0"},
                    }),
                );
            }
        }
        created
    }

    /// The ConfigMap, the NetworkPolicies, then each service's Service,
    /// Deployment, disruption budget and autoscaler (as the stack's desired state has them);
    /// Deployments are answered with `deployment_status`.
    pub async fn handle_apply_children(
        &mut self,
        stack: &EcommerceStack,
        deployment_status: fn(&Deployment) -> DeploymentStatus,
    ) -> Applied {
        let desired = desired_state(stack).expect("a valid stack");
        let mut applied = Applied::default();
        self.handle_apply_shared(&desired, true, &mut applied).await;
        let migrated = stack
            .status
            .as_ref()
            .and_then(|s| s.migrated_version.as_ref());
        if migrated != Some(&stack.spec.version) {
            self.handle_migrations(stack, MigrationJobs::Succeeded)
                .await;
        }
        self.handle_apply_services(&desired, deployment_status, &mut applied)
            .await;
        applied
    }

    /// The ServiceAccount, the managed dependencies (their StatefulSets
    /// answered ready or not), the ConfigMap and the NetworkPolicies.
    pub async fn handle_apply_shared(
        &mut self,
        desired: &DesiredState,
        dependencies_ready: bool,
        applied: &mut Applied,
    ) {
        self.handle_shared(desired, dependencies_ready, Volume::Absent, applied)
            .await;
    }

    /// As `handle_apply_shared`, the managed PostgreSQL's volume existing
    /// with `uid` and the password's Secret not yet owned by it: returns
    /// the patch handing it over.
    pub async fn handle_apply_shared_with_volume(
        &mut self,
        desired: &DesiredState,
        uid: &str,
        applied: &mut Applied,
    ) -> Value {
        self.handle_shared(desired, true, Volume::Exists(uid), applied)
            .await
            .expect("the password handed over")
    }

    /// As `handle_apply_shared`, the database password's Secret (as read)
    /// owned by its volume already: nothing more is read or written.
    pub async fn handle_apply_shared_handed_over(
        &mut self,
        desired: &DesiredState,
        applied: &mut Applied,
    ) {
        self.handle_shared(desired, true, Volume::HandedOver, applied)
            .await;
    }

    async fn handle_shared(
        &mut self,
        desired: &DesiredState,
        dependencies_ready: bool,
        volume: Volume<'_>,
        applied: &mut Applied,
    ) -> Option<Value> {
        let (body, send) = self
            .expect_apply(&format!(
                "/api/v1/namespaces/{NAMESPACE}/serviceaccounts/{NAME}-services"
            ))
            .await;
        assert_eq!(body["automountServiceAccountToken"], false);
        respond_json(send, &body);
        for managed in &desired.dependencies {
            let name = format!("{NAME}-{}", managed.dependency.name());
            if managed.network_policy.is_some() {
                let (body, send) = self
                    .expect_apply(&format!(
                        "/apis/networking.k8s.io/v1/namespaces/{NAMESPACE}/networkpolicies/{name}"
                    ))
                    .await;
                respond_json(send, &body);
                applied.network_policies.push(body);
            }
            let (body, send) = self
                .expect_apply(&format!("/api/v1/namespaces/{NAMESPACE}/services/{name}"))
                .await;
            respond_json(send, &body);
            applied.services.push(body);
            let (mut body, send) = self
                .expect_apply(&format!(
                    "/apis/apps/v1/namespaces/{NAMESPACE}/statefulsets/{name}"
                ))
                .await;
            applied.stateful_sets.push(body.clone());
            body["status"] = json!({"replicas": 1, "readyReplicas": i32::from(dependencies_ready)});
            respond_json(send, &body);
        }
        let (config_map, send) = self
            .expect_apply(&format!(
                "/api/v1/namespaces/{NAMESPACE}/configmaps/{NAME}-config"
            ))
            .await;
        respond_json(send, &config_map);
        applied.config_map = config_map;
        for policy in &desired.network_policies {
            let (body, send) = self
                .expect_apply(&format!(
                    "/apis/networking.k8s.io/v1/namespaces/{NAMESPACE}/networkpolicies/{}",
                    policy.name_any()
                ))
                .await;
            respond_json(send, &body);
            applied.network_policies.push(body);
        }
        // A managed PostgreSQL's generated password is handed to its
        // volume: none yet.
        let managed_database = desired
            .dependencies
            .iter()
            .any(|d| d.dependency == Dependency::PostgreSql);
        if !managed_database || volume == Volume::HandedOver {
            return None;
        }
        let claim = format!("data-{NAME}-postgresql-0");
        let (_, send, _) = self
            .expect(
                Method::GET,
                &format!("/api/v1/namespaces/{NAMESPACE}/persistentvolumeclaims/{claim}"),
            )
            .await;
        let Volume::Exists(uid) = volume else {
            respond_error(send, 404, "NotFound");
            return None;
        };
        respond_json(
            send,
            &json!({"apiVersion": "v1", "kind": "PersistentVolumeClaim",
                    "metadata": {"name": claim, "namespace": NAMESPACE, "uid": uid}}),
        );
        let secret = format!("/api/v1/namespaces/{NAMESPACE}/secrets/{NAME}-postgresql");
        let (patch, send, _) = self.expect(Method::PATCH, &secret).await;
        respond_json(send, &patch);
        Some(patch)
    }

    /// Each service's Service, Deployment, disruption budget and autoscaler
    /// of `desired`; Deployments are answered with `deployment_status`.
    pub async fn handle_apply_services(
        &mut self,
        desired: &DesiredState,
        deployment_status: fn(&Deployment) -> DeploymentStatus,
        applied: &mut Applied,
    ) {
        for objects in &desired.services {
            let child = format!("{NAME}-{}", objects.service.name());
            let (kube_service, send) = self
                .expect_apply(&format!("/api/v1/namespaces/{NAMESPACE}/services/{child}"))
                .await;
            respond_json(send, &kube_service);
            applied.services.push(kube_service);

            let (body, send) = self
                .expect_apply(&format!(
                    "/apis/apps/v1/namespaces/{NAMESPACE}/deployments/{child}"
                ))
                .await;
            let mut deployment: Deployment =
                serde_json::from_value(body.clone()).expect("a Deployment");
            deployment.metadata.generation = Some(1);
            deployment.status = Some(deployment_status(&deployment));
            respond_json(send, &deployment);
            applied.deployments.push(body);

            let (body, send) = self
                .expect_apply(&format!(
                    "/apis/policy/v1/namespaces/{NAMESPACE}/poddisruptionbudgets/{child}"
                ))
                .await;
            respond_json(send, &body);
            applied.disruption_budgets.push(body);

            if objects.autoscaler.is_some() {
                let (body, send) = self
                    .expect_apply(&format!(
                        "/apis/autoscaling/v2/namespaces/{NAMESPACE}/horizontalpodautoscalers/{child}"
                    ))
                    .await;
                respond_json(send, &body);
                applied.autoscalers.push(body);
            }
        }
    }

    /// The reads of the stack's migration Jobs of `spec.version`, answered
    /// as `jobs` says; returns the Jobs created (when they were absent).
    pub async fn handle_migrations(
        &mut self,
        stack: &EcommerceStack,
        jobs: MigrationJobs,
    ) -> Vec<Value> {
        let desired = desired_state(stack).expect("a valid stack");
        let path = format!("/apis/batch/v1/namespaces/{NAMESPACE}/jobs");
        let mut created = Vec::new();
        for job in &desired.migrations {
            let (_, send, _) = self
                .expect(Method::GET, &format!("{path}/{}", job.name_any()))
                .await;
            let mut job = serde_json::to_value(job).unwrap();
            match jobs {
                MigrationJobs::Absent => {
                    respond_error(send, 404, "NotFound");
                    let (body, send, _) = self.expect(Method::POST, &path).await;
                    respond_json(send, &body);
                    created.push(body);
                }
                MigrationJobs::Running => {
                    job["status"] = json!({"active": 1});
                    respond_json(send, &job);
                }
                MigrationJobs::Succeeded => {
                    job["status"] = json!({"succeeded": 1});
                    respond_json(send, &job);
                }
            }
        }
        created
    }

    /// The migration Jobs of `spec.version`: the first failed (its pods
    /// listed and answered with `pods`), the others succeeded. Returns the
    /// pod list's query.
    pub async fn handle_failed_migration(
        &mut self,
        stack: &EcommerceStack,
        pods: Vec<Value>,
    ) -> Vec<(String, String)> {
        let desired = desired_state(stack).expect("a valid stack");
        let path = format!("/apis/batch/v1/namespaces/{NAMESPACE}/jobs");
        let mut query = Vec::new();
        for (i, job) in desired.migrations.iter().enumerate() {
            let (_, send, _) = self
                .expect(Method::GET, &format!("{path}/{}", job.name_any()))
                .await;
            let mut job = serde_json::to_value(job).unwrap();
            job["metadata"]["uid"] = json!(format!("job-uid-{i}"));
            if i == 0 {
                job["status"] = json!({"failed": 4, "conditions": [{
                    "type": "Failed", "status": "True", "reason": "BackoffLimitExceeded",
                    "message": "Job has reached the specified backoff limit",
                }]});
                respond_json(send, &job);
                query = self.handle_pod_list(pods.clone()).await;
            } else {
                job["status"] = json!({"succeeded": 1});
                respond_json(send, &job);
            }
        }
        query
    }

    /// The dashboard ConfigMap, the discovery of the Prometheus Operator's
    /// kinds (served or not) and, when served, the PodMonitor and
    /// PrometheusRule; returns the bodies applied.
    pub async fn handle_monitoring(&mut self, served: bool) -> Vec<Value> {
        self.handle_monitoring_with(served, true).await
    }

    /// As `handle_monitoring`; without `discovery`, the operator is to use
    /// what it discovered before (no discovery call).
    pub async fn handle_monitoring_with(&mut self, served: bool, discovery: bool) -> Vec<Value> {
        let mut applied = Vec::new();
        let (body, send) = self
            .expect_apply(&format!(
                "/api/v1/namespaces/{NAMESPACE}/configmaps/{NAME}-dashboard"
            ))
            .await;
        respond_json(send, &body);
        applied.push(body);
        if !discovery && !served {
            return applied;
        }
        if discovery {
            let (_, send, _) = self
                .expect(Method::GET, "/apis/monitoring.coreos.com/v1")
                .await;
            if !served {
                respond_error(send, 404, "NotFound");
                return applied;
            }
            self.answer_monitoring_discovery(send);
        }
        for (plural, name) in [("podmonitors", "metrics"), ("prometheusrules", "alerts")] {
            let (body, send) = self
                .expect_apply(&format!(
                    "/apis/monitoring.coreos.com/v1/namespaces/{NAMESPACE}/{plural}/{NAME}-{name}"
                ))
                .await;
            respond_json(send, &body);
            applied.push(body);
        }
        applied
    }

    fn answer_monitoring_discovery(&self, send: Responder) {
        let resource = |name: &str, kind: &str| {
            json!({"name": name, "singularName": "", "namespaced": true, "kind": kind,
                   "verbs": ["get", "list", "watch", "create", "patch", "delete"]})
        };
        respond_json(
            send,
            &json!({"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": "monitoring.coreos.com/v1",
                    "resources": [resource("podmonitors", "PodMonitor"), resource("prometheusrules", "PrometheusRule")]}),
        );
    }

    /// The list of the stack's pods, answered with `pods`.
    pub async fn handle_pod_list(&mut self, pods: Vec<Value>) -> Vec<(String, String)> {
        let (_, send, query) = self
            .expect(Method::GET, &format!("/api/v1/namespaces/{NAMESPACE}/pods"))
            .await;
        respond_json(
            send,
            &json!({"apiVersion": "v1", "kind": "PodList", "metadata": {}, "items": pods}),
        );
        query
    }

    /// The next event, whatever its reason.
    pub async fn next_event(&mut self) -> Value {
        let (event, send, _) = self
            .expect(
                Method::POST,
                &format!("/apis/events.k8s.io/v1/namespaces/{NAMESPACE}/events"),
            )
            .await;
        respond_json(send, &event);
        event
    }

    /// An event created through the events.k8s.io API; returns it.
    pub async fn handle_event(&mut self, reason: &str) -> Value {
        let (event, send, _) = self
            .expect(
                Method::POST,
                &format!("/apis/events.k8s.io/v1/namespaces/{NAMESPACE}/events"),
            )
            .await;
        assert_eq!(event["reason"], reason, "event: {event}");
        assert_eq!(event["regarding"]["name"], NAME);
        respond_json(send, &event);
        event
    }

    /// The status written by server-side apply; returns it.
    pub async fn handle_status_patch(&mut self, stack: &EcommerceStack) -> EcommerceStackStatus {
        let (body, send) = self
            .expect_apply(&format!("{STACKS_PATH}/{NAME}/status"))
            .await;
        assert_eq!(body["apiVersion"], "ecommerce.example.com/v1alpha1");
        assert_eq!(body["kind"], "EcommerceStack");
        let status: EcommerceStackStatus =
            serde_json::from_value(body["status"].clone()).expect("a valid status");
        respond_json(send, &stack.clone().with_status(status.clone()));
        status
    }

    /// Fails the test if the client makes any further call.
    pub async fn expect_no_more_calls(mut self) {
        let next = tokio::time::timeout(Duration::from_millis(100), self.0.next_request()).await;
        if let Ok(Some((request, _))) = next {
            panic!("unexpected call {} {}", request.method(), request.uri());
        }
    }
}

impl Context {
    /// A context whose client talks to the returned verifier.
    pub fn test() -> (Arc<Context>, ApiServerVerifier) {
        Self::test_with_lag(FixedLag(Err("no NATS in this test".into())))
    }

    /// As `test`, the Consumer's backlog answered by `lag`.
    pub fn test_with_lag(lag: FixedLag) -> (Arc<Context>, ApiServerVerifier) {
        let (service, handle) = mock::pair::<Request<Body>, Response<Body>>();
        let client = Client::new(service, NAMESPACE);
        let metrics = Metrics::register(&mut Registry::default());
        (
            Context::with_lag_source(client, metrics, None, Arc::new(lag)),
            ApiServerVerifier(handle),
        )
    }
}

/// A backlog that is always the same (or never readable).
pub struct FixedLag(pub Result<u64, String>);

impl LagSource for FixedLag {
    fn pending<'a>(
        &'a self,
        _url: &'a str,
        _stream: &'a str,
        _durable: &'a str,
    ) -> futures::future::BoxFuture<'a, Result<u64, String>> {
        Box::pin(std::future::ready(self.0.clone()))
    }
}

/// A mock client and its verifier, for APIs other than the reconciler's.
pub fn mock_client() -> (Client, ApiServerVerifier) {
    let (service, handle) = mock::pair::<Request<Body>, Response<Body>>();
    (Client::new(service, NAMESPACE), ApiServerVerifier(handle))
}

/// Waits for the verifier's scenario, failing on a hang or a failed assertion.
pub async fn timeout_after_1s<T>(handle: JoinHandle<T>) -> T {
    tokio::time::timeout(Duration::from_secs(1), handle)
        .await
        .expect("the API scenario did not finish in time")
        .expect("the API scenario failed")
}
