//! Every service's `/metrics` names what the product promises after a small
//! flow through the gateway: requests, latencies and errors (HTTP at the
//! gateway, gRPC everywhere else), the outbox backlog, the Consumer's lag,
//! the events published and handled, and each readiness check.

use std::time::Duration;

use e2e::api::Api;
use e2e::flow::{http_get, metric_value};
use e2e::{Stack, StackOptions, eventually};
use reqwest::StatusCode;
use serde_json::json;

const WAIT: Duration = Duration::from_secs(30);

/// Whether a series of `name` exists (any labels) in the exposition `text`.
fn has_series(text: &str, name: &str) -> bool {
    text.lines()
        .any(|l| l.starts_with(&format!("{name}{{")) || l.starts_with(&format!("{name} ")))
}

#[tokio::test]
async fn every_service_exports_requests_latencies_errors_backlog_and_lag() {
    let stack = Stack::start(StackOptions::default()).await;
    let api = Api::new(&stack);

    // A small flow: a product, an order confirmed, and a few failures.
    let admin = api.admin().await;
    let (status, product) = api
        .call(
            reqwest::Method::POST,
            "/products",
            Some(&admin),
            Some(json!({"name": "Metered kettle", "category": "Kitchen", "stock": 5, "price": 20})),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{product}");
    let (status, order) = api
        .call(
            reqwest::Method::POST,
            "/orders",
            Some(&admin),
            Some(json!({"items": [{"product_id": product["id"], "quantity": 1}]})),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{order}");
    let order_path = format!("/orders/{}", order["id"].as_str().unwrap());
    eventually(WAIT, "the order to be CONFIRMED", || async {
        let (_, body) = api
            .call(reqwest::Method::GET, &order_path, Some(&admin), None)
            .await;
        (body["status"] == "CONFIRMED").then_some(())
    })
    .await;
    let unknown = uuid::Uuid::new_v4();
    let (status, _) = api
        .call(
            reqwest::Method::GET,
            &format!("/products/{unknown}"),
            None,
            None,
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _) = api
        .call(
            reqwest::Method::GET,
            &format!("/orders/{unknown}"),
            Some(&admin),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _) = api
        .call(
            reqwest::Method::POST,
            "/users/login",
            None,
            Some(json!({"username": e2e::ADMIN_USERNAME, "password": "wrong-password"})),
        )
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);

    let metrics = |service: &'static str| {
        let addr = stack.metrics_addr(service).to_owned();
        async move { http_get(&addr, "/metrics").await.unwrap() }
    };

    // The gateway: HTTP requests by route and status (errors are the 4xx
    // and 5xx statuses), and their latency.
    let gateway = metrics("gateway").await;
    assert!(
        metric_value(
            &gateway,
            r#"ecommerce_gateway_http_requests_total{method="POST",route="/orders",status="201"}"#
        ) >= 1.0,
        "{gateway}"
    );
    assert!(
        metric_value(
            &gateway,
            r#"ecommerce_gateway_http_requests_total{method="GET",route="/products/{id}",status="404"}"#
        ) >= 1.0,
        "{gateway}"
    );
    assert!(
        has_series(
            &gateway,
            "ecommerce_gateway_http_request_duration_seconds_bucket"
        ),
        "{gateway}"
    );

    // The User service: logins and registrations by outcome.
    let user = metrics("user").await;
    for (series, at_least) in [
        (r#"ecommerce_user_logins_total{outcome="ok"}"#, 1.0),
        (r#"ecommerce_user_logins_total{outcome="refused"}"#, 1.0),
    ] {
        assert!(metric_value(&user, series) >= at_least, "{series}: {user}");
    }

    // Every gRPC service: calls, errors and latency by method; readiness.
    let grpc = [
        (
            "user",
            "/ecommerce.user.v1.UserService/Authenticate",
            Some("Unauthenticated"),
            "database",
        ),
        (
            "inventory",
            "/ecommerce.inventory.v1.InventoryService/GetProduct",
            Some("NotFound"),
            "database",
        ),
        (
            "order",
            "/ecommerce.order.v1.OrderService/GetOrder",
            Some("NotFound"),
            "database",
        ),
        (
            "producer",
            "/ecommerce.producer.v1.ProducerService/PublishBatch",
            None,
            "nats",
        ),
        ("consumer", "/grpc.health.v1.Health/Check", None, "durable"),
    ];
    for (service, method, error_code, check) in grpc {
        let text = metrics(service).await;
        assert!(
            metric_value(
                &text,
                &format!(r#"ecommerce_grpc_server_calls_total{{method="{method}""#)
            ) >= 1.0,
            "{service} counts {method}:\n{text}"
        );
        assert!(
            has_series(&text, "ecommerce_grpc_server_call_duration_seconds_bucket"),
            "{service} latency:\n{text}"
        );
        if let Some(code) = error_code {
            assert!(
                metric_value(
                    &text,
                    &format!(
                        r#"ecommerce_grpc_server_errors_total{{method="{method}",code="{code}"}}"#
                    )
                ) >= 1.0,
                "{service} counts the {code} of {method} as an error:\n{text}"
            );
        }
        assert_eq!(
            metric_value(
                &text,
                &format!(r#"ecommerce_readiness_check{{check="{check}"}}"#)
            ),
            1.0,
            "{service} readiness check {check}:\n{text}"
        );
    }

    // The pipeline: outbox backlog and relay, events published, the
    // Consumer's lag and what it handled, Inventory's ApplyOrder outcomes.
    let order = metrics("order").await;
    assert!(
        has_series(&order, "ecommerce_order_outbox_backlog"),
        "{order}"
    );
    assert!(
        has_series(&order, "ecommerce_order_outbox_relay_errors_total"),
        "{order}"
    );
    let consumer = metrics("consumer").await;
    for name in [
        "ecommerce_consumer_pending",
        "ecommerce_consumer_ack_pending",
    ] {
        assert!(has_series(&consumer, name), "consumer {name}:\n{consumer}");
    }
    // Counted once each step finished; a step may finish a moment after the
    // order shows CONFIRMED (the relay marks the record sent, the Consumer
    // acknowledges), so wait for them.
    let counted = [
        ("order", "ecommerce_order_outbox_relayed_total"),
        (
            "producer",
            r#"ecommerce_producer_events_published_total{event="order.created""#,
        ),
        (
            "consumer",
            r#"ecommerce_consumer_events_processed_total{event="order.created",outcome="confirmed""#,
        ),
        ("inventory", "ecommerce_inventory_apply_order_total"),
    ];
    for (service, prefix) in counted {
        eventually(WAIT, &format!("{service} to count {prefix}"), || async {
            (metric_value(&metrics(service).await, prefix) >= 1.0).then_some(())
        })
        .await;
    }
}
