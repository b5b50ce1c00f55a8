//! The durable JetStream pull consumer: binds, reads with bounded
//! concurrency, hands each message to the [`Processor`] and carries out its
//! [`Disposition`].

use std::sync::Arc;
use std::time::Duration;

use async_nats::HeaderMap;
use async_nats::jetstream::{self, AckKind, consumer::PullConsumer, consumer::pull};
use futures::StreamExt;
use platform::readiness::ReadyFlag;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinSet;
use tracing::Instrument;

use platform::config::NatsSettings;
use platform::nats::headers;
use platform::shutdown::CancellationToken;

use super::dead_letter::publish_dead_letter;
use super::{GrpcInventory, GrpcOrders};
use crate::application::{Disposition, Incoming, Processor, RejectError};
use crate::config::ConsumerSettings;
use crate::domain::EventKind;
use crate::metrics::Metrics;

/// How long a stopping consumer waits for its last acks to reach NATS.
const ACK_FLUSH_WAIT: Duration = Duration::from_secs(2);

/// Why the durable consumer could not be bound (NATS down, stream missing...).
#[derive(Debug, thiserror::Error)]
pub enum BindError {
    #[error("cannot declare the streams: {0:#}")]
    Streams(anyhow::Error),
    #[error("cannot create or bind the durable consumer {name}: {error}")]
    Consumer { name: String, error: String },
}

/// Why reading stopped; the loop binds again after a pause.
#[derive(Debug, thiserror::Error)]
enum PullError {
    #[error("the pull request failed: {0}")]
    Request(String),
    #[error("the server ended the pull: {0}")]
    Batch(String),
}

/// Declares the order stream and the dead-letter stream (creating them when
/// missing) and creates, or updates, the durable consumer.
pub async fn bind(
    js: &jetstream::Context,
    nats: &NatsSettings,
    settings: &ConsumerSettings,
) -> Result<PullConsumer, BindError> {
    let stream = platform::nats::ensure_stream(js, platform::nats::order_stream_config(nats))
        .await
        .map_err(BindError::Streams)?;
    platform::nats::ensure_stream(js, platform::nats::dead_letter_stream_config(nats))
        .await
        .map_err(BindError::Streams)?;
    let config = pull::Config {
        durable_name: Some(settings.durable_name.clone()),
        description: Some("Applies order events to Inventory and Order".into()),
        deliver_policy: jetstream::consumer::DeliverPolicy::All,
        ack_policy: jetstream::consumer::AckPolicy::Explicit,
        ack_wait: settings.ack_wait,
        // Transient failures are retried forever: never let the server give up.
        max_deliver: -1,
        max_ack_pending: settings.max_ack_pending,
        ..Default::default()
    };
    match stream.create_consumer(config).await {
        Ok(consumer) => Ok(consumer),
        Err(create_error) => {
            // Another replica created it meanwhile, or its settings cannot be
            // changed in place: use it as it is.
            stream
                .get_consumer(&settings.durable_name)
                .await
                .map_err(|_| BindError::Consumer {
                    name: settings.durable_name.clone(),
                    error: create_error.to_string(),
                })
        }
    }
}

/// What every message handler shares.
pub(super) struct Shared {
    pub(super) js: jetstream::Context,
    pub(super) nats: NatsSettings,
    pub(super) settings: ConsumerSettings,
    pub(super) processor: Processor<GrpcInventory, GrpcOrders>,
    pub(super) metrics: Metrics,
}

/// The durable pull consumer: binds, reads with bounded concurrency, hands
/// each message to the [`Processor`] and carries out its [`Disposition`].
pub struct EventConsumer {
    shared: Arc<Shared>,
}

impl EventConsumer {
    pub fn new(
        client: async_nats::Client,
        nats: NatsSettings,
        settings: ConsumerSettings,
        processor: Processor<GrpcInventory, GrpcOrders>,
        metrics: Metrics,
    ) -> Self {
        EventConsumer {
            shared: Arc::new(Shared {
                js: jetstream::new(client),
                nats,
                settings,
                processor,
                metrics,
            }),
        }
    }

    /// Reads until `stop`, then finishes the messages in hand. Binds again,
    /// with capped backoff, whenever NATS fails (e.g. after a server restart).
    /// Sets `bound` while the durable consumer is bound and being read.
    pub async fn run(&self, stop: CancellationToken, bound: ReadyFlag) {
        let shared = &self.shared;
        let slots = Arc::new(Semaphore::new(shared.settings.concurrency));
        let mut tasks = JoinSet::new();
        let lag = tokio::spawn(watch_lag(shared.clone(), stop.clone()));
        let mut failures = 0u32;
        while !stop.is_cancelled() {
            match bind(&shared.js, &shared.nats, &shared.settings).await {
                Ok(consumer) => {
                    if failures > 0 {
                        tracing::info!("bound the durable consumer again");
                    }
                    failures = 0;
                    bound.set(true);
                    tracing::info!(
                        durable = %shared.settings.durable_name,
                        stream = %shared.nats.stream,
                        "reading order events"
                    );
                    match self.pull(&consumer, &slots, &mut tasks, &stop).await {
                        Ok(()) => break,
                        Err(error) => {
                            bound.set(false);
                            failures += 1;
                            tracing::warn!(%error, "reading order events failed, binding again");
                        }
                    }
                }
                Err(error) => {
                    failures += 1;
                    tracing::warn!(%error, "cannot bind the durable consumer yet");
                }
            }
            let pause = shared.settings.backoff(failures);
            tokio::select! {
                _ = tokio::time::sleep(pause) => {}
                _ = stop.cancelled() => {}
            }
        }
        tracing::info!(
            in_hand = tasks.len(),
            "stopped fetching; finishing the messages in hand"
        );
        while let Some(result) = tasks.join_next().await {
            if let Err(error) = result {
                tracing::error!(%error, "a message handler failed");
            }
        }
        // The last acks and hand-backs may still be in the client's buffer:
        // send them, then wait for one answer from the server, which reads a
        // connection's messages in order, so it has read them all before the
        // process closes the connection.
        let settled = tokio::time::timeout(ACK_FLUSH_WAIT, async {
            shared
                .js
                .client()
                .flush()
                .await
                .map_err(|e| e.to_string())?;
            shared
                .js
                .query_account()
                .await
                .map(|_| ())
                .map_err(|e| e.to_string())
        })
        .await;
        match settled {
            Ok(Ok(())) => {}
            Ok(Err(error)) => tracing::warn!(
                %error,
                "could not settle the last acks; those events come back as replays"
            ),
            Err(_) => tracing::warn!(
                "settling the last acks timed out; those events come back as replays"
            ),
        }
        lag.abort();
    }

    /// Pulls batches as large as the free handler slots until `stop` or an
    /// error.
    async fn pull(
        &self,
        consumer: &PullConsumer,
        slots: &Arc<Semaphore>,
        tasks: &mut JoinSet<()>,
        stop: &CancellationToken,
    ) -> Result<(), PullError> {
        loop {
            while let Some(result) = tasks.try_join_next() {
                if let Err(error) = result {
                    tracing::error!(%error, "a message handler failed");
                }
            }
            let first = tokio::select! {
                permit = slots.clone().acquire_owned() => permit.expect("the semaphore is never closed"),
                _ = stop.cancelled() => return Ok(()),
            };
            let mut permits = vec![first];
            while let Ok(permit) = slots.clone().try_acquire_owned() {
                permits.push(permit);
            }
            let mut batch = consumer
                .batch()
                .max_messages(permits.len())
                .expires(self.shared.settings.fetch_wait)
                .messages()
                .await
                .map_err(|e| PullError::Request(e.to_string()))?;
            // The client ends a batch a few seconds after its expiry at the
            // latest, also when the server forgot the request (a restart).
            while let Some(next) = batch.next().await {
                let message = next.map_err(|e| PullError::Batch(e.to_string()))?;
                if stop.is_cancelled() {
                    // Delivered after the stop: hand it straight back so that
                    // another replica takes it without waiting for the ack wait.
                    if let Err(error) = message.ack_with(AckKind::Nak(None)).await {
                        tracing::debug!(%error, "could not hand a message back");
                    }
                    continue;
                }
                let permit = permits
                    .pop()
                    .expect("a batch brings no more messages than requested");
                let shared = self.shared.clone();
                let stop = stop.clone();
                tasks.spawn(handle_message(shared, message, stop, permit));
            }
            if stop.is_cancelled() {
                return Ok(());
            }
        }
    }
}

/// Handles one message to its end, keeping it in progress meanwhile.
async fn handle_message(
    shared: Arc<Shared>,
    message: jetstream::Message,
    stop: CancellationToken,
    _slot: OwnedSemaphorePermit,
) {
    let empty = HeaderMap::new();
    let message_headers = message.headers.as_ref().unwrap_or(&empty);
    let header = |name: &str| message_headers.get(name).map(|v| v.as_str());
    let kind = EventKind::from_subject(
        message.subject.as_str(),
        &shared.nats.created_subject(),
        &shared.nats.cancelled_subject(),
    );
    let incoming = Incoming {
        kind,
        subject: message.subject.as_str(),
        event_type: header(headers::EVENT_TYPE),
        event_version: header(headers::EVENT_VERSION),
        message_id: header(async_nats::header::NATS_MESSAGE_ID.as_ref()),
        payload: &message.payload,
    };
    let (stream_sequence, delivered) = message
        .info()
        .map(|info| (info.stream_sequence, info.delivered))
        .unwrap_or_default();
    let span = tracing::info_span!(
        "consumer.handle",
        otel.name = %format!("{} process", message.subject),
        otel.kind = "consumer",
        messaging.system = "nats",
        event = incoming.event_label(),
        order_id = incoming.order_id().map(|id| id.to_string()),
        stream_sequence,
        delivered,
    );
    platform::telemetry::set_parent_from(
        &span,
        &platform::telemetry::NatsHeadersRef(message_headers),
    );

    let work = async {
        let disposition = shared.processor.handle(&incoming, &stop).await;
        dispose(
            &shared,
            &message,
            &incoming,
            stream_sequence,
            disposition,
            &stop,
        )
        .await;
    };
    keep_in_progress(&message, shared.settings.progress_interval(), work)
        .instrument(span)
        .await;
}

/// Runs `work`, telling the server every `interval` that the message is still
/// being worked on, so that it is redelivered only if this process stopped.
async fn keep_in_progress(
    message: &jetstream::Message,
    interval: Duration,
    work: impl Future<Output = ()>,
) {
    let heartbeat = async {
        loop {
            tokio::time::sleep(interval).await;
            if let Err(error) = message.ack_with(AckKind::Progress).await {
                tracing::debug!(%error, "could not report progress");
            }
        }
    };
    tokio::select! {
        biased;
        () = work => {}
        () = heartbeat => {}
    }
}

async fn dispose(
    shared: &Shared,
    message: &jetstream::Message,
    incoming: &Incoming<'_>,
    stream_sequence: u64,
    disposition: Disposition,
    stop: &CancellationToken,
) {
    let event = incoming.event_label();
    match disposition {
        // A plain ack, not one the server confirms: its effects are recorded,
        // so an ack lost on the way comes back as a redelivery that Inventory
        // and Order answer as a replay, and a confirmed one would cost NATS a
        // reply and this process a request per event. The buffered acks are
        // flushed before the process ends (`EventConsumer::run`).
        Disposition::Ack(handled) => match message.ack().await {
            Ok(()) => {
                shared
                    .metrics
                    .count_processed(event, handled.outcome_label(), handled.replayed());
                tracing::info!(
                    outcome = handled.outcome_label(),
                    replayed = handled.replayed(),
                    "order event handled"
                );
            }
            // The effects are recorded; the redelivery will find them so.
            Err(error) => tracing::warn!(%error, "ack failed; the redelivery will be a replay"),
        },
        Disposition::Abandon => {
            tracing::info!("shutting down: handing the message back");
            if let Err(error) = message.ack_with(AckKind::Nak(None)).await {
                tracing::debug!(%error, "could not hand the message back");
            }
        }
        Disposition::Defer { reason } => {
            shared.metrics.count_deferred(event);
            tracing::warn!(%reason, "still failing transiently: handing the message back for later");
            let delay = shared.settings.retry_max;
            if let Err(error) = message.ack_with(AckKind::Nak(Some(delay))).await {
                tracing::debug!(%error, "could not hand the message back; it comes back after the ack wait");
            }
        }
        Disposition::DeadLetter {
            reason,
            reject_order,
        } => {
            tracing::error!(%reason, "dead-lettering an order event that can never be applied");
            if !publish_dead_letter(shared, message, incoming, stream_sequence, &reason, stop).await
            {
                let _ = message.ack_with(AckKind::Nak(None)).await;
                return;
            }
            shared.metrics.count_dead_letter(event);
            if let Some(order_id) = reject_order {
                let why = format!("the order event could not be processed: {reason}");
                match shared
                    .processor
                    .reject_dead_lettered(order_id, &why, stop)
                    .await
                {
                    Ok(()) => {
                        tracing::info!(%order_id, "order rejected after dead-lettering its event")
                    }
                    Err(RejectError::Stopped) => {
                        // Redelivered later: dead-lettered again (the stream
                        // drops the duplicate) and rejected then.
                        let _ = message.ack_with(AckKind::Nak(None)).await;
                        return;
                    }
                    Err(error @ RejectError::Refused(..)) => {
                        tracing::warn!(%order_id, %error, "the dead-lettered event's order was not rejected")
                    }
                }
            }
            if let Err(error) = message.double_ack_with(AckKind::Term).await {
                tracing::warn!(%error, "terminating the dead-lettered message failed; it will come back and be deduplicated in the dead-letter stream");
            }
        }
    }
}

/// Keeps the lag gauges current.
async fn watch_lag(shared: Arc<Shared>, stop: CancellationToken) {
    loop {
        tokio::select! {
            _ = tokio::time::sleep(shared.settings.lag_interval) => {}
            _ = stop.cancelled() => return,
        }
        let Ok(stream) = shared.js.get_stream_no_info(&shared.nats.stream).await else {
            continue;
        };
        match stream.consumer_info(&shared.settings.durable_name).await {
            Ok(info) => shared
                .metrics
                .set_lag(info.num_pending, info.num_ack_pending),
            Err(error) => tracing::debug!(%error, "cannot read the consumer's pending count"),
        }
    }
}
