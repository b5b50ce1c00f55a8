//! Database errors are classified by their cause: a caller retries only
//! what may pass later, never a statement that fails the same way each time.

use platform::db::{DbFailure, classify, status_from_db};
use sea_orm::ConnectionTrait;
use testkit::TestDb;
use tonic::Code;

#[tokio::test]
async fn errors_are_classified_by_cause() {
    let db = TestDb::create().await;
    let conn = db.connect().await;
    conn.execute_unprepared("CREATE TABLE t (n integer NOT NULL CHECK (n >= 0) UNIQUE)")
        .await
        .unwrap();
    conn.execute_unprepared("INSERT INTO t VALUES (1)")
        .await
        .unwrap();

    let cases = [
        (
            "UPDATE t SET n = n + 2147483647",
            DbFailure::OutOfRange,
            Code::OutOfRange,
        ),
        (
            "INSERT INTO t VALUES (-1)",
            DbFailure::Rejected,
            Code::FailedPrecondition,
        ),
        (
            "INSERT INTO t VALUES (1)",
            DbFailure::Rejected,
            Code::FailedPrecondition,
        ),
        (
            "SELECT 'x'::integer",
            DbFailure::Rejected,
            Code::FailedPrecondition,
        ),
        (
            "SELECT * FROM no_such_table",
            DbFailure::Other,
            Code::Internal,
        ),
        (
            "SET statement_timeout = 1; SELECT pg_sleep(1)",
            DbFailure::Contention,
            Code::Aborted,
        ),
    ];
    for (sql, failure, code) in cases {
        let err = conn.execute_unprepared(sql).await.unwrap_err();
        assert_eq!(classify(&err), failure, "{sql}: {err}");
        let status = status_from_db(&err);
        assert_eq!(status.code(), code, "{sql}");
        // Only the lost race may be retried.
        assert_eq!(
            platform::grpc::is_transient(&status),
            failure == DbFailure::Contention,
            "{sql}"
        );
    }
}
