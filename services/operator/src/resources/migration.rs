//! The migration Jobs: `<service> migrate` of the requested version for each
//! service with a database, run to completion before any Deployment rolls to
//! that version (the controller holds the Deployments at the last migrated
//! version meanwhile), and the NetworkPolicy of their pods.

use std::collections::BTreeMap;

use k8s_openapi::api::batch::v1::{
    Job, JobSpec, PodFailurePolicy, PodFailurePolicyOnExitCodesRequirement, PodFailurePolicyRule,
};
use k8s_openapi::api::core::v1::{Container, PodSpec, PodTemplateSpec};
use k8s_openapi::api::networking::v1::{NetworkPolicy, NetworkPolicyEgressRule, NetworkPolicySpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta, OwnerReference};
use kube::ResourceExt;
use sha2::{Digest, Sha256};

use crate::crd::EcommerceStack;
use crate::services::Service;

use super::*;

/// `app.kubernetes.io/component` of the migration pods.
pub const MIGRATION_COMPONENT: &str = "migration";

/// The container of a migration Job.
pub const MIGRATE_CONTAINER: &str = "migrate";

/// Exit code of `<service> migrate` when a newer version migrated the
/// database (`platform::db::SCHEMA_AHEAD_EXIT_CODE`): a downgrade across a
/// migration, refused. The Job fails at once instead of retrying.
pub const SCHEMA_AHEAD_EXIT_CODE: i32 = 3;

/// The chart's `migrations.backoffLimit` and `activeDeadlineSeconds`.
const BACKOFF_LIMIT: i32 = 3;
const ACTIVE_DEADLINE_SECONDS: i64 = 600;

/// A finished Job (and its pods, with their logs) stays a day for
/// inspection; a failed one deleted then is tried again.
const TTL_SECONDS_AFTER_FINISHED: i32 = 86_400;

/// `<stack>-<service>-migrate-<8 hex digits of the version's hash>`: a Job's
/// template cannot change, so each version has its own Job, and a version
/// (up to 128 characters) would not fit the `job-name` label's 63.
pub fn migration_job_name(stack: &str, service: Service, version: &str) -> String {
    let digest = Sha256::digest(version.as_bytes());
    format!(
        "{stack}-{}-migrate-{}",
        service.name(),
        &hex::encode(digest)[..8]
    )
}

fn migration_labels(stack: &EcommerceStack, service: Service) -> BTreeMap<String, String> {
    let mut labels = labels(stack, Some(service));
    labels.insert(
        "app.kubernetes.io/name".into(),
        format!("{}-migrate", service.name()),
    );
    labels.insert(
        "app.kubernetes.io/component".into(),
        MIGRATION_COMPONENT.into(),
    );
    labels
}

/// The migration Jobs of the stack's `spec.version`, one per service with a
/// database. They read the settings and secrets the service reads.
pub(crate) fn migration_jobs(stack: &EcommerceStack, owner: &OwnerReference) -> Vec<Job> {
    let name = stack.name_any();
    Service::ALL
        .into_iter()
        .filter(|service| service.uses_database())
        .map(|service| {
            let labels = migration_labels(stack, service);
            let container = Container {
                name: MIGRATE_CONTAINER.to_owned(),
                image: Some(image(stack, service)),
                image_pull_policy: stack.spec.image_pull_policy.map(|p| p.as_str().to_owned()),
                args: Some(vec!["migrate".to_owned()]),
                env: Some(container_env(stack, service)),
                resources: Some(
                    stack
                        .spec
                        .services
                        .get(service)
                        .resources
                        .clone()
                        .unwrap_or_else(default_resources),
                ),
                // The last lines of its output: the status names the cause.
                termination_message_policy: Some("FallbackToLogsOnError".to_owned()),
                volume_mounts: Some(vec![tmp_mount()]),
                security_context: Some(container_security_context()),
                ..Container::default()
            };
            Job {
                metadata: ObjectMeta {
                    name: Some(migration_job_name(&name, service, &stack.spec.version)),
                    namespace: stack.namespace(),
                    labels: Some(labels.clone()),
                    owner_references: Some(vec![owner.clone()]),
                    ..ObjectMeta::default()
                },
                spec: Some(JobSpec {
                    backoff_limit: Some(BACKOFF_LIMIT),
                    active_deadline_seconds: Some(ACTIVE_DEADLINE_SECONDS),
                    ttl_seconds_after_finished: Some(TTL_SECONDS_AFTER_FINISHED),
                    pod_failure_policy: Some(PodFailurePolicy {
                        rules: vec![PodFailurePolicyRule {
                            action: "FailJob".to_owned(),
                            on_exit_codes: Some(PodFailurePolicyOnExitCodesRequirement {
                                container_name: Some(MIGRATE_CONTAINER.to_owned()),
                                operator: "In".to_owned(),
                                values: vec![SCHEMA_AHEAD_EXIT_CODE],
                            }),
                            on_pod_conditions: None,
                        }],
                    }),
                    template: PodTemplateSpec {
                        metadata: Some(ObjectMeta {
                            labels: Some(labels),
                            ..ObjectMeta::default()
                        }),
                        spec: Some(PodSpec {
                            containers: vec![container],
                            restart_policy: Some("Never".to_owned()),
                            security_context: Some(pod_security_context()),
                            automount_service_account_token: Some(false),
                            volumes: Some(vec![tmp_volume()]),
                            ..PodSpec::default()
                        }),
                    },
                    ..JobSpec::default()
                }),
                ..Job::default()
            }
        })
        .collect()
}

/// Selects the stack's migration pods.
pub(crate) fn migration_selector(stack: &EcommerceStack) -> BTreeMap<String, String> {
    BTreeMap::from([
        ("app.kubernetes.io/instance".to_owned(), stack.name_any()),
        (
            "app.kubernetes.io/component".to_owned(),
            MIGRATION_COMPONENT.to_owned(),
        ),
    ])
}

/// The migration pods take no traffic and reach DNS and PostgreSQL only.
pub(crate) fn migration_network_policy(
    stack: &EcommerceStack,
    owner: &OwnerReference,
) -> NetworkPolicy {
    let name = stack.name_any();
    NetworkPolicy {
        metadata: metadata(stack, format!("{name}-migrate"), None, owner),
        spec: Some(NetworkPolicySpec {
            pod_selector: Some(LabelSelector {
                match_labels: Some(migration_selector(stack)),
                ..LabelSelector::default()
            }),
            policy_types: Some(vec!["Ingress".to_owned(), "Egress".to_owned()]),
            ingress: Some(Vec::new()),
            egress: Some(vec![
                dns_egress(),
                NetworkPolicyEgressRule {
                    ports: Some(vec![tcp_port(database_address(stack).1)]),
                    to: None,
                },
            ]),
        }),
    }
}
