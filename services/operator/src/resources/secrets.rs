//! The Secrets a stack reads: each given in the spec, or generated once by
//! the operator when the spec leaves it out.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::ResourceExt;

use crate::crd::{EcommerceStack, SecretKeyRef};
use crate::error::Result;

use super::*;

/// Name of the Secret the operator generates the internal auth token into.
pub fn internal_auth_secret_name(stack: &str) -> String {
    format!("{stack}-internal-auth")
}

/// A Secret key the spec left out, which the operator generates.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GeneratedSecret {
    pub reference: SecretKeyRef,
    /// Not owned by the stack (the database password, which its volume
    /// owns); otherwise owned by the stack and deleted with it.
    pub retained: bool,
}

fn generated(name: String, key: &str) -> SecretKeyRef {
    SecretKeyRef {
        name,
        key: key.to_owned(),
    }
}

/// Where the services read `INTERNAL_AUTH_TOKEN` from: the spec's Secret, or
/// the one the operator generates.
pub fn internal_auth_token_ref(stack: &EcommerceStack) -> SecretKeyRef {
    stack
        .spec
        .internal_auth_token_secret_ref
        .clone()
        .unwrap_or_else(|| {
            generated(
                internal_auth_secret_name(&stack.name_any()),
                INTERNAL_AUTH_TOKEN_KEY,
            )
        })
}

/// The gateway's JWT key: the spec's, or `<stack>-jwt`.
pub fn jwt_secret_ref(stack: &EcommerceStack) -> SecretKeyRef {
    stack
        .spec
        .jwt_secret_ref
        .clone()
        .unwrap_or_else(|| generated(format!("{}-jwt", stack.name_any()), "secret"))
}

/// The database password: the spec's, or the managed PostgreSQL's
/// `<stack>-postgresql`.
pub fn db_password_ref(stack: &EcommerceStack) -> SecretKeyRef {
    stack
        .spec
        .database
        .password_secret_ref
        .clone()
        .unwrap_or_else(|| generated(managed_name(&stack.name_any(), "postgresql"), "password"))
}

/// The first admin's password, when the spec asks for an admin: the spec's
/// Secret, or `<stack>-admin`.
pub fn admin_password_ref(stack: &EcommerceStack) -> Option<SecretKeyRef> {
    let admin = stack.spec.admin.as_ref()?;
    Some(
        admin
            .password_secret_ref
            .clone()
            .unwrap_or_else(|| generated(format!("{}-admin", stack.name_any()), "password")),
    )
}

/// The Secret keys the operator generates for this stack: those the spec
/// leaves out.
pub fn generated_secrets(stack: &EcommerceStack) -> Vec<GeneratedSecret> {
    let spec = &stack.spec;
    let mut secrets = Vec::new();
    let mut add = |reference: SecretKeyRef, retained: bool| {
        secrets.push(GeneratedSecret {
            reference,
            retained,
        })
    };
    if spec.database.password_secret_ref.is_none() {
        // PostgreSQL takes its password once, when it creates its data: a
        // new one would never open a volume that outlived its stack. So the
        // stack does not own it; the volume does, once it exists (the
        // reconciler hands it over), and it goes exactly with the data.
        add(db_password_ref(stack), true);
    }
    if spec.jwt_secret_ref.is_none() {
        add(jwt_secret_ref(stack), false);
    }
    if spec
        .admin
        .as_ref()
        .is_some_and(|a| a.password_secret_ref.is_none())
    {
        add(admin_password_ref(stack).expect("an admin"), false);
    }
    if spec.internal_auth_token_secret_ref.is_none() {
        add(internal_auth_token_ref(stack), false);
    }
    secrets
}

/// A Secret holding a freshly generated value. Only ever created, never
/// updated: an existing value is kept.
pub fn generated_secret(
    stack: &EcommerceStack,
    secret: &GeneratedSecret,
    value: String,
) -> Result<Secret> {
    let owner = owner_reference(stack)?;
    let mut metadata = metadata(stack, secret.reference.name.clone(), None, &owner);
    if secret.retained {
        metadata = ObjectMeta {
            owner_references: None,
            ..metadata
        };
    }
    Ok(Secret {
        metadata,
        string_data: Some(BTreeMap::from([(secret.reference.key.clone(), value)])),
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
    let mut refs = vec![db_password_ref(stack), jwt_secret_ref(stack)];
    refs.extend(admin_password_ref(stack));
    refs.push(internal_auth_token_ref(stack));
    let mut seen = Vec::new();
    refs.retain(|r| {
        let new = !seen.contains(r);
        seen.push(r.clone());
        new
    });
    refs
}
