//! The Secrets a stack reads and the internal token the operator generates.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Secret;
use kube::ResourceExt;

use crate::crd::{EcommerceStack, SecretKeyRef};
use crate::error::Result;

use super::*;

/// Name of the Secret the operator generates the internal auth token into.
pub fn internal_auth_secret_name(stack: &str) -> String {
    format!("{stack}-internal-auth")
}

/// Where the services read `INTERNAL_AUTH_TOKEN` from: the spec's Secret, or
/// the one the operator generates.
pub fn internal_auth_token_ref(stack: &EcommerceStack) -> SecretKeyRef {
    stack
        .spec
        .internal_auth_token_secret_ref
        .clone()
        .unwrap_or_else(|| SecretKeyRef {
            name: internal_auth_secret_name(&stack.name_any()),
            key: INTERNAL_AUTH_TOKEN_KEY.to_owned(),
        })
}

/// The Secret holding a freshly generated token, owned by the stack. Only
/// ever created, never updated: an existing token is kept.
pub fn generated_internal_auth_secret(stack: &EcommerceStack, token: String) -> Result<Secret> {
    let owner = owner_reference(stack)?;
    Ok(Secret {
        metadata: metadata(
            stack,
            internal_auth_secret_name(&stack.name_any()),
            None,
            &owner,
        ),
        string_data: Some(BTreeMap::from([(
            INTERNAL_AUTH_TOKEN_KEY.to_owned(),
            token,
        )])),
        type_: Some("Opaque".to_owned()),
        ..Secret::default()
    })
}

/// 244 random bits as 64 hex characters (two v4 UUIDs, from the OS's CSPRNG).
pub fn new_token() -> String {
    format!(
        "{}{}",
        uuid::Uuid::new_v4().simple(),
        uuid::Uuid::new_v4().simple()
    )
}

/// Every Secret key the stack's pods read, in a fixed order without repeats.
pub fn secret_refs(stack: &EcommerceStack) -> Vec<SecretKeyRef> {
    let spec = &stack.spec;
    let mut refs = vec![
        spec.database.password_secret_ref.clone(),
        spec.jwt_secret_ref.clone(),
    ];
    if let Some(admin) = &spec.admin {
        refs.push(admin.password_secret_ref.clone());
    }
    refs.push(internal_auth_token_ref(stack));
    let mut seen = Vec::new();
    refs.retain(|r| {
        let new = !seen.contains(r);
        seen.push(r.clone());
        new
    });
    refs
}
