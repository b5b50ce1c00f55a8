//! The test harness every integration and end-to-end test uses.
//!
//! - [`TestDb`]: a fresh PostgreSQL database per test, dropped `WITH (FORCE)`
//!   when the test ends (also when it panics).
//! - [`TestNats`]: a stream name and subject prefix of the test's own, its
//!   streams deleted at the end.
//! - [`ServiceProcess`]: a real service binary on free ports, in its own
//!   process group, killed whole when dropped.
//! - [`PrivateNats`], [`PrivatePostgres`]: servers of a test's own, on free
//!   ports, that the test may stop, kill and restart.
//! - [`http_get`]: a service's `/metrics`, `/healthz` or `/readyz`.
//!
//! The whole stack wired together (`Stack`) and the order-flow helpers are
//! the end-to-end tests' own, in the `e2e` crate.

mod db;
mod http;
mod nats;
mod process;
mod servers;

pub use db::{PgServer, TestDb};
pub use http::{http_get, http_get_with_status, metric_value};
pub use nats::TestNats;
pub use process::{ServiceProcess, bin_path, free_port};
pub use servers::{PrivateNats, PrivatePostgres};

/// A short unique name for test resources, e.g. `t3f9a1c2b`.
pub fn unique_name(prefix: &str) -> String {
    let id = uuid::Uuid::new_v4().simple().to_string();
    format!("{prefix}{}", &id[..12])
}

/// Runs `check` until it returns `Some`, or panics after `timeout` with `what`.
pub async fn eventually<T, F, Fut>(timeout: std::time::Duration, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        if tokio::time::Instant::now() >= deadline {
            panic!("timed out after {timeout:?} waiting for {what}");
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}
