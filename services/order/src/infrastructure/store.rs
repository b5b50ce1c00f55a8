//! Orders in PostgreSQL. Every status change is a conditional UPDATE
//! (`WHERE status = <the status the decision was made on>`), so two
//! concurrent transitions cannot both win; an event announcing a change is
//! written to the outbox in the same transaction.

use std::collections::{HashMap, HashSet};

use sea_orm::sea_query::Expr;
use sea_orm::{
    ColumnTrait, ConnectionTrait, DatabaseConnection, DbBackend, DbErr, EntityTrait,
    FromQueryResult, PaginatorTrait, QueryFilter, QueryOrder, QuerySelect, Statement,
    TransactionTrait,
};
use uuid::Uuid;

use super::entities::{order_items, orders};
use super::outbox;
use crate::application::ports::{
    InsertError, NewOrder, OrderRepository, StatusChanged, StatusDecision,
};
use crate::domain::{Order, OrderStatus, PricedLine};

/// How often a status change is re-decided after losing a race.
const STATUS_CHANGE_ATTEMPTS: usize = 5;

/// Orders PENDING since before `age` ago (by the PENDING index: the cost
/// does not grow with the orders table).
fn pending_since(age: std::time::Duration) -> sea_orm::Select<orders::Entity> {
    let cutoff =
        chrono::Utc::now() - chrono::Duration::from_std(age).unwrap_or(chrono::Duration::MAX);
    orders::Entity::find()
        .filter(orders::Column::Status.eq(OrderStatus::Pending.as_str()))
        .filter(orders::Column::CreatedAt.lt(cutoff))
}

#[derive(Clone)]
pub struct OrderStore {
    db: DatabaseConnection,
}

impl OrderStore {
    pub fn new(db: DatabaseConnection) -> Self {
        OrderStore { db }
    }
}

impl OrderRepository for OrderStore {
    /// The order `user_id` created with `key`, with its request fingerprint.
    async fn find_by_idempotency_key(
        &self,
        user_id: Uuid,
        key: &str,
    ) -> Result<Option<(Order, String)>, DbErr> {
        let Some(model) = orders::Entity::find()
            .filter(orders::Column::UserId.eq(user_id))
            .filter(orders::Column::IdempotencyKey.eq(key))
            .one(&self.db)
            .await?
        else {
            return Ok(None);
        };
        let fingerprint = model.request_fingerprint.clone().unwrap_or_default();
        let items = items_of(&self.db, &[model.id]).await?;
        Ok(Some((to_domain(model, &items)?, fingerprint)))
    }

    /// Stores the order, its lines and its outbox record in one statement: a
    /// data-modifying WITH is atomic like a transaction (the statement of a
    /// batch, with one order).
    async fn insert(&self, new: NewOrder) -> Result<(), InsertError> {
        match self.insert_many(std::slice::from_ref(&new)).await?[..] {
            [true] => Ok(()),
            _ => Err(InsertError::DuplicateIdempotencyKey),
        }
    }

    async fn insert_many(&self, new: &[NewOrder]) -> Result<Vec<bool>, DbErr> {
        let mut ids = Vec::with_capacity(new.len());
        let mut user_ids = Vec::with_capacity(new.len());
        let mut statuses = Vec::with_capacity(new.len());
        let mut totals = Vec::with_capacity(new.len());
        let mut keys = Vec::with_capacity(new.len());
        let mut fingerprints = Vec::with_capacity(new.len());
        let mut created = Vec::with_capacity(new.len());
        let (mut line_orders, mut line_numbers, mut products, mut quantities, mut prices) =
            (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
        let mut event_orders = Vec::with_capacity(new.len());
        let mut event_types = Vec::with_capacity(new.len());
        let mut payloads: Vec<Vec<u8>> = Vec::with_capacity(new.len());
        let mut contexts = Vec::with_capacity(new.len());
        // In key order: two batches racing over the same keys wait for each
        // other in the same order, never in a cycle.
        let mut in_key_order: Vec<&NewOrder> = new.iter().collect();
        in_key_order.sort_by(|a, b| {
            (a.order.user_id, &a.idempotency).cmp(&(b.order.user_id, &b.idempotency))
        });
        for NewOrder {
            order,
            idempotency,
            event,
        } in in_key_order
        {
            ids.push(order.id);
            user_ids.push(order.user_id);
            statuses.push(order.status.as_str().to_owned());
            totals.push(order.total.to_string());
            // No key is an empty one here, NULL in the table (never a real
            // key: keys are validated non-empty).
            let (key, fingerprint) = idempotency.clone().unwrap_or_default();
            keys.push(key);
            fingerprints.push(fingerprint);
            created.push(order.created_at);
            for (line_no, line) in order.lines.iter().enumerate() {
                line_orders.push(order.id);
                line_numbers.push(line_no as i16);
                products.push(line.product_id);
                quantities.push(line.quantity as i32);
                prices.push(line.unit_price.to_string());
            }
            event_orders.push(event.order_id);
            event_types.push(event.event_type.to_owned());
            payloads.push(event.payload.clone());
            contexts.push(event.trace_context.to_string());
        }
        // One statement whatever the batch's size (one prepared statement);
        // a row whose (user, key) is taken is skipped with its lines and
        // record, and the others go in.
        let rows = self
            .db
            .query_all_raw(Statement::from_sql_and_values(
                DbBackend::Postgres,
                "WITH new_orders AS ( \
                   INSERT INTO orders (id, user_id, status, total, status_reason, idempotency_key, \
                                       request_fingerprint, created_at, updated_at) \
                   SELECT id, user_id, status, total, NULL, NULLIF(key, ''), NULLIF(fp, ''), at, at \
                   FROM unnest($1::uuid[], $2::uuid[], $3::text[], $4::numeric[], $5::text[], \
                               $6::text[], $7::timestamptz[]) AS t(id, user_id, status, total, key, fp, at) \
                   ON CONFLICT (user_id, idempotency_key) DO NOTHING \
                   RETURNING id), \
                 new_items AS ( \
                   INSERT INTO order_items (order_id, line_no, product_id, quantity, unit_price) \
                   SELECT i.order_id, i.line_no, i.product_id, i.quantity, i.unit_price \
                   FROM unnest($8::uuid[], $9::int2[], $10::uuid[], $11::int4[], $12::numeric[]) \
                        AS i(order_id, line_no, product_id, quantity, unit_price) \
                   JOIN new_orders n ON n.id = i.order_id), \
                 new_outbox AS ( \
                   INSERT INTO outbox (order_id, event_type, payload, trace_context, created_at, attempts) \
                   SELECT e.order_id, e.event_type, e.payload, e.tc::jsonb, now(), 0 \
                   FROM unnest($13::uuid[], $14::text[], $15::bytea[], $16::text[]) \
                        AS e(order_id, event_type, payload, tc) \
                   JOIN new_orders n ON n.id = e.order_id) \
                 SELECT id FROM new_orders",
                [
                    ids.into(),
                    user_ids.into(),
                    statuses.into(),
                    totals.into(),
                    keys.into(),
                    fingerprints.into(),
                    created.into(),
                    line_orders.into(),
                    line_numbers.into(),
                    products.into(),
                    quantities.into(),
                    prices.into(),
                    event_orders.into(),
                    event_types.into(),
                    payloads.into(),
                    contexts.into(),
                ],
            ))
            .await?;
        let mut stored = HashSet::with_capacity(rows.len());
        for row in rows {
            stored.insert(row.try_get::<Uuid>("", "id")?);
        }
        Ok(new.iter().map(|n| stored.contains(&n.order.id)).collect())
    }

    async fn find(&self, id: Uuid) -> Result<Option<Order>, DbErr> {
        load(&self.db, id).await
    }

    /// One page of orders, newest first (of one user when `user_id` is
    /// given), and how many there are in all.
    async fn list(
        &self,
        user_id: Option<Uuid>,
        page: u64,
        page_size: u64,
    ) -> Result<(Vec<Order>, u64), DbErr> {
        let mut query = orders::Entity::find();
        if let Some(user_id) = user_id {
            query = query.filter(orders::Column::UserId.eq(user_id));
        }
        let total = query.clone().count(&self.db).await?;
        let models = query
            .order_by_desc(orders::Column::CreatedAt)
            .order_by_desc(orders::Column::Id)
            .offset(page.saturating_sub(1).saturating_mul(page_size))
            .limit(page_size)
            .all(&self.db)
            .await?;
        let ids: Vec<Uuid> = models.iter().map(|m| m.id).collect();
        let items = items_of(&self.db, &ids).await?;
        let orders = models
            .into_iter()
            .map(|m| to_domain(m, &items))
            .collect::<Result<_, _>>()?;
        Ok((orders, total))
    }

    /// The oldest `limit` orders PENDING since before `age` ago.
    async fn pending_older_than(
        &self,
        age: std::time::Duration,
        limit: u64,
    ) -> Result<Vec<Uuid>, DbErr> {
        Ok(pending_since(age)
            .order_by_asc(orders::Column::CreatedAt)
            .limit(limit)
            .all(&self.db)
            .await?
            .into_iter()
            .map(|m| m.id)
            .collect())
    }

    /// How many orders are PENDING since before `age` ago.
    async fn count_pending_older_than(&self, age: std::time::Duration) -> Result<u64, DbErr> {
        pending_since(age).count(&self.db).await
    }

    /// Moves each of these orders that is PENDING to its outcome, in one
    /// statement (one commit for all); the ids it moved. The others (already
    /// decided, or not there) are for [`OrderStore::change_status`] to
    /// answer one by one. An id given twice is moved once.
    async fn record_pending_outcomes(
        &self,
        outcomes: &[(Uuid, OrderStatus, Option<String>)],
    ) -> Result<HashSet<Uuid>, DbErr> {
        let mut seen = HashSet::new();
        let unique: Vec<&(Uuid, OrderStatus, Option<String>)> = outcomes
            .iter()
            .filter(|(id, ..)| seen.insert(*id))
            .collect();
        if unique.is_empty() {
            return Ok(HashSet::new());
        }
        let ids: Vec<Uuid> = unique.iter().map(|(id, ..)| *id).collect();
        let statuses: Vec<String> = unique
            .iter()
            .map(|(_, to, _)| to.as_str().to_owned())
            .collect();
        // '' for none: the reason kept is then the one the order has.
        let reasons: Vec<String> = unique
            .iter()
            .map(|(.., reason)| reason.clone().unwrap_or_default())
            .collect();
        let rows = platform::db::planned_each_time(
            &self.db,
            sea_orm::sqlx::query(
                "UPDATE orders o SET status = v.status, updated_at = now(), \
                 status_reason = COALESCE(NULLIF(v.reason, ''), o.status_reason) \
                 FROM unnest($1::uuid[], $2::text[], $3::text[]) AS v(id, status, reason) \
                 WHERE o.id = v.id AND o.status = $4 RETURNING o.id",
            )
            .bind(ids)
            .bind(statuses)
            .bind(reasons)
            .bind(OrderStatus::Pending.as_str()),
        )
        .await?;
        rows.iter()
            .map(|row| row.try_get::<Uuid>("", "id"))
            .collect()
    }

    /// Applies `decide` to the order as it is and writes its decision, with
    /// its outbox record, in one transaction. When a concurrent change got
    /// there first (the conditional UPDATE matched nothing), decides again on
    /// the new status. `None` when there is no such order.
    async fn change_status<E, F>(&self, id: Uuid, decide: F) -> Result<Option<StatusChanged>, E>
    where
        E: From<DbErr> + Send,
        F: Fn(&Order) -> Result<StatusDecision, E> + Send + Sync,
    {
        for _ in 0..STATUS_CHANGE_ATTEMPTS {
            let txn = self.db.begin().await?;
            let Some(order) = load(&txn, id).await? else {
                return Ok(None);
            };
            let (to, reason, event) = match decide(&order)? {
                StatusDecision::Keep => {
                    txn.commit().await?;
                    return Ok(Some(StatusChanged {
                        order,
                        replayed: true,
                    }));
                }
                StatusDecision::Set { to, reason, event } => (to, reason, event),
            };
            let now = chrono::Utc::now();
            let mut update = orders::Entity::update_many()
                .col_expr(orders::Column::Status, Expr::value(to.as_str()))
                .col_expr(orders::Column::UpdatedAt, Expr::value(now))
                .filter(orders::Column::Id.eq(id))
                .filter(orders::Column::Status.eq(order.status.as_str()));
            if reason.is_some() {
                update = update.col_expr(orders::Column::StatusReason, Expr::value(reason));
            }
            let updated = update.exec(&txn).await?.rows_affected;
            if updated == 0 {
                // Someone else moved the order meanwhile: decide again.
                txn.rollback().await?;
                continue;
            }
            if let Some(event) = event {
                outbox::insert(&txn, event).await?;
            }
            let order = load(&txn, id).await?.ok_or_else(|| {
                DbErr::RecordNotFound(format!("order {id} vanished inside its transaction"))
            })?;
            txn.commit().await?;
            return Ok(Some(StatusChanged {
                order,
                replayed: false,
            }));
        }
        Err(DbErr::Custom(format!(
            "order {id} kept changing while its status was being changed"
        ))
        .into())
    }
}

/// An order with its lines, in one round trip (the read behind every poll
/// of an order).
async fn load<C: ConnectionTrait>(conn: &C, id: Uuid) -> Result<Option<Order>, DbErr> {
    let rows = conn
        .query_all_raw(Statement::from_sql_and_values(
            DbBackend::Postgres,
            "SELECT o.*, i.product_id, i.quantity, i.unit_price \
             FROM orders o LEFT JOIN order_items i ON i.order_id = o.id \
             WHERE o.id = $1 ORDER BY i.line_no",
            [id.into()],
        ))
        .await?;
    let Some(first) = rows.first() else {
        return Ok(None);
    };
    let model = orders::Model::from_query_result(first, "")?;
    let mut lines = Vec::with_capacity(rows.len());
    for row in &rows {
        let Some(product_id) = row.try_get::<Option<Uuid>>("", "product_id")? else {
            continue;
        };
        let quantity: i32 = row.try_get("", "quantity")?;
        lines.push(PricedLine {
            product_id,
            quantity: u32::try_from(quantity).map_err(|_| {
                DbErr::Custom(format!("order {id} has a negative quantity {quantity}"))
            })?,
            unit_price: row.try_get("", "unit_price")?,
        });
    }
    to_domain(model, &HashMap::from([(id, lines)])).map(Some)
}

/// The lines of the given orders, by order, in their original order.
async fn items_of<C: ConnectionTrait>(
    conn: &C,
    order_ids: &[Uuid],
) -> Result<HashMap<Uuid, Vec<PricedLine>>, DbErr> {
    let mut by_order: HashMap<Uuid, Vec<PricedLine>> = HashMap::new();
    if order_ids.is_empty() {
        return Ok(by_order);
    }
    let rows = order_items::Entity::find()
        .filter(platform::db::any_of(
            order_items::Column::OrderId,
            order_ids.iter().copied(),
        ))
        .order_by_asc(order_items::Column::OrderId)
        .order_by_asc(order_items::Column::LineNo)
        .all(conn)
        .await?;
    for row in rows {
        let quantity = u32::try_from(row.quantity).map_err(|_| {
            DbErr::Custom(format!(
                "order {} has a negative quantity {}",
                row.order_id, row.quantity
            ))
        })?;
        by_order.entry(row.order_id).or_default().push(PricedLine {
            product_id: row.product_id,
            quantity,
            unit_price: row.unit_price,
        });
    }
    Ok(by_order)
}

fn to_domain(model: orders::Model, items: &HashMap<Uuid, Vec<PricedLine>>) -> Result<Order, DbErr> {
    let status = OrderStatus::parse(&model.status).ok_or_else(|| {
        DbErr::Custom(format!(
            "order {} has an unknown status {:?}",
            model.id, model.status
        ))
    })?;
    Ok(Order {
        id: model.id,
        user_id: model.user_id,
        status,
        total: model.total,
        status_reason: model.status_reason,
        lines: items.get(&model.id).cloned().unwrap_or_default(),
        created_at: model.created_at,
        updated_at: model.updated_at,
    })
}
