//! The migration Jobs: `<service> migrate` of the requested version for each
//! service with a database, run to completion before any Deployment rolls to
//! that version (the controller holds the Deployments at the last migrated
//! version meanwhile), and the NetworkPolicy of their pods.

use std::collections::BTreeMap;

use k8s_openapi::api::batch::v1::{
    Job, JobSpec, PodFailurePolicy, PodFailurePolicyOnExitCodesRequirement,
    PodFailurePolicyOnPodConditionsPattern, PodFailurePolicyRule,
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

/// `<stack>-<service>-migrate-<8 hex digits>`, the digits a hash of the
/// version migrated from and the one migrated to: each attempt has Jobs of
/// its own (a Job's template cannot change, and going back to a version
/// must not find the Jobs of its first upgrade). The stack's part is cut so
/// that the name fits the pods' `job-name` label (63 characters).
pub fn migration_job_name(stack: &str, service: Service, from: &str, to: &str) -> String {
    let digest = Sha256::digest(format!("{from}\u{0}{to}").as_bytes());
    let suffix = format!("-{}-migrate-{}", service.name(), &hex::encode(digest)[..8]);
    let room = 63 - suffix.len();
    let stack = stack
        .get(..room)
        .unwrap_or(stack)
        .trim_end_matches(['-', '.']);
    format!("{stack}{suffix}")
}

/// The version the databases are at: the last migrated one (or, for a
/// stack from before migration Jobs, the one rolled out); empty for a new
/// stack.
pub fn migrating_from(stack: &EcommerceStack) -> String {
    stack
        .status
        .as_ref()
        .and_then(|s| s.migrated_version.clone().or_else(|| s.version.clone()))
        .unwrap_or_default()
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
                    name: Some(migration_job_name(
                        &name,
                        service,
                        &migrating_from(stack),
                        &stack.spec.version,
                    )),
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
                        rules: vec![
                            PodFailurePolicyRule {
                                action: "FailJob".to_owned(),
                                on_exit_codes: Some(PodFailurePolicyOnExitCodesRequirement {
                                    container_name: Some(MIGRATE_CONTAINER.to_owned()),
                                    operator: "In".to_owned(),
                                    values: vec![SCHEMA_AHEAD_EXIT_CODE],
                                }),
                                on_pod_conditions: None,
                            },
                            // A drained node or a preemption is no failure
                            // of the migration: not counted against retries.
                            PodFailurePolicyRule {
                                action: "Ignore".to_owned(),
                                on_exit_codes: None,
                                on_pod_conditions: Some(vec![
                                    PodFailurePolicyOnPodConditionsPattern {
                                        type_: "DisruptionTarget".to_owned(),
                                        status: "True".to_owned(),
                                    },
                                ]),
                            },
                        ],
                    }),
                    template: PodTemplateSpec {
                        metadata: Some(ObjectMeta {
                            labels: Some(labels),
                            ..ObjectMeta::default()
                        }),
                        spec: Some(PodSpec {
                            containers: vec![container],
                            service_account_name: Some(service_account_name(&name)),
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
