//! The Order service against real PostgreSQL (a database per test), with
//! fake Inventory and Producer servers the tests control.

mod access;
mod binary;
mod create;
mod helpers;
mod idempotency;
mod relay;
mod sweeper;
mod transitions;
