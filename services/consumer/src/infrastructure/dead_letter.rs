//! The dead-letter stream: where a message that can never be handled is
//! written, with why, before the original is terminated.

use async_nats::HeaderMap;
use async_nats::jetstream::{self};

use platform::nats::headers;
use platform::shutdown::CancellationToken;

use crate::application::Incoming;
use crate::domain::EventKind;

use super::jetstream::Shared;

/// Why a message could not be written to the dead-letter stream (retried).
#[derive(Debug, thiserror::Error)]
enum DeadLetterError {
    #[error("the dead-letter stream did not accept the message: {0}")]
    Rejected(String),
    #[error("no acknowledgement from the dead-letter stream: {0}")]
    NoAck(String),
}

/// Writes the message, with its headers and the reason, to the dead-letter
/// subject and waits for the dead-letter stream's ack, retrying until it is
/// written or `stop`. Returns whether it was written.
pub(super) async fn publish_dead_letter(
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
