//! The Order service's use cases over its ports: orders, the outbox relay
//! and the sweeper of orders left PENDING.

pub mod error;
pub mod orders;
pub mod ports;
pub mod relay;
pub mod sweeper;

pub use error::OrderError;
pub use orders::Orders;
pub use relay::{OutboxRelay, RelayWakeup};
pub use sweeper::PendingSweeper;
