//! The objects the operator would apply for a stack, as YAML documents: for
//! the `render` binary (what `kubectl apply --dry-run` cannot show for a
//! custom resource), the golden renders of `tests/golden/` and the packaging
//! checks' comparison with the chart.

use serde::Serialize;

use crate::crd::EcommerceStack;
use crate::resources::{desired_state, spec_problems};

/// Every object of the stack's desired state, in the order they are applied;
/// the stack gets a fixed uid when it has none (the owner of everything).
pub fn render(stack: &EcommerceStack) -> std::result::Result<String, String> {
    let mut stack = stack.clone();
    stack
        .metadata
        .uid
        .get_or_insert_with(|| "00000000-0000-0000-0000-000000000000".to_owned());
    let problems = spec_problems(&stack);
    if !problems.is_empty() {
        return Err(problems.join("; "));
    }
    let state = desired_state(&stack).map_err(|e| e.to_string())?;
    let mut out = String::new();
    let mut document = |object: serde_json::Value| {
        out.push_str("---\n");
        out.push_str(&serde_yaml::to_string(&object).expect("a JSON value is YAML"));
    };
    document(typed(&state.service_account));
    for managed in &state.dependencies {
        document(typed(&managed.kube_service));
        document(typed(&managed.stateful_set));
        if let Some(policy) = &managed.network_policy {
            document(typed(policy));
        }
    }
    document(typed(&state.config_map));
    for policy in &state.network_policies {
        document(typed(policy));
    }
    for job in &state.migrations {
        document(typed(job));
    }
    for objects in &state.services {
        document(typed(&objects.kube_service));
        document(typed(&objects.deployment));
        document(typed(&objects.disruption_budget));
        if let Some(autoscaler) = &objects.autoscaler {
            document(typed(autoscaler));
        }
    }
    if let Some(monitoring) = &state.monitoring {
        document(typed(&monitoring.dashboard));
        document(monitoring.pod_monitor.clone());
        document(monitoring.prometheus_rule.clone());
    }
    Ok(out)
}

/// An object with its apiVersion and kind first, as a manifest has them.
fn typed<K>(object: &K) -> serde_json::Value
where
    K: Serialize + kube::Resource<DynamicType = ()>,
{
    let mut value = serde_json::json!({
        "apiVersion": K::api_version(&()),
        "kind": K::kind(&()),
    });
    let body = serde_json::to_value(object).expect("a Kubernetes object serializes");
    if let (Some(typed), serde_json::Value::Object(fields)) = (value.as_object_mut(), body) {
        for (key, field) in fields {
            typed.entry(key).or_insert(field);
        }
    }
    value
}
