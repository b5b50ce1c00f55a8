//! Every end-to-end test, one binary: the real service binaries against real
//! PostgreSQL and NATS, driven through the harness of the `e2e` crate.

mod api;
mod binaries;
mod crashes;
mod internal_auth;
mod metrics;
mod order_flow;
mod settings;
mod storefront;
mod tracing;
