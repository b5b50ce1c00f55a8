//! How the services are reached: their Kubernetes Services and the
//! NetworkPolicies that admit exactly their callers (and DNS, PostgreSQL, NATS).

use k8s_openapi::api::core::v1::{Service as KubeService, ServicePort, ServiceSpec};
use k8s_openapi::api::networking::v1::{
    NetworkPolicy, NetworkPolicyEgressRule, NetworkPolicyIngressRule, NetworkPolicyPeer,
    NetworkPolicyPort, NetworkPolicySpec,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, OwnerReference};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::ResourceExt;

use crate::crd::EcommerceStack;
use crate::services::Service;

use super::*;

pub(crate) fn tcp_port(port: i32) -> NetworkPolicyPort {
    NetworkPolicyPort {
        port: Some(IntOrString::Int(port)),
        protocol: Some("TCP".to_owned()),
        ..NetworkPolicyPort::default()
    }
}

/// Name look-ups, wherever the cluster's DNS runs.
pub(crate) fn dns_egress() -> NetworkPolicyEgressRule {
    NetworkPolicyEgressRule {
        ports: Some(vec![
            NetworkPolicyPort {
                port: Some(IntOrString::Int(53)),
                protocol: Some("UDP".to_owned()),
                ..NetworkPolicyPort::default()
            },
            tcp_port(53),
        ]),
        to: None,
    }
}

pub(crate) fn pods_of(stack: &EcommerceStack, service: Service) -> NetworkPolicyPeer {
    NetworkPolicyPeer {
        pod_selector: Some(LabelSelector {
            match_labels: Some(selector_labels(&stack.name_any(), service)),
            ..LabelSelector::default()
        }),
        ..NetworkPolicyPeer::default()
    }
}

/// The port of a `scheme://host:port` address, or `default` without one.
pub(crate) fn url_port(url: &str, default: i32) -> i32 {
    let authority = url.split_once("://").map_or(url, |(_, rest)| rest);
    let host_port = authority.split('/').next().unwrap_or_default();
    let host_port = host_port.rsplit('@').next().unwrap_or_default();
    host_port
        .rsplit_once(':')
        .and_then(|(host, port)| (!host.ends_with('[')).then_some(port))
        .and_then(|port| port.parse().ok())
        .unwrap_or(default)
}

/// Ingress: the gateway's API from anywhere, each internal service's API from
/// its callers only, the metrics port from `metricsFrom` only. Egress: DNS,
/// the services it calls, PostgreSQL or NATS when it uses them, the OTLP
/// collector when its `OTEL_EXPORTER_OTLP_ENDPOINT` is set (by port: they
/// may live outside the cluster). As the chart's.
pub(crate) fn network_policy(
    stack: &EcommerceStack,
    service: Service,
    owner: &OwnerReference,
) -> NetworkPolicy {
    let spec = &stack.spec;
    let callers: Vec<NetworkPolicyPeer> = Service::ALL
        .into_iter()
        .filter(|caller| caller.dials().contains(&service))
        .map(|caller| pods_of(stack, caller))
        .collect();
    let mut ingress = Vec::new();
    if service == Service::Gateway {
        let gateway_from = &spec.network_policy.gateway_from;
        ingress.push(NetworkPolicyIngressRule {
            ports: Some(vec![tcp_port(service.port())]),
            from: (!gateway_from.is_empty()).then(|| gateway_from.clone()),
        });
    } else if !callers.is_empty() {
        ingress.push(NetworkPolicyIngressRule {
            ports: Some(vec![tcp_port(service.port())]),
            from: Some(callers),
        });
    }
    if !spec.network_policy.metrics_from.is_empty() {
        ingress.push(NetworkPolicyIngressRule {
            ports: Some(vec![tcp_port(service.metrics_port())]),
            from: Some(spec.network_policy.metrics_from.clone()),
        });
    }
    let mut egress = vec![dns_egress()];
    for callee in service.dials() {
        egress.push(NetworkPolicyEgressRule {
            ports: Some(vec![tcp_port(callee.port())]),
            to: Some(vec![pods_of(stack, *callee)]),
        });
    }
    if service.uses_database() {
        egress.push(NetworkPolicyEgressRule {
            ports: Some(vec![tcp_port(database_address(stack).1)]),
            to: None,
        });
    }
    if service.uses_nats() {
        egress.push(NetworkPolicyEgressRule {
            ports: Some(vec![tcp_port(url_port(&nats_url(stack), NATS_PORT))]),
            to: None,
        });
    }
    // Tracing is configured through the extra environment: its collector.
    let otlp_endpoint = spec
        .services
        .get(service)
        .env
        .iter()
        .find(|e| e.name == "OTEL_EXPORTER_OTLP_ENDPOINT")
        .and_then(|e| e.value.as_deref());
    if let Some(endpoint) = otlp_endpoint {
        egress.push(NetworkPolicyEgressRule {
            ports: Some(vec![tcp_port(url_port(endpoint, 4317))]),
            to: None,
        });
    }
    NetworkPolicy {
        metadata: metadata(
            stack,
            child_name(&stack.name_any(), service),
            Some(service),
            owner,
        ),
        spec: Some(NetworkPolicySpec {
            pod_selector: Some(LabelSelector {
                match_labels: Some(selector_labels(&stack.name_any(), service)),
                ..LabelSelector::default()
            }),
            policy_types: Some(vec!["Ingress".to_owned(), "Egress".to_owned()]),
            ingress: Some(ingress),
            egress: Some(egress),
        }),
    }
}

pub(crate) fn kube_service(
    stack: &EcommerceStack,
    service: Service,
    owner: &OwnerReference,
) -> KubeService {
    let name = stack.name_any();
    KubeService {
        metadata: metadata(stack, child_name(&name, service), Some(service), owner),
        spec: Some(ServiceSpec {
            type_: Some("ClusterIP".to_owned()),
            selector: Some(selector_labels(&name, service)),
            ports: Some(vec![ServicePort {
                name: Some(service.port_name().to_owned()),
                port: service.port(),
                target_port: Some(IntOrString::String(service.port_name().to_owned())),
                protocol: Some("TCP".to_owned()),
                app_protocol: (service != Service::Gateway).then(|| "grpc".to_owned()),
                ..ServicePort::default()
            }]),
            ..ServiceSpec::default()
        }),
        ..KubeService::default()
    }
}
