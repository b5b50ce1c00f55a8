//! Readiness: a service registers named checks of its dependencies (a
//! database ping, the NATS connection, a durable consumer bound...); a small
//! periodic checker runs them, keeps the last report, sets the standard gRPC
//! health status (`""` and the service's own names) to SERVING or
//! NOT_SERVING, and `GET /readyz` on the service's port answers 200 or 503
//! with a JSON body naming what is not ready. `GET /healthz` stays pure
//! liveness.

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use serde::Serialize;
use tokio::sync::Notify;
use tonic_health::ServingStatus;
use tonic_health::server::HealthReporter;

use crate::shutdown::CancellationToken;

/// What one check says: `Ok` or why the dependency is not ready.
pub type CheckResult = Result<(), String>;

type CheckFuture = Pin<Box<dyn Future<Output = CheckResult> + Send>>;
type CheckFn = Arc<dyn Fn() -> CheckFuture + Send + Sync>;

/// How long one check may take before it counts as failed.
pub const CHECK_TIMEOUT: Duration = Duration::from_secs(2);

/// The last result of every check: the body of `GET /readyz`.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Report {
    /// `ready` or `not ready`.
    pub status: &'static str,
    /// Each check and `ok` or why it failed.
    pub checks: BTreeMap<String, String>,
    /// The checks that failed (also `starting` before the first run and
    /// `shutting down` once the service stops).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub not_ready: Vec<String>,
}

impl Report {
    pub fn is_ready(&self) -> bool {
        self.status == "ready"
    }

    fn not_ready(reason: &str) -> Self {
        Report {
            status: "not ready",
            checks: BTreeMap::new(),
            not_ready: vec![reason.to_owned()],
        }
    }
}

/// A check backed by a boolean the service sets (e.g. "the durable consumer
/// is bound"). Setting it wakes the checker at once.
#[derive(Clone)]
pub struct ReadyFlag {
    value: Arc<AtomicBool>,
    wake: Arc<Notify>,
}

impl ReadyFlag {
    pub fn set(&self, ready: bool) {
        if self.value.swap(ready, Ordering::SeqCst) != ready {
            self.wake.notify_one();
        }
    }

    pub fn get(&self) -> bool {
        self.value.load(Ordering::SeqCst)
    }
}

struct Inner {
    checks: Mutex<Vec<(String, CheckFn)>>,
    report: Mutex<Report>,
    reporter: HealthReporter,
    services: Vec<String>,
    stopping: AtomicBool,
    wake: Arc<Notify>,
    check_timeout: Duration,
}

/// The readiness of one service; cheap to clone.
#[derive(Clone)]
pub struct Readiness {
    inner: Arc<Inner>,
}

fn check_gauges() -> &'static Family<Vec<(&'static str, String)>, Gauge> {
    static GAUGES: OnceLock<Family<Vec<(&'static str, String)>, Gauge>> = OnceLock::new();
    GAUGES.get_or_init(|| {
        let family = Family::default();
        crate::metrics::register(
            "readiness_check",
            "1 when the readiness check passed at its last run, else 0, by check",
            family.clone(),
        );
        family
    })
}

impl Readiness {
    /// Readiness reported on `reporter` for the whole server (`""`) and each
    /// of `services` (gRPC service names, e.g. `NamedService::NAME`). Starts
    /// NOT_SERVING until the first [`Self::refresh`].
    pub async fn new(reporter: HealthReporter, services: &[&str]) -> Self {
        Self::with_check_timeout(reporter, services, CHECK_TIMEOUT).await
    }

    /// Like [`Self::new`], each check failing after `check_timeout`.
    pub async fn with_check_timeout(
        reporter: HealthReporter,
        services: &[&str],
        check_timeout: Duration,
    ) -> Self {
        let readiness = Readiness {
            inner: Arc::new(Inner {
                checks: Mutex::new(Vec::new()),
                report: Mutex::new(Report::not_ready("starting")),
                reporter,
                services: services.iter().map(|s| (*s).to_owned()).collect(),
                stopping: AtomicBool::new(false),
                wake: Arc::new(Notify::new()),
                check_timeout,
            }),
        };
        readiness.publish(false).await;
        readiness
    }

    /// Adds a check run at every refresh (its name appears in `/readyz`).
    pub fn add_check<F, Fut>(&self, name: &str, check: F)
    where
        F: Fn() -> Fut + Send + Sync + 'static,
        Fut: Future<Output = CheckResult> + Send + 'static,
    {
        let check: CheckFn = Arc::new(move || Box::pin(check()));
        self.inner
            .checks
            .lock()
            .expect("readiness checks")
            .push((name.to_owned(), check));
        self.inner.wake.notify_one();
    }

    /// Adds a check that passes while the returned flag is set; `why` is the
    /// message while it is not.
    pub fn add_flag(&self, name: &str, initial: bool, why: &'static str) -> ReadyFlag {
        let flag = ReadyFlag {
            value: Arc::new(AtomicBool::new(initial)),
            wake: self.inner.wake.clone(),
        };
        let value = flag.value.clone();
        self.add_check(name, move || {
            let ready = value.load(Ordering::SeqCst);
            async move { if ready { Ok(()) } else { Err(why.to_owned()) } }
        });
        flag
    }

    /// Adds a ping of a PostgreSQL database as the check `database`.
    pub fn add_database(&self, db: sea_orm::DatabaseConnection) {
        self.add_check("database", move || {
            let db = db.clone();
            async move {
                db.ping()
                    .await
                    .map_err(|e| format!("PostgreSQL does not answer: {e}"))
            }
        });
    }

    /// Adds the state of a NATS client's connection as the check `nats`.
    pub fn add_nats(&self, client: async_nats::Client) {
        self.add_check("nats", move || {
            let state = client.connection_state();
            async move {
                match state {
                    async_nats::connection::State::Connected => Ok(()),
                    other => Err(format!("NATS connection is {other}")),
                }
            }
        });
    }

    /// The last report.
    pub fn report(&self) -> Report {
        self.inner.report.lock().expect("readiness report").clone()
    }

    /// Runs every check now (concurrently, each within the check timeout),
    /// keeps the report and sets the gRPC health status.
    pub async fn refresh(&self) -> Report {
        let checks: Vec<(String, CheckFn)> =
            self.inner.checks.lock().expect("readiness checks").clone();
        let limit = self.inner.check_timeout;
        let results =
            futures::future::join_all(checks.into_iter().map(|(name, check)| async move {
                let result = match tokio::time::timeout(limit, check()).await {
                    Ok(result) => result,
                    Err(_) => Err(format!("no answer within {limit:?}")),
                };
                (name, result)
            }))
            .await;
        let stopping = self.inner.stopping.load(Ordering::SeqCst);
        let mut report = Report {
            status: "ready",
            checks: BTreeMap::new(),
            not_ready: Vec::new(),
        };
        let gauges = check_gauges();
        for (name, result) in results {
            gauges
                .get_or_create(&vec![("check", name.clone())])
                .set(i64::from(result.is_ok()));
            match result {
                Ok(()) => {
                    report.checks.insert(name, "ok".to_owned());
                }
                Err(why) => {
                    report.not_ready.push(name.clone());
                    report.checks.insert(name, why);
                }
            }
        }
        if stopping {
            report.not_ready.push("shutting down".to_owned());
        }
        if !report.not_ready.is_empty() {
            report.status = "not ready";
        }
        let previous = std::mem::replace(
            &mut *self.inner.report.lock().expect("readiness report"),
            report.clone(),
        );
        if previous.is_ready() != report.is_ready() || previous.not_ready != report.not_ready {
            if report.is_ready() {
                tracing::info!(checks = ?report.checks, "ready");
            } else {
                tracing::warn!(not_ready = ?report.not_ready, checks = ?report.checks, "not ready");
            }
        }
        self.publish(report.is_ready()).await;
        report
    }

    async fn publish(&self, ready: bool) {
        let status = if ready {
            ServingStatus::Serving
        } else {
            ServingStatus::NotServing
        };
        let reporter = &self.inner.reporter;
        reporter.set_service_status("", status).await;
        for service in &self.inner.services {
            reporter.set_service_status(service, status).await;
        }
    }

    /// Refreshes every `interval` (and at once when a flag changes or a
    /// check is added) until `stop`.
    pub async fn run(self, interval: Duration, stop: CancellationToken) {
        loop {
            self.refresh().await;
            tokio::select! {
                () = stop.cancelled() => return,
                () = tokio::time::sleep(interval) => {}
                () = self.inner.wake.notified() => {}
            }
        }
    }

    /// Runs one refresh, then spawns [`Self::run`] with the period from
    /// `READINESS_INTERVAL_MS` (default 2 s).
    pub async fn start(
        &self,
        stop: CancellationToken,
    ) -> Result<tokio::task::JoinHandle<()>, crate::ConfigError> {
        let interval = crate::settings::Env::process()
            .positive_millis(&crate::settings::READINESS_INTERVAL_MS)?;
        self.refresh().await;
        Ok(tokio::spawn(self.clone().run(interval, stop)))
    }

    /// The service is stopping: NOT_SERVING from now on, whatever the checks
    /// say, so that load balancers stop sending before the server drains.
    pub async fn shutting_down(&self) {
        self.inner.stopping.store(true, Ordering::SeqCst);
        self.inner.wake.notify_one();
        {
            let mut report = self.inner.report.lock().expect("readiness report");
            report.status = "not ready";
            if !report.not_ready.iter().any(|r| r == "shutting down") {
                report.not_ready.push("shutting down".to_owned());
            }
        }
        self.publish(false).await;
    }

    /// `GET /readyz`: 200 with the report when ready, else 503.
    pub fn http_routes(&self) -> axum::Router {
        use axum::http::StatusCode;
        use axum::routing::get;
        let readiness = self.clone();
        axum::Router::new().route(
            "/readyz",
            get(move || {
                let report = readiness.report();
                async move {
                    let status = if report.is_ready() {
                        StatusCode::OK
                    } else {
                        StatusCode::SERVICE_UNAVAILABLE
                    };
                    let body = serde_json::to_string(&report).expect("a report is JSON");
                    (
                        status,
                        [(axum::http::header::CONTENT_TYPE, "application/json")],
                        body,
                    )
                }
            }),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn failing_checks_are_named_and_a_flag_wakes_the_checker() {
        let (reporter, _server) = tonic_health::server::health_reporter();
        let readiness = Readiness::new(reporter, &["x.v1.X"]).await;
        assert_eq!(readiness.report().not_ready, vec!["starting"]);

        readiness.add_check("always", || async { Ok(()) });
        let flag = readiness.add_flag("bound", false, "not bound yet");
        let report = readiness.refresh().await;
        assert!(!report.is_ready());
        assert_eq!(report.not_ready, vec!["bound"]);
        assert_eq!(report.checks["bound"], "not bound yet");
        assert_eq!(report.checks["always"], "ok");

        let stop = CancellationToken::new();
        let task = tokio::spawn(
            readiness
                .clone()
                .run(Duration::from_secs(3600), stop.clone()),
        );
        flag.set(true);
        for _ in 0..100 {
            if readiness.report().is_ready() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert!(readiness.report().is_ready(), "{:?}", readiness.report());

        readiness.shutting_down().await;
        let report = readiness.report();
        assert!(!report.is_ready());
        assert_eq!(report.not_ready, vec!["shutting down"]);
        stop.cancel();
        task.await.unwrap();
        assert!(!readiness.refresh().await.is_ready(), "stays not ready");
    }

    #[tokio::test]
    async fn a_hanging_check_times_out_as_not_ready() {
        let (reporter, _server) = tonic_health::server::health_reporter();
        let readiness =
            Readiness::with_check_timeout(reporter, &[], Duration::from_millis(50)).await;
        readiness.add_check("stuck", std::future::pending);
        let report = readiness.refresh().await;
        assert_eq!(report.not_ready, vec!["stuck"]);
        assert!(report.checks["stuck"].contains("no answer"), "{report:?}");
    }
}
