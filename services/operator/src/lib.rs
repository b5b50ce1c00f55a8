//! The e-commerce operator: reconciles an `EcommerceStack` custom resource
//! into the platform's Deployments, Services, disruption budgets, NetworkPolicies,
//! autoscalers and ConfigMap.

pub mod autopilot;
pub mod controller;
pub mod crd;
pub mod error;
pub mod leader;
pub mod metrics;
pub mod migration;
pub mod render;
pub mod resources;
pub mod runner;
pub mod services;
pub mod status;

#[cfg(test)]
mod fixtures;

pub use crd::{EcommerceStack, EcommerceStackSpec, EcommerceStackStatus, crd_yaml};
pub use error::{Error, Result};
