//! The harness itself: per-test databases and streams leave nothing behind,
//! private servers survive restarts, and service processes die with their
//! process group.

use std::time::Duration;

use sea_orm::{ConnectionTrait, Database, DbBackend, Statement};
use testkit::{PgServer, PrivateNats, PrivatePostgres, TestDb, TestNats};

async fn database_exists(server: &PgServer, name: &str) -> bool {
    let admin = Database::connect(server.url("postgres")).await.unwrap();
    let found = admin
        .query_one_raw(Statement::from_sql_and_values(
            DbBackend::Postgres,
            "SELECT 1 FROM pg_database WHERE datname = $1",
            [name.into()],
        ))
        .await
        .unwrap()
        .is_some();
    admin.close().await.unwrap();
    found
}

#[tokio::test]
async fn test_database_is_dropped_even_while_connected() {
    let db = TestDb::create().await;
    let name = db.name.clone();
    let server = db.server.clone();
    let conn = db.connect().await;
    conn.execute_unprepared("CREATE TABLE t (x int)")
        .await
        .unwrap();
    assert!(database_exists(&server, &name).await);
    drop(db); // WITH (FORCE) ends the open connection
    assert!(!database_exists(&server, &name).await);
}

#[tokio::test]
async fn test_streams_are_deleted() {
    let nats = TestNats::new();
    let js = nats.jetstream().await;
    js.create_stream(async_nats::jetstream::stream::Config {
        name: nats.stream.clone(),
        subjects: vec![format!("{}.created", nats.subject_prefix)],
        ..Default::default()
    })
    .await
    .unwrap();
    let stream = nats.stream.clone();
    drop(nats);
    assert!(js.get_stream(&stream).await.is_err());
}

#[tokio::test]
async fn private_postgres_survives_a_crash_restart() {
    let pg = PrivatePostgres::start();
    let db = TestDb::create_on(pg.server()).await;
    let conn = db.connect().await;
    conn.execute_unprepared("CREATE TABLE kept (x int); INSERT INTO kept VALUES (7)")
        .await
        .unwrap();
    pg.restart();
    let conn = testkit::eventually(Duration::from_secs(20), "reconnect", || async {
        let c = Database::connect(db.url()).await.ok()?;
        c.execute_unprepared("SELECT 1").await.ok()?;
        Some(c)
    })
    .await;
    let row = conn
        .query_one_raw(Statement::from_string(
            DbBackend::Postgres,
            "SELECT x FROM kept",
        ))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(row.try_get::<i32>("", "x").unwrap(), 7);
}

#[tokio::test]
async fn private_nats_keeps_its_streams_across_a_restart() {
    let mut server = PrivateNats::start();
    let nats = TestNats::on(server.url());
    let js = nats.jetstream().await;
    js.create_stream(async_nats::jetstream::stream::Config {
        name: nats.stream.clone(),
        subjects: vec!["kept.>".into()],
        storage: async_nats::jetstream::stream::StorageType::File,
        ..Default::default()
    })
    .await
    .unwrap();
    js.publish("kept.one", "x".into())
        .await
        .unwrap()
        .await
        .unwrap();
    server.restart();
    let js = nats.jetstream().await;
    let mut stream = js.get_stream(&nats.stream).await.unwrap();
    assert_eq!(stream.info().await.unwrap().state.messages, 1);
}
