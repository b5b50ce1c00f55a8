//! The Order service against real PostgreSQL (a database per test), with
//! fake Inventory and Producer servers the tests control.

mod access;
mod binary;
mod create;
mod idempotency;
mod relay;
mod support;
mod sweeper;
mod transitions;
