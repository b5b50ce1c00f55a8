//! Declaring the streams at start-up creates what is missing and leaves an
//! operator's settings on an existing stream alone.

use std::time::Duration;

use platform::nats::{dead_letter_stream_config, ensure_stream, order_stream_config};
use testkit::TestNats;

#[tokio::test]
async fn an_existing_stream_keeps_its_operators_settings() {
    let nats = TestNats::new();
    let js = nats.jetstream().await;
    let settings = nats.settings();

    let mut created = ensure_stream(&js, order_stream_config(&settings))
        .await
        .unwrap();
    let info = created.info().await.unwrap().config.clone();
    assert_eq!(info.duplicate_window, Duration::from_secs(120));

    // An operator tunes the stream...
    let mut tuned = info.clone();
    tuned.max_age = Duration::from_secs(7 * 24 * 3600);
    tuned.max_bytes = 512 * 1024 * 1024;
    tuned.description = Some("tuned by ops".into());
    js.update_stream(tuned).await.unwrap();

    // ...and a restart of the services does not undo it.
    let mut again = ensure_stream(&js, order_stream_config(&settings))
        .await
        .unwrap();
    let kept = again.info().await.unwrap().config.clone();
    assert_eq!(kept.max_age, Duration::from_secs(7 * 24 * 3600));
    assert_eq!(kept.max_bytes, 512 * 1024 * 1024);
    assert_eq!(kept.description.as_deref(), Some("tuned by ops"));

    // A subject the code needs and the stream lacks is added, nothing else.
    let mut narrowed = kept.clone();
    narrowed.subjects = vec![settings.created_subject()];
    js.update_stream(narrowed).await.unwrap();
    let mut mended = ensure_stream(&js, order_stream_config(&settings))
        .await
        .unwrap();
    let mended = mended.info().await.unwrap().config.clone();
    assert!(mended.subjects.contains(&settings.cancelled_subject()));
    assert_eq!(mended.max_age, Duration::from_secs(7 * 24 * 3600));

    js.delete_stream(&settings.stream).await.unwrap();
}

#[tokio::test]
async fn a_stream_of_another_retention_is_refused_with_what_to_change() {
    let nats = TestNats::new();
    let js = nats.jetstream().await;
    let settings = nats.settings();
    let mut wrong = order_stream_config(&settings);
    wrong.retention = async_nats::jetstream::stream::RetentionPolicy::Limits;
    js.create_stream(wrong).await.unwrap();

    let err = ensure_stream(&js, order_stream_config(&settings))
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("retention"), "{err}");
    assert!(err.contains(&settings.stream), "{err}");
    js.delete_stream(&settings.stream).await.unwrap();
}

#[tokio::test]
async fn the_dead_letter_stream_is_bounded_and_drops_the_oldest() {
    let nats = TestNats::new();
    let js = nats.jetstream().await;
    let settings = nats.settings();
    let mut dlq = ensure_stream(&js, dead_letter_stream_config(&settings))
        .await
        .unwrap();
    let config = dlq.info().await.unwrap().config.clone();
    assert_eq!(config.max_age, platform::nats::DEAD_LETTER_MAX_AGE);
    assert_eq!(config.max_bytes, platform::nats::DEAD_LETTER_MAX_BYTES);
    assert_eq!(
        config.max_messages,
        platform::nats::DEAD_LETTER_MAX_MESSAGES
    );
    assert_eq!(
        config.discard,
        async_nats::jetstream::stream::DiscardPolicy::Old
    );
    js.delete_stream(&settings.dead_letter_stream)
        .await
        .unwrap();
}
