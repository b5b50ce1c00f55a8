//! Every service binary: starts without a `.env` file, serves the standard
//! gRPC health service (the gateway: HTTP health), answers `/metrics`, exits
//! cleanly on SIGTERM, and refuses a malformed setting naming the variable.

use std::time::Duration;

use testkit::{ServiceProcess, Stack, StackOptions, free_port};

const GRPC_SERVICES: [&str; 5] = ["user", "inventory", "producer", "order", "consumer"];

async fn http_get(addr: &str, path: &str) -> (u16, String) {
    let response = reqwest::get(format!("http://{addr}{path}")).await.unwrap();
    let status = response.status().as_u16();
    (status, response.text().await.unwrap())
}

#[tokio::test]
async fn every_service_is_healthy_serves_metrics_and_stops_cleanly_on_sigterm() {
    let mut stack = Stack::start(StackOptions::default()).await;
    for service in GRPC_SERVICES {
        let addr = stack.addr(service).to_owned();
        let (status, body) = http_get(&addr, "/metrics").await;
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

    // The gateway first, so that nothing calls a service that is gone.
    for service in [
        "gateway",
        "consumer",
        "order",
        "producer",
        "inventory",
        "user",
    ] {
        let exit = stack
            .process(service)
            .terminate(Duration::from_secs(15))
            .await;
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
    let env = vec![
        ("APP_ENV".to_owned(), "production".to_owned()),
        ("API_GATEWAY_ADDR".to_owned(), format!("127.0.0.1:{port}")),
        ("DB_PASSWORD".to_owned(), String::new()),
    ];
    let mut gateway = ServiceProcess::spawn("gateway", env.clone());
    let exit = gateway.wait_exit(Duration::from_secs(30)).await;
    assert!(!exit.success());
    assert!(gateway.log().contains("JWT_SECRET"), "{}", gateway.log());

    // No DB_PASSWORD at all in production: a database service says so.
    let mut inventory = ServiceProcess::spawn(
        "inventory",
        vec![("APP_ENV".to_owned(), "production".to_owned())],
    );
    let exit = inventory.wait_exit(Duration::from_secs(30)).await;
    assert!(!exit.success());
    assert!(
        inventory.log().contains("DB_PASSWORD"),
        "{}",
        inventory.log()
    );
}
