//! The Order service: validates orders, prices them from Inventory, stores
//! each with its `order.created` outbox record in one transaction, moves
//! orders through the status state machine, and relays the outbox to the
//! Producer (see [`application::relay`]), and drives orders left PENDING to a
//! terminal state (see [`application::sweeper`]).

pub mod application;
pub mod config;
pub mod domain;
pub mod infrastructure;

use std::future::Future;

use tokio::net::TcpListener;

use platform::cli::Command;
use platform::readiness::Readiness;
use platform::shutdown::CancellationToken;
use proto::order::v1::order_service_server::OrderServiceServer;
use tonic::server::NamedService;

use application::grpc::OrderGrpc;
use application::{OutboxRelay, PendingSweeper, RelayWakeup};
use infrastructure::inventory::InventoryClient;
use infrastructure::migration::Migrator;
use infrastructure::producer::ProducerClient;
use infrastructure::store::OrderStore;

pub use config::{Config, RelaySettings, SweeperSettings};

/// Entry point of the binary.
pub async fn run(command: Command) -> anyhow::Result<()> {
    let config = Config::from_env()?;
    match command {
        Command::Migrate => platform::db::migrate::<Migrator>(&config.db).await,
        Command::Serve => serve(config, platform::shutdown::signal()).await,
    }
}

/// Listens on `ORDER_ADDR` and serves until `shutdown`.
pub async fn serve(config: Config, shutdown: impl Future<Output = ()>) -> anyhow::Result<()> {
    let listener = platform::grpc::bind(&config.listen).await?;
    serve_on(config, listener, shutdown).await
}

/// Applies the migrations, starts the outbox relay and serves on `listener`
/// until `shutdown`; then stops the server (draining calls) and the relay.
pub async fn serve_on(
    config: Config,
    listener: TcpListener,
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<()> {
    platform::db::migrate::<Migrator>(&config.db).await?;
    let db = platform::db::connect(&config.db).await?;
    let inventory = InventoryClient::new(platform::grpc::channel(&config.inventory, config.calls)?);

    let stop = CancellationToken::new();
    let (wakeup, relay) = if config.relay.enabled {
        let producer =
            ProducerClient::new(platform::grpc::channel(&config.producer, config.calls)?);
        let relay = OutboxRelay::new(db.clone(), producer, config.relay);
        let wakeup = relay.wakeup();
        (wakeup, Some(tokio::spawn(relay.run(stop.clone()))))
    } else {
        tracing::warn!("OUTBOX_RELAY_ENABLED=false: this replica does not relay the outbox");
        (RelayWakeup::default(), None)
    };

    let orders = application::Orders::new(OrderStore::new(db.clone()), inventory, wakeup);
    let sweeper =
        tokio::spawn(PendingSweeper::new(orders.clone(), config.sweeper).run(stop.clone()));
    let (reporter, health) = tonic_health::server::health_reporter();
    let readiness = Readiness::new(reporter, &[OrderServiceServer::<OrderGrpc>::NAME]).await;
    readiness.add_database(db.clone());
    let checker = readiness.start(stop.clone()).await?;
    let routes = tonic::service::Routes::new(health)
        .add_service(OrderServiceServer::new(OrderGrpc::new(orders)));
    tracing::info!(addr = %config.listen, "order listening");

    let server_stop = stop.clone();
    let served = platform::grpc::serve_ready(routes, listener, &readiness, async move {
        tokio::select! {
            _ = shutdown => {}
            _ = server_stop.cancelled() => {}
        }
    })
    .await;
    stop.cancel();
    let _ = checker.await;
    let _ = sweeper.await;
    if let Some(relay) = relay
        && let Err(e) = relay.await
    {
        tracing::error!(error = %e, "outbox relay task failed");
    }
    db.close().await?;
    tracing::info!("order stopped");
    served
}
