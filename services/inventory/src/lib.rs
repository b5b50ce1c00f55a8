//! The Inventory service: the products of the shop and their stock.
//!
//! Stock changes for orders only through `ApplyOrder` / `ReleaseOrder`, which
//! keep a per-order ledger so that a redelivered event never changes stock
//! twice; an admin may still set a product's stock directly (a value, never a
//! delta).

pub mod application;
pub mod config;
pub mod domain;
pub mod infrastructure;
pub mod metrics;

use anyhow::Result;

use platform::cli::Command;
use platform::service::GrpcService;
use platform::shutdown::Shutdown;
use proto::inventory::v1::inventory_service_server::InventoryServiceServer;
use tokio::net::TcpListener;

pub use config::Config;
pub use infrastructure::migration::Migrator;

/// Entry point of the binary.
pub async fn run(command: Command) -> anyhow::Result<()> {
    platform::cli::dispatch(command, Config::from_env, migrate, serve).await
}

/// Migrates the database, then serves gRPC on `listener` until `shutdown`.
pub async fn serve(config: Config, listener: TcpListener, shutdown: impl Shutdown) -> Result<()> {
    platform::db::migrate_at_start::<Migrator>(&config.db).await?;
    let db = platform::db::connect(&config.db).await?;
    // Product changes go to the gateways' caches; Inventory serves without NATS.
    let nats = platform::nats::connect_in_background(&config.nats, "inventory", |_| {}).await?;
    let announcer =
        infrastructure::announce::NatsAnnouncer::spawn(nats, config.nats.product_changes_subject());
    let inventory = application::Inventory::new(
        infrastructure::store::ProductStore::new(db.clone()),
        std::sync::Arc::new(announcer),
        metrics::Metrics::register(),
    );
    let service = infrastructure::grpc::InventoryGrpc::new(inventory);
    let server = GrpcService::new("inventory", InventoryServiceServer::new(service)).await;
    server.readiness().add_database(db);
    server.serve(listener, shutdown).await
}

/// `migrate`: applies the database's migrations.
pub async fn migrate(config: Config) -> anyhow::Result<()> {
    platform::db::migrate::<Migrator>(&config.db).await
}
