//! PostgreSQL: creating a service's database when it is missing, connecting
//! with a bounded wait, and running migrations under an advisory lock so that
//! replicas starting together cannot race.

use std::time::Duration;

use sea_orm::sea_query::extension::postgres::PgFunc;
use sea_orm::sea_query::{Expr, ExprTrait, SimpleExpr};
use sea_orm::{
    ColumnTrait, ConnectOptions, ConnectionTrait, Database, DatabaseConnection, DbBackend, DbErr,
    QueryResult, RuntimeErr, Statement, sqlx,
};
use sea_orm_migration::MigratorTrait;

use crate::config::DbSettings;

/// `column = ANY($1)`, the values bound as one array: one statement text
/// whatever their number, so one prepared statement (an `IN ($1, .., $n)`
/// list is a statement of its own for every n, parsed and planned again).
pub fn any_of<C, V>(column: C, values: impl IntoIterator<Item = V>) -> SimpleExpr
where
    C: ColumnTrait,
    Vec<V>: Into<sea_orm::Value>,
{
    column.into_expr().eq(PgFunc::any(Expr::val(
        values.into_iter().collect::<Vec<V>>(),
    )))
}

/// A query with its values bound, as [`planned_each_time`] takes it.
pub type PgQuery<'q> = sqlx::query::Query<'q, sqlx::Postgres, sqlx::postgres::PgArguments>;

/// Runs `query` as an unnamed statement, planned for its own values every
/// time, outside any transaction; its rows as sea-orm's.
///
/// For the batch statements over tables that start empty and grow (orders,
/// the stock ledger). PostgreSQL plans a prepared statement generically from
/// its sixth run on; a generic plan made while the table was a few pages scans
/// it whole, and keeps doing so as it grows, until the next ANALYZE (a minute
/// or more: autovacuum's). Measured in BENCHMARKS.md: 80 million rows read in
/// a minute of orders. Planning once per batch costs little beside that.
///
/// # Panics
///
/// When `db` is not a PostgreSQL pool (every service's is: [`connect`]).
pub async fn planned_each_time(
    db: &DatabaseConnection,
    query: PgQuery<'_>,
) -> Result<Vec<QueryResult>, DbErr> {
    query
        .persistent(false)
        .fetch_all(db.get_postgres_connection_pool())
        .await
        .map(|rows| rows.into_iter().map(QueryResult::from).collect())
        .map_err(|e| DbErr::Query(RuntimeErr::SqlxError(e.into())))
}

/// How long a pooled connection may sit idle before it is checked (a
/// round trip) on its way out of the pool.
const POOLED_CONNECTION_CHECK_AFTER_IDLE: Duration = Duration::from_secs(1);

fn options(url: String, max_connections: u32) -> ConnectOptions {
    let mut options = ConnectOptions::new(url);
    options
        .max_connections(max_connections)
        .min_connections(0)
        .connect_timeout(Duration::from_secs(5))
        .acquire_timeout(Duration::from_secs(5))
        // A connection in steady use is not pinged before each statement
        // (a round trip as dear as the statement itself: 130 against 27 µs
        // of PostgreSQL's CPU per order read); one idle long enough to have
        // been dropped (a server restart, say) still is. A connection lost
        // in between fails its statement as a connection failure, which
        // every caller already treats as transient.
        .test_before_acquire_if_idle_for(POOLED_CONNECTION_CHECK_AFTER_IDLE)
        .sqlx_logging(false);
    options
}

/// Connects to the service's database, retrying for up to `DB_CONNECT_WAIT_MS`
/// (default 30 s) while the server is not reachable yet.
pub async fn connect(settings: &DbSettings) -> anyhow::Result<DatabaseConnection> {
    connect_url(settings.url(), settings.max_connections).await
}

async fn connect_url(url: String, max_connections: u32) -> anyhow::Result<DatabaseConnection> {
    let wait = crate::settings::Env::process().millis(&crate::settings::DB_CONNECT_WAIT_MS)?;
    let deadline = tokio::time::Instant::now() + wait;
    let mut delay = Duration::from_millis(100);
    loop {
        match Database::connect(options(url.clone(), max_connections)).await {
            Ok(db) => return Ok(db),
            Err(e) if tokio::time::Instant::now() + delay < deadline => {
                tracing::warn!(error = %e, "PostgreSQL not reachable yet, retrying");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(2));
            }
            Err(e) => {
                return Err(anyhow::anyhow!(
                    "cannot connect to PostgreSQL at {}: {e}",
                    redact(&url)
                ));
            }
        }
    }
}

fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s => format!("{}***{}", &url[..s + 3], &url[at..]),
        _ => url.to_owned(),
    }
}

/// Creates the service's database when it does not exist. A user without the
/// right to create databases is fine as long as the database is there.
pub async fn ensure_database(settings: &DbSettings) -> anyhow::Result<()> {
    let admin = connect_url(settings.url_for("postgres"), 1).await?;
    let exists = admin
        .query_one_raw(Statement::from_sql_and_values(
            DbBackend::Postgres,
            "SELECT 1 FROM pg_database WHERE datname = $1",
            [settings.database.clone().into()],
        ))
        .await?
        .is_some();
    if !exists {
        let sql = format!("CREATE DATABASE \"{}\"", settings.database.replace('"', ""));
        match admin.execute_unprepared(&sql).await {
            Ok(_) => tracing::info!(database = %settings.database, "created database"),
            // Another replica created it first.
            Err(e) if e.to_string().contains("already exists") => {}
            Err(e) => {
                return Err(anyhow::anyhow!(
                    "cannot create database {}: {e}",
                    settings.database
                ));
            }
        }
    }
    admin.close().await?;
    Ok(())
}

/// Runs `M`'s pending migrations while holding a PostgreSQL advisory lock keyed
/// by the database name, on a connection of its own.
pub async fn migrate<M: MigratorTrait>(settings: &DbSettings) -> anyhow::Result<()> {
    ensure_database(settings).await?;
    let conn = connect_url(settings.url(), 1).await?;
    let key = format!("migrations:{}", settings.database);
    let lock = |sql: &'static str| {
        Statement::from_sql_and_values(DbBackend::Postgres, sql, [key.clone().into()])
    };
    conn.execute_raw(lock("SELECT pg_advisory_lock(hashtext($1))"))
        .await?;
    let result = match schema_ahead::<M>(&conn, &settings.database).await {
        Ok(None) => M::up(&conn, None)
            .await
            .map_err(|e| anyhow::anyhow!("migrations of {} failed: {e}", settings.database)),
        Ok(Some(ahead)) => Err(ahead.into()),
        Err(e) => Err(e.into()),
    };
    conn.execute_raw(lock("SELECT pg_advisory_unlock(hashtext($1))"))
        .await?;
    conn.close().await?;
    result?;
    tracing::info!(database = %settings.database, "migrations applied");
    Ok(())
}

/// A service's start-up migration: as [`migrate`], except that a database a
/// newer version migrated is served as it is, with a warning. The older
/// version keeps running on the newer schema while an upgrade's migration
/// Jobs run and during the rollout after them (each version is written to
/// run on the next one's schema); only `migrate`, the Job, refuses it.
pub async fn migrate_at_start<M: MigratorTrait>(settings: &DbSettings) -> anyhow::Result<()> {
    match migrate::<M>(settings).await {
        Err(e) if e.downcast_ref::<SchemaAhead>().is_some() => {
            tracing::warn!(error = %e, "serving a schema a newer version migrated");
            Ok(())
        }
        other => other,
    }
}

/// Exit code of a service refusing a database a newer version migrated
/// ([`SchemaAhead`]), so that a migration Job fails at once and an operator
/// can tell a refused downgrade from a failed migration.
pub const SCHEMA_AHEAD_EXIT_CODE: u8 = 3;

/// The database holds migrations this binary does not know: a newer version
/// applied them, and this one could misread the schema. Refused rather than
/// run: a downgrade across a migration is not supported.
#[derive(Debug, thiserror::Error)]
#[error(
    "database {database} was migrated by a newer version (migrations unknown to this one: {unknown}); a downgrade across a migration is refused: run a version that knows them"
)]
pub struct SchemaAhead {
    pub database: String,
    pub unknown: String,
}

async fn schema_ahead<M: MigratorTrait>(
    conn: &DatabaseConnection,
    database: &str,
) -> Result<Option<SchemaAhead>, DbErr> {
    let known: Vec<String> = M::migrations()
        .iter()
        .map(|m| m.name().to_owned())
        .collect();
    let unknown: Vec<String> = M::get_migration_models(conn)
        .await?
        .into_iter()
        .map(|applied| applied.version)
        .filter(|version| !known.contains(version))
        .collect();
    Ok((!unknown.is_empty()).then(|| SchemaAhead {
        database: database.to_owned(),
        unknown: unknown.join(", "),
    }))
}

/// Whether a database error is about reaching the database (retry later)
/// rather than about the statement: no connection to be had, the connection
/// lost under a statement (the server crashed, the network cut), or the
/// server refusing because it is shutting down or starting up.
pub fn is_connection_error(err: &DbErr) -> bool {
    if let DbErr::Exec(RuntimeErr::SqlxError(e)) | DbErr::Query(RuntimeErr::SqlxError(e)) = err {
        match e.as_ref() {
            sqlx::Error::Io(_)
            | sqlx::Error::Tls(_)
            | sqlx::Error::PoolTimedOut
            | sqlx::Error::PoolClosed
            | sqlx::Error::WorkerCrashed => return true,
            // Class 08 (connection exception); 57P01-57P03 (the server is
            // shutting down, crashed or not accepting connections yet).
            sqlx::Error::Database(db) => {
                if let Some(code) = db.code()
                    && (code.starts_with("08") || matches!(&*code, "57P01" | "57P02" | "57P03"))
                {
                    return true;
                }
            }
            _ => {}
        }
    }
    matches!(err, DbErr::Conn(_) | DbErr::ConnectionAcquire(_)) || {
        let text = err.to_string();
        text.contains("connection")
            || text.contains("pool timed out")
            || text.contains("terminating")
    }
}

/// What a database error says about the statement, by its SQLSTATE class.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DbFailure {
    /// The database cannot be reached or is going away: retry later.
    Unavailable,
    /// Lost a race (serialization failure, deadlock, lock or statement
    /// timeout, resources short): the same statement may succeed again.
    Contention,
    /// A value out of its type's range (SQLSTATE 22003): never succeeds.
    OutOfRange,
    /// Invalid data (class 22) or a broken constraint (class 23): never
    /// succeeds.
    Rejected,
    /// Anything else (a bug): never succeeds as it is.
    Other,
}

/// Classifies a database error by its cause.
pub fn classify(err: &DbErr) -> DbFailure {
    if is_connection_error(err) {
        return DbFailure::Unavailable;
    }
    let code = match err {
        DbErr::Exec(RuntimeErr::SqlxError(e)) | DbErr::Query(RuntimeErr::SqlxError(e)) => {
            match e.as_ref() {
                sqlx::Error::Database(db) => db.code().map(|c| c.into_owned()),
                _ => None,
            }
        }
        _ => None,
    };
    match code.as_deref() {
        // A read-only transaction (a replica promoted, a failover under
        // way), a dropped database or a system I/O error: the server's
        // state, not the statement's fault.
        Some("25006" | "57P04") => DbFailure::Unavailable,
        Some(c) if c.starts_with("58") => DbFailure::Unavailable,
        Some("40001" | "40P01" | "55P03" | "57014") => DbFailure::Contention,
        Some(c) if c.starts_with("53") => DbFailure::Contention,
        Some("22003") => DbFailure::OutOfRange,
        Some(c) if c.starts_with("22") || c.starts_with("23") => DbFailure::Rejected,
        _ => DbFailure::Other,
    }
}

/// Maps a database error that escaped the domain to a gRPC status whose code
/// says whether a retry can help: an outage is UNAVAILABLE and a lost race
/// ABORTED (callers retry); a value out of range is OUT_OF_RANGE, invalid data
/// or a broken constraint FAILED_PRECONDITION, anything else INTERNAL (callers
/// do not retry those). No SQL is leaked.
pub fn status_from_db(err: &DbErr) -> tonic::Status {
    match classify(err) {
        DbFailure::Unavailable => {
            tracing::warn!(error = %err, "database unavailable");
            tonic::Status::unavailable("the database is unavailable, try again")
        }
        DbFailure::Contention => {
            tracing::warn!(error = %err, "database contention");
            tonic::Status::aborted("the database was busy, try again")
        }
        DbFailure::OutOfRange => {
            tracing::error!(error = %err, "database value out of range");
            tonic::Status::out_of_range("a value is out of its range")
        }
        DbFailure::Rejected => {
            tracing::error!(error = %err, "database refused the data");
            tonic::Status::failed_precondition("the data breaks a rule of the database")
        }
        DbFailure::Other => {
            tracing::error!(error = %err, "database error");
            tonic::Status::internal("internal error")
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn redacts_password() {
        assert_eq!(
            super::redact("postgres://u:secret@h:5432/db"),
            "postgres://***@h:5432/db"
        );
    }
}

pub use sql_migration::SqlMigration;

mod sql_migration {
    use sea_orm_migration::prelude::*;

    /// A migration written as plain SQL: what every service's migrations
    /// are. `name` is the one recorded in `seaql_migrations` (never rename
    /// one that shipped).
    pub struct SqlMigration {
        pub name: &'static str,
        pub up: &'static str,
        pub down: &'static str,
    }

    impl MigrationName for SqlMigration {
        fn name(&self) -> &str {
            self.name
        }
    }

    #[async_trait::async_trait]
    impl MigrationTrait for SqlMigration {
        async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
            manager.get_connection().execute_unprepared(self.up).await?;
            Ok(())
        }

        async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
            manager
                .get_connection()
                .execute_unprepared(self.down)
                .await?;
            Ok(())
        }
    }
}
