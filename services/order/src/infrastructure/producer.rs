//! The Producer over gRPC: hands an outbox record's event to the stream.

use prost::Message;

use platform::grpc::TracedChannel;
use proto::events::v1::{OrderCancelled, OrderCreated};
use proto::producer::v1::producer_service_client::ProducerServiceClient;
use proto::producer::v1::{PublishOrderCancelledRequest, PublishOrderCreatedRequest};

use super::outbox::{ORDER_CANCELLED, ORDER_CREATED, OutboxRecord};

#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    /// The Producer or the stream could not take it now (or the Producer is
    /// misconfigured); try again later.
    #[error("the producer is unavailable ({code:?}): {message}")]
    Unavailable { code: tonic::Code, message: String },
    /// The record itself is unusable (unknown type, undecodable, refused):
    /// retrying will not help until someone looks at it.
    #[error("the record cannot be published: {0}")]
    Unpublishable(String),
}

impl PublishError {
    pub fn is_transient(&self) -> bool {
        matches!(self, PublishError::Unavailable { .. })
    }
}

/// What the stream answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Published {
    pub sequence: u64,
    pub duplicate: bool,
}

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

    /// Publishes the record's event and returns once the stream acknowledged
    /// it.
    pub async fn publish(&self, record: &OutboxRecord) -> Result<Published, PublishError> {
        let undecodable = |e: prost::DecodeError| {
            PublishError::Unpublishable(format!(
                "{} payload of record {} does not decode: {e}",
                record.event_type, record.id
            ))
        };
        let mut client = self.client.clone();
        let answer = match record.event_type.as_str() {
            ORDER_CREATED => {
                let event = OrderCreated::decode(record.payload.as_slice()).map_err(undecodable)?;
                client
                    .publish_order_created(PublishOrderCreatedRequest { event: Some(event) })
                    .await
            }
            ORDER_CANCELLED => {
                let event =
                    OrderCancelled::decode(record.payload.as_slice()).map_err(undecodable)?;
                client
                    .publish_order_cancelled(PublishOrderCancelledRequest { event: Some(event) })
                    .await
            }
            other => {
                return Err(PublishError::Unpublishable(format!(
                    "record {} has the unknown event type {other:?}",
                    record.id
                )));
            }
        };
        let reply = answer.map_err(|status| {
            // Only a refusal of the record itself makes it unpublishable.
            // Anything else is about the Producer (down, slow, or another
            // service at its address answering UNIMPLEMENTED) and may pass
            // once that is mended: the record must not be set aside for it.
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
        })?;
        let reply = reply.into_inner();
        Ok(Published {
            sequence: reply.sequence,
            duplicate: reply.duplicate,
        })
    }
}
