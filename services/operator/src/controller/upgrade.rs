//! The migration Jobs of `spec.version`: created once, read for where they
//! stand (the decisions are `crate::migration`'s).

use super::*;

/// Runs the migration Jobs of `spec.version`, not yet migrated (created
/// once each, never changed: a Job's template is immutable), and says where
/// they stand.
pub(super) async fn migrate(
    stack: &EcommerceStack,
    desired: &DesiredState,
    client: &Client,
    namespace: &str,
) -> Result<Migration> {
    let jobs: Api<Job> = Api::namespaced(client.clone(), namespace);
    let mut running = Vec::new();
    let mut failed = Vec::new();
    for job in &desired.migrations {
        let name = job.name_any();
        let current = match jobs.get_opt(&name).await? {
            Some(current) => current,
            None => match jobs.create(&PostParams::default(), job).await {
                Ok(created) => created,
                // Created meanwhile by another reconcile: it runs.
                Err(kube::Error::Api(status)) if status.code == 409 => {
                    running.push(name);
                    continue;
                }
                Err(error) => return Err(error.into()),
            },
        };
        let ours = current
            .owner_references()
            .iter()
            .any(|o| Some(&o.uid) == stack.metadata.uid.as_ref());
        if !ours {
            // Left by a deleted stack of the same name: wait for the garbage
            // collector, then create this stack's own.
            running.push(format!("{name} (an earlier stack's, being deleted)"));
            continue;
        }
        match job_outcome(&current) {
            JobOutcome::Succeeded => {}
            JobOutcome::Running => running.push(name),
            JobOutcome::Failed(message) => {
                let pods: Api<Pod> = Api::namespaced(client.clone(), namespace);
                // By the Job's uid: a Job deleted and made again under the
                // same name leaves pods of its own.
                let uid = current.uid().unwrap_or_default();
                let selector = format!("batch.kubernetes.io/controller-uid={uid}");
                let pods = pods.list(&ListParams::default().labels(&selector)).await?;
                failed.push(failed_migration(&current, &message, &pods.items));
            }
        }
    }
    // Every Job is looked at: the failures are all named.
    if let Some(first) = failed.first().cloned() {
        return Ok(failed.into_iter().skip(1).fold(first, Migration::and));
    }
    Ok(if running.is_empty() {
        Migration::Done
    } else {
        Migration::Running(running)
    })
}
