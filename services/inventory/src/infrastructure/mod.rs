//! What talks to the outside: PostgreSQL (sea-orm entities, migrations, the
//! product store) and gRPC (the adapter of the generated service).

pub mod entities;
pub mod grpc;
pub mod migration;
pub mod store;
