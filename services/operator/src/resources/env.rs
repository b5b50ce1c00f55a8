//! The settings each service gets: the shared ConfigMap, every container's
//! environment (plain values, ConfigMap keys, Secret keys) and the NATS
//! names a stack's events use.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{ConfigMapKeySelector, EnvVar, EnvVarSource, SecretKeySelector};
use kube::ResourceExt;
use sha2::{Digest, Sha256};

use crate::crd::{EcommerceStack, SecretKeyRef};
use crate::services::{SecretSetting, Service};

use super::*;

/// The names that keep one stack's events apart from another's on a shared NATS.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventNames {
    pub stream: String,
    pub subject_prefix: String,
    pub consumer_name: String,
}

/// The spec's names, or ones derived from the stack's namespace and name.
pub fn event_names(stack: &EcommerceStack) -> EventNames {
    let namespace = stack.namespace().unwrap_or_default();
    let name = stack.name_any();
    let nats = &stack.spec.nats;
    // Namespace and name are DNS labels: lower-case letters, digits and '-'.
    let upper = |s: &str| s.to_uppercase().replace('-', "_");
    EventNames {
        stream: nats
            .stream
            .clone()
            .unwrap_or_else(|| format!("ORDER_EVENTS_{}_{}", upper(&namespace), upper(&name))),
        subject_prefix: nats
            .subject_prefix
            .clone()
            .unwrap_or_else(|| format!("{namespace}.{name}.order")),
        consumer_name: nats
            .consumer_name
            .clone()
            .unwrap_or_else(|| format!("order-events-{namespace}-{name}")),
    }
}

/// The settings the services share, with in-cluster addresses.
pub fn shared_settings(stack: &EcommerceStack) -> BTreeMap<String, String> {
    let name = stack.name_any();
    let spec = &stack.spec;
    let events = event_names(stack);
    let (db_host, db_port, db_user) = database_address(stack);
    let mut settings = BTreeMap::from([
        ("APP_ENV".to_owned(), spec.app_env.as_str().to_owned()),
        ("LOG_FORMAT".to_owned(), "json".to_owned()),
        ("DB_HOST".to_owned(), db_host),
        ("DB_PORT".to_owned(), db_port.to_string()),
        ("DB_USER".to_owned(), db_user),
        ("DB_NAME".to_owned(), spec.database.name.clone()),
        ("NATS_ADDR".to_owned(), nats_url(stack)),
        ("NATS_STREAM".to_owned(), events.stream),
        ("NATS_SUBJECT_PREFIX".to_owned(), events.subject_prefix),
        ("NATS_CONSUMER_NAME".to_owned(), events.consumer_name),
    ]);
    for service in Service::ALL {
        // A host name makes the service listen on all interfaces and the
        // others dial the Service.
        settings.insert(
            service.addr_env().to_owned(),
            format!("{}:{}", child_name(&name, service), service.port()),
        );
    }
    settings
}

/// A stable hash of the settings one service reads.
pub fn config_hash(settings: &BTreeMap<String, String>, keys: &[&str]) -> String {
    let mut hasher = Sha256::new();
    for key in keys {
        hasher.update(key.as_bytes());
        hasher.update([0]);
        hasher.update(settings.get(*key).map(String::as_bytes).unwrap_or_default());
        hasher.update([0]);
    }
    hex::encode(&hasher.finalize()[..16])
}

pub(crate) fn secret_env(name: &str, reference: &SecretKeyRef) -> EnvVar {
    EnvVar {
        name: name.to_owned(),
        value_from: Some(EnvVarSource {
            secret_key_ref: Some(SecretKeySelector {
                name: reference.name.clone(),
                key: reference.key.clone(),
                optional: Some(false),
            }),
            ..EnvVarSource::default()
        }),
        ..EnvVar::default()
    }
}

/// The variables a service reads: shared settings from the ConfigMap, its
/// secrets from Secrets, then the spec's extra variables (which replace
/// operator-set ones of the same name; duplicates would break the apply).
pub fn container_env(stack: &EcommerceStack, service: Service) -> Vec<EnvVar> {
    let config_map = config_map_name(&stack.name_any());
    let spec = &stack.spec;

    let mut env: Vec<EnvVar> = service
        .config_keys()
        .into_iter()
        .map(|key| EnvVar {
            name: key.to_owned(),
            value_from: Some(EnvVarSource {
                config_map_key_ref: Some(ConfigMapKeySelector {
                    name: config_map.clone(),
                    key: key.to_owned(),
                    optional: Some(false),
                }),
                ..EnvVarSource::default()
            }),
            ..EnvVar::default()
        })
        .collect();
    for secret in service.secrets() {
        let reference = match secret {
            SecretSetting::DbPassword => Some(db_password_ref(stack)),
            SecretSetting::JwtSecret => Some(jwt_secret_ref(stack)),
            SecretSetting::AdminPassword => admin_password_ref(stack),
            SecretSetting::InternalAuthToken => Some(internal_auth_token_ref(stack)),
        };
        if let Some(reference) = reference {
            env.push(secret_env(secret.env_name(), &reference));
        }
    }
    let mut plain = vec![("METRICS_PORT", service.metrics_port().to_string())];
    if service == Service::Gateway && !spec.trusted_proxies.is_empty() {
        plain.push(("TRUSTED_PROXIES", spec.trusted_proxies.join(",")));
    }
    for (name, value) in plain {
        env.push(EnvVar {
            name: name.to_owned(),
            value: Some(value),
            ..EnvVar::default()
        });
    }
    if let (Service::User, Some(admin)) = (service, &spec.admin) {
        for (name, value) in [
            ("ADMIN_USERNAME", &admin.username),
            ("ADMIN_EMAIL", &admin.email),
        ] {
            env.push(EnvVar {
                name: name.to_owned(),
                value: Some(value.clone()),
                ..EnvVar::default()
            });
        }
    }
    for extra in &spec.services.get(service).env {
        match env.iter_mut().find(|e| e.name == extra.name) {
            Some(existing) => *existing = extra.clone(),
            None => env.push(extra.clone()),
        }
    }
    env
}
