//! JetStream: stream declaration and acknowledged publishing.

use async_nats::HeaderMap;
use async_nats::jetstream;
use prost::Message;

use platform::config::NatsSettings;
use platform::nats::headers;

use crate::application::{EventStream, PendingAck, PublishError};
use crate::domain::{OutgoingEvent, Published};

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
}

impl EventStream for JetStreamPublisher {
    type Pending = JetStreamAck;

    fn created_subject(&self) -> String {
        self.settings.created_subject()
    }

    fn cancelled_subject(&self) -> String {
        self.settings.cancelled_subject()
    }

    async fn send<M: Message + Sync>(
        &self,
        event: OutgoingEvent<'_, M>,
    ) -> Result<JetStreamAck, PublishError> {
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
        Ok(JetStreamAck(ack_future))
    }
}

/// A message sent, its acknowledgement not yet awaited.
pub struct JetStreamAck(jetstream::context::PublishAckFuture);

impl PendingAck for JetStreamAck {
    async fn acknowledged(self) -> Result<Published, PublishError> {
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
