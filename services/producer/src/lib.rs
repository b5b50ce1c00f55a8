//! The Producer: the only writer of order events to JetStream.
//!
//! The Order service's outbox relay calls it; it answers only once the stream
//! acknowledged the message, so a record is marked sent only when the event is
//! durably in the stream. The message id `<order id>.<event>` makes a repeated
//! publish (a relay retry) a no-op in the stream.

pub mod application;
pub mod config;
pub mod domain;
pub mod infrastructure;
pub mod metrics;

use anyhow::Result;

use platform::cli::Command;
use platform::service::GrpcService;
use platform::shutdown::Shutdown;
use proto::producer::v1::producer_service_server::ProducerServiceServer;
use tokio::net::TcpListener;

pub use config::Config;

/// Entry point of the binary.
pub async fn run(command: Command) -> anyhow::Result<()> {
    platform::cli::dispatch(command, Config::from_env, migrate, serve).await
}

/// Connects to NATS, declares the streams and serves on `listener` until
/// `shutdown`.
pub async fn serve(config: Config, listener: TcpListener, shutdown: impl Shutdown) -> Result<()> {
    let client = platform::nats::connect(&config.nats, "producer").await?;
    infrastructure::ensure_streams(&client, &config.nats).await?;
    let publisher = infrastructure::JetStreamPublisher::new(client.clone(), config.nats.clone());
    let producer = application::Producer::new(publisher, metrics::Metrics::register());
    let service = infrastructure::grpc::ProducerGrpc::new(producer);
    let server = GrpcService::new("producer", ProducerServiceServer::new(service)).await;
    server.readiness().add_nats(client);
    server.serve(listener, shutdown).await
}

/// `migrate`: the Producer has no database; its migration is the streams'
/// set-up.
pub async fn migrate(config: Config) -> anyhow::Result<()> {
    let client = platform::nats::connect(&config.nats, "producer").await?;
    infrastructure::ensure_streams(&client, &config.nats).await
}
