//! Shared plumbing of the platform's services. Each service owns its domain;
//! this crate holds only what every one of them needs in the same way.

pub mod batch;
pub mod cli;
pub mod config;
pub mod db;
pub mod fault;
pub mod grpc;
mod grpc_metrics;
pub mod heap;
pub mod internal_auth;
pub mod limits;
pub mod metrics;
pub mod model;
pub mod nats;
pub mod product_cache;
pub mod readiness;
pub mod service;
pub mod settings;
pub mod shutdown;
pub mod telemetry;

pub use config::ConfigError;
