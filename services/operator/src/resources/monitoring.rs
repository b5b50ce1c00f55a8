//! Insight: the stack's PodMonitor and PrometheusRule (for the Prometheus
//! Operator) and its Grafana dashboard, when `spec.monitoring.enabled`. The
//! alerts and the dashboard are the chart's own files, embedded: one source.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::ConfigMap;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::ResourceExt;
use serde_json::{Value, json};

use crate::crd::EcommerceStack;
use crate::services::Service;

use super::*;

/// The chart's alerts as a PrometheusRule (generated from
/// charts/ecommerce/templates/prometheusrule.yaml by the packaging checks).
const PROMETHEUS_RULES: &str = include_str!("../../../../k8s/monitoring/prometheus-rules.yaml");
/// The chart's order-flow dashboard.
const DASHBOARD: &str = include_str!("../../../../charts/ecommerce/dashboards/order-flow.json");

/// The group and version of the Prometheus Operator's kinds.
pub const MONITORING_GROUP_VERSION: &str = "monitoring.coreos.com/v1";

/// What the operator renders for monitoring.
#[derive(Debug, Clone)]
pub struct MonitoringObjects {
    /// `<stack>-metrics`: every service pod's `metrics` port.
    pub pod_monitor: Value,
    /// `<stack>-alerts`.
    pub prometheus_rule: Value,
    /// `<stack>-dashboard`, labelled for Grafana's dashboard sidecar.
    pub dashboard: ConfigMap,
}

pub(crate) fn monitoring(
    stack: &EcommerceStack,
    owner: &OwnerReference,
) -> Option<MonitoringObjects> {
    let spec = &stack.spec.monitoring;
    if !spec.enabled {
        return None;
    }
    let name = stack.name_any();
    let meta = |suffix: &str| {
        let mut object_meta = metadata(stack, format!("{name}-{suffix}"), None, owner);
        object_meta
            .labels
            .get_or_insert_with(BTreeMap::new)
            .extend(spec.labels.clone());
        serde_json::to_value(object_meta).expect("metadata serializes")
    };
    let pod_monitor = json!({
        "apiVersion": MONITORING_GROUP_VERSION,
        "kind": "PodMonitor",
        "metadata": meta("metrics"),
        "spec": {
            "selector": {
                "matchLabels": {
                    "app.kubernetes.io/instance": name,
                    "app.kubernetes.io/managed-by": FIELD_MANAGER,
                },
                "matchExpressions": [{
                    "key": "app.kubernetes.io/component",
                    "operator": "In",
                    "values": Service::ALL.map(Service::name),
                }],
            },
            "podMetricsEndpoints": [{"port": "metrics", "path": "/metrics", "interval": "30s"}],
        },
    });
    let mut prometheus_rule: Value =
        serde_yaml::from_str(PROMETHEUS_RULES).expect("the embedded rules are YAML (tested)");
    prometheus_rule["metadata"] = meta("alerts");
    let mut dashboard_labels = labels(stack, None);
    dashboard_labels.insert("grafana_dashboard".to_owned(), "1".to_owned());
    let dashboard = ConfigMap {
        metadata: k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta {
            labels: Some(dashboard_labels),
            ..metadata(stack, format!("{name}-dashboard"), None, owner)
        },
        data: Some(BTreeMap::from([(
            "ecommerce-order-flow.json".to_owned(),
            DASHBOARD.to_owned(),
        )])),
        ..ConfigMap::default()
    };
    Some(MonitoringObjects {
        pod_monitor,
        prometheus_rule,
        dashboard,
    })
}
