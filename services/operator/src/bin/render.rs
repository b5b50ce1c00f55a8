//! Prints the objects the operator would apply for an `EcommerceStack`, as
//! YAML documents: `cargo run -p operator --bin render -- stack.yaml` (or
//! `-` for standard input). What `kubectl apply --dry-run` cannot show for a
//! custom resource; the packaging checks compare it with the chart's
//! rendering for the same settings.

use std::io::{Read, Write};

use anyhow::Context;
use operator::EcommerceStack;
use operator::resources::desired_state;
use serde::Serialize;

fn main() -> anyhow::Result<()> {
    let path = std::env::args()
        .nth(1)
        .context("usage: render <EcommerceStack YAML file, or - for standard input>")?;
    let mut text = String::new();
    if path == "-" {
        std::io::stdin().read_to_string(&mut text)?;
    } else {
        text = std::fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
    }
    let mut stack: EcommerceStack = serde_yaml::from_str(&text).context("not an EcommerceStack")?;
    // The API server would have given it a uid (the owner of everything).
    stack
        .metadata
        .uid
        .get_or_insert_with(|| "00000000-0000-0000-0000-000000000000".to_owned());
    let problems = operator::resources::spec_problems(&stack);
    anyhow::ensure!(problems.is_empty(), "{}", problems.join("; "));
    let state = desired_state(&stack)?;
    let mut out = Vec::new();
    let mut document = |object: &dyn erased::Object| -> anyhow::Result<()> {
        out.extend_from_slice(b"---\n");
        out.extend_from_slice(object.yaml()?.as_bytes());
        Ok(())
    };
    document(&state.service_account)?;
    for managed in &state.dependencies {
        document(&managed.kube_service)?;
        document(&managed.stateful_set)?;
        if let Some(policy) = &managed.network_policy {
            document(policy)?;
        }
    }
    document(&state.config_map)?;
    for policy in &state.network_policies {
        document(policy)?;
    }
    for job in &state.migrations {
        document(job)?;
    }
    for objects in &state.services {
        document(&objects.kube_service)?;
        document(&objects.deployment)?;
        document(&objects.disruption_budget)?;
        if let Some(autoscaler) = &objects.autoscaler {
            document(autoscaler)?;
        }
    }
    if let Some(monitoring) = &state.monitoring {
        document(&monitoring.dashboard)?;
        // Already whole objects (kinds of the Prometheus Operator).
        for object in [&monitoring.pod_monitor, &monitoring.prometheus_rule] {
            out.extend_from_slice(b"---\n");
            out.extend_from_slice(serde_yaml::to_string(object)?.as_bytes());
        }
    }
    std::io::stdout().write_all(&out)?;
    Ok(())
}

mod erased {
    /// Any object the operator renders, with its apiVersion and kind.
    pub trait Object {
        fn yaml(&self) -> anyhow::Result<String>;
    }

    impl<K> Object for K
    where
        K: super::Serialize + kube::Resource<DynamicType = ()>,
    {
        fn yaml(&self) -> anyhow::Result<String> {
            let mut value = serde_json::to_value(self)?;
            value["apiVersion"] = K::api_version(&()).into();
            value["kind"] = K::kind(&()).into();
            Ok(serde_yaml::to_string(&value)?)
        }
    }
}
