//! Outbox records the Producer can never take (undecodable, of an unknown
//! type, refused for what they are) are set aside with `failed_at` rather
//! than retried at the head of every pass, where enough of them would hold up
//! every record behind them.

use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

const UP: &str = r#"
ALTER TABLE outbox ADD COLUMN failed_at timestamptz;
DROP INDEX outbox_unsent;
CREATE INDEX outbox_unsent ON outbox (id) WHERE sent_at IS NULL AND failed_at IS NULL;
"#;

const DOWN: &str = r#"
DROP INDEX outbox_unsent;
ALTER TABLE outbox DROP COLUMN failed_at;
CREATE INDEX outbox_unsent ON outbox (id) WHERE sent_at IS NULL;
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
