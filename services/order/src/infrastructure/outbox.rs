//! The outbox table: records written in the same transaction as the order
//! change they announce, read and marked sent by the relay.

use std::time::Duration;

use sea_orm::sea_query::{Expr, ExprTrait};
use sea_orm::{
    ActiveValue::{NotSet, Set},
    ColumnTrait, ConnectionTrait, DbBackend, DbErr, EntityTrait, FromQueryResult, PaginatorTrait,
    QueryFilter, Statement,
};
use uuid::Uuid;

use super::entities::outbox;
use crate::application::ports::{
    ORDER_CREATED, OutboxEvent, OutboxRecord, OutboxRepository, Unpublishable,
};

pub async fn insert<C: ConnectionTrait>(conn: &C, event: OutboxEvent) -> Result<(), DbErr> {
    outbox::Entity::insert(outbox::ActiveModel {
        id: NotSet,
        order_id: Set(event.order_id),
        event_type: Set(event.event_type.to_owned()),
        payload: Set(event.payload),
        trace_context: Set(event.trace_context),
        created_at: Set(chrono::Utc::now()),
        sent_at: Set(None),
        attempts: Set(0),
        last_error: Set(None),
        failed_at: Set(None),
        claimed_until: Set(None),
    })
    .exec_without_returning(conn)
    .await?;
    Ok(())
}

/// Claims up to `limit` unsent records, oldest first, for `lease`, in one
/// statement that commits at once: no lock outlives it. Records another
/// relay claimed (and whose lease has not run out) or is claiming right now
/// are skipped, so replicas share the work and never send one record at the
/// same time; records set aside ([`set_aside`]) are not taken again. A relay
/// that dies holding a claim frees its records when the lease runs out.
pub async fn claim_unsent<C: ConnectionTrait>(
    conn: &C,
    limit: u64,
    lease: Duration,
) -> Result<Vec<OutboxRecord>, DbErr> {
    let lease_ms = i64::try_from(lease.as_millis()).unwrap_or(i64::MAX);
    let mut records = outbox::Model::find_by_statement(Statement::from_sql_and_values(
        DbBackend::Postgres,
        "UPDATE outbox SET claimed_until = now() + $2 * interval '1 millisecond' \
         WHERE id IN (SELECT id FROM outbox \
                      WHERE sent_at IS NULL AND failed_at IS NULL \
                        AND (claimed_until IS NULL OR claimed_until < now()) \
                      ORDER BY id LIMIT $1 FOR UPDATE SKIP LOCKED) \
         RETURNING *",
        [(limit as i64).into(), lease_ms.into()],
    ))
    .all(conn)
    .await?;
    records.sort_by_key(|r| r.id);
    Ok(records
        .into_iter()
        .map(|r| OutboxRecord {
            id: r.id,
            order_id: r.order_id,
            event_type: r.event_type,
            payload: r.payload,
            trace_context: r.trace_context,
            attempts: r.attempts,
        })
        .collect())
}

/// Frees claimed records this relay will not publish in this pass.
pub async fn release_claims<C: ConnectionTrait>(conn: &C, ids: &[i64]) -> Result<(), DbErr> {
    if ids.is_empty() {
        return Ok(());
    }
    conn.execute_raw(Statement::from_sql_and_values(
        DbBackend::Postgres,
        "UPDATE outbox SET claimed_until = NULL WHERE id = ANY($1) AND sent_at IS NULL",
        [ids.to_vec().into()],
    ))
    .await?;
    Ok(())
}

/// Marks the records the Producer confirmed as sent, in one statement.
pub async fn mark_sent<C: ConnectionTrait>(conn: &C, ids: &[i64]) -> Result<(), DbErr> {
    if ids.is_empty() {
        return Ok(());
    }
    conn.execute_raw(Statement::from_sql_and_values(
        DbBackend::Postgres,
        "UPDATE outbox SET sent_at = now(), attempts = attempts + 1, last_error = NULL, \
                           claimed_until = NULL \
         WHERE id = ANY($1)",
        [ids.to_vec().into()],
    ))
    .await?;
    Ok(())
}

/// Deletes up to `limit` records sent more than `retention` ago; returns how
/// many went.
pub async fn prune_sent<C: ConnectionTrait>(
    conn: &C,
    retention: Duration,
    limit: u64,
) -> Result<u64, DbErr> {
    let retention_ms = i64::try_from(retention.as_millis()).unwrap_or(i64::MAX);
    let result = conn
        .execute_raw(Statement::from_sql_and_values(
            DbBackend::Postgres,
            // The outer condition again: a record the sweeper handed back
            // to the relay meanwhile (sent_at NULL) is not deleted.
            "DELETE FROM outbox WHERE id IN (SELECT id FROM outbox \
             WHERE sent_at < now() - $1 * interval '1 millisecond' LIMIT $2) \
             AND sent_at < now() - $1 * interval '1 millisecond'",
            [retention_ms.into(), (limit as i64).into()],
        ))
        .await?;
    Ok(result.rows_affected())
}

#[derive(FromQueryResult)]
struct UnpublishableRow {
    order_id: Uuid,
    last_error: Option<String>,
}

/// PENDING orders whose creation record was set aside (at most `limit`).
pub async fn pending_set_aside<C: ConnectionTrait>(
    conn: &C,
    limit: u64,
) -> Result<Vec<Unpublishable>, DbErr> {
    let rows = UnpublishableRow::find_by_statement(Statement::from_sql_and_values(
        DbBackend::Postgres,
        "SELECT x.order_id, x.last_error FROM outbox x JOIN orders o ON o.id = x.order_id \
         WHERE x.failed_at IS NOT NULL AND x.event_type = $1 AND o.status = 'PENDING' \
         ORDER BY x.id LIMIT $2",
        [ORDER_CREATED.into(), (limit as i64).into()],
    ))
    .all(conn)
    .await?;
    Ok(rows
        .into_iter()
        .map(|r| Unpublishable {
            order_id: r.order_id,
            last_error: r.last_error,
        })
        .collect())
}

/// Hands the creation records of orders PENDING for longer than `after`, and
/// sent longer than `after` ago, to the relay again (the event may have been
/// lost or dead-lettered without a verdict); returns their orders. The
/// Consumer applies a repeated event once in effect.
pub async fn republish_stale<C: ConnectionTrait>(
    conn: &C,
    after: Duration,
    limit: u64,
) -> Result<Vec<Uuid>, DbErr> {
    let after_ms = i64::try_from(after.as_millis()).unwrap_or(i64::MAX);
    let rows = conn
        .query_all_raw(Statement::from_sql_and_values(
            DbBackend::Postgres,
            "UPDATE outbox SET sent_at = NULL, claimed_until = NULL \
             WHERE id IN (SELECT x.id FROM orders o JOIN outbox x ON x.order_id = o.id \
                          WHERE o.status = 'PENDING' \
                            AND o.created_at < now() - $1 * interval '1 millisecond' \
                            AND x.event_type = $2 AND x.failed_at IS NULL \
                            AND x.sent_at < now() - $1 * interval '1 millisecond' \
                          ORDER BY o.created_at LIMIT $3 FOR UPDATE OF x SKIP LOCKED) \
             RETURNING order_id",
            [after_ms.into(), ORDER_CREATED.into(), (limit as i64).into()],
        ))
        .await?;
    rows.iter().map(|row| row.try_get("", "order_id")).collect()
}

/// Records a failed attempt of these records and frees them for the next pass.
pub async fn record_failures<C: ConnectionTrait>(
    conn: &C,
    ids: &[i64],
    error: &str,
) -> Result<(), DbErr> {
    if ids.is_empty() {
        return Ok(());
    }
    conn.execute_raw(Statement::from_sql_and_values(
        DbBackend::Postgres,
        "UPDATE outbox SET attempts = attempts + 1, last_error = $2, claimed_until = NULL \
         WHERE id = ANY($1)",
        [ids.to_vec().into(), error.into()],
    ))
    .await?;
    Ok(())
}

/// Sets aside a record the Producer can never take, with the reason: it
/// stays unsent, for someone to look at, and is not taken again.
pub async fn set_aside<C: ConnectionTrait>(txn: &C, id: i64, error: &str) -> Result<(), DbErr> {
    outbox::Entity::update_many()
        .col_expr(outbox::Column::FailedAt, Expr::value(chrono::Utc::now()))
        .col_expr(
            outbox::Column::Attempts,
            Expr::col(outbox::Column::Attempts).add(1),
        )
        .col_expr(outbox::Column::LastError, Expr::value(error.to_owned()))
        .filter(outbox::Column::Id.eq(id))
        .exec(txn)
        .await?;
    Ok(())
}

/// How many records wait to be sent (those set aside not included: the
/// unsent index counts them without a scan of the table).
pub async fn backlog<C: ConnectionTrait>(conn: &C) -> Result<u64, DbErr> {
    outbox::Entity::find()
        .filter(outbox::Column::SentAt.is_null())
        .filter(outbox::Column::FailedAt.is_null())
        .count(conn)
        .await
}

/// The outbox of the service's database, as the relay and the sweeper use it.
#[derive(Clone)]
pub struct OutboxStore {
    db: sea_orm::DatabaseConnection,
}

impl OutboxStore {
    pub fn new(db: sea_orm::DatabaseConnection) -> Self {
        OutboxStore { db }
    }
}

impl OutboxRepository for OutboxStore {
    async fn claim_unsent(&self, limit: u64, lease: Duration) -> Result<Vec<OutboxRecord>, DbErr> {
        claim_unsent(&self.db, limit, lease).await
    }

    async fn release_claims(&self, ids: &[i64]) -> Result<(), DbErr> {
        release_claims(&self.db, ids).await
    }

    async fn mark_sent(&self, ids: &[i64]) -> Result<(), DbErr> {
        mark_sent(&self.db, ids).await
    }

    async fn prune_sent(&self, retention: Duration, limit: u64) -> Result<u64, DbErr> {
        prune_sent(&self.db, retention, limit).await
    }

    async fn pending_set_aside(&self, limit: u64) -> Result<Vec<Unpublishable>, DbErr> {
        pending_set_aside(&self.db, limit).await
    }

    async fn republish_stale(&self, after: Duration, limit: u64) -> Result<Vec<Uuid>, DbErr> {
        republish_stale(&self.db, after, limit).await
    }

    async fn record_failures(&self, ids: &[i64], error: &str) -> Result<(), DbErr> {
        record_failures(&self.db, ids, error).await
    }

    async fn set_aside(&self, id: i64, error: &str) -> Result<(), DbErr> {
        set_aside(&self.db, id, error).await
    }

    async fn backlog(&self) -> Result<u64, DbErr> {
        backlog(&self.db).await
    }
}
