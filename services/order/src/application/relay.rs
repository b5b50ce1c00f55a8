//! The outbox relay: hands unsent outbox records to the Producer, oldest
//! first, and marks each sent only after the Producer confirmed the stream
//! has it.
//!
//! Each pass claims a batch for a lease (`claimed_until`) in one statement
//! that commits at once (`FOR UPDATE SKIP LOCKED` inside it), so several
//! Order replicas share the work without two of them sending one record at
//! the same time, and no row lock is held while the Producer is called. A
//! pass starts no Producer call that could outlast its lease; a relay that
//! dies mid-pass leaves its claims to run out, and the records are published
//! again by whichever relay comes next (a record published but not yet
//! marked sent goes out a second time within the lease, well inside the
//! stream's duplicate window, and the stream drops the repeat by its message
//! id). Failures are retried forever with capped exponential backoff. A
//! record the Producer can never take (undecodable, unknown type, refused for
//! what it is) is set aside (`failed_at`, with its error), left unsent for
//! someone to look at, and never again taken ahead of the records behind it;
//! the sweeper rejects its order. Sent records are deleted after
//! `OUTBOX_RETENTION_SECONDS`.

use std::collections::HashMap;
use std::sync::Arc;

use backon::{BackoffBuilder, ExponentialBuilder};
use sea_orm::DbErr;
use tokio::sync::Notify;

use platform::shutdown::CancellationToken;

use super::ports::{EventPublisher, OutboxRecord, OutboxRepository, PublishError};
use crate::config::RelaySettings;
use crate::metrics::Metrics;

/// Crash-test fault point: the Producer confirmed, the record is not yet
/// marked sent.
pub const FAULT_AFTER_PUBLISH: &str = "order.relay.after_publish";

/// How often sent records past their retention are looked for.
const PRUNE_INTERVAL: std::time::Duration = std::time::Duration::from_secs(60);
/// How often the backlog gauge is counted at most: a pass per order at a
/// low rate need not cost a COUNT per order, and a scrape is seconds apart.
const BACKLOG_REFRESH_INTERVAL: std::time::Duration = std::time::Duration::from_secs(1);

/// Wakes the relay when a transaction wrote outbox records, so they go out
/// within the linger rather than at the next poll. A no-op when the relay is
/// disabled.
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

/// What one pass over a batch did.
struct Pass {
    /// Records may be waiting right now: the batch was full, or the lease ran
    /// out before every claimed record was published.
    more_waiting: bool,
    failure: Option<PublishError>,
}

pub struct OutboxRelay<O, E> {
    outbox: O,
    producer: E,
    settings: RelaySettings,
    notify: Arc<Notify>,
    metrics: Metrics,
}

/// The span a record is relayed in: a child of the request that wrote it.
fn record_span(record: &OutboxRecord) -> tracing::Span {
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
    span
}

impl<O: OutboxRepository, E: EventPublisher> OutboxRelay<O, E> {
    pub fn new(outbox: O, producer: E, settings: RelaySettings, metrics: Metrics) -> Self {
        OutboxRelay {
            metrics,
            outbox,
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
        let mut next_prune = tokio::time::Instant::now();
        let mut next_backlog = tokio::time::Instant::now();
        while !stop.is_cancelled() {
            if tokio::time::Instant::now() >= next_prune {
                self.prune().await;
                next_prune =
                    tokio::time::Instant::now() + PRUNE_INTERVAL.min(self.settings.retention);
            }
            let pass = self.pass(&stop).await;
            if tokio::time::Instant::now() >= next_backlog {
                self.refresh_backlog().await;
                next_backlog = tokio::time::Instant::now() + BACKLOG_REFRESH_INTERVAL;
            }
            let retry_in = match pass {
                Ok(Pass {
                    more_waiting,
                    failure: None,
                }) => {
                    backoff = self.backoff();
                    if more_waiting {
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
                    self.metrics.relay_errors.inc();
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
                    _ = self.notify.notified() => {
                        // The records written meanwhile join this pass.
                        if !self.settings.linger.is_zero() {
                            tokio::select! {
                                _ = stop.cancelled() => break,
                                _ = tokio::time::sleep(self.settings.linger) => {}
                            }
                        }
                    }
                    _ = tokio::time::sleep(self.settings.poll_interval) => {}
                },
            }
        }
        tracing::info!("outbox relay stopped");
    }

    /// Claims a batch, hands it to the Producer in one call and marks what
    /// the stream took, in one statement. A record the Producer refused for
    /// what it is (or that cannot even be read) is set aside and the others
    /// go on; records the Producer could not take now are released for the
    /// next pass, whose backoff the failure sets.
    async fn pass(&self, stop: &CancellationToken) -> Result<Pass, DbErr> {
        let records = self
            .outbox
            .claim_unsent(self.settings.batch_size, self.settings.claim_lease)
            .await?;
        let mut pass = Pass {
            more_waiting: records.len() as u64 == self.settings.batch_size,
            failure: None,
        };
        if records.is_empty() {
            return Ok(pass);
        }
        if stop.is_cancelled() {
            let ids: Vec<i64> = records.iter().map(|r| r.id).collect();
            self.outbox.release_claims(&ids).await?;
            pass.more_waiting = false;
            return Ok(pass);
        }
        let spans: Vec<tracing::Span> = records.iter().map(record_span).collect();
        let outcomes = self
            .producer
            .publish_batch(&records, &spans, self.settings.publish_timeout)
            .await;
        let mut sent = Vec::with_capacity(records.len());
        let mut unsent = Vec::new();
        for ((record, span), outcome) in records.iter().zip(&spans).zip(outcomes) {
            let _entered = span.enter();
            match outcome {
                Ok(published) => {
                    sent.push(record.id);
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
                    self.metrics.relay_errors.inc();
                    unsent.push(record.id);
                    pass.failure.get_or_insert(error);
                }
                Err(error) => {
                    // Retrying will not help: set it aside (unsent, with the
                    // reason) so that it never holds up the records behind it.
                    self.metrics.relay_errors.inc();
                    tracing::error!(outbox_id = record.id, order_id = %record.order_id, %error,
                        "outbox record cannot be published; set aside for someone to look at");
                    self.outbox.set_aside(record.id, &error.to_string()).await?;
                }
            }
        }
        if !sent.is_empty() {
            platform::fault::point(FAULT_AFTER_PUBLISH);
        }
        self.outbox.mark_sent(&sent).await?;
        self.metrics.relayed.inc_by(sent.len() as u64);
        if let Some(error) = &pass.failure {
            self.outbox
                .record_failures(&unsent, &error.to_string())
                .await?;
        }
        Ok(pass)
    }

    /// Deletes records sent longer than the retention ago, a bounded batch
    /// at a time.
    async fn prune(&self) {
        const BATCH: u64 = 1000;
        loop {
            match self.outbox.prune_sent(self.settings.retention, BATCH).await {
                Ok(deleted) => {
                    self.metrics.pruned.inc_by(deleted);
                    if deleted < BATCH {
                        return;
                    }
                }
                Err(error) => {
                    tracing::warn!(%error, "pruning sent outbox records failed; trying again later");
                    return;
                }
            }
        }
    }

    async fn refresh_backlog(&self) {
        if let Ok(unsent) = self.outbox.backlog().await {
            self.metrics.outbox_backlog.set(unsent as i64);
        }
    }
}
