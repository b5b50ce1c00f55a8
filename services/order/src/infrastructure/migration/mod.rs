//! The Order database's migrations, applied by `order migrate` and at
//! start-up, under an advisory lock (see `platform::db::migrate`).

use sea_orm_migration::prelude::*;

mod m20261124_000001_orders;
mod m20261124_000002_outbox_failed_at;
mod m20261202_000003_outbox_claims;

pub struct Migrator;

/// The migration in module `$m` (its `NAME`, `UP` and `DOWN`).
macro_rules! sql {
    ($m:ident) => {
        Box::new(platform::db::SqlMigration {
            name: $m::NAME,
            up: $m::UP,
            down: $m::DOWN,
        })
    };
}

#[async_trait::async_trait]
impl MigratorTrait for Migrator {
    fn migrations() -> Vec<Box<dyn MigrationTrait>> {
        vec![
            sql!(m20261124_000001_orders),
            sql!(m20261124_000002_outbox_failed_at),
            sql!(m20261202_000003_outbox_claims),
        ]
    }
}
