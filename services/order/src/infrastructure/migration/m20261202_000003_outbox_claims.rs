//! The relay claims records with a lease and commits before it publishes,
//! so that no row lock is held across Producer calls; sent records are
//! pruned after a retention period; the sweeper finds PENDING orders (and
//! their records) by index, at a cost that does not grow with the tables.

use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

const UP: &str = r#"
ALTER TABLE outbox ADD COLUMN claimed_until timestamptz;
CREATE INDEX outbox_order ON outbox (order_id);
CREATE INDEX outbox_sent ON outbox (sent_at) WHERE sent_at IS NOT NULL;
CREATE INDEX orders_pending ON orders (created_at) WHERE status = 'PENDING';
"#;

const DOWN: &str = r#"
DROP INDEX orders_pending;
DROP INDEX outbox_sent;
DROP INDEX outbox_order;
ALTER TABLE outbox DROP COLUMN claimed_until;
"#;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager.get_connection().execute_unprepared(UP).await?;
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager.get_connection().execute_unprepared(DOWN).await?;
        Ok(())
    }
}
