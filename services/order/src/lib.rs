//! The Order service: validates orders, prices them from Inventory, stores
//! each with its `order.created` outbox record in one transaction, moves
//! orders through the status state machine, and relays the outbox to the
//! Producer (see [`application::relay`]), and drives orders left PENDING to a
//! terminal state (see [`application::sweeper`]).

pub mod application;
pub mod config;
pub mod domain;
pub mod infrastructure;
pub mod metrics;

use anyhow::Result;

use tokio::net::TcpListener;

use platform::cli::Command;
use platform::service::GrpcService;
use platform::shutdown::CancellationToken;
use platform::shutdown::Shutdown;
use proto::order::v1::order_service_server::OrderServiceServer;

use application::{OutboxRelay, PendingSweeper, RelayWakeup};
use infrastructure::grpc::OrderGrpc;
use infrastructure::inventory::InventoryClient;
use infrastructure::migration::Migrator;
use infrastructure::outbox::OutboxStore;
use infrastructure::producer::ProducerClient;
use infrastructure::store::OrderStore;

pub use config::{Config, RelaySettings, SweeperSettings};

/// Entry point of the binary.
pub async fn run(command: Command) -> anyhow::Result<()> {
    platform::cli::dispatch(command, Config::from_env, migrate, serve).await
}

/// Applies the migrations, starts the outbox relay and serves on `listener`
/// until `shutdown`; then stops the server (draining calls) and the relay.
pub async fn serve(config: Config, listener: TcpListener, shutdown: impl Shutdown) -> Result<()> {
    platform::db::migrate_at_start::<Migrator>(&config.db).await?;
    let db = platform::db::connect(&config.db).await?;
    let inventory = InventoryClient::new(
        platform::grpc::channel(&config.inventory, config.calls)?,
        config.price_cache_ttl,
    );

    let metrics = metrics::Metrics::register();
    let stop = CancellationToken::new();
    let (wakeup, relay) = if config.relay.enabled {
        let producer =
            ProducerClient::new(platform::grpc::channel(&config.producer, config.calls)?);
        let relay = OutboxRelay::new(
            OutboxStore::new(db.clone()),
            producer,
            config.relay,
            metrics.clone(),
        );
        let wakeup = relay.wakeup();
        (wakeup, Some(tokio::spawn(relay.run(stop.clone()))))
    } else {
        tracing::warn!("OUTBOX_RELAY_ENABLED=false: this replica does not relay the outbox");
        (RelayWakeup::default(), None)
    };

    let orders = application::Orders::new(OrderStore::new(db.clone()), inventory, wakeup);
    let sweeper = tokio::spawn(
        PendingSweeper::new(
            orders.clone(),
            OutboxStore::new(db.clone()),
            config.sweeper,
            metrics,
        )
        .run(stop.clone()),
    );
    let server = GrpcService::new("order", OrderServiceServer::new(OrderGrpc::new(orders))).await;
    server.readiness().add_database(db.clone());
    let served = server.serve(listener, shutdown).await;
    stop.cancel();
    let _ = sweeper.await;
    if let Some(relay) = relay
        && let Err(e) = relay.await
    {
        tracing::error!(error = %e, "outbox relay task failed");
    }
    db.close().await?;
    served
}

/// `migrate`: applies the database's migrations.
pub async fn migrate(config: Config) -> anyhow::Result<()> {
    platform::db::migrate::<Migrator>(&config.db).await
}
