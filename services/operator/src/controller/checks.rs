//! What is looked at before anything is applied: a paused stack, one that
//! cannot work as specified (refused with a reason), the Secrets its pods
//! read (generated when the spec leaves them out), and failing pods.

use super::*;

/// Applies nothing: the stack as specified cannot work. Reported with a
/// Warning and `Degraded`; checked again after `REFUSED_RECHECK` (Secrets are
/// not watched) or when the stack changes.
pub(super) async fn refuse(
    stack: &EcommerceStack,
    ctx: &Context,
    reason: &str,
    message: String,
) -> Result<Action> {
    let status = refused_status(stack, reason, &message, Timestamp::now());
    if !already_said(stack, DEGRADED, reason, &message) {
        publish(stack, ctx, EventType::Warning, reason, "Checking", message).await;
    }
    patch_status(stack, &status, ctx).await?;
    Ok(Action::requeue(REFUSED_RECHECK))
}

/// Applies nothing while paused; says so once per generation (an event and
/// `Progressing: Paused`). Removing the annotation is a change of the stack,
/// so it resumes at once.
pub(super) async fn pause(stack: &EcommerceStack, ctx: &Context) -> Result<Action> {
    let message = format!(
        "reconciliation paused by the annotation {PAUSED_ANNOTATION}=true: changes to the stack and its objects are not applied until it is removed"
    );
    if !already_said(stack, PROGRESSING, PAUSED_REASON, &message) {
        publish(
            stack,
            ctx,
            EventType::Normal,
            PAUSED_REASON,
            "Pausing",
            message.clone(),
        )
        .await;
        patch_status(
            stack,
            &paused_status(stack, &message, Timestamp::now()),
            ctx,
        )
        .await?;
    }
    Ok(Action::await_change())
}

/// A message naming the other stack when one on the same NATS already uses
/// this stack's stream, subject prefix or durable consumer; the stack
/// created first keeps them.
pub(super) async fn shared_event_names(stack: &EcommerceStack, ctx: &Context) -> Option<String> {
    let store = ctx.stacks.get()?;
    // Until the first list is in, the store is empty and would miss a clash.
    store.wait_until_ready().await.ok()?;
    let mine = event_names(stack);
    let created = |s: &EcommerceStack| {
        (
            s.metadata.creation_timestamp.clone().map(|t| t.0),
            s.namespace(),
            s.name_any(),
        )
    };
    store
        .state()
        .into_iter()
        .filter(|other| other.metadata.uid != stack.metadata.uid)
        .filter(|other| other.metadata.deletion_timestamp.is_none())
        // A managed NATS is the stack's own.
        .filter(|other| other.spec.nats.managed.is_none() && stack.spec.nats.managed.is_none())
        .filter(|other| nats_url(other) == nats_url(stack))
        .filter(|other| created(other) < created(stack))
        .find_map(|other| {
            let theirs = event_names(&other);
            let shared: Vec<String> = [
                ("stream", &mine.stream, &theirs.stream),
                ("subject prefix", &mine.subject_prefix, &theirs.subject_prefix),
                ("durable consumer", &mine.consumer_name, &theirs.consumer_name),
            ]
            .into_iter()
            .filter(|(_, a, b)| a == b)
            .map(|(what, name, _)| format!("{what} {name}"))
            .collect();
            (!shared.is_empty()).then(|| {
                format!(
                    "stack {}/{} on the same NATS already uses {}: set other spec.nats names, or leave them unset to get this stack's own",
                    other.namespace().unwrap_or_default(),
                    other.name_any(),
                    shared.join(", ")
                )
            })
        })
}

/// Reads every Secret the pods will read; returns what is missing, and the
/// Secrets read (for the reconcile's later steps, which need not read them
/// again). A Secret the spec leaves to the operator is generated here when
/// absent, once: an existing one is never changed.
pub(super) async fn check_secrets(
    stack: &EcommerceStack,
    client: &Client,
    namespace: &str,
) -> Result<(Vec<String>, Vec<Secret>)> {
    let secrets: Api<Secret> = Api::namespaced(client.clone(), namespace);
    let generated = generated_secrets(stack);
    let mut missing = Vec::new();
    let mut read = Vec::new();
    for reference in secret_refs(stack) {
        let found = match secrets.get_opt(&reference.name).await? {
            Some(secret) => secret,
            None => match generated.iter().find(|g| g.reference == reference) {
                Some(to_generate) => {
                    let secret = generated_secret(stack, to_generate, new_token())?;
                    match secrets.create(&PostParams::default(), &secret).await {
                        Ok(_) => {
                            info!(stack = %stack.name_any(), secret = %reference.name, "generated a secret")
                        }
                        // Another reconcile created it first: keep that one.
                        Err(kube::Error::Api(status)) if status.code == 409 => {}
                        Err(error) => return Err(error.into()),
                    }
                    continue;
                }
                None => {
                    missing.push(format!("Secret {:?} not found", reference.name));
                    continue;
                }
            },
        };
        // The API server returns every key under `data`.
        let has_key = found
            .data
            .as_ref()
            .is_some_and(|d| d.contains_key(&reference.key));
        if !has_key {
            missing.push(format!(
                "Secret {:?} has no key {:?}",
                reference.name, reference.key
            ));
        }
        read.push(found);
    }
    Ok((missing, read))
}

/// Failing containers of the stack's pods.
pub(super) async fn failing_pods(
    stack: &EcommerceStack,
    client: &Client,
    namespace: &str,
) -> Result<Vec<String>> {
    let pods: Api<Pod> = Api::namespaced(client.clone(), namespace);
    let selector = format!(
        "app.kubernetes.io/instance={},{MANAGED_SELECTOR}",
        stack.name_any()
    );
    let list = pods.list(&ListParams::default().labels(&selector)).await?;
    Ok(pod_failures(&list.items))
}
