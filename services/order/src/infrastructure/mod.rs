//! Everything the Order service talks to: its PostgreSQL tables (sea-orm
//! entities, migrations, the order store and the outbox), Inventory and the
//! Producer over gRPC.

pub mod entities;
pub mod grpc;
pub mod inventory;
pub mod migration;
pub mod outbox;
pub mod producer;
pub mod store;
