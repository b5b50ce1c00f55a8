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

use platform::shutdown::CancellationToken;

use super::error::OrderError;
use super::orders::Orders;
use super::ports::{OrderRepository, OutboxRepository, PriceSource};
use crate::config::SweeperSettings;
use crate::domain::status::Outcome;
use crate::metrics::Metrics;

/// Orders handled per step and sweep; the next sweep takes the rest.
const BATCH: u64 = 100;

fn count(metrics: &Metrics, action: &'static str, n: usize) {
    metrics
        .pending_swept
        .get_or_create(&vec![("action", action)])
        .inc_by(n as u64);
}

pub struct PendingSweeper<S, P, O> {
    orders: Orders<S, P>,
    outbox: O,
    settings: SweeperSettings,
    metrics: Metrics,
}

impl<S: OrderRepository, P: PriceSource, O: OutboxRepository> PendingSweeper<S, P, O> {
    pub fn new(
        orders: Orders<S, P>,
        outbox: O,
        settings: SweeperSettings,
        metrics: Metrics,
    ) -> Self {
        PendingSweeper {
            orders,
            outbox,
            settings,
            metrics,
        }
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
        for stuck in self.outbox.pending_set_aside(BATCH).await? {
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
                Ok(reply) if !reply.replayed => count(&self.metrics, "rejected_unpublishable", 1),
                Ok(_) => {}
                Err(error) => {
                    tracing::warn!(order_id = %stuck.order_id, %error, "could not reject an order whose event was set aside")
                }
            }
        }

        let republished = self
            .outbox
            .republish_stale(self.settings.republish_after, BATCH)
            .await?;
        if !republished.is_empty() {
            tracing::warn!(orders = ?republished, "publishing the events of orders still PENDING again");
            count(&self.metrics, "republished", republished.len());
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
                Ok(true) => count(&self.metrics, "rejected_timeout", 1),
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
        self.metrics
            .pending_overdue
            .set(i64::try_from(overdue).unwrap_or(i64::MAX));
        Ok(())
    }
}
