//! The outbox relay: hands unsent outbox records to the Producer, oldest
//! first, and marks each sent only after the Producer confirmed the stream
//! has it.
//!
//! Each pass locks a batch with `FOR UPDATE SKIP LOCKED` inside one
//! transaction, so several Order replicas share the work without two of them
//! sending one record at the same time; a relay that dies mid-pass loses its
//! connection, its transaction rolls back and its records are free again (a
//! record published but not yet marked sent is published again, and the
//! stream drops the repeat by its message id). Failures are retried forever
//! with capped exponential backoff. A record the Producer can never take
//! (undecodable, unknown type, refused for what it is) is set aside
//! (`failed_at`, with its error), left unsent for someone to look at, and
//! never again taken ahead of the records behind it.

use std::collections::HashMap;
use std::sync::{Arc, OnceLock};

use backon::{BackoffBuilder, ExponentialBuilder};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use sea_orm::{DatabaseConnection, DbErr, TransactionTrait};
use tokio::sync::Notify;
use tracing::Instrument;

use platform::shutdown::CancellationToken;

use crate::config::RelaySettings;
use crate::infrastructure::outbox::{self, OutboxRecord};
use crate::infrastructure::producer::{ProducerClient, PublishError, Published};

/// Crash-test fault point: the Producer confirmed, the record is not yet
/// marked sent.
pub const FAULT_AFTER_PUBLISH: &str = "order.relay.after_publish";

/// Wakes the relay when a transaction wrote outbox records, so they go out
/// at once rather than at the next poll. A no-op when the relay is disabled.
#[derive(Clone, Default)]
pub struct RelayWakeup(Option<Arc<Notify>>);

impl RelayWakeup {
    pub fn wake(&self) {
        if let Some(notify) = &self.0 {
            // Stores a permit when the relay is busy: the wake-up is not lost.
            notify.notify_one();
        }
    }
}

struct RelayMetrics {
    backlog: Gauge,
    relayed: Counter,
    errors: Counter,
}

/// Registered once per process, however many relays it runs (tests run
/// several services in one process).
fn metrics() -> &'static RelayMetrics {
    static METRICS: OnceLock<RelayMetrics> = OnceLock::new();
    METRICS.get_or_init(|| {
        let metrics = RelayMetrics {
            backlog: Gauge::default(),
            relayed: Counter::default(),
            errors: Counter::default(),
        };
        platform::metrics::register(
            "order_outbox_backlog",
            "Outbox records not yet handed to the Producer",
            metrics.backlog.clone(),
        );
        platform::metrics::register(
            "order_outbox_relayed",
            "Outbox records the Producer confirmed and the relay marked sent",
            metrics.relayed.clone(),
        );
        platform::metrics::register(
            "order_outbox_relay_errors",
            "Failed relay attempts (Producer or database unavailable, unpublishable records)",
            metrics.errors.clone(),
        );
        metrics
    })
}

/// What one pass over a batch did.
struct Pass {
    picked: usize,
    failure: Option<PublishError>,
}

pub struct OutboxRelay {
    db: DatabaseConnection,
    producer: ProducerClient,
    settings: RelaySettings,
    notify: Arc<Notify>,
}

impl OutboxRelay {
    pub fn new(db: DatabaseConnection, producer: ProducerClient, settings: RelaySettings) -> Self {
        metrics();
        OutboxRelay {
            db,
            producer,
            settings,
            notify: Arc::new(Notify::new()),
        }
    }

    pub fn wakeup(&self) -> RelayWakeup {
        RelayWakeup(Some(self.notify.clone()))
    }

    fn backoff(&self) -> impl Iterator<Item = std::time::Duration> {
        ExponentialBuilder::default()
            .with_min_delay(self.settings.retry_min)
            .with_max_delay(self.settings.retry_max)
            .with_jitter()
            .without_max_times()
            .build()
    }

    /// Relays until `stop` is cancelled; a pass in progress finishes first
    /// (each Producer call has a deadline).
    pub async fn run(self, stop: CancellationToken) {
        tracing::info!(
            poll_interval_ms = self.settings.poll_interval.as_millis() as u64,
            batch_size = self.settings.batch_size,
            "outbox relay started"
        );
        let mut backoff = self.backoff();
        while !stop.is_cancelled() {
            let pass = self.pass(&stop).await;
            self.refresh_backlog().await;
            let retry_in = match pass {
                Ok(Pass {
                    picked,
                    failure: None,
                }) => {
                    backoff = self.backoff();
                    if picked as u64 == self.settings.batch_size {
                        // There may be more waiting right now.
                        continue;
                    }
                    None
                }
                Ok(Pass {
                    failure: Some(error),
                    ..
                }) => {
                    tracing::warn!(%error, "outbox relay could not publish, retrying");
                    backoff.next()
                }
                Err(error) => {
                    metrics().errors.inc();
                    tracing::warn!(%error, "outbox relay cannot reach the database, retrying");
                    backoff.next()
                }
            };
            match retry_in {
                Some(delay) => tokio::select! {
                    _ = stop.cancelled() => break,
                    _ = tokio::time::sleep(delay) => {}
                },
                None => tokio::select! {
                    _ = stop.cancelled() => break,
                    _ = self.notify.notified() => {}
                    _ = tokio::time::sleep(self.settings.poll_interval) => {}
                },
            }
        }
        tracing::info!("outbox relay stopped");
    }

    /// Publishes one locked batch and commits what it marked. Stops at the
    /// first transient failure (the Producer is down: the rest would fail the
    /// same way, and it keeps the records in order); a record that can never
    /// be published is set aside and the pass goes on.
    async fn pass(&self, stop: &CancellationToken) -> Result<Pass, DbErr> {
        let txn = self.db.begin().await?;
        let records = outbox::lock_unsent(&txn, self.settings.batch_size).await?;
        let mut pass = Pass {
            picked: records.len(),
            failure: None,
        };
        let mut sent = 0;
        for record in &records {
            if stop.is_cancelled() {
                break;
            }
            match self.publish(record).await {
                Ok(published) => {
                    platform::fault::point(FAULT_AFTER_PUBLISH);
                    outbox::mark_sent(&txn, record.id).await?;
                    sent += 1;
                    tracing::debug!(
                        outbox_id = record.id,
                        order_id = %record.order_id,
                        event_type = %record.event_type,
                        sequence = published.sequence,
                        duplicate = published.duplicate,
                        "outbox record relayed"
                    );
                }
                Err(error) if error.is_transient() => {
                    metrics().errors.inc();
                    outbox::record_failure(&txn, record.id, &error.to_string()).await?;
                    pass.failure = Some(error);
                    break;
                }
                Err(error) => {
                    // Retrying will not help: set it aside (unsent, with the
                    // reason) so that it never holds up the records behind it.
                    metrics().errors.inc();
                    tracing::error!(outbox_id = record.id, order_id = %record.order_id, %error,
                        "outbox record cannot be published; set aside for someone to look at");
                    outbox::set_aside(&txn, record.id, &error.to_string()).await?;
                }
            }
        }
        txn.commit().await?;
        metrics().relayed.inc_by(sent);
        Ok(pass)
    }

    /// Publishes in a span that continues the trace of the request that
    /// wrote the record.
    async fn publish(&self, record: &OutboxRecord) -> Result<Published, PublishError> {
        let span = tracing::info_span!(
            "outbox.relay",
            otel.kind = "producer",
            outbox_id = record.id,
            order_id = %record.order_id,
            event_type = %record.event_type,
            attempt = record.attempts + 1,
        );
        let carrier: HashMap<String, String> =
            serde_json::from_value(record.trace_context.clone()).unwrap_or_default();
        platform::telemetry::set_parent_from(&span, &carrier);
        self.producer.publish(record).instrument(span).await
    }

    async fn refresh_backlog(&self) {
        if let Ok(unsent) = outbox::backlog(&self.db).await {
            metrics().backlog.set(unsent as i64);
        }
    }
}
