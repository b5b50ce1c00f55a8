//! The use cases: create (priced from Inventory, stored with its outbox
//! record), read with ownership, and the three ways an order's status moves.

use std::ops::ControlFlow;

use chrono::{SubsecRound, Utc};
use futures::future::Either;
use prost::Message;
use tracing::Instrument;
use uuid::Uuid;

use proto::events::v1::{OrderCancelled, OrderCreated, OrderLine as EventLine};

use super::error::OrderError;
use super::ports::{
    InsertError, NewOrder, ORDER_CANCELLED, ORDER_CREATED, OrderRepository, OutboxEvent,
    PriceSource, StatusDecision,
};
use super::relay::RelayWakeup;
use crate::domain::order::{PricedOrder, PricingError, money, price, request_fingerprint};
use crate::domain::status::{self, Change, Outcome};
use crate::domain::{Caller, Order, OrderLine, OrderStatus};
use platform::batch::{BatchSettings, Batcher};
use platform::db::DbFailure;
use sea_orm::{DbErr, RuntimeErr};

/// Crash-test fault point: the order and its outbox record are committed,
/// the reply and the relay's wake-up are not.
pub const FAULT_AFTER_OUTBOX_COMMIT: &str = "order.after_outbox_commit";

/// A validated CreateOrder request.
pub struct NewOrderRequest {
    pub caller: Caller,
    pub lines: Vec<OrderLine>,
    pub idempotency_key: Option<String>,
}

/// An order and whether an earlier request (or outcome) already made it so.
pub struct Reply {
    pub order: Order,
    pub replayed: bool,
}

/// One verdict of a RecordOutcomes batch, with the span of its order's
/// trace that it is reported in.
pub struct BatchedOutcome {
    pub id: Uuid,
    pub outcome: Outcome,
    pub reason: Option<String>,
    pub span: tracing::Span,
}

/// A validated page request.
pub struct ListRequest {
    pub caller: Caller,
    pub page: u64,
    pub page_size: u64,
    pub user_id: Option<Uuid>,
}

pub struct Page {
    pub orders: Vec<Order>,
    pub total: u64,
}

/// Orders stored in one statement and one commit at the most; more wait for
/// the next batch.
const MAX_INSERT_BATCH: usize = 128;
/// Insert batches in flight at once. A call waits for a free slot, so few
/// slots add a commit's wait to every order (measured: 2 slots halved the
/// orders accepted by 32 clients); with many, batches form only when calls
/// outnumber them, and the pool (`DB_MAX_CONNECTIONS`) bounds the commits at
/// once anyway.
const INSERTS_IN_FLIGHT: usize = 32;

/// How long a keyed order waits for its prices alone before its key is
/// looked up beside them (see `Orders::price_unless_retried`): well above a
/// price read's round trip, well below a call's deadline.
const REPLAY_LOOKUP_AFTER: std::time::Duration = std::time::Duration::from_millis(100);

#[derive(Clone)]
pub struct Orders<S, P> {
    store: S,
    inventory: P,
    relay: RelayWakeup,
    /// Concurrent creations' inserts, coalesced: one statement and one
    /// commit for all of them (a lone one goes out at once).
    inserts: Batcher<NewOrder, Result<(), InsertError>>,
}

impl<S: OrderRepository, P: PriceSource> Orders<S, P> {
    /// Needs a Tokio runtime (the insert batches' task).
    pub fn new(store: S, inventory: P, relay: RelayWakeup) -> Self {
        let inserts = {
            let store = store.clone();
            Batcher::spawn(
                BatchSettings::eager(MAX_INSERT_BATCH, INSERTS_IN_FLIGHT),
                move |batch: Vec<NewOrder>| {
                    let store = store.clone();
                    async move { Ok(insert_batch(&store, batch).await) }
                },
            )
        };
        Orders {
            store,
            inventory,
            relay,
            inserts,
        }
    }

    pub async fn create(&self, request: NewOrderRequest) -> Result<Reply, OrderError> {
        let NewOrderRequest {
            caller,
            lines,
            idempotency_key,
        } = request;
        let idempotency = idempotency_key.map(|key| (key, request_fingerprint(&lines)));
        let ids: Vec<Uuid> = lines.iter().map(|l| l.product_id).collect();
        let priced = match &idempotency {
            None => self.priced(&lines, &ids).await?,
            Some((key, fingerprint)) => {
                match self
                    .price_unless_retried(caller.user_id, key, fingerprint, &lines, &ids)
                    .await?
                {
                    ControlFlow::Continue(priced) => priced,
                    ControlFlow::Break(replay) => return Ok(replay),
                }
            }
        };
        // PostgreSQL keeps microseconds; the event says what the row says.
        let now = Utc::now().trunc_subsecs(6);
        let order = Order {
            id: Uuid::now_v7(),
            user_id: caller.user_id,
            status: OrderStatus::Pending,
            total: priced.total,
            status_reason: None,
            lines: priced.lines,
            created_at: now,
            updated_at: now,
        };
        let event = OutboxEvent::new(
            order.id,
            ORDER_CREATED,
            created_event(&order).encode_to_vec(),
        );
        let inserted = self
            .inserts
            .call(NewOrder {
                order: order.clone(),
                idempotency: idempotency.clone(),
                event,
            })
            .await
            .unwrap_or_else(|status| Err(InsertError::Db(stopped(status))));
        match inserted {
            Ok(()) => {}
            // The key is taken: a retry, or a concurrent request that won
            // the race.
            Err(InsertError::DuplicateIdempotencyKey) => {
                let Some((key, fingerprint)) = idempotency else {
                    return Err(DbErr::Custom(format!(
                        "order {} without an idempotency key collided on it",
                        order.id
                    ))
                    .into());
                };
                return self
                    .replay(caller.user_id, &key, &fingerprint)
                    .await?
                    .ok_or_else(|| {
                        DbErr::RecordNotFound(format!(
                            "the order holding idempotency key {key:?} disappeared"
                        ))
                        .into()
                    });
            }
            Err(InsertError::Db(e)) => return Err(e.into()),
        }
        platform::fault::point(FAULT_AFTER_OUTBOX_COMMIT);
        self.relay.wake();
        tracing::info!(order_id = %order.id, total = %order.total, "order created");
        Ok(Reply {
            order,
            replayed: false,
        })
    }

    /// A keyed order's prices, or the answer to a retry. A first request
    /// (by far the most common) costs no look-up of its key: the insert
    /// skips a key already taken, and that order is answered then. The key
    /// is looked up only when the prices fail (a retry is answered with its
    /// order even though the stock has run out or the product is gone since)
    /// or are slow (after [`REPLAY_LOOKUP_AFTER`] the look-up goes out beside
    /// them, and a retry is answered without waiting for a stalled Inventory).
    async fn price_unless_retried(
        &self,
        user_id: Uuid,
        key: &str,
        fingerprint: &str,
        lines: &[OrderLine],
        ids: &[Uuid],
    ) -> Result<ControlFlow<Reply, PricedOrder>, OrderError> {
        let mut quotes = std::pin::pin!(self.priced(lines, ids));
        let quoted = match tokio::time::timeout(REPLAY_LOOKUP_AFTER, &mut quotes).await {
            Ok(quoted) => quoted,
            Err(_slow) => {
                let replay = std::pin::pin!(self.replay(user_id, key, fingerprint));
                match futures::future::select(replay, quotes).await {
                    Either::Left((replay, quotes)) => match replay? {
                        Some(reply) => return Ok(ControlFlow::Break(reply)),
                        None => quotes.await,
                    },
                    Either::Right((quoted, replay)) => match replay.await? {
                        Some(reply) => return Ok(ControlFlow::Break(reply)),
                        None => quoted,
                    },
                }
            }
        };
        // Prices refused: a retry still gets its order (looked up again
        // after a slow read, as the original may have committed meanwhile).
        match quoted {
            Ok(priced) => Ok(ControlFlow::Continue(priced)),
            Err(refused) => match self.replay(user_id, key, fingerprint).await? {
                Some(reply) => Ok(ControlFlow::Break(reply)),
                None => Err(refused),
            },
        }
    }

    /// The order priced from Inventory's quotes. A shortage seen in quotes
    /// that may have been held is checked against a fresh read before the
    /// order is refused: stock put back meanwhile is not refused.
    async fn priced(&self, lines: &[OrderLine], ids: &[Uuid]) -> Result<PricedOrder, OrderError> {
        match price(lines, &self.inventory.quotes(ids).await?) {
            Err(shortage @ PricingError::InsufficientStock(_)) => {
                match self.inventory.requote(ids).await? {
                    Some(fresh) => Ok(price(lines, &fresh)?),
                    None => Err(shortage.into()),
                }
            }
            priced => Ok(priced?),
        }
    }

    async fn replay(
        &self,
        user_id: Uuid,
        key: &str,
        fingerprint: &str,
    ) -> Result<Option<Reply>, OrderError> {
        match self.store.find_by_idempotency_key(user_id, key).await? {
            None => Ok(None),
            Some((order, stored)) if stored == fingerprint => Ok(Some(Reply {
                order,
                replayed: true,
            })),
            Some(_) => Err(OrderError::IdempotencyKeyReused(key.to_owned())),
        }
    }

    /// Another user's order is NOT_FOUND, so that ids cannot be probed.
    pub async fn get(&self, caller: Caller, id: Uuid) -> Result<Order, OrderError> {
        self.store
            .find(id)
            .await?
            .filter(|order| order.visible_to(&caller))
            .ok_or(OrderError::NotFound(id))
    }

    pub async fn list(&self, request: ListRequest) -> Result<Page, OrderError> {
        let ListRequest {
            caller,
            page,
            page_size,
            user_id,
        } = request;
        let filter = if caller.is_admin() {
            user_id
        } else {
            if user_id.is_some_and(|u| u != caller.user_id) {
                return Err(OrderError::PermissionDenied(
                    "a customer can list only their own orders",
                ));
            }
            Some(caller.user_id)
        };
        let (orders, total) = self.store.list(filter, page, page_size).await?;
        Ok(Page { orders, total })
    }

    /// The admin's fulfilment path: SHIPPED, then DELIVERED.
    pub async fn update_status(
        &self,
        caller: Caller,
        id: Uuid,
        to: OrderStatus,
    ) -> Result<Order, OrderError> {
        if !caller.is_admin() {
            return Err(OrderError::PermissionDenied(
                "only an admin may change an order's status",
            ));
        }
        let changed = self
            .store
            .change_status(id, |order| {
                Ok::<_, OrderError>(match status::fulfil(order.status, to)? {
                    Change::To(to) => StatusDecision::Set {
                        to,
                        reason: None,
                        event: None,
                    },
                    Change::AlreadyDone => StatusDecision::Keep,
                })
            })
            .await?
            .ok_or(OrderError::NotFound(id))?;
        Ok(changed.order)
    }

    /// CONFIRMED -> CANCELLED with an `order.cancelled` record, by the owner
    /// or an admin. Cancelling a CANCELLED order again answers it unchanged.
    pub async fn cancel(&self, caller: Caller, id: Uuid) -> Result<Order, OrderError> {
        let changed = self
            .store
            .change_status(id, |order| {
                if !order.visible_to(&caller) {
                    return Err(OrderError::NotFound(id));
                }
                Ok(match status::cancel(order.status)? {
                    Change::To(to) => StatusDecision::Set {
                        to,
                        reason: None,
                        event: Some(OutboxEvent::new(
                            order.id,
                            ORDER_CANCELLED,
                            cancelled_event(order).encode_to_vec(),
                        )),
                    },
                    Change::AlreadyDone => StatusDecision::Keep,
                })
            })
            .await?
            .ok_or(OrderError::NotFound(id))?;
        if !changed.replayed {
            self.relay.wake();
            tracing::info!(order_id = %id, "order cancelled");
        }
        Ok(changed.order)
    }

    /// The order flow's verdicts for several orders: those still PENDING
    /// move in one statement, the others are answered one by one as
    /// [`Orders::record_outcome`] would (a replay, or a conflict). Whether
    /// each was a replay, in the given order.
    pub async fn record_outcomes(
        &self,
        outcomes: Vec<BatchedOutcome>,
    ) -> Result<Vec<Result<bool, OrderError>>, OrderError> {
        let decided: Vec<(Uuid, OrderStatus, Option<String>)> = outcomes
            .iter()
            .map(|o| {
                (
                    o.id,
                    o.outcome.status(),
                    outcome_reason(o.outcome, o.reason.clone()),
                )
            })
            .collect();
        let mut moved = self.store.record_pending_outcomes(&decided).await?;
        let mut answers = Vec::with_capacity(outcomes.len());
        for (o, (_, to, _)) in outcomes.into_iter().zip(&decided) {
            // `remove`: an id given twice is moved once, then a replay.
            if moved.remove(&o.id) {
                o.span.in_scope(
                    || tracing::info!(order_id = %o.id, status = %to, "order outcome recorded"),
                );
                answers.push(Ok(false));
            } else {
                let answer = self
                    .record_outcome(o.id, o.outcome, o.reason)
                    .instrument(o.span)
                    .await;
                answers.push(answer.map(|r| r.replayed));
            }
        }
        Ok(answers)
    }

    /// The order flow's verdict, idempotent (see [`status::record_outcome`]).
    pub async fn record_outcome(
        &self,
        id: Uuid,
        outcome: Outcome,
        reason: Option<String>,
    ) -> Result<Reply, OrderError> {
        let reason = outcome_reason(outcome, reason);
        let changed = self
            .store
            .change_status(id, |order| {
                Ok::<_, OrderError>(match status::record_outcome(order.status, outcome)? {
                    Change::To(to) => StatusDecision::Set {
                        to,
                        reason: reason.clone(),
                        event: None,
                    },
                    Change::AlreadyDone => StatusDecision::Keep,
                })
            })
            .await?
            .ok_or(OrderError::NotFound(id))?;
        if !changed.replayed {
            tracing::info!(order_id = %id, status = %changed.order.status, "order outcome recorded");
        }
        Ok(Reply {
            order: changed.order,
            replayed: changed.replayed,
        })
    }
}

impl<S: OrderRepository, P: PriceSource> Orders<S, P> {
    /// Rejects an order still PENDING with `reason`, with an
    /// `order.cancelled` record so that any stock Inventory took for it goes
    /// back (a release of an order that took nothing changes nothing; an
    /// event of it arriving later is refused confirmation and its stock
    /// returned by the Consumer). Whether it was still PENDING.
    pub async fn expire_pending(&self, id: Uuid, reason: &str) -> Result<bool, OrderError> {
        let changed = self
            .store
            .change_status(id, |order| {
                Ok::<_, OrderError>(if order.status == OrderStatus::Pending {
                    StatusDecision::Set {
                        to: OrderStatus::Rejected,
                        reason: Some(reason.to_owned()),
                        event: Some(OutboxEvent::new(
                            order.id,
                            ORDER_CANCELLED,
                            cancelled_event(order).encode_to_vec(),
                        )),
                    }
                } else {
                    StatusDecision::Keep
                })
            })
            .await?;
        let expired = matches!(changed, Some(ref c) if !c.replayed);
        if expired {
            self.relay.wake();
            tracing::warn!(order_id = %id, %reason, "PENDING order rejected by the sweeper");
        }
        Ok(expired)
    }

    pub fn store(&self) -> &S {
        &self.store
    }

    pub fn wake_relay(&self) {
        self.relay.wake();
    }
}

/// The reason an outcome is stored with: none for a confirmation, a default
/// for a rejection that gave none.
/// Stores a batch of new orders in one statement; each answers as
/// [`OrderRepository::insert`] would. When the database refused the
/// statement (a check or a trigger on one order, a lost race), nothing of the
/// batch was stored and the refusal may be one order's own: each order is
/// then stored alone, at once, so that it gets its own answer and the others
/// are not held up by it. When the database could not be reached, whether
/// the batch committed is unknown: every order gets that answer (a retry
/// with the same key finds the order if it was stored).
async fn insert_batch<S: OrderRepository>(
    store: &S,
    batch: Vec<NewOrder>,
) -> Vec<Result<Result<(), InsertError>, tonic::Status>> {
    if batch.len() > 1 {
        match store.insert_many(&batch).await {
            Ok(stored) => {
                return stored
                    .into_iter()
                    .map(|stored| {
                        Ok(if stored {
                            Ok(())
                        } else {
                            Err(InsertError::DuplicateIdempotencyKey)
                        })
                    })
                    .collect();
            }
            Err(error) if platform::db::classify(&error) == DbFailure::Unavailable => {
                return batch
                    .iter()
                    .map(|_| Ok(Err(InsertError::Db(outage(&error)))))
                    .collect();
            }
            Err(error) => {
                tracing::warn!(%error, orders = batch.len(), "a batch of orders was refused; storing each alone");
            }
        }
    }
    futures::future::join_all(
        batch
            .into_iter()
            .map(|new| async { Ok(store.insert(new).await) }),
    )
    .await
}

/// An outage's error for each order of a batch that met it (it is
/// classified as the original was: the database is unavailable).
fn outage(error: &DbErr) -> DbErr {
    DbErr::Conn(RuntimeErr::Internal(error.to_string()))
}

/// The answer when a batcher itself stopped (the service is shutting down).
fn stopped(status: tonic::Status) -> DbErr {
    DbErr::Conn(RuntimeErr::Internal(status.message().to_owned()))
}

fn outcome_reason(outcome: Outcome, reason: Option<String>) -> Option<String> {
    match outcome {
        Outcome::Confirmed => None,
        Outcome::Rejected => {
            Some(reason.unwrap_or_else(|| "rejected by the order flow".to_owned()))
        }
    }
}

fn created_event(order: &Order) -> OrderCreated {
    OrderCreated {
        order_id: order.id.to_string(),
        user_id: order.user_id.to_string(),
        items: order
            .lines
            .iter()
            .map(|line| EventLine {
                product_id: line.product_id.to_string(),
                quantity: line.quantity,
                unit_price: money(line.unit_price).to_string(),
            })
            .collect(),
        total: money(order.total).to_string(),
        created_at: Some(platform::grpc::timestamp(order.created_at)),
    }
}

fn cancelled_event(order: &Order) -> OrderCancelled {
    OrderCancelled {
        order_id: order.id.to_string(),
        user_id: order.user_id.to_string(),
        cancelled_at: Some(platform::grpc::timestamp(Utc::now())),
    }
}
