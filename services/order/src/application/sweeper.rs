//! The sweeper of orders left PENDING: every order reaches a terminal state,
//! whatever happened to its event on the way.
//!
//! An order waits PENDING for the Consumer's verdict. Its event can fail to
//! get there: the Producer refused its outbox record (set aside), the event
//! was lost from the stream, or it was dead-lettered and Order refused the
//! rejection. Every `ORDER_SWEEP_INTERVAL_MS` the sweeper
//! - rejects the PENDING orders whose creation record was set aside (their
//!   event never left, so no stock was taken);
//! - publishes again the creation event of orders PENDING for more than
//!   `ORDER_PENDING_REPUBLISH_AFTER_MS` whose event went out that long ago
//!   (the Consumer applies a repeat once in effect);
//! - rejects the orders PENDING for more than `ORDER_PENDING_TIMEOUT_MS`,
//!   returning any stock taken for them through an `order.cancelled` event.
//!
//! Every step is a conditional change, so replicas may sweep at once.

use std::sync::OnceLock;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;

use platform::shutdown::CancellationToken;

use super::error::OrderError;
use super::orders::Orders;
use crate::config::SweeperSettings;
use crate::domain::status::Outcome;
use crate::infrastructure::outbox;

/// Orders handled per step and sweep; the next sweep takes the rest.
const BATCH: u64 = 100;

struct SweeperMetrics {
    overdue: Gauge,
    swept: Family<Vec<(&'static str, &'static str)>, Counter>,
}

fn metrics() -> &'static SweeperMetrics {
    static METRICS: OnceLock<SweeperMetrics> = OnceLock::new();
    METRICS.get_or_init(|| {
        let metrics = SweeperMetrics {
            overdue: Gauge::default(),
            swept: Family::default(),
        };
        platform::metrics::register(
            "order_pending_overdue",
            "Orders PENDING for longer than ORDER_PENDING_REPUBLISH_AFTER_MS at the last sweep",
            metrics.overdue.clone(),
        );
        platform::metrics::register(
            "order_pending_swept",
            "What the sweeper did to orders left PENDING, by action (republished, rejected_unpublishable, rejected_timeout)",
            metrics.swept.clone(),
        );
        metrics
    })
}

fn count(action: &'static str, n: usize) {
    metrics()
        .swept
        .get_or_create(&vec![("action", action)])
        .inc_by(n as u64);
}

pub struct PendingSweeper {
    orders: Orders,
    settings: SweeperSettings,
}

impl PendingSweeper {
    pub fn new(orders: Orders, settings: SweeperSettings) -> Self {
        metrics();
        PendingSweeper { orders, settings }
    }

    /// Sweeps every interval until `stop`.
    pub async fn run(self, stop: CancellationToken) {
        loop {
            tokio::select! {
                _ = stop.cancelled() => break,
                _ = tokio::time::sleep(self.settings.interval) => {}
            }
            if let Err(error) = self.sweep().await {
                tracing::warn!(%error, "sweeping PENDING orders failed; trying again next time");
            }
        }
    }

    /// One sweep; see the module's description.
    pub async fn sweep(&self) -> Result<(), OrderError> {
        let db = self.orders.store().connection();

        for stuck in outbox::pending_set_aside(db, BATCH).await? {
            let reason = format!(
                "the order event could not be published: {}",
                stuck
                    .last_error
                    .as_deref()
                    .unwrap_or("refused by the Producer")
            );
            match self
                .orders
                .record_outcome(stuck.order_id, Outcome::Rejected, Some(reason))
                .await
            {
                Ok(reply) if !reply.replayed => count("rejected_unpublishable", 1),
                Ok(_) => {}
                Err(error) => {
                    tracing::warn!(order_id = %stuck.order_id, %error, "could not reject an order whose event was set aside")
                }
            }
        }

        let republished = outbox::republish_stale(db, self.settings.republish_after, BATCH).await?;
        if !republished.is_empty() {
            tracing::warn!(orders = ?republished, "publishing the events of orders still PENDING again");
            count("republished", republished.len());
            self.orders.wake_relay();
        }

        let expired = self
            .orders
            .store()
            .pending_older_than(self.settings.timeout, BATCH)
            .await?;
        let reason = format!(
            "not processed within {} s; any stock taken is returned",
            self.settings.timeout.as_secs()
        );
        for order_id in expired {
            match self.orders.expire_pending(order_id, &reason).await {
                Ok(true) => count("rejected_timeout", 1),
                Ok(false) => {}
                // One order must not hold up the others.
                Err(error) => {
                    tracing::warn!(%order_id, %error, "could not reject an order PENDING too long")
                }
            }
        }

        let overdue = self
            .orders
            .store()
            .count_pending_older_than(self.settings.republish_after)
            .await?;
        metrics()
            .overdue
            .set(i64::try_from(overdue).unwrap_or(i64::MAX));
        Ok(())
    }
}
