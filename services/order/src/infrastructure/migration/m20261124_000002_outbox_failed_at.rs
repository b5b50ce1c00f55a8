//! Outbox records the Producer can never take (undecodable, of an unknown
//! type, refused for what they are) are set aside with `failed_at` rather
//! than retried at the head of every pass, where enough of them would hold up
//! every record behind them.

/// The name `seaql_migrations` records.
pub const NAME: &str = "m20261124_000002_outbox_failed_at";

pub const UP: &str = r#"
ALTER TABLE outbox ADD COLUMN failed_at timestamptz;
DROP INDEX outbox_unsent;
CREATE INDEX outbox_unsent ON outbox (id) WHERE sent_at IS NULL AND failed_at IS NULL;
"#;

pub const DOWN: &str = r#"
DROP INDEX outbox_unsent;
ALTER TABLE outbox DROP COLUMN failed_at;
CREATE INDEX outbox_unsent ON outbox (id) WHERE sent_at IS NULL;
"#;
