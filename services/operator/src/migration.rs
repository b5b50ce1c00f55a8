//! Upgrades: the migration Jobs of `spec.version` run to completion before
//! any Deployment rolls to it. What their state means for the stack's status
//! is decided here, without I/O; the controller creates and reads the Jobs.

use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::jiff::Timestamp;
use kube::ResourceExt;

use crate::crd::{EcommerceStack, EcommerceStackStatus};
use crate::resources::{MIGRATE_CONTAINER, SCHEMA_AHEAD_EXIT_CODE};
use crate::services::Service;
use crate::status::{DEGRADED, PROGRESSING, READY, set_condition};

/// `Progressing` while the migrations run.
pub const MIGRATING: &str = "Migrating";
/// `Progressing` while a managed PostgreSQL or NATS starts.
pub const WAITING: &str = "WaitingForDependencies";
/// `Degraded`: a migration Job failed.
pub const MIGRATION_FAILED: &str = "MigrationFailed";
/// `Degraded`: the requested version is older than the database's schema.
pub const DOWNGRADE_REFUSED: &str = "DowngradeRefused";

/// Where the databases stand for `spec.version`.
#[derive(Debug, Clone, PartialEq)]
pub enum Migration {
    /// Migrated, now or before: the Deployments may run `spec.version`.
    Done,
    /// These managed dependencies are not ready: the Jobs wait for them.
    Waiting(Vec<String>),
    /// These Jobs have not finished.
    Running(Vec<String>),
    /// A Job failed; `reason` is `MigrationFailed` or `DowngradeRefused`.
    Failed {
        reason: &'static str,
        message: String,
    },
}

impl Migration {
    /// Two failures as one: a refused downgrade is the reason to give.
    pub fn and(self, other: Migration) -> Migration {
        match (self, other) {
            (
                Migration::Failed {
                    reason: first,
                    message: a,
                },
                Migration::Failed {
                    reason: second,
                    message: b,
                },
            ) => Migration::Failed {
                reason: if second == DOWNGRADE_REFUSED {
                    second
                } else {
                    first
                },
                message: format!("{a}; {b}"),
            },
            (failed @ Migration::Failed { .. }, _) | (_, failed) => failed,
        }
    }
}

/// What one Job says of itself.
#[derive(Debug, Clone, PartialEq)]
pub enum JobOutcome {
    Succeeded,
    Running,
    /// The Job's `Failed` condition message.
    Failed(String),
}

pub fn job_outcome(job: &Job) -> JobOutcome {
    let Some(status) = job.status.as_ref() else {
        return JobOutcome::Running;
    };
    if status.succeeded.unwrap_or(0) > 0 {
        return JobOutcome::Succeeded;
    }
    let failed = status
        .conditions
        .iter()
        .flatten()
        .find(|c| matches!(c.type_.as_str(), "Failed" | "FailureTarget") && c.status == "True");
    match failed {
        Some(c) => JobOutcome::Failed(
            c.message
                .clone()
                .or_else(|| c.reason.clone())
                .unwrap_or_else(|| "failed".to_owned()),
        ),
        None => JobOutcome::Running,
    }
}

/// The version the Deployments get: `spec.version` once migrated, else the
/// last migrated one (or, for a stack from before migration Jobs, the one
/// rolled out); none for a new stack whose first migrations run.
pub fn deployable_version(stack: &EcommerceStack, migration: &Migration) -> Option<String> {
    if *migration == Migration::Done {
        return Some(stack.spec.version.clone());
    }
    let previous = stack.status.as_ref()?;
    previous
        .migrated_version
        .clone()
        .or_else(|| previous.version.clone())
}

/// Why a migration Job failed, from the Job and its pods: a container that
/// exited with the schema-ahead code is a refused downgrade; otherwise the
/// Job's condition and the last words of its container (its termination
/// message is the tail of its log).
pub fn failed_migration(job: &Job, job_message: &str, pods: &[Pod]) -> Migration {
    let mut terminated: Vec<_> = pods
        .iter()
        .flat_map(|pod| pod.status.iter())
        .flat_map(|status| status.container_statuses.iter().flatten())
        .filter(|c| c.name == MIGRATE_CONTAINER)
        .filter_map(|c| c.state.as_ref()?.terminated.as_ref())
        .filter(|t| t.exit_code != 0)
        .collect();
    // The last attempt's words last.
    terminated.sort_by_key(|t| t.finished_at.as_ref().map(|at| at.0));
    let refused = terminated
        .iter()
        .find(|t| t.exit_code == SCHEMA_AHEAD_EXIT_CODE);
    let said = |t: &&k8s_openapi::api::core::v1::ContainerStateTerminated| {
        t.message
            .as_deref()
            .map(|m| m.trim().lines().last().unwrap_or_default().to_owned())
    };
    let name = job.name_any();
    match refused {
        Some(t) => Migration::Failed {
            reason: DOWNGRADE_REFUSED,
            message: format!(
                "{name}: {}",
                said(t).unwrap_or_else(|| "the database was migrated by a newer version".into())
            ),
        },
        None => {
            let last_words = terminated.last().and_then(said);
            Migration::Failed {
                reason: MIGRATION_FAILED,
                message: match last_words {
                    Some(words) => format!("{name}: {job_message}: {words}"),
                    None => format!("{name}: {job_message}"),
                },
            }
        }
    }
}

/// Says on the status what the migrations mean: the version migrated, or
/// `Progressing: Migrating`, or `Degraded` with the failure (the running
/// version stays). With nothing deployed yet, `Ready` says why too.
pub fn set_migration(
    status: &mut EcommerceStackStatus,
    stack: &EcommerceStack,
    migration: &Migration,
    now: Timestamp,
) {
    let generation = stack.metadata.generation;
    let version = &stack.spec.version;
    let nothing_deployed = status.services.is_empty();
    let (reason, message) = match migration {
        Migration::Done => {
            status.migrated_version = Some(version.clone());
            return;
        }
        Migration::Waiting(dependencies) => {
            let message = format!(
                "waiting for {} to be ready before migrating the databases to version {version}",
                dependencies.join(" and ")
            );
            set_condition(
                &mut status.conditions,
                PROGRESSING,
                true,
                WAITING,
                message.clone(),
                generation,
                now,
            );
            (WAITING, message)
        }
        Migration::Running(jobs) => {
            let message = format!(
                "migrating the databases to version {version} before rolling it out (Jobs {})",
                jobs.join(", ")
            );
            set_condition(
                &mut status.conditions,
                PROGRESSING,
                true,
                MIGRATING,
                message.clone(),
                generation,
                now,
            );
            (MIGRATING, message)
        }
        Migration::Failed { reason, message } => {
            let keeps = match &status.version {
                Some(running) => format!("version {running} keeps running"),
                None => "nothing is deployed".to_owned(),
            };
            let message = format!(
                "{message} ({keeps}; fix the cause and delete the Job to try again, or set spec.version back)"
            );
            set_condition(
                &mut status.conditions,
                DEGRADED,
                true,
                reason,
                message.clone(),
                generation,
                now,
            );
            set_condition(
                &mut status.conditions,
                PROGRESSING,
                false,
                reason,
                message.clone(),
                generation,
                now,
            );
            (*reason, message)
        }
    };
    if nothing_deployed {
        set_condition(
            &mut status.conditions,
            READY,
            false,
            reason,
            message,
            generation,
            now,
        );
        status.ready_services = Some(format!("0/{}", Service::ALL.len()));
    }
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::batch::v1::{JobCondition, JobStatus};
    use serde_json::json;

    use super::*;
    use crate::crd::EcommerceStackStatus;
    use crate::status::condition;

    fn job(status: JobStatus) -> Job {
        let mut job = Job::default();
        job.metadata.name = Some("shop-order-migrate-0a1b2c3d".into());
        job.status = Some(status);
        job
    }

    fn failed_condition(message: &str) -> JobCondition {
        JobCondition {
            type_: "Failed".into(),
            status: "True".into(),
            message: Some(message.into()),
            ..JobCondition::default()
        }
    }

    fn pod_exited(code: i32, log_tail: &str) -> Pod {
        serde_json::from_value(json!({
            "metadata": {"name": "shop-order-migrate-0a1b2c3d-x1"},
            "status": {"containerStatuses": [{
                "name": "migrate", "image": "i", "imageID": "", "ready": false, "restartCount": 0,
                "state": {"terminated": {"exitCode": code, "message": log_tail}},
            }]},
        }))
        .unwrap()
    }

    #[test]
    fn a_job_is_running_until_it_succeeds_or_fails() {
        assert_eq!(job_outcome(&Job::default()), JobOutcome::Running);
        let active = JobStatus {
            active: Some(1),
            ..JobStatus::default()
        };
        assert_eq!(job_outcome(&job(active)), JobOutcome::Running);
        let done = JobStatus {
            succeeded: Some(1),
            ..JobStatus::default()
        };
        assert_eq!(job_outcome(&job(done)), JobOutcome::Succeeded);
        let failed = JobStatus {
            conditions: Some(vec![failed_condition(
                "Job has reached the specified backoff limit",
            )]),
            ..JobStatus::default()
        };
        assert_eq!(
            job_outcome(&job(failed)),
            JobOutcome::Failed("Job has reached the specified backoff limit".into())
        );
    }

    #[test]
    fn the_schema_ahead_exit_code_is_a_refused_downgrade_with_the_services_words() {
        let words = "order: database ecommerce_order was migrated by a newer version (...); a downgrade across a migration is refused";
        let failure = failed_migration(
            &job(JobStatus::default()),
            "Pod failed with exit code 3",
            &[pod_exited(3, &format!("starting\n{words}\n"))],
        );
        assert_eq!(
            failure,
            Migration::Failed {
                reason: DOWNGRADE_REFUSED,
                message: format!("shop-order-migrate-0a1b2c3d: {words}"),
            }
        );
    }

    #[test]
    fn any_other_failure_names_the_job_its_condition_and_the_last_log_line() {
        let failure = failed_migration(
            &job(JobStatus::default()),
            "Job has reached the specified backoff limit",
            &[pod_exited(
                1,
                "order: cannot connect to the database: timed out",
            )],
        );
        assert_eq!(
            failure,
            Migration::Failed {
                reason: MIGRATION_FAILED,
                message: "shop-order-migrate-0a1b2c3d: Job has reached the specified backoff limit: order: cannot connect to the database: timed out".into(),
            }
        );
    }

    #[test]
    fn deployments_stay_at_the_last_migrated_version_until_the_new_one_is_migrated() {
        let mut stack = EcommerceStack::test();
        stack.spec.version = "1.3.0".into();
        let running = Migration::Running(vec!["job".into()]);
        assert_eq!(deployable_version(&stack, &running), None, "a new stack");
        assert_eq!(
            deployable_version(&stack, &Migration::Done).as_deref(),
            Some("1.3.0")
        );
        let before_jobs = stack.clone().with_status(EcommerceStackStatus {
            version: Some("1.1.0".into()),
            ..EcommerceStackStatus::default()
        });
        assert_eq!(
            deployable_version(&before_jobs, &running).as_deref(),
            Some("1.1.0")
        );
        let migrated = stack.with_status(EcommerceStackStatus {
            version: Some("1.1.0".into()),
            migrated_version: Some("1.2.0".into()),
            ..EcommerceStackStatus::default()
        });
        assert_eq!(
            deployable_version(&migrated, &running).as_deref(),
            Some("1.2.0")
        );
    }

    #[test]
    fn a_failed_migration_degrades_and_says_what_keeps_running() {
        let stack = EcommerceStack::test();
        let mut status = EcommerceStackStatus {
            version: Some("1.1.0".into()),
            services: vec![Default::default()],
            ..EcommerceStackStatus::default()
        };
        let failure = Migration::Failed {
            reason: MIGRATION_FAILED,
            message: "shop-order-migrate-0a1b2c3d: boom".into(),
        };
        set_migration(&mut status, &stack, &failure, Timestamp::UNIX_EPOCH);
        let degraded = condition(&status, DEGRADED).unwrap();
        assert_eq!(
            (degraded.status.as_str(), degraded.reason.as_str()),
            ("True", MIGRATION_FAILED)
        );
        assert!(
            degraded.message.contains("boom") && degraded.message.contains("1.1.0 keeps running"),
            "{}",
            degraded.message
        );
        assert_eq!(condition(&status, PROGRESSING).unwrap().status, "False");
        assert!(condition(&status, READY).is_none(), "readiness as it was");
        assert_eq!(status.migrated_version, None);
    }

    #[test]
    fn several_failures_are_named_together_a_refused_downgrade_first() {
        let failed = |reason, message: &str| Migration::Failed {
            reason,
            message: message.into(),
        };
        assert_eq!(
            failed(MIGRATION_FAILED, "a").and(failed(DOWNGRADE_REFUSED, "b")),
            failed(DOWNGRADE_REFUSED, "a; b")
        );
        assert_eq!(
            failed(MIGRATION_FAILED, "a").and(failed(MIGRATION_FAILED, "b")),
            failed(MIGRATION_FAILED, "a; b")
        );
    }
}
