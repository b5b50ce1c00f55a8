//! Migrations under the advisory lock: replicas starting at once do not race.

use sea_orm::{ConnectionTrait, DbBackend, Statement};
use sea_orm_migration::prelude::*;
use testkit::TestDb;

struct Migrator;

#[async_trait::async_trait]
impl MigratorTrait for Migrator {
    fn migrations() -> Vec<Box<dyn MigrationTrait>> {
        vec![Box::new(CreateWidgets)]
    }
}

#[derive(DeriveMigrationName)]
struct CreateWidgets;

#[async_trait::async_trait]
impl MigrationTrait for CreateWidgets {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        // Plain CREATE TABLE (no IF NOT EXISTS): a second runner that did not
        // wait for the lock would fail here.
        manager
            .get_connection()
            .execute_unprepared("CREATE TABLE widgets (id bigint PRIMARY KEY)")
            .await?;
        // Hold the lock long enough that the other runners must wait for it.
        manager
            .get_connection()
            .execute_unprepared("SELECT pg_sleep(0.3)")
            .await?;
        Ok(())
    }
}

#[tokio::test]
async fn concurrent_migrations_run_once() {
    let db = TestDb::create().await;
    let settings = db.settings();
    let runs = (0..4).map(|_| {
        let settings = settings.clone();
        tokio::spawn(async move { platform::db::migrate::<Migrator>(&settings).await })
    });
    for run in futures::future::join_all(runs).await {
        run.unwrap().unwrap();
    }
    let conn = db.connect().await;
    let applied = conn
        .query_one_raw(Statement::from_string(
            DbBackend::Postgres,
            "SELECT count(*) AS n FROM seaql_migrations",
        ))
        .await
        .unwrap()
        .unwrap()
        .try_get::<i64>("", "n")
        .unwrap();
    assert_eq!(applied, 1);
}

#[tokio::test]
async fn creates_a_missing_database() {
    let db = TestDb::create().await;
    let mut settings = db.settings();
    // A database that does not exist yet, named after the test's own.
    settings.database = format!("{}_new", db.name);
    platform::db::migrate::<Migrator>(&settings).await.unwrap();
    let conn = sea_orm::Database::connect(settings.url()).await.unwrap();
    conn.execute_unprepared("SELECT 1 FROM widgets")
        .await
        .unwrap();
    conn.close().await.unwrap();
    let admin = sea_orm::Database::connect(db.server.url("postgres"))
        .await
        .unwrap();
    admin
        .execute_unprepared(&format!(
            "DROP DATABASE \"{}\" WITH (FORCE)",
            settings.database
        ))
        .await
        .unwrap();
}

/// A later version of `Migrator`: one migration more.
struct NewerMigrator;

#[async_trait::async_trait]
impl MigratorTrait for NewerMigrator {
    fn migrations() -> Vec<Box<dyn MigrationTrait>> {
        vec![
            Box::new(CreateWidgets),
            Box::new(platform::db::SqlMigration {
                name: "m2_widget_names",
                up: "ALTER TABLE widgets ADD COLUMN name text",
                down: "ALTER TABLE widgets DROP COLUMN name",
            }),
        ]
    }
}

#[tokio::test]
async fn an_older_version_refuses_a_database_a_newer_one_migrated() {
    let db = TestDb::create().await;
    let settings = db.settings();
    platform::db::migrate::<Migrator>(&settings).await.unwrap();
    platform::db::migrate::<NewerMigrator>(&settings)
        .await
        .expect("an upgrade migrates");
    let refused = platform::db::migrate::<Migrator>(&settings)
        .await
        .expect_err("a downgrade across a migration is refused");
    let ahead = refused
        .downcast_ref::<platform::db::SchemaAhead>()
        .expect("told apart from a failed migration (its own exit code)");
    assert_eq!(ahead.unknown, "m2_widget_names");
    assert!(refused.to_string().contains("downgrade"), "{refused}");
    // The same version again, and a re-run of the newer one, are fine.
    platform::db::migrate::<NewerMigrator>(&settings)
        .await
        .unwrap();
}

#[tokio::test]
async fn an_older_version_still_starts_on_a_newer_schema() {
    // During an upgrade the older version's pods keep starting (a restart,
    // a scale-up) after the newer one's migration Job ran.
    let db = TestDb::create().await;
    let settings = db.settings();
    platform::db::migrate::<NewerMigrator>(&settings)
        .await
        .unwrap();
    platform::db::migrate_at_start::<Migrator>(&settings)
        .await
        .expect("served as it is");
}
