//! NATS and JetStream: connecting with a bounded wait, and declaring the order
//! event stream and its dead-letter stream the same way everywhere.

use std::time::Duration;

use async_nats::jetstream::{self, stream};

use crate::config::NatsSettings;

/// Connects, retrying for up to `NATS_CONNECT_WAIT_MS` (default 30 s). Once
/// connected the client reconnects by itself, forever, after a server restart.
pub async fn connect(settings: &NatsSettings, name: &str) -> anyhow::Result<async_nats::Client> {
    let wait = crate::settings::Env::process().millis(&crate::settings::NATS_CONNECT_WAIT_MS)?;
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

/// How long dead letters are kept, and how much of them, by default; when
/// the stream is full the oldest go (a full dead-letter stream must never
/// stop the Consumer). Operators may change these on the stream: an existing
/// stream's limits are left as they are.
pub const DEAD_LETTER_MAX_AGE: Duration = Duration::from_secs(30 * 24 * 3600);
pub const DEAD_LETTER_MAX_BYTES: i64 = 1 << 30;
pub const DEAD_LETTER_MAX_MESSAGES: i64 = 1_000_000;

/// The dead-letter stream: file storage, bounded by age, size and count.
pub fn dead_letter_stream_config(settings: &NatsSettings) -> stream::Config {
    stream::Config {
        name: settings.dead_letter_stream.clone(),
        subjects: vec![settings.dead_letter_subjects()],
        storage: stream::StorageType::File,
        retention: stream::RetentionPolicy::Limits,
        discard: stream::DiscardPolicy::Old,
        max_age: DEAD_LETTER_MAX_AGE,
        max_bytes: DEAD_LETTER_MAX_BYTES,
        max_messages: DEAD_LETTER_MAX_MESSAGES,
        ..Default::default()
    }
}

/// Creates the stream as `config` says when it is missing. An existing stream
/// keeps its operators' settings (replicas, limits, placement): only what the
/// code depends on is checked, and subjects it lacks are added. A retention
/// or storage other than the code's is an error that says what to change
/// (neither can be changed in place).
pub async fn ensure_stream(
    js: &jetstream::Context,
    config: stream::Config,
) -> anyhow::Result<stream::Stream> {
    let name = config.name.clone();
    let mut stream = match js.get_stream(&name).await {
        Ok(stream) => stream,
        Err(_) => match js.create_stream(config.clone()).await {
            Ok(stream) => return Ok(stream),
            // A replica created it meanwhile: fine if it is there now.
            Err(e) => js
                .get_stream(&name)
                .await
                .map_err(|_| anyhow::anyhow!("cannot create stream {name}: {e}"))?,
        },
    };
    let existing = stream
        .info()
        .await
        .map_err(|e| anyhow::anyhow!("cannot read stream {name}: {e}"))?
        .config
        .clone();
    if existing.retention != config.retention {
        anyhow::bail!(
            "stream {name} has retention {:?}, the platform needs {:?}: recreate it (or point NATS_STREAM/NATS_DLQ_STREAM at another name)",
            existing.retention,
            config.retention
        );
    }
    if existing.storage != config.storage {
        anyhow::bail!(
            "stream {name} has storage {:?}, the platform needs {:?}: recreate it (or point NATS_STREAM/NATS_DLQ_STREAM at another name)",
            existing.storage,
            config.storage
        );
    }
    let missing: Vec<String> = config
        .subjects
        .iter()
        .filter(|s| !existing.subjects.contains(s))
        .cloned()
        .collect();
    if missing.is_empty() {
        return Ok(stream);
    }
    tracing::info!(stream = %name, subjects = ?missing, "adding subjects to the stream");
    let mut updated = existing;
    updated.subjects.extend(missing);
    js.update_stream(updated)
        .await
        .map_err(|e| anyhow::anyhow!("cannot add subjects to stream {name}: {e}"))?;
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

/// A client that connects in the background and keeps reconnecting, for a
/// service that works without NATS and only does better with it (announcing
/// or hearing product changes): start-up never waits for it. `on_event`
/// hears every connection event (connected, disconnected, ...).
pub async fn connect_in_background<F>(
    settings: &NatsSettings,
    name: &str,
    on_event: F,
) -> anyhow::Result<async_nats::Client>
where
    F: Fn(&async_nats::Event) + Send + Sync + 'static,
{
    let on_event = std::sync::Arc::new(on_event);
    async_nats::ConnectOptions::new()
        .name(name)
        .connection_timeout(Duration::from_secs(3))
        .max_reconnects(None)
        .retry_on_initial_connect()
        .event_callback(move |event| {
            let on_event = on_event.clone();
            async move {
                tracing::info!(%event, "NATS connection event");
                on_event(&event);
            }
        })
        .connect(settings.addr.as_str())
        .await
        .map_err(|e| anyhow::anyhow!("bad NATS address {}: {e}", settings.addr))
}

/// The JetStream message id of an order event: `<order id>.<event>`, so that a
/// repeated publish is deduplicated but a cancel is never taken for a creation.
pub fn message_id(order_id: &str, event: &str) -> String {
    format!("{order_id}.{event}")
}
