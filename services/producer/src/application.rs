//! The Producer's use cases: check an event, publish it, answer once the
//! stream acknowledged it; a batch is sent whole, then every acknowledgement
//! awaited together.

use std::collections::HashMap;
use std::future::Future;

use prost::Message;
use proto::events::v1::{OrderCancelled, OrderCreated};
use tracing::Instrument;

use crate::domain::{self, InvalidEvent, OutgoingEvent, Published};
use crate::metrics::Metrics;

/// Why a publish failed. Every variant is worth retrying: the event is valid,
/// the stream was just not able to take it now.
#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    #[error("the stream did not accept the message: {0}")]
    Rejected(String),
    #[error("no acknowledgement from the stream: {0}")]
    NoAck(String),
}

#[derive(Debug, thiserror::Error)]
pub enum ProducerError {
    #[error(transparent)]
    Invalid(#[from] InvalidEvent),
    #[error(transparent)]
    Publish(#[from] PublishError),
}

/// The event stream (JetStream in `infrastructure::jetstream`).
pub trait EventStream: Send + Sync + 'static {
    /// A message sent, its acknowledgement not yet awaited.
    type Pending: PendingAck;

    /// The subjects of the two events.
    fn created_subject(&self) -> String;
    fn cancelled_subject(&self) -> String;

    /// Sends the message and returns at once; the acknowledgement is awaited
    /// from what it returns, so many messages can be in flight together.
    fn send<M: Message + Sync>(
        &self,
        event: OutgoingEvent<'_, M>,
    ) -> impl Future<Output = Result<Self::Pending, PublishError>> + Send;
}

pub trait PendingAck: Send {
    fn acknowledged(self) -> impl Future<Output = Result<Published, PublishError>> + Send;
}

/// One event of a batch, with the trace context it carries.
pub enum BatchEvent {
    Created(OrderCreated),
    Cancelled(OrderCancelled),
}

pub struct Producer<S> {
    stream: S,
    metrics: Metrics,
}

impl<S: EventStream> Producer<S> {
    pub fn new(stream: S, metrics: Metrics) -> Self {
        Producer { stream, metrics }
    }

    pub async fn publish_created(&self, event: &OrderCreated) -> Result<Published, ProducerError> {
        domain::check_created(event)?;
        let published = self
            .stream
            .send(self.created(event))
            .await?
            .acknowledged()
            .await?;
        self.count("order.created", &published);
        Ok(published)
    }

    pub async fn publish_cancelled(
        &self,
        event: &OrderCancelled,
    ) -> Result<Published, ProducerError> {
        domain::check_cancelled(event)?;
        let published = self
            .stream
            .send(self.cancelled(event))
            .await?
            .acknowledged()
            .await?;
        self.count("order.cancelled", &published);
        Ok(published)
    }

    /// Every valid event is sent first, then every acknowledgement is awaited
    /// at once: one round trip to the stream for the whole batch, and a
    /// stream that stops answering costs one timeout, not one per event. Each
    /// event is published in a span of its own trace (`trace_context`).
    pub async fn publish_batch(
        &self,
        events: Vec<(Option<BatchEvent>, HashMap<String, String>)>,
    ) -> Vec<Result<Published, ProducerError>> {
        let mut pending = Vec::with_capacity(events.len());
        for (event, trace_context) in events {
            let span = tracing::info_span!(
                "producer.publish",
                otel.kind = "producer",
                order_id = tracing::field::Empty
            );
            platform::telemetry::set_parent_from(&span, &trace_context);
            let sent = match &event {
                Some(BatchEvent::Created(created)) => match domain::check_created(created) {
                    Ok(()) => {
                        span.record("order_id", created.order_id.as_str());
                        let sent = self.stream.send(self.created(created));
                        Ok(("order.created", sent.instrument(span.clone()).await))
                    }
                    Err(invalid) => Err(ProducerError::from(invalid)),
                },
                Some(BatchEvent::Cancelled(cancelled)) => {
                    match domain::check_cancelled(cancelled) {
                        Ok(()) => {
                            span.record("order_id", cancelled.order_id.as_str());
                            let sent = self.stream.send(self.cancelled(cancelled));
                            Ok(("order.cancelled", sent.instrument(span.clone()).await))
                        }
                        Err(invalid) => Err(ProducerError::from(invalid)),
                    }
                }
                None => Err(InvalidEvent::new("event", "is required").into()),
            };
            pending.push(sent);
        }
        let answers = futures::future::join_all(pending.into_iter().map(|sent| async move {
            match sent {
                Err(error) => Err(error),
                Ok((_, Err(error))) => Err(error.into()),
                Ok((event, Ok(ack))) => match ack.acknowledged().await {
                    Ok(published) => Ok((event, published)),
                    Err(error) => Err(error.into()),
                },
            }
        }))
        .await;
        answers
            .into_iter()
            .map(|answer| {
                answer.map(|(event, published)| {
                    self.count(event, &published);
                    published
                })
            })
            .collect()
    }

    fn created<'a>(&self, event: &'a OrderCreated) -> OutgoingEvent<'a, OrderCreated> {
        OutgoingEvent {
            order_id: &event.order_id,
            kind: "created",
            subject: self.stream.created_subject(),
            payload: event,
        }
    }

    fn cancelled<'a>(&self, event: &'a OrderCancelled) -> OutgoingEvent<'a, OrderCancelled> {
        OutgoingEvent {
            order_id: &event.order_id,
            kind: "cancelled",
            subject: self.stream.cancelled_subject(),
            payload: event,
        }
    }

    fn count(&self, event: &'static str, published: &Published) {
        let duplicate = if published.duplicate { "true" } else { "false" };
        self.metrics
            .published
            .get_or_create(&vec![("event", event), ("duplicate", duplicate)])
            .inc();
    }
}
