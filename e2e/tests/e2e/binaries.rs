//! Every service binary: starts without a `.env` file, serves the standard
//! gRPC health service (the gateway: HTTP health), answers `/metrics`,
//! `/healthz` and `/readyz` (readiness following its PostgreSQL or NATS),
//! exits cleanly on SIGTERM, and refuses a malformed setting naming the
//! variable.

use std::time::Duration;

use e2e::{Stack, StackOptions, eventually};
use serde_json::Value;
use testkit::{PrivateNats, PrivatePostgres, ServiceProcess, free_port};
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};

const GRPC_SERVICES: [&str; 5] = ["user", "inventory", "producer", "order", "consumer"];

async fn http_get(addr: &str, path: &str) -> (u16, String) {
    testkit::http_get_with_status(addr, path)
        .await
        .unwrap_or_else(|e| panic!("GET {path} on {addr}: {e}"))
}

#[tokio::test]
async fn every_service_is_healthy_serves_metrics_and_stops_cleanly_on_sigterm() {
    let mut stack = Stack::start(StackOptions::default()).await;
    for service in GRPC_SERVICES {
        let (status, body) = http_get(stack.metrics_addr(service), "/metrics").await;
        assert_eq!(status, 200, "{service} /metrics");
        assert!(
            body.contains("# EOF"),
            "{service} /metrics is OpenMetrics text: {body}"
        );
        // The harness's own health checks were counted.
        assert!(
            body.contains(r#"ecommerce_grpc_server_calls_total{method="/grpc.health.v1.Health/Check",code="Ok"}"#),
            "{service} counts gRPC calls: {body}"
        );
    }
    let (status, _) = http_get(stack.addr("gateway"), "/healthz").await;
    assert_eq!(status, 200);
    for service in GRPC_SERVICES {
        let addr = stack.addr(service).to_owned();
        let (status, body) = http_get(&addr, "/healthz").await;
        assert_eq!(status, 200, "{service} /healthz: {body}");
        let (status, body) = http_get(&addr, "/readyz").await;
        assert_eq!(status, 200, "{service} /readyz: {body}");
        let body: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(body["status"], "ready", "{service}: {body}");
    }

    for (service, exit) in stack.terminate_all().await {
        assert!(exit.success(), "{service} exits 0 on SIGTERM, got {exit}");
        let log = stack.process(service).log();
        assert!(!log.contains("panicked"), "{service} panicked:\n{log}");
    }
}

#[tokio::test]
async fn migrate_command_applies_migrations_and_exits() {
    let stack = Stack::start(StackOptions::only(&[])).await;
    for service in ["user", "inventory", "order"] {
        let mut process =
            ServiceProcess::spawn_with_args(service, &["migrate"], stack.env_of(service).to_vec());
        let exit = process.wait_exit(Duration::from_secs(60)).await;
        assert!(
            exit.success(),
            "{service} migrate: {exit}\n{}",
            process.log()
        );
        // Running it again is a no-op, not an error.
        process.restart();
        let exit = process.wait_exit(Duration::from_secs(60)).await;
        assert!(
            exit.success(),
            "{service} migrate twice: {exit}\n{}",
            process.log()
        );
    }
}

#[tokio::test]
async fn a_malformed_setting_stops_start_up_naming_the_variable() {
    let cases: [(&str, &str, &str); 6] = [
        ("inventory", "INVENTORY_ADDR", "not-an-address"),
        ("order", "ORDER_ADDR", ":99999"),
        ("user", "DB_PORT", "five-four-three-two"),
        ("producer", "NATS_SUBJECT_PREFIX", "order.>"),
        ("consumer", "APP_ENV", "staging"),
        ("gateway", "API_GATEWAY_ADDR", "8080"),
    ];
    for (service, variable, value) in cases {
        let env = vec![
            ("APP_ENV".to_owned(), "development".to_owned()),
            (variable.to_owned(), value.to_owned()),
        ];
        let mut process = ServiceProcess::spawn(service, env);
        let exit = process.wait_exit(Duration::from_secs(30)).await;
        assert!(!exit.success(), "{service} must refuse {variable}={value}");
        let log = process.log();
        assert!(
            log.contains(variable),
            "{service}'s error names {variable}:\n{log}"
        );
    }
}

#[tokio::test]
async fn production_refuses_to_start_without_secrets() {
    // No JWT_SECRET in production: the gateway must not fall back to a default.
    let port = free_port();
    let token = (
        "INTERNAL_AUTH_TOKEN".to_owned(),
        e2e::INTERNAL_AUTH_TOKEN.to_owned(),
    );
    let env = vec![
        ("APP_ENV".to_owned(), "production".to_owned()),
        ("API_GATEWAY_ADDR".to_owned(), format!("127.0.0.1:{port}")),
        ("DB_PASSWORD".to_owned(), String::new()),
        token.clone(),
    ];
    let mut gateway = ServiceProcess::spawn("gateway", env.clone());
    let exit = gateway.wait_exit(Duration::from_secs(30)).await;
    assert!(!exit.success());
    assert!(gateway.log().contains("JWT_SECRET"), "{}", gateway.log());

    // No DB_PASSWORD at all in production: a database service says so.
    let mut inventory = ServiceProcess::spawn(
        "inventory",
        vec![("APP_ENV".to_owned(), "production".to_owned()), token],
    );
    let exit = inventory.wait_exit(Duration::from_secs(30)).await;
    assert!(!exit.success());
    assert!(
        inventory.log().contains("DB_PASSWORD"),
        "{}",
        inventory.log()
    );

    // No INTERNAL_AUTH_TOKEN in production: no service starts with its
    // internal calls open to any pod, nor with a guessable token.
    for (service, token) in [("producer", None), ("order", Some("too-short"))] {
        let mut env = vec![("APP_ENV".to_owned(), "production".to_owned())];
        if let Some(token) = token {
            env.push(("INTERNAL_AUTH_TOKEN".to_owned(), token.to_owned()));
        }
        let mut process = ServiceProcess::spawn(service, env);
        let exit = process.wait_exit(Duration::from_secs(30)).await;
        assert!(!exit.success(), "{service}");
        assert!(
            process.log().contains("INTERNAL_AUTH_TOKEN"),
            "{}",
            process.log()
        );
        assert!(
            !process.log().contains("too-short"),
            "the token is not logged"
        );
    }
}

/// The standard gRPC health status of `addr`'s whole server (`""`).
async fn grpc_health(addr: &str) -> Option<ServingStatus> {
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .unwrap()
        .timeout(Duration::from_secs(2))
        .connect()
        .await
        .ok()?;
    let response = HealthClient::new(channel)
        .check(HealthCheckRequest {
            service: String::new(),
        })
        .await
        .ok()?;
    ServingStatus::try_from(response.into_inner().status).ok()
}

/// Waits until `service`'s `/readyz` answers `expected`, its gRPC health
/// agrees, and (when not ready) the body names `failing`; returns the body.
async fn wait_readiness(stack: &Stack, service: &str, expected: u16, failing: &str) -> Value {
    let addr = stack.addr(service).to_owned();
    let what = format!("{service} /readyz {expected} naming {failing:?}");
    eventually(Duration::from_secs(30), &what, || async {
        let (status, body) = http_get(&addr, "/readyz").await;
        let body: Value = serde_json::from_str(&body).ok()?;
        let named = body["not_ready"]
            .as_array()
            .is_some_and(|names| names.iter().any(|n| n == failing));
        let grpc = grpc_health(&addr).await?;
        let agrees = if expected == 200 {
            body["status"] == "ready" && grpc == ServingStatus::Serving
        } else {
            body["status"] == "not ready" && named && grpc == ServingStatus::NotServing
        };
        (status == expected && agrees).then_some(body)
    })
    .await
}

#[tokio::test]
async fn readiness_follows_postgresql_and_nats_while_liveness_stays_up() {
    let pg = PrivatePostgres::start();
    let mut nats = PrivateNats::start();
    let mut options = StackOptions::only(&GRPC_SERVICES).with_env("READINESS_INTERVAL_MS", "200");
    options.pg = pg.server();
    options.nats_url = Some(nats.url());
    let stack = Stack::start(options).await;
    for service in GRPC_SERVICES {
        let body = wait_readiness(&stack, service, 200, "").await;
        let expected: &[&str] = match service {
            "producer" => &["nats"],
            "consumer" => &["durable", "nats"],
            _ => &["database"],
        };
        for check in expected {
            assert_eq!(body["checks"][check], "ok", "{service}: {body}");
        }
    }

    // PostgreSQL stops: the three database services are not ready, and say
    // why; the Producer and the Consumer do not need it; all stay alive.
    pg.stop(false);
    for service in ["user", "inventory", "order"] {
        let body = wait_readiness(&stack, service, 503, "database").await;
        assert!(
            body["checks"]["database"]
                .as_str()
                .is_some_and(|why| why != "ok"),
            "{service}: {body}"
        );
        let (_, metrics) = http_get(stack.metrics_addr(service), "/metrics").await;
        assert!(
            metrics.contains(r#"ecommerce_readiness_check{check="database"} 0"#),
            "{service} exports the failed check:\n{metrics}"
        );
    }
    for service in GRPC_SERVICES {
        let (status, _) = http_get(stack.addr(service), "/healthz").await;
        assert_eq!(status, 200, "{service} /healthz is liveness only");
    }
    for service in ["producer", "consumer"] {
        wait_readiness(&stack, service, 200, "").await;
    }
    pg.start_again();
    for service in ["user", "inventory", "order"] {
        wait_readiness(&stack, service, 200, "").await;
    }

    // NATS goes away: the Producer and the Consumer are not ready.
    nats.kill();
    for service in ["producer", "consumer"] {
        wait_readiness(&stack, service, 503, "nats").await;
    }
    for service in ["user", "inventory", "order"] {
        wait_readiness(&stack, service, 200, "").await;
    }
    nats.start_again();
    for service in ["producer", "consumer"] {
        wait_readiness(&stack, service, 200, "").await;
    }
}

#[tokio::test]
async fn migrate_in_production_needs_no_internal_token() {
    // `<service> migrate` runs as a Job before a rollout and makes no
    // internal call: it needs the database's secret, not the token.
    let db = testkit::TestDb::create().await;
    let mut env = db.server.service_env();
    env.push(("APP_ENV".into(), "production".into()));
    env.push(("INVENTORY_DB_NAME".into(), db.name.clone()));
    let mut migrate = ServiceProcess::spawn_with_args("inventory", &["migrate"], env);
    let exit = migrate.wait_exit(Duration::from_secs(60)).await;
    assert!(exit.success(), "{exit}\n{}", migrate.log());
}
