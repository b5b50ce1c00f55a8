//! NATS and JetStream: connecting with a bounded wait, and declaring the order
//! event stream and its dead-letter stream the same way everywhere.

use std::time::Duration;

use async_nats::jetstream::{self, stream};

use crate::config::NatsSettings;

/// Connects, retrying for up to `NATS_CONNECT_WAIT_MS` (default 30 s). Once
/// connected the client reconnects by itself, forever, after a server restart.
pub async fn connect(settings: &NatsSettings, name: &str) -> anyhow::Result<async_nats::Client> {
    let wait = crate::config::millis_or("NATS_CONNECT_WAIT_MS", Duration::from_secs(30))?;
    let deadline = tokio::time::Instant::now() + wait;
    let mut delay = Duration::from_millis(100);
    loop {
        let options = async_nats::ConnectOptions::new()
            .name(name)
            .connection_timeout(Duration::from_secs(3))
            .max_reconnects(None)
            .event_callback(|event| async move {
                tracing::info!(%event, "NATS connection event");
            });
        match options.connect(settings.addr.as_str()).await {
            Ok(client) => return Ok(client),
            Err(e) if tokio::time::Instant::now() + delay < deadline => {
                tracing::warn!(error = %e, addr = %settings.addr, "NATS not reachable yet, retrying");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(2));
            }
            Err(e) => {
                return Err(anyhow::anyhow!(
                    "cannot connect to NATS at {}: {e}",
                    settings.addr
                ));
            }
        }
    }
}

/// The order event stream: file storage, work-queue retention (a message goes
/// only once acknowledged) and discard-new (when full, publishing fails and
/// the outbox keeps the event), so nothing unread is ever thrown away.
pub fn order_stream_config(settings: &NatsSettings) -> stream::Config {
    stream::Config {
        name: settings.stream.clone(),
        subjects: vec![settings.created_subject(), settings.cancelled_subject()],
        storage: stream::StorageType::File,
        retention: stream::RetentionPolicy::WorkQueue,
        discard: stream::DiscardPolicy::New,
        duplicate_window: Duration::from_secs(120),
        ..Default::default()
    }
}

/// The dead-letter stream: file storage, kept until someone deals with it.
pub fn dead_letter_stream_config(settings: &NatsSettings) -> stream::Config {
    stream::Config {
        name: settings.dead_letter_stream.clone(),
        subjects: vec![settings.dead_letter_subjects()],
        storage: stream::StorageType::File,
        retention: stream::RetentionPolicy::Limits,
        discard: stream::DiscardPolicy::New,
        ..Default::default()
    }
}

/// Creates the stream, or updates an existing one to `config`.
pub async fn ensure_stream(
    js: &jetstream::Context,
    config: stream::Config,
) -> anyhow::Result<stream::Stream> {
    let name = config.name.clone();
    match js.get_stream(&name).await {
        Ok(_) => {
            js.update_stream(config)
                .await
                .map_err(|e| anyhow::anyhow!("cannot update stream {name}: {e}"))?;
        }
        Err(_) => {
            if let Err(e) = js.create_stream(config.clone()).await {
                // A replica created it meanwhile: fine if it is there now.
                js.get_stream(&name)
                    .await
                    .map_err(|_| anyhow::anyhow!("cannot create stream {name}: {e}"))?;
            }
        }
    }
    js.get_stream(&name)
        .await
        .map_err(|e| anyhow::anyhow!("cannot read stream {name}: {e}"))
}

/// Header names of order event messages.
pub mod headers {
    pub const EVENT_TYPE: &str = "Event-Type";
    pub const EVENT_VERSION: &str = "Event-Version";
    pub const CONTENT_TYPE: &str = "Content-Type";
    pub const PROTOBUF: &str = "application/protobuf";
    /// Set on dead-letter messages.
    pub const DEAD_LETTER_REASON: &str = "Dead-Letter-Reason";
    pub const ORIGINAL_SUBJECT: &str = "Original-Subject";
    pub const ORIGINAL_MSG_ID: &str = "Original-Msg-Id";
}

/// The JetStream message id of an order event: `<order id>.<event>`, so that a
/// repeated publish is deduplicated but a cancel is never taken for a creation.
pub fn message_id(order_id: &str, event: &str) -> String {
    format!("{order_id}.{event}")
}
