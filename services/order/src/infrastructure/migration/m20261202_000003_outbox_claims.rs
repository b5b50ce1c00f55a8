//! The relay claims records with a lease and commits before it publishes,
//! so that no row lock is held across Producer calls; sent records are
//! pruned after a retention period; the sweeper finds PENDING orders (and
//! their records) by index, at a cost that does not grow with the tables.

/// The name `seaql_migrations` records.
pub const NAME: &str = "m20261202_000003_outbox_claims";

pub const UP: &str = r#"
ALTER TABLE outbox ADD COLUMN claimed_until timestamptz;
CREATE INDEX outbox_order ON outbox (order_id);
CREATE INDEX outbox_sent ON outbox (sent_at) WHERE sent_at IS NOT NULL;
CREATE INDEX orders_pending ON orders (created_at) WHERE status = 'PENDING';
"#;

pub const DOWN: &str = r#"
DROP INDEX orders_pending;
DROP INDEX outbox_sent;
DROP INDEX outbox_order;
ALTER TABLE outbox DROP COLUMN claimed_until;
"#;
