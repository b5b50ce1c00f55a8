//! The Producer: the only writer of order events to JetStream.
//!
//! The Order service's outbox relay calls it; it answers only once the stream
//! acknowledged the message, so a record is marked sent only when the event is
//! durably in the stream. The message id `<order id>.<event>` makes a repeated
//! publish (a relay retry) a no-op in the stream.

pub mod application;
pub mod config;
pub mod infrastructure;

use std::future::Future;

use platform::cli::Command;
use platform::readiness::Readiness;
use platform::shutdown::CancellationToken;
use proto::producer::v1::producer_service_server::ProducerServiceServer;
use tonic::server::NamedService;

type ProducerServer = ProducerServiceServer<application::ProducerGrpc>;

pub use config::Config;

/// Entry point of the binary.
pub async fn run(command: Command) -> anyhow::Result<()> {
    let config = Config::from_env()?;
    match command {
        // The Producer has no database; its "migration" is the stream set-up.
        Command::Migrate => {
            let client = platform::nats::connect(&config.nats, "producer").await?;
            infrastructure::ensure_streams(&client, &config.nats).await?;
            Ok(())
        }
        Command::Serve => serve(config, platform::shutdown::signal()).await,
    }
}

/// Connects to NATS, declares the streams and serves until `shutdown`.
pub async fn serve(config: Config, shutdown: impl Future<Output = ()>) -> anyhow::Result<()> {
    let listener = platform::grpc::bind(&config.listen).await?;
    let client = platform::nats::connect(&config.nats, "producer").await?;
    infrastructure::ensure_streams(&client, &config.nats).await?;
    let publisher = infrastructure::JetStreamPublisher::new(client.clone(), config.nats.clone());
    let service = application::ProducerGrpc::new(publisher);

    let (reporter, health) = tonic_health::server::health_reporter();
    let readiness = Readiness::new(reporter, &[ProducerServer::NAME]).await;
    readiness.add_nats(client);
    let checks = CancellationToken::new();
    let _checker = checks.clone().drop_guard();
    readiness.start(checks).await?;
    let routes = tonic::service::Routes::new(health).add_service(ProducerServer::new(service));
    tracing::info!(addr = %config.listen, "producer listening");
    platform::grpc::serve_ready(routes, listener, &readiness, shutdown).await?;
    tracing::info!("producer stopped");
    Ok(())
}
