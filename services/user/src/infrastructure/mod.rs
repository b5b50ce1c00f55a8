//! What talks to the outside: PostgreSQL (sea-orm entity, migrations, the
//! user store), bcrypt, and gRPC (the adapter of the generated service).

pub mod entities;
pub mod grpc;
pub mod migration;
pub mod password;
pub mod store;
