//! The Producer over gRPC: hands an outbox record's event to the stream.

use prost::Message;

use platform::grpc::TracedChannel;
use proto::events::v1::{OrderCancelled, OrderCreated};
use proto::producer::v1::producer_service_client::ProducerServiceClient;
use proto::producer::v1::{BatchEvent, PublishBatchRequest, batch_event, publish_batch_result};

use crate::application::ports::{
    EventPublisher, ORDER_CANCELLED, ORDER_CREATED, OutboxRecord, PublishError, Published,
};

#[derive(Clone)]
pub struct ProducerClient {
    client: ProducerServiceClient<TracedChannel>,
}

impl ProducerClient {
    pub fn new(channel: TracedChannel) -> Self {
        ProducerClient {
            client: ProducerServiceClient::new(channel),
        }
    }
}

impl EventPublisher for ProducerClient {
    /// Publishes the records' events in one call, each in its own span (the
    /// trace of the request that wrote it continues on the message); one
    /// answer per record, in their order. A record that cannot be read is
    /// not sent and answers unpublishable; a failed call (or one that takes
    /// longer than `deadline`) answers unavailable for every record sent.
    async fn publish_batch(
        &self,
        records: &[OutboxRecord],
        spans: &[tracing::Span],
        deadline: std::time::Duration,
    ) -> Vec<Result<Published, PublishError>> {
        let mut answers: Vec<Option<Result<Published, PublishError>>> =
            Vec::with_capacity(records.len());
        let mut events = Vec::with_capacity(records.len());
        for (record, span) in records.iter().zip(spans) {
            match batch_event(record) {
                Ok(event) => {
                    let trace_context = span.in_scope(platform::telemetry::current_context_map);
                    events.push(BatchEvent {
                        event: Some(event),
                        trace_context,
                    });
                    answers.push(None);
                }
                Err(error) => answers.push(Some(Err(error))),
            }
        }
        if events.is_empty() {
            return answers.into_iter().flatten().collect();
        }
        let sent = events.len();
        let mut client = self.client.clone();
        let call = client.publish_batch(PublishBatchRequest { events });
        let reply = match tokio::time::timeout(deadline, call).await {
            Ok(Ok(reply)) => Ok(reply.into_inner().results),
            // A refusal of the whole call (too large, say) is no verdict on
            // any one record: only an entry's own error can set one aside.
            Ok(Err(status)) => Err(PublishError::Unavailable {
                code: status.code(),
                message: status.message().to_owned(),
            }),
            Err(_) => Err(PublishError::Unavailable {
                code: tonic::Code::DeadlineExceeded,
                message: format!("no answer within {deadline:?}"),
            }),
        };
        let mut results = match reply {
            Ok(results) if results.len() == sent => results
                .into_iter()
                .map(|r| match r.result {
                    Some(publish_batch_result::Result::Published(p)) => Ok(Published {
                        sequence: p.sequence,
                        duplicate: p.duplicate,
                    }),
                    Some(publish_batch_result::Result::Error(e)) => {
                        Err(call_error(platform::grpc::from_item_error(e)))
                    }
                    None => Err(PublishError::Unavailable {
                        code: tonic::Code::Internal,
                        message: "the producer answered an empty result".into(),
                    }),
                })
                .collect::<Vec<_>>(),
            Ok(results) => {
                let message = format!(
                    "the producer answered {} results for {sent} events",
                    results.len()
                );
                (0..sent)
                    .map(|_| {
                        Err(PublishError::Unavailable {
                            code: tonic::Code::Internal,
                            message: message.clone(),
                        })
                    })
                    .collect()
            }
            Err(error) => (0..sent).map(|_| Err(error.clone())).collect(),
        }
        .into_iter();
        answers
            .into_iter()
            .map(|answer| {
                answer.unwrap_or_else(|| results.next().expect("one result per event sent"))
            })
            .collect()
    }
}

/// A record's event as an entry of a batch.
fn batch_event(record: &OutboxRecord) -> Result<batch_event::Event, PublishError> {
    let undecodable = |e: prost::DecodeError| {
        PublishError::Unpublishable(format!(
            "{} payload of record {} does not decode: {e}",
            record.event_type, record.id
        ))
    };
    match record.event_type.as_str() {
        ORDER_CREATED => Ok(batch_event::Event::Created(
            OrderCreated::decode(record.payload.as_slice()).map_err(undecodable)?,
        )),
        ORDER_CANCELLED => Ok(batch_event::Event::Cancelled(
            OrderCancelled::decode(record.payload.as_slice()).map_err(undecodable)?,
        )),
        other => Err(PublishError::Unpublishable(format!(
            "record {} has the unknown event type {other:?}",
            record.id
        ))),
    }
}

/// What a Producer's refusal means for the record. Only a refusal of the
/// record itself makes it unpublishable. Anything else is about the Producer
/// (down, slow, or another service at its address answering UNIMPLEMENTED)
/// and may pass once that is mended: the record must not be set aside for it.
fn call_error(status: tonic::Status) -> PublishError {
    if matches!(
        status.code(),
        tonic::Code::InvalidArgument | tonic::Code::OutOfRange
    ) {
        PublishError::Unpublishable(format!(
            "the producer refused it with {:?}: {}",
            status.code(),
            status.message()
        ))
    } else {
        PublishError::Unavailable {
            code: status.code(),
            message: status.message().to_owned(),
        }
    }
}
