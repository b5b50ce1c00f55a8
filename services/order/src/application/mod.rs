//! The Order service's use cases, their gRPC face, and the outbox relay.

pub mod error;
pub mod grpc;
pub mod orders;
pub mod relay;
pub mod sweeper;

pub use error::OrderError;
pub use orders::Orders;
pub use relay::{OutboxRelay, RelayWakeup};
pub use sweeper::PendingSweeper;
