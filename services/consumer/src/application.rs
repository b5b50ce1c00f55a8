//! Handling one order event: apply it to Inventory, record the outcome with
//! Order, retry what may succeed later, and decide what to do with what never
//! will. NATS stays outside: this module says what should happen to a message
//! ([`Disposition`]); the infrastructure does it.

use std::future::Future;

use tonic::Status;
use uuid::Uuid;

use platform::shutdown::CancellationToken;
use proto::inventory::v1::{
    ApplyOrderResponse, ApplyOutcome, ReleaseOrderResponse, ReleaseOutcome,
};

use crate::config::ConsumerSettings;
use crate::domain::{self, Event, EventKind, Line, Verdict};
use crate::metrics::Metrics;

/// Inventory as the Consumer uses it.
pub trait Inventory: Send + Sync {
    fn apply_order(
        &self,
        order_id: Uuid,
        lines: &[Line],
    ) -> impl Future<Output = Result<ApplyOrderResponse, Status>> + Send;

    fn release_order(
        &self,
        order_id: Uuid,
    ) -> impl Future<Output = Result<ReleaseOrderResponse, Status>> + Send;
}

/// Order as the Consumer uses it.
pub trait Orders: Send + Sync {
    fn record_outcome(
        &self,
        order_id: Uuid,
        verdict: &Verdict,
    ) -> impl Future<Output = Result<(), Status>> + Send;
}

/// A message as it came off the stream, reduced to what handling needs.
#[derive(Debug, Clone, Copy)]
pub struct Incoming<'a> {
    /// From the subject; `None` for a subject that is not an order event's.
    pub kind: Option<EventKind>,
    pub subject: &'a str,
    pub event_type: Option<&'a str>,
    pub event_version: Option<&'a str>,
    pub message_id: Option<&'a str>,
    pub payload: &'a [u8],
}

impl Incoming<'_> {
    fn decode(&self) -> Result<Event, domain::DecodeError> {
        let kind = self
            .kind
            .ok_or_else(|| domain::DecodeError::UnknownSubject(self.subject.to_owned()))?;
        domain::decode(kind, self.event_type, self.event_version, self.payload)
    }

    /// The order a message is about, from its payload or else its message id,
    /// even when the payload cannot be decoded.
    pub fn order_id(&self) -> Option<Uuid> {
        self.decode()
            .ok()
            .map(|event| event.order_id())
            .or_else(|| self.message_id.and_then(domain::order_id_from_message_id))
    }

    /// The metric label of the event.
    pub fn event_label(&self) -> &'static str {
        self.kind.map_or("unknown", EventKind::event_type)
    }
}

/// What one complete, successful handling did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Handled {
    Confirmed { replayed: bool },
    Rejected { reason: String, replayed: bool },
    Released { replayed: bool },
    NotApplied,
}

impl Handled {
    pub fn outcome_label(&self) -> &'static str {
        match self {
            Handled::Confirmed { .. } => "confirmed",
            Handled::Rejected { .. } => "rejected",
            Handled::Released { .. } => "released",
            Handled::NotApplied => "not_applied",
        }
    }

    pub fn replayed(&self) -> bool {
        match self {
            Handled::Confirmed { replayed }
            | Handled::Rejected { replayed, .. }
            | Handled::Released { replayed } => *replayed,
            Handled::NotApplied => false,
        }
    }
}

/// What should happen to the message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Disposition {
    /// Every step succeeded: acknowledge.
    Ack(Handled),
    /// It failed permanently the allowed number of times: write it to the
    /// dead-letter stream, reject its order (when there is one to reject),
    /// then terminate it.
    DeadLetter {
        reason: String,
        /// The order to mark REJECTED: only for an order.created event, whose
        /// order waits for an outcome.
        reject_order: Option<Uuid>,
    },
    /// Shutting down before it could be finished: hand it back (NAK) so that
    /// another replica takes it now.
    Abandon,
    /// It failed transiently the allowed number of times in a row: hand it
    /// back to be redelivered after a delay, so that one message whose
    /// receiver keeps failing never holds a handler slot forever (the order
    /// sweeper gives its order a terminal state if it never gets through).
    Defer { reason: String },
}

/// Why one attempt failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Failure {
    /// May succeed when tried again later (a receiver down, busy, slow).
    #[error("{0}")]
    Transient(String),
    /// Will fail the same way every time.
    #[error("{reason}")]
    Permanent {
        reason: String,
        /// Inventory applied the order (took stock) but Order refused to
        /// confirm it, so the stock must be returned before giving up.
        stock_taken: Option<Uuid>,
    },
}

impl Failure {
    fn permanent(reason: impl Into<String>) -> Self {
        Failure::Permanent {
            reason: reason.into(),
            stock_taken: None,
        }
    }

    fn from_status(call: &str, status: &Status) -> Self {
        let message = format!("{call} failed: {:?}: {}", status.code(), status.message());
        if platform::grpc::is_transient(status) {
            Failure::Transient(message)
        } else {
            Failure::permanent(message)
        }
    }

    fn label(&self) -> &'static str {
        match self {
            Failure::Transient(_) => "transient",
            Failure::Permanent { .. } => "permanent",
        }
    }
}

/// Why the order of a dead-lettered event could not be rejected.
#[derive(Debug, thiserror::Error)]
pub enum RejectError {
    #[error("Order refused to record the rejection: {0:?}: {1}")]
    Refused(tonic::Code, String),
    #[error("shutting down before Order could be reached")]
    Stopped,
}

/// Applies events to Inventory and Order, with the retry rules of the product:
/// transient failures forever, permanent ones a bounded number of times.
pub struct Processor<I, O> {
    inventory: I,
    orders: O,
    settings: ConsumerSettings,
    metrics: Metrics,
}

impl<I: Inventory, O: Orders> Processor<I, O> {
    pub fn new(inventory: I, orders: O, settings: ConsumerSettings, metrics: Metrics) -> Self {
        Processor {
            inventory,
            orders,
            settings,
            metrics,
        }
    }

    /// Handles one message until it succeeded, failed permanently the allowed
    /// number of times, or `stop` was cancelled between attempts. An attempt
    /// that has begun is always finished.
    pub async fn handle(&self, incoming: &Incoming<'_>, stop: &CancellationToken) -> Disposition {
        let mut transient_failures = 0u32;
        let mut permanent_failures = 0u32;
        loop {
            let failure = match self.attempt(incoming).await {
                Ok(handled) => return Disposition::Ack(handled),
                Err(failure) => failure,
            };
            self.metrics
                .count_failure(incoming.event_label(), failure.label());
            let retry = match &failure {
                Failure::Transient(reason) => {
                    transient_failures += 1;
                    if transient_failures >= self.settings.max_transient_attempts {
                        return Disposition::Defer {
                            reason: reason.clone(),
                        };
                    }
                    tracing::warn!(%reason, attempt = transient_failures, "transient failure, will retry");
                    transient_failures
                }
                Failure::Permanent {
                    reason,
                    stock_taken,
                } => {
                    permanent_failures += 1;
                    tracing::warn!(
                        %reason,
                        attempt = permanent_failures,
                        max = self.settings.max_permanent_attempts,
                        "permanent failure"
                    );
                    if permanent_failures >= self.settings.max_permanent_attempts {
                        let mut reason = reason.clone();
                        if let Some(order_id) = stock_taken {
                            match self.return_stock(*order_id, stop).await {
                                Ok(()) => reason.push_str("; the stock it took was returned"),
                                Err(ReturnStockError::Stopped) => return Disposition::Abandon,
                                Err(ReturnStockError::Refused(why)) => {
                                    reason.push_str(&format!("; returning its stock failed: {why}"))
                                }
                            }
                        }
                        return Disposition::DeadLetter {
                            reason,
                            reject_order: match incoming.kind {
                                Some(EventKind::Created) => incoming.order_id(),
                                _ => None,
                            },
                        };
                    }
                    permanent_failures
                }
            };
            if !self.pause(retry, stop).await {
                return Disposition::Abandon;
            }
        }
    }

    /// Marks the order of a dead-lettered event REJECTED with `reason`,
    /// retrying transient failures until `stop`.
    pub async fn reject_dead_lettered(
        &self,
        order_id: Uuid,
        reason: &str,
        stop: &CancellationToken,
    ) -> Result<(), RejectError> {
        let verdict = Verdict::Rejected {
            reason: reason.to_owned(),
        };
        let mut retry = 0;
        loop {
            match self.orders.record_outcome(order_id, &verdict).await {
                Ok(()) => return Ok(()),
                Err(status) if platform::grpc::is_transient(&status) => {
                    retry += 1;
                    tracing::warn!(%order_id, error = %status.message(), "Order not reachable to reject a dead-lettered order, will retry");
                    if !self.pause(retry, stop).await {
                        return Err(RejectError::Stopped);
                    }
                }
                Err(status) => {
                    return Err(RejectError::Refused(
                        status.code(),
                        status.message().to_owned(),
                    ));
                }
            }
        }
    }

    /// One attempt: every step of the event, in order.
    async fn attempt(&self, incoming: &Incoming<'_>) -> Result<Handled, Failure> {
        let event = incoming
            .decode()
            .map_err(|e| Failure::permanent(e.to_string()))?;
        match event {
            Event::Created { order_id, lines } => {
                let applied = self
                    .inventory
                    .apply_order(order_id, &lines)
                    .await
                    .map_err(|s| Failure::from_status("Inventory ApplyOrder", &s))?;
                let outcome =
                    ApplyOutcome::try_from(applied.outcome).unwrap_or(ApplyOutcome::Unspecified);
                let verdict = domain::verdict(outcome, &applied.reason).ok_or_else(|| {
                    Failure::permanent(format!(
                        "Inventory ApplyOrder answered an unknown outcome {}",
                        applied.outcome
                    ))
                })?;
                // A crash here leaves the stock taken and the order PENDING;
                // the redelivery finds the outcome in Inventory's ledger.
                platform::fault::point("consumer.after_apply");
                match self.orders.record_outcome(order_id, &verdict).await {
                    Ok(()) => {}
                    Err(status) => {
                        let mut failure = Failure::from_status("Order RecordOutcome", &status);
                        if let (Failure::Permanent { stock_taken, .. }, Verdict::Confirmed) =
                            (&mut failure, &verdict)
                        {
                            *stock_taken = Some(order_id);
                        }
                        return Err(failure);
                    }
                }
                Ok(match verdict {
                    Verdict::Confirmed => Handled::Confirmed {
                        replayed: applied.replayed,
                    },
                    Verdict::Rejected { reason } => Handled::Rejected {
                        reason,
                        replayed: applied.replayed,
                    },
                })
            }
            Event::Cancelled { order_id } => {
                let released = self
                    .inventory
                    .release_order(order_id)
                    .await
                    .map_err(|s| Failure::from_status("Inventory ReleaseOrder", &s))?;
                match ReleaseOutcome::try_from(released.outcome) {
                    Ok(ReleaseOutcome::Released) => Ok(Handled::Released {
                        replayed: released.replayed,
                    }),
                    Ok(ReleaseOutcome::NotApplied) => Ok(Handled::NotApplied),
                    _ => Err(Failure::permanent(format!(
                        "Inventory ReleaseOrder answered an unknown outcome {}",
                        released.outcome
                    ))),
                }
            }
        }
    }

    /// Returns the stock of an order that Order refused to confirm.
    async fn return_stock(
        &self,
        order_id: Uuid,
        stop: &CancellationToken,
    ) -> Result<(), ReturnStockError> {
        let mut retry = 0;
        loop {
            match self.inventory.release_order(order_id).await {
                Ok(_) => {
                    tracing::warn!(%order_id, "returned the stock of an order Order would not confirm");
                    return Ok(());
                }
                Err(status) if platform::grpc::is_transient(&status) => {
                    retry += 1;
                    if !self.pause(retry, stop).await {
                        return Err(ReturnStockError::Stopped);
                    }
                }
                Err(status) => {
                    return Err(ReturnStockError::Refused(format!(
                        "{:?}: {}",
                        status.code(),
                        status.message()
                    )));
                }
            }
        }
    }

    /// Waits before retry number `retry`; false when `stop` came first.
    async fn pause(&self, retry: u32, stop: &CancellationToken) -> bool {
        if stop.is_cancelled() {
            return false;
        }
        tokio::select! {
            _ = tokio::time::sleep(self.settings.backoff(retry)) => true,
            _ = stop.cancelled() => false,
        }
    }
}

#[derive(Debug)]
enum ReturnStockError {
    Refused(String),
    Stopped,
}

#[cfg(test)]
mod tests {
    use std::collections::VecDeque;
    use std::sync::Mutex;
    use std::time::Duration;

    use prost::Message;
    use proto::events::v1::{OrderCreated, OrderLine};

    use super::*;

    /// Answers from a script, then the last answer forever.
    struct Script<T> {
        answers: Mutex<VecDeque<Result<T, Status>>>,
        calls: Mutex<u32>,
    }

    impl<T: Clone> Script<T> {
        fn new(answers: Vec<Result<T, Status>>) -> Self {
            Script {
                answers: Mutex::new(answers.into()),
                calls: Mutex::new(0),
            }
        }

        fn next(&self) -> Result<T, Status> {
            *self.calls.lock().unwrap() += 1;
            let mut answers = self.answers.lock().unwrap();
            if answers.len() > 1 {
                answers.pop_front().unwrap()
            } else {
                answers.front().cloned().expect("a scripted answer")
            }
        }

        fn calls(&self) -> u32 {
            *self.calls.lock().unwrap()
        }
    }

    struct FakeInventory {
        apply: Script<ApplyOrderResponse>,
        release: Script<ReleaseOrderResponse>,
    }

    impl Inventory for &FakeInventory {
        async fn apply_order(&self, _: Uuid, _: &[Line]) -> Result<ApplyOrderResponse, Status> {
            self.apply.next()
        }
        async fn release_order(&self, _: Uuid) -> Result<ReleaseOrderResponse, Status> {
            self.release.next()
        }
    }

    struct FakeOrders {
        record: Script<()>,
        verdicts: Mutex<Vec<Verdict>>,
    }

    impl Orders for &FakeOrders {
        async fn record_outcome(&self, _: Uuid, verdict: &Verdict) -> Result<(), Status> {
            self.verdicts.lock().unwrap().push(verdict.clone());
            self.record.next()
        }
    }

    fn applied() -> ApplyOrderResponse {
        ApplyOrderResponse {
            outcome: ApplyOutcome::Applied as i32,
            reason: String::new(),
            replayed: false,
        }
    }

    fn released() -> ReleaseOrderResponse {
        ReleaseOrderResponse {
            outcome: ReleaseOutcome::Released as i32,
            replayed: false,
        }
    }

    fn settings() -> ConsumerSettings {
        ConsumerSettings {
            durable_name: "test".into(),
            ack_wait: Duration::from_secs(30),
            max_ack_pending: 10,
            concurrency: 1,
            batch: platform::batch::BatchSettings::eager(8, 2),
            max_permanent_attempts: 3,
            max_transient_attempts: 100,
            retry_base: Duration::from_millis(1),
            retry_max: Duration::from_millis(4),
            fetch_wait: Duration::from_secs(1),
            lag_interval: Duration::from_secs(1),
        }
    }

    fn payload(order_id: Uuid) -> Vec<u8> {
        OrderCreated {
            order_id: order_id.to_string(),
            user_id: Uuid::new_v4().to_string(),
            items: vec![OrderLine {
                product_id: Uuid::new_v4().to_string(),
                quantity: 1,
                unit_price: "1.00".into(),
            }],
            total: "1.00".into(),
            created_at: None,
        }
        .encode_to_vec()
    }

    fn created<'a>(payload: &'a [u8], message_id: &'a str) -> Incoming<'a> {
        Incoming {
            kind: Some(EventKind::Created),
            subject: "order.created",
            event_type: Some("order.created"),
            event_version: Some("1"),
            message_id: Some(message_id),
            payload,
        }
    }

    fn fakes(
        apply: Vec<Result<ApplyOrderResponse, Status>>,
        record: Vec<Result<(), Status>>,
    ) -> (FakeInventory, FakeOrders) {
        (
            FakeInventory {
                apply: Script::new(apply),
                release: Script::new(vec![Ok(released())]),
            },
            FakeOrders {
                record: Script::new(record),
                verdicts: Mutex::new(Vec::new()),
            },
        )
    }

    #[tokio::test]
    async fn transient_failures_are_retried_until_they_pass() {
        let (inventory, orders) = fakes(
            vec![
                Err(Status::unavailable("down")),
                Err(Status::deadline_exceeded("slow")),
                Err(Status::unavailable("down")),
                Err(Status::unavailable("down")),
                Ok(applied()),
            ],
            vec![Err(Status::unavailable("down")), Ok(())],
        );
        let processor = Processor::new(&inventory, &orders, settings(), Metrics::unregistered());
        let order = Uuid::new_v4();
        let body = payload(order);
        let disposition = processor
            .handle(
                &created(&body, &format!("{order}.order.created")),
                &CancellationToken::new(),
            )
            .await;
        assert_eq!(
            disposition,
            Disposition::Ack(Handled::Confirmed { replayed: false })
        );
        // More transient failures than the permanent bound, and no dead letter.
        assert_eq!(inventory.apply.calls(), 6);
        assert_eq!(orders.record.calls(), 2);
    }

    #[tokio::test]
    async fn permanent_failures_dead_letter_after_the_bound() {
        let (inventory, orders) = fakes(
            vec![Err(Status::invalid_argument("bad line"))],
            vec![Ok(())],
        );
        let processor = Processor::new(&inventory, &orders, settings(), Metrics::unregistered());
        let order = Uuid::new_v4();
        let body = payload(order);
        let disposition = processor
            .handle(&created(&body, "ignored"), &CancellationToken::new())
            .await;
        match disposition {
            Disposition::DeadLetter {
                reason,
                reject_order,
            } => {
                assert!(reason.contains("bad line"), "{reason}");
                assert_eq!(reject_order, Some(order));
            }
            other => panic!("expected a dead letter, got {other:?}"),
        }
        assert_eq!(inventory.apply.calls(), 3);
        assert_eq!(orders.record.calls(), 0);
    }

    #[tokio::test]
    async fn a_deterministic_error_of_a_receiver_is_dead_lettered_not_retried_forever() {
        // ReleaseOrder overflowing the stock column was INTERNAL (and
        // OUT_OF_RANGE since): the same call fails the same way every time.
        for status in [
            Status::internal("internal error"),
            Status::unknown("the handler said so"),
            Status::out_of_range("a value is out of its range"),
        ] {
            let (inventory, orders) = fakes(vec![Err(status.clone())], vec![Ok(())]);
            let processor =
                Processor::new(&inventory, &orders, settings(), Metrics::unregistered());
            let order = Uuid::new_v4();
            let body = payload(order);
            let disposition = processor
                .handle(&created(&body, "x"), &CancellationToken::new())
                .await;
            assert!(
                matches!(&disposition, Disposition::DeadLetter { reject_order: Some(id), .. } if *id == order),
                "{status:?}: {disposition:?}"
            );
            assert_eq!(inventory.apply.calls(), 3, "{status:?}");
        }
    }

    #[tokio::test]
    async fn a_message_failing_transiently_too_long_is_handed_back_freeing_its_slot() {
        let (inventory, orders) = fakes(vec![Err(Status::unavailable("down"))], vec![Ok(())]);
        let mut settings = settings();
        settings.max_transient_attempts = 4;
        let processor = Processor::new(&inventory, &orders, settings, Metrics::unregistered());
        let order = Uuid::new_v4();
        let body = payload(order);
        let disposition = processor
            .handle(&created(&body, "x"), &CancellationToken::new())
            .await;
        assert!(
            matches!(&disposition, Disposition::Defer { reason } if reason.contains("down")),
            "{disposition:?}"
        );
        assert_eq!(inventory.apply.calls(), 4);
    }

    #[tokio::test]
    async fn an_undecodable_payload_names_its_order_from_the_message_id() {
        let (inventory, orders) = fakes(vec![Ok(applied())], vec![Ok(())]);
        let processor = Processor::new(&inventory, &orders, settings(), Metrics::unregistered());
        let order = Uuid::new_v4();
        let message_id = format!("{order}.order.created");
        let disposition = processor
            .handle(
                &created(b"not protobuf", &message_id),
                &CancellationToken::new(),
            )
            .await;
        match disposition {
            Disposition::DeadLetter {
                reason,
                reject_order,
            } => {
                assert!(reason.contains("not a valid OrderCreated"), "{reason}");
                assert_eq!(reject_order, Some(order));
            }
            other => panic!("expected a dead letter, got {other:?}"),
        }
        assert_eq!(inventory.apply.calls(), 0);
    }

    #[tokio::test]
    async fn stock_is_returned_when_order_will_not_confirm() {
        let (inventory, orders) = fakes(
            vec![Ok(applied())],
            vec![Err(Status::failed_precondition("order is REJECTED"))],
        );
        let processor = Processor::new(&inventory, &orders, settings(), Metrics::unregistered());
        let order = Uuid::new_v4();
        let body = payload(order);
        let disposition = processor
            .handle(&created(&body, "x"), &CancellationToken::new())
            .await;
        assert!(
            matches!(&disposition, Disposition::DeadLetter { reason, .. } if reason.contains("returned")),
            "{disposition:?}"
        );
        assert_eq!(inventory.release.calls(), 1);
    }

    #[tokio::test]
    async fn shutdown_abandons_a_message_between_retries() {
        let (inventory, orders) = fakes(vec![Err(Status::unavailable("down"))], vec![Ok(())]);
        let processor = Processor::new(&inventory, &orders, settings(), Metrics::unregistered());
        let stop = CancellationToken::new();
        stop.cancel();
        let order = Uuid::new_v4();
        let body = payload(order);
        let disposition = processor.handle(&created(&body, "x"), &stop).await;
        assert_eq!(disposition, Disposition::Abandon);
        // The attempt in hand was made; no further one.
        assert_eq!(inventory.apply.calls(), 1);
    }

    #[tokio::test]
    async fn outcomes_map_to_verdicts() {
        let (inventory, orders) = fakes(
            vec![Ok(ApplyOrderResponse {
                outcome: ApplyOutcome::InsufficientStock as i32,
                reason: "p: only 1 left".into(),
                replayed: true,
            })],
            vec![Ok(())],
        );
        let processor = Processor::new(&inventory, &orders, settings(), Metrics::unregistered());
        let order = Uuid::new_v4();
        let body = payload(order);
        let disposition = processor
            .handle(&created(&body, "x"), &CancellationToken::new())
            .await;
        assert_eq!(
            disposition,
            Disposition::Ack(Handled::Rejected {
                reason: "p: only 1 left".into(),
                replayed: true
            })
        );
        assert_eq!(
            orders.verdicts.lock().unwrap().as_slice(),
            &[Verdict::Rejected {
                reason: "p: only 1 left".into()
            }]
        );
    }
}
