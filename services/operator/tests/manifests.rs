//! The checked-in manifests agree with the code: the CRD is the one the
//! types generate, the sample is a valid `EcommerceStack`, and the install
//! manifests grant what the operator calls and configure what it reads.

use std::path::PathBuf;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::rbac::v1::PolicyRule;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::core::CustomResourceExt;
use operator::EcommerceStack;
use operator::resources::{desired_state, generated_secrets, spec_problems};
use operator::runner::Settings;
use serde::Deserialize;
use serde_json::Value;

fn repo_file(path: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .join(path)
}

fn read(path: &str) -> String {
    std::fs::read_to_string(repo_file(path)).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// Every document of a multi-document YAML file, as JSON values.
fn documents(path: &str) -> Vec<Value> {
    serde_yaml::Deserializer::from_str(&read(path))
        .map(|doc| Value::deserialize(doc).unwrap_or_else(|e| panic!("{path}: {e}")))
        .filter(|v| !v.is_null())
        .collect()
}

fn assert_is_generated_crd(path: &str) {
    assert!(
        read(path) == operator::crd_yaml(),
        "{path} differs from the CRD the Rust types generate; regenerate it: \
         cargo run -p operator --bin crdgen > {path}"
    );
}

#[test]
fn k8s_crd_is_the_generated_one() {
    assert_is_generated_crd("k8s/crd.yaml");
}

#[test]
fn the_operator_chart_ships_the_generated_crd() {
    assert_is_generated_crd("charts/ecommerce-operator/crds/ecommercestacks.yaml");
}

fn stack_schema() -> Value {
    let crd: CustomResourceDefinition = serde_yaml::from_str(&read("k8s/crd.yaml")).unwrap();
    assert_eq!(crd, EcommerceStack::crd());
    let version = &crd.spec.versions[0];
    assert!(
        version.subresources.as_ref().unwrap().status.is_some(),
        "status subresource"
    );
    serde_json::to_value(
        version
            .schema
            .as_ref()
            .unwrap()
            .open_api_v3_schema
            .as_ref()
            .unwrap(),
    )
    .unwrap()
}

fn schema_errors(instance: &Value) -> Vec<String> {
    let schema = stack_schema();
    let validator = jsonschema::draft7::new(&schema).expect("the CRD schema compiles");
    validator
        .iter_errors(instance)
        .map(|e| format!("{}: {e}", e.instance_path()))
        .collect()
}

fn sample() -> Value {
    let docs = documents("k8s/samples/ecommerce-stack.yaml");
    assert_eq!(docs.len(), 1);
    docs.into_iter().next().unwrap()
}

#[test]
fn the_sample_is_a_valid_ecommerce_stack() {
    let sample = sample();
    assert_eq!(schema_errors(&sample), Vec::<String>::new());
    let stack: EcommerceStack =
        serde_json::from_value(sample).expect("deserializes into the Rust type");
    assert_eq!(stack.metadata.name.as_deref(), Some("shop"));
    assert_eq!(stack.spec.services.gateway.replicas, Some(2));
    assert_eq!(stack.spec.jwt_secret_ref.as_ref().unwrap().name, "shop-jwt");
    assert!(stack.spec.admin.is_some());
    assert_eq!(spec_problems(&stack), Vec::<String>::new());
}

#[test]
fn the_dev_sample_is_a_whole_shop_from_one_resource() {
    let docs = documents("k8s/samples/dev-stack.yaml");
    assert_eq!(docs.len(), 1);
    let sample = docs.into_iter().next().unwrap();
    assert_eq!(schema_errors(&sample), Vec::<String>::new());
    let mut stack: EcommerceStack =
        serde_json::from_value(sample).expect("deserializes into the Rust type");
    assert_eq!(spec_problems(&stack), Vec::<String>::new());
    // As the API server would have it.
    stack.metadata.uid = Some("0b5c6a8e-5d6f-4d7e-9f0a-1b2c3d4e5f60".into());
    let state = desired_state(&stack).unwrap();
    let managed: Vec<&str> = state
        .dependencies
        .iter()
        .map(|d| d.dependency.name())
        .collect();
    assert_eq!(managed, ["postgresql", "nats"]);
    let generated: Vec<String> = generated_secrets(&stack)
        .into_iter()
        .map(|g| g.reference.name)
        .collect();
    assert_eq!(
        generated,
        [
            "shop-postgresql",
            "shop-jwt",
            "shop-admin",
            "shop-internal-auth"
        ]
    );
    let settings = &state.config_map.data.as_ref().unwrap();
    assert_eq!(settings["DB_HOST"], "shop-postgresql");
    assert_eq!(settings["NATS_ADDR"], "nats://shop-nats:4222");
}

#[test]
fn the_crd_says_a_dependency_is_managed_or_given_never_both() {
    let crd = read("k8s/crd.yaml");
    for rule in [
        "has(self.managed) != has(self.url)",
        "has(self.managed) ? !has(self.host) && !has(self.user) && !has(self.passwordSecretRef) : has(self.host) && has(self.user) && has(self.passwordSecretRef)",
    ] {
        assert!(crd.contains(rule), "x-kubernetes-validations rule {rule}");
    }
}

#[test]
fn the_schema_rejects_what_the_operator_could_not_use() {
    let mut no_version = sample();
    no_version["spec"]
        .as_object_mut()
        .unwrap()
        .remove("version");
    assert!(
        !schema_errors(&no_version).is_empty(),
        "version is required"
    );

    let mut bad_replicas = sample();
    bad_replicas["spec"]["services"]["order"]["replicas"] = Value::from("two");
    assert!(
        !schema_errors(&bad_replicas).is_empty(),
        "replicas is an integer"
    );

    let mut bad_version = sample();
    bad_version["spec"]["version"] = Value::from("1.0 beta");
    assert!(
        !schema_errors(&bad_version).is_empty(),
        "version is an image tag"
    );

    let mut bad_policy = sample();
    bad_policy["spec"]["imagePullPolicy"] = Value::from("Sometimes");
    assert!(
        !schema_errors(&bad_policy).is_empty(),
        "imagePullPolicy is one of three"
    );

    // The allowed values, as `kubectl explain` and error messages list them.
    let schema = stack_schema();
    assert_eq!(
        schema["properties"]["spec"]["properties"]["imagePullPolicy"]["enum"],
        serde_json::json!(["Always", "IfNotPresent", "Never"]),
        "no null among the allowed values"
    );

    let mut bad_env = sample();
    bad_env["spec"]["appEnv"] = Value::from("staging");
    assert!(
        !schema_errors(&bad_env).is_empty(),
        "appEnv is production or development"
    );
}

fn rules(path: &str, kind: &str) -> Vec<PolicyRule> {
    documents(path)
        .into_iter()
        .filter(|d| d["kind"] == kind)
        .flat_map(|d| serde_json::from_value::<Vec<PolicyRule>>(d["rules"].clone()).unwrap())
        .collect()
}

fn allows(rules: &[PolicyRule], group: &str, resource: &str, verb: &str) -> bool {
    rules.iter().any(|r| {
        r.api_groups
            .as_ref()
            .is_some_and(|g| g.iter().any(|g| g == group))
            && r.resources
                .as_ref()
                .is_some_and(|rs| rs.iter().any(|r| r == resource))
            && r.verbs.iter().any(|v| v == verb)
    })
}

/// The API calls the operator makes (controller.rs, leader.rs, kube's
/// finalizer helper and event recorder) are all granted, and nothing more:
/// Secrets are read one by one and created, never listed, watched or
/// changed; the only deletion is of an autoscaler switched off.
fn assert_rbac_covers_the_operator(stacks: &[PolicyRule], leases: &[PolicyRule]) {
    let group = "ecommerce.example.com";
    for verb in ["get", "list", "watch", "patch"] {
        assert!(
            allows(stacks, group, "ecommercestacks", verb),
            "ecommercestacks {verb}"
        );
    }
    assert!(allows(stacks, group, "ecommercestacks/status", "patch"));
    assert!(allows(
        stacks,
        group,
        "ecommercestacks/finalizers",
        "update"
    ));
    for (g, resource) in [
        ("apps", "deployments"),
        ("apps", "statefulsets"),
        ("", "services"),
        ("", "configmaps"),
        ("", "serviceaccounts"),
        ("networking.k8s.io", "networkpolicies"),
        ("autoscaling", "horizontalpodautoscalers"),
        ("policy", "poddisruptionbudgets"),
    ] {
        for verb in ["get", "list", "watch", "create", "patch"] {
            assert!(allows(stacks, g, resource, verb), "{resource} {verb}");
        }
    }
    assert!(allows(
        stacks,
        "autoscaling",
        "horizontalpodautoscalers",
        "delete"
    ));
    for verb in ["get", "list", "watch", "create"] {
        assert!(allows(stacks, "batch", "jobs", verb), "jobs {verb}");
    }
    assert!(
        !allows(stacks, "batch", "jobs", "patch"),
        "a Job is never changed"
    );
    for resource in ["podmonitors", "prometheusrules"] {
        for verb in ["get", "create", "patch"] {
            assert!(
                allows(stacks, "monitoring.coreos.com", resource, verb),
                "{resource} {verb}"
            );
        }
    }
    assert!(allows(stacks, "", "pods", "list"));
    assert!(allows(stacks, "", "secrets", "get"));
    assert!(allows(stacks, "", "secrets", "create"));
    // Patched only to hand a generated password to its volume.
    assert!(allows(stacks, "", "secrets", "patch"));
    assert!(allows(stacks, "", "persistentvolumeclaims", "get"));
    for verb in ["list", "watch", "update", "delete"] {
        assert!(!allows(stacks, "", "secrets", verb), "secrets {verb}");
    }
    assert!(allows(stacks, "events.k8s.io", "events", "create"));
    assert!(allows(stacks, "events.k8s.io", "events", "patch"));
    for verb in ["get", "create", "update"] {
        assert!(
            allows(leases, "coordination.k8s.io", "leases", verb),
            "leases {verb}"
        );
    }
    for rule in stacks.iter().chain(leases) {
        assert!(
            !rule
                .verbs
                .iter()
                .any(|v| v == "*" || v == "deletecollection"),
            "least privilege: {rule:?}"
        );
        let deletes = rule.verbs.iter().any(|v| v == "delete");
        let only_autoscalers =
            rule.resources.as_deref() == Some(&["horizontalpodautoscalers".to_owned()][..]);
        assert!(
            !deletes || only_autoscalers,
            "deletes only autoscalers: {rule:?}"
        );
    }
}

#[test]
fn install_rbac_grants_exactly_what_the_operator_calls() {
    let path = "k8s/operator/10-rbac.yaml";
    assert_rbac_covers_the_operator(&rules(path, "ClusterRole"), &rules(path, "Role"));
}

#[test]
fn the_single_namespace_install_grants_the_same_in_that_namespace_only() {
    let path = "k8s/operator/single-namespace/rbac.yaml";
    let docs = documents(path);
    assert!(
        docs.iter()
            .all(|d| d["kind"] != "ClusterRole" && d["kind"] != "ClusterRoleBinding"),
        "no cluster-wide grant"
    );
    let stack_role: Vec<PolicyRule> = docs
        .iter()
        .filter(|d| d["kind"] == "Role" && d["metadata"]["namespace"] == "shop")
        .flat_map(|d| serde_json::from_value::<Vec<PolicyRule>>(d["rules"].clone()).unwrap())
        .collect();
    assert_eq!(
        stack_role,
        rules("k8s/operator/10-rbac.yaml", "ClusterRole")
    );
    let lease_role: Vec<PolicyRule> = docs
        .iter()
        .filter(|d| d["kind"] == "Role" && d["metadata"]["namespace"] == "ecommerce-operator")
        .flat_map(|d| serde_json::from_value::<Vec<PolicyRule>>(d["rules"].clone()).unwrap())
        .collect();
    assert_rbac_covers_the_operator(&stack_role, &lease_role);
    let binding = docs
        .iter()
        .find(|d| d["kind"] == "RoleBinding" && d["metadata"]["namespace"] == "shop")
        .expect("a RoleBinding in shop");
    assert_eq!(binding["subjects"][0]["name"], "ecommerce-operator");
    assert_eq!(binding["subjects"][0]["namespace"], "ecommerce-operator");
}

#[test]
fn the_install_deployment_configures_the_operator() {
    let deployment: Deployment = documents("k8s/operator/20-deployment.yaml")
        .into_iter()
        .find(|d| d["kind"] == "Deployment")
        .map(|d| serde_json::from_value(d).unwrap())
        .expect("a Deployment");
    let pod = deployment.spec.unwrap().template.spec.unwrap();
    assert_eq!(
        pod.service_account_name.as_deref(),
        Some("ecommerce-operator")
    );
    let env = pod.containers[0].env.clone().unwrap();
    // Downward API values stand in for what the kubelet would fill in.
    let settings = Settings::from_lookup(|name| {
        let var = env.iter().find(|e| e.name == name)?;
        match &var.value_from {
            Some(source) => source
                .field_ref
                .as_ref()
                .map(|f| format!("from-{}", f.field_path)),
            None => var.value.clone(),
        }
    })
    .expect("the manifest's settings are valid");
    let election = settings
        .leader_election
        .expect("leader election is on with 2 replicas");
    assert_eq!(election.namespace, "from-metadata.namespace");
    assert_eq!(election.identity, "from-metadata.name");
    // The Role grants get/update on this Lease name only.
    let role = rules("k8s/operator/10-rbac.yaml", "Role");
    assert!(role.iter().any(|r| {
        r.resource_names
            .as_ref()
            .is_some_and(|n| n.contains(&election.lease_name))
    }));
    assert_eq!(settings.metrics_addr.port(), 8080);
}
