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
use proto::producer::v1::producer_service_server::ProducerServiceServer;

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
    let publisher = infrastructure::JetStreamPublisher::new(client, config.nats.clone());
    let service = application::ProducerGrpc::new(publisher);

    let (reporter, health) = tonic_health::server::health_reporter();
    reporter
        .set_serving::<ProducerServiceServer<application::ProducerGrpc>>()
        .await;
    let routes =
        tonic::service::Routes::new(health).add_service(ProducerServiceServer::new(service));
    tracing::info!(addr = %config.listen, "producer listening");
    platform::grpc::serve(routes, listener, shutdown).await?;
    tracing::info!("producer stopped");
    Ok(())
}
