//! What talks to the outside: PostgreSQL (sea-orm entities, migrations, the
//! product store), gRPC (the adapter of the generated service) and NATS
//! (product change announcements).

pub mod announce;
pub mod entities;
pub mod grpc;
pub mod migration;
pub mod store;
