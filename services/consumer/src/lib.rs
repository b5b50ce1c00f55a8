//! The Consumer: step 4 of the order flow.
//!
//! A durable JetStream pull consumer (shared by every replica) reads the order
//! events. For `order.created` it asks Inventory to apply the order, then
//! records the outcome with Order (CONFIRMED, or REJECTED with the reason); for
//! `order.cancelled` it asks Inventory to return the stock. A message is
//! acknowledged only after every step succeeded; exactly-once effects come
//! from the receivers, which are idempotent per order id.
//!
//! Transient failures are retried forever with capped backoff; permanent ones,
//! after a bounded number of attempts, go to the dead-letter stream (written
//! and acknowledged there first), the order is rejected with the reason, and
//! only then is the original terminated.

pub mod application;
pub mod config;
pub mod domain;
pub mod infrastructure;
pub mod metrics;

use anyhow::Result;

use platform::cli::Command;
use platform::readiness::{Readiness, ReadyFlag};
use platform::service::GrpcService;
use platform::shutdown::CancellationToken;
use platform::shutdown::Shutdown;
use tokio::net::TcpListener;

pub use config::Config;

/// Entry point of the binary.
pub async fn run(command: Command) -> anyhow::Result<()> {
    platform::cli::dispatch(command, Config::from_env, migrate, serve).await
}

/// Serves health and readiness on `listener`, and consumes order events until
/// `shutdown`; then stops fetching, finishes the messages in hand and returns.
pub async fn serve(config: Config, listener: TcpListener, shutdown: impl Shutdown) -> Result<()> {
    let server = GrpcService::health_only("consumer").await;
    let readiness = server.readiness().clone();
    // SERVING only once connected to NATS with the durable consumer bound.
    let bound = readiness.add_flag("durable", false, "the durable consumer is not bound");
    let metrics = metrics::Metrics::register();

    let stop = CancellationToken::new();
    let server_stop = CancellationToken::new();
    let server = async {
        let result = server.serve(listener, server_stop.cancelled()).await;
        // Without its health endpoint the process cannot be watched: stop.
        stop.cancel();
        result
    };
    let consuming = async {
        let result = consume(&config, metrics, stop.clone(), &readiness, bound.clone()).await;
        readiness.shutting_down().await;
        server_stop.cancel();
        result
    };
    let signalled = async {
        tokio::select! {
            () = shutdown => stop.cancel(),
            () = stop.cancelled() => {}
        }
        // NOT_SERVING while the messages in hand are finished.
        readiness.shutting_down().await;
    };
    let (server_result, consume_result, ()) = tokio::join!(server, consuming, signalled);
    consume_result?;
    server_result
}

async fn consume(
    config: &Config,
    metrics: metrics::Metrics,
    stop: CancellationToken,
    readiness: &Readiness,
    bound: ReadyFlag,
) -> anyhow::Result<()> {
    let client = tokio::select! {
        client = platform::nats::connect(&config.nats, "consumer") => client?,
        () = stop.cancelled() => return Ok(()),
    };
    readiness.add_nats(client.clone());
    let processor = application::Processor::new(
        infrastructure::GrpcInventory::new(&config.inventory, config.calls, config.consumer.batch)?,
        // The verdicts of one ApplyOrders batch come back together: they
        // need no linger to share a RecordOutcomes.
        infrastructure::GrpcOrders::new(
            &config.order,
            config.calls,
            platform::batch::BatchSettings {
                linger: std::time::Duration::ZERO,
                ..config.consumer.batch
            },
        )?,
        config.consumer.clone(),
        metrics.clone(),
    );
    let consumer = infrastructure::EventConsumer::new(
        client,
        config.nats.clone(),
        config.consumer.clone(),
        processor,
        metrics,
    );
    consumer.run(stop, bound).await;
    Ok(())
}

/// `migrate`: the Consumer has no database; its migration declares the
/// streams and the durable consumer.
pub async fn migrate(config: Config) -> anyhow::Result<()> {
    let client = platform::nats::connect(&config.nats, "consumer").await?;
    let js = async_nats::jetstream::new(client);
    infrastructure::bind(&js, &config.nats, &config.consumer).await?;
    Ok(())
}
