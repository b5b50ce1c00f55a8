//! User against a real PostgreSQL, one database per test: the use cases
//! in-process, and the real binary over gRPC.

mod admin;
mod binary;
mod helpers;
mod registration;
