//! The Consumer's outside world: gRPC clients of Inventory and Order, and the
//! durable JetStream pull consumer that feeds the [`Processor`].

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use async_nats::HeaderMap;
use async_nats::jetstream::{self, AckKind, consumer::PullConsumer, consumer::pull};
use futures::StreamExt;
use platform::readiness::ReadyFlag;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinSet;
use tonic::Status;
use tracing::Instrument;
use uuid::Uuid;

use platform::batch::{BatchSettings, Batcher};
use platform::config::{CallSettings, NatsSettings, ServiceAddr};
use platform::grpc::TracedChannel;
use platform::grpc::from_item_error;
use platform::nats::headers;
use platform::shutdown::CancellationToken;
use proto::inventory::v1::inventory_service_client::InventoryServiceClient;
use proto::inventory::v1::{
    ApplyOrderRequest, ApplyOrderResponse, ApplyOrdersItem, ApplyOrdersRequest, OrderLine,
    ReleaseOrderRequest, ReleaseOrderResponse, apply_orders_result,
};
use proto::order::v1::order_service_client::OrderServiceClient;
use proto::order::v1::{
    OrderOutcome, RecordOutcomeRequest, RecordOutcomesItem, RecordOutcomesRequest,
    record_outcomes_result,
};

use crate::application::{self, Disposition, Incoming, Processor, RejectError};
use crate::config::ConsumerSettings;
use crate::domain::{EventKind, Line, Verdict};
use crate::metrics::Metrics;

/// Inventory over gRPC. Concurrent ApplyOrder calls of this replica's
/// handlers are coalesced into ApplyOrders batches (one transaction in
/// Inventory for all of them); a call alone goes out as it is.
#[derive(Clone)]
pub struct GrpcInventory {
    client: InventoryServiceClient<TracedChannel>,
    apply: Batcher<ApplyOrdersItem, ApplyOrderResponse>,
}

impl GrpcInventory {
    pub fn new(
        addr: &ServiceAddr,
        calls: CallSettings,
        batching: BatchSettings,
    ) -> anyhow::Result<Self> {
        let client = InventoryServiceClient::new(platform::grpc::channel(addr, calls)?);
        let batch_client = client.clone();
        let apply = Batcher::spawn(batching, move |items: Vec<ApplyOrdersItem>| {
            let client = batch_client.clone();
            async move {
                let span = batch_span(
                    "inventory.apply_orders",
                    items.len(),
                    &items[0].trace_context,
                );
                let single = |item: ApplyOrdersItem| {
                    let mut client = client.clone();
                    async move {
                        let order = item.order.unwrap_or_default();
                        Ok(client.apply_order(order).await?.into_inner())
                    }
                };
                let many = |orders: Vec<ApplyOrdersItem>| {
                    let mut client = client.clone();
                    async move {
                        let answer = client.apply_orders(ApplyOrdersRequest { orders }).await?;
                        Ok(answer
                            .into_inner()
                            .results
                            .into_iter()
                            .map(|r| match r.result {
                                Some(apply_orders_result::Result::Applied(applied)) => Ok(applied),
                                Some(apply_orders_result::Result::Error(e)) => {
                                    Err(from_item_error(e))
                                }
                                None => {
                                    Err(Status::internal("ApplyOrders answered an empty result"))
                                }
                            })
                            .collect())
                    }
                };
                send_batch(items, span, single, many).await
            }
        });
        Ok(GrpcInventory { client, apply })
    }
}

impl application::Inventory for GrpcInventory {
    async fn apply_order(
        &self,
        order_id: Uuid,
        lines: &[Line],
    ) -> Result<ApplyOrderResponse, Status> {
        let order = ApplyOrderRequest {
            order_id: order_id.to_string(),
            items: lines
                .iter()
                .map(|line| OrderLine {
                    product_id: line.product_id.to_string(),
                    quantity: line.quantity,
                })
                .collect(),
        };
        self.apply
            .call(ApplyOrdersItem {
                order: Some(order),
                trace_context: platform::telemetry::current_context_map(),
            })
            .await
    }

    async fn release_order(&self, order_id: Uuid) -> Result<ReleaseOrderResponse, Status> {
        let mut client = self.client.clone();
        let request = ReleaseOrderRequest {
            order_id: order_id.to_string(),
        };
        Ok(client.release_order(request).await?.into_inner())
    }
}

/// Order over gRPC; concurrent RecordOutcome calls are coalesced into
/// RecordOutcomes batches like Inventory's.
#[derive(Clone)]
pub struct GrpcOrders {
    record: Batcher<RecordOutcomesItem, bool>,
}

impl GrpcOrders {
    pub fn new(
        addr: &ServiceAddr,
        calls: CallSettings,
        batching: BatchSettings,
    ) -> anyhow::Result<Self> {
        let client = OrderServiceClient::new(platform::grpc::channel(addr, calls)?);
        let record = Batcher::spawn(batching, move |items: Vec<RecordOutcomesItem>| {
            let client = client.clone();
            async move {
                let span = batch_span(
                    "order.record_outcomes",
                    items.len(),
                    &items[0].trace_context,
                );
                let single = |item: RecordOutcomesItem| {
                    let mut client = client.clone();
                    async move {
                        let outcome = item.outcome.unwrap_or_default();
                        Ok(client.record_outcome(outcome).await?.into_inner().replayed)
                    }
                };
                let many = |outcomes: Vec<RecordOutcomesItem>| {
                    let mut client = client.clone();
                    async move {
                        let answer = client
                            .record_outcomes(RecordOutcomesRequest { outcomes })
                            .await?;
                        Ok(answer
                            .into_inner()
                            .results
                            .into_iter()
                            .map(|r| match r.result {
                                Some(record_outcomes_result::Result::Replayed(replayed)) => {
                                    Ok(replayed)
                                }
                                Some(record_outcomes_result::Result::Error(e)) => {
                                    Err(from_item_error(e))
                                }
                                None => {
                                    Err(Status::internal("RecordOutcomes answered an empty result"))
                                }
                            })
                            .collect())
                    }
                };
                send_batch(items, span, single, many).await
            }
        });
        Ok(GrpcOrders { record })
    }
}

impl application::Orders for GrpcOrders {
    async fn record_outcome(&self, order_id: Uuid, verdict: &Verdict) -> Result<(), Status> {
        let (outcome, reason) = match verdict {
            Verdict::Confirmed => (OrderOutcome::Confirmed, String::new()),
            Verdict::Rejected { reason } => (OrderOutcome::Rejected, reason.clone()),
        };
        self.record
            .call(RecordOutcomesItem {
                outcome: Some(RecordOutcomeRequest {
                    order_id: order_id.to_string(),
                    outcome: outcome as i32,
                    reason,
                }),
                trace_context: platform::telemetry::current_context_map(),
            })
            .await?;
        Ok(())
    }
}

/// Sends a batch of calls: a lone call through `single`, as it is; more in
/// one call of `many`. When the receiver refuses the batch as a whole (too
/// large, say), that is no verdict on any one call: each goes alone.
async fn send_batch<Item, Answer, S, SF, M, MF>(
    items: Vec<Item>,
    span: tracing::Span,
    single: S,
    many: M,
) -> Result<Vec<Result<Answer, Status>>, Status>
where
    Item: Clone,
    S: Fn(Item) -> SF,
    SF: std::future::Future<Output = Result<Answer, Status>>,
    M: FnOnce(Vec<Item>) -> MF,
    MF: std::future::Future<Output = Result<Vec<Result<Answer, Status>>, Status>>,
{
    if items.len() == 1 {
        let item = items.into_iter().next().expect("one call");
        return single(item)
            .instrument(span)
            .await
            .map(|answer| vec![Ok(answer)]);
    }
    match many(items.clone()).instrument(span.clone()).await {
        Err(status) if !platform::grpc::is_transient(&status) => {
            let mut results = Vec::with_capacity(items.len());
            for item in items {
                results.push(single(item).instrument(span.clone()).await);
            }
            Ok(results)
        }
        answer => answer,
    }
}

/// The span of one outgoing call for a batch: a child of the first call's
/// trace (each call's own trace continues on the server, from the context
/// it carries).
fn batch_span(name: &'static str, size: usize, first: &HashMap<String, String>) -> tracing::Span {
    let span = tracing::info_span!(
        "batch",
        otel.name = name,
        otel.kind = "client",
        batch_size = size
    );
    platform::telemetry::set_parent_from(&span, first);
    span
}

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

/// Why a message could not be written to the dead-letter stream (retried).
#[derive(Debug, thiserror::Error)]
enum DeadLetterError {
    #[error("the dead-letter stream did not accept the message: {0}")]
    Rejected(String),
    #[error("no acknowledgement from the dead-letter stream: {0}")]
    NoAck(String),
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
struct Shared {
    js: jetstream::Context,
    nats: NatsSettings,
    settings: ConsumerSettings,
    processor: Processor<GrpcInventory, GrpcOrders>,
    metrics: Metrics,
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
        Disposition::Ack(handled) => match message.double_ack().await {
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

/// Writes the message, with its headers and the reason, to the dead-letter
/// subject and waits for the dead-letter stream's ack, retrying until it is
/// written or `stop`. Returns whether it was written.
async fn publish_dead_letter(
    shared: &Shared,
    message: &jetstream::Message,
    incoming: &Incoming<'_>,
    stream_sequence: u64,
    reason: &str,
    stop: &CancellationToken,
) -> bool {
    let kind = incoming.kind.map_or("unknown", EventKind::subject_suffix);
    let subject = shared.nats.dead_letter_subject(kind);
    let dead_headers = dead_letter_headers(
        message.headers.as_ref(),
        message.subject.as_str(),
        incoming.message_id,
        reason,
        (stream_sequence > 0).then(|| format!("{}.{stream_sequence}", shared.nats.stream)),
    );
    let mut retry = 0;
    loop {
        let result = async {
            shared
                .js
                .publish_with_headers(
                    subject.clone(),
                    dead_headers.clone(),
                    message.payload.clone(),
                )
                .await
                .map_err(|e| DeadLetterError::Rejected(e.to_string()))?
                .await
                .map_err(|e| DeadLetterError::NoAck(e.to_string()))
        }
        .await;
        match result {
            Ok(ack) => {
                tracing::info!(dead_letter_stream = %ack.stream, sequence = ack.sequence, duplicate = ack.duplicate, "written to the dead-letter stream");
                return true;
            }
            Err(error) => {
                retry += 1;
                tracing::warn!(%error, "cannot write to the dead-letter stream yet, will retry");
                tokio::select! {
                    _ = tokio::time::sleep(shared.settings.backoff(retry)) => {}
                    _ = stop.cancelled() => return false,
                }
            }
        }
    }
}

/// The original headers (without the server's `Nats-*` controls) plus the
/// reason, the original subject and message id. `dedup_id` (the original's
/// stream and sequence) makes a repeated dead-lettering of the same message,
/// after a crash before its termination, a duplicate the stream drops.
fn dead_letter_headers(
    original: Option<&HeaderMap>,
    subject: &str,
    message_id: Option<&str>,
    reason: &str,
    dedup_id: Option<String>,
) -> HeaderMap {
    let mut out = HeaderMap::new();
    if let Some(original) = original {
        for (name, values) in original.iter() {
            let key: &str = name.as_ref();
            if key.to_ascii_lowercase().starts_with("nats-") {
                continue;
            }
            for value in values {
                out.append(name.clone(), value.clone());
            }
        }
    }
    out.insert(headers::DEAD_LETTER_REASON, header_safe(reason).as_str());
    out.insert(headers::ORIGINAL_SUBJECT, subject);
    if let Some(id) = message_id {
        out.insert(headers::ORIGINAL_MSG_ID, id);
    }
    if let Some(id) = dedup_id {
        out.insert(
            async_nats::header::NATS_MESSAGE_ID,
            format!("dead-letter.{id}").as_str(),
        );
    }
    out
}

/// A header value must be one line of printable text; keep it short.
fn header_safe(text: &str) -> String {
    const MAX: usize = 1000;
    let mut out: String = text
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    if out.len() > MAX {
        let mut end = MAX;
        while !out.is_char_boundary(end) {
            end -= 1;
        }
        out.truncate(end);
    }
    out
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dead_letter_headers_keep_the_original_and_say_why() {
        let mut original = HeaderMap::new();
        original.insert("Nats-Msg-Id", "abc.order.created");
        original.insert("Event-Type", "order.created");
        original.insert(
            "traceparent",
            "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
        );
        let headers = dead_letter_headers(
            Some(&original),
            "order.created",
            Some("abc.order.created"),
            "bad\r\npayload",
            Some("S.7".into()),
        );
        let get = |name: &str| headers.get(name).map(|v| v.as_str().to_owned());
        assert_eq!(get("Event-Type").as_deref(), Some("order.created"));
        assert!(get("traceparent").is_some());
        assert_eq!(get("Dead-Letter-Reason").as_deref(), Some("bad  payload"));
        assert_eq!(get("Original-Subject").as_deref(), Some("order.created"));
        assert_eq!(get("Original-Msg-Id").as_deref(), Some("abc.order.created"));
        assert_eq!(get("Nats-Msg-Id").as_deref(), Some("dead-letter.S.7"));
    }

    #[test]
    fn long_reasons_are_cut_on_a_character_boundary() {
        let reason = "é".repeat(800);
        let safe = header_safe(&reason);
        assert!(safe.len() <= 1000);
        assert!(safe.chars().all(|c| c == 'é'));
    }
}
