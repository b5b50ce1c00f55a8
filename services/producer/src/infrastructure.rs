//! JetStream: stream declaration and acknowledged publishing.

use async_nats::HeaderMap;
use async_nats::jetstream;
use prost::Message;

use platform::config::NatsSettings;
use platform::nats::headers;

/// Declares the order event stream and its dead-letter stream.
pub async fn ensure_streams(
    client: &async_nats::Client,
    settings: &NatsSettings,
) -> anyhow::Result<()> {
    let js = jetstream::new(client.clone());
    platform::nats::ensure_stream(&js, platform::nats::order_stream_config(settings)).await?;
    platform::nats::ensure_stream(&js, platform::nats::dead_letter_stream_config(settings)).await?;
    Ok(())
}

/// Why a publish failed. Every variant is worth retrying: the event is valid,
/// the stream was just not able to take it now.
#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    #[error("the stream did not accept the message: {0}")]
    Rejected(String),
    #[error("no acknowledgement from the stream: {0}")]
    NoAck(String),
}

/// What the stream answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Published {
    pub stream: String,
    pub sequence: u64,
    pub duplicate: bool,
}

/// An order event ready to go on the wire.
pub struct OutgoingEvent<'a, M: Message> {
    pub order_id: &'a str,
    /// `created` or `cancelled`.
    pub kind: &'static str,
    pub subject: String,
    pub payload: &'a M,
}

#[derive(Clone)]
pub struct JetStreamPublisher {
    js: jetstream::Context,
    settings: NatsSettings,
}

impl JetStreamPublisher {
    pub fn new(client: async_nats::Client, settings: NatsSettings) -> Self {
        JetStreamPublisher {
            js: jetstream::new(client),
            settings,
        }
    }

    pub fn settings(&self) -> &NatsSettings {
        &self.settings
    }

    /// Publishes and waits for the stream's acknowledgement.
    pub async fn publish<M: Message>(
        &self,
        event: OutgoingEvent<'_, M>,
    ) -> Result<Published, PublishError> {
        self.send(event).await?.acknowledged().await
    }

    /// Sends the message and returns at once; the acknowledgement is awaited
    /// from the returned future, so many messages can be in flight together.
    pub async fn send<M: Message>(
        &self,
        event: OutgoingEvent<'_, M>,
    ) -> Result<PendingAck, PublishError> {
        let mut map = HeaderMap::new();
        let event_type = format!("order.{}", event.kind);
        map.insert(
            async_nats::header::NATS_MESSAGE_ID,
            platform::nats::message_id(event.order_id, &event_type).as_str(),
        );
        map.insert(headers::EVENT_TYPE, event_type.as_str());
        map.insert(headers::EVENT_VERSION, "1");
        map.insert(headers::CONTENT_TYPE, headers::PROTOBUF);
        platform::telemetry::inject_current(&mut platform::telemetry::NatsHeaders(&mut map));

        let ack_future = self
            .js
            .publish_with_headers(event.subject, map, event.payload.encode_to_vec().into())
            .await
            .map_err(|e| PublishError::Rejected(e.to_string()))?;
        Ok(PendingAck(ack_future))
    }
}

/// A message sent, its acknowledgement not yet awaited.
pub struct PendingAck(jetstream::context::PublishAckFuture);

impl PendingAck {
    pub async fn acknowledged(self) -> Result<Published, PublishError> {
        let ack = self
            .0
            .await
            .map_err(|e| PublishError::NoAck(e.to_string()))?;
        Ok(Published {
            stream: ack.stream,
            sequence: ack.sequence,
            duplicate: ack.duplicate,
        })
    }
}
