//! `grpc::serve_ready`: `/readyz` and the standard gRPC health service follow
//! the registered checks on the service's own port, while `/healthz` stays
//! liveness only.

use std::time::Duration;

use platform::readiness::Readiness;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};

/// `GET path` over HTTP/1.1: the status code and the body.
async fn get(addr: &str, path: &str) -> (u16, String) {
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).await.unwrap();
    let status = response
        .split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or(0);
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, body)| body.to_owned())
        .unwrap_or_default();
    (status, body)
}

async fn grpc_health(addr: &str, service: &str) -> ServingStatus {
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let status = HealthClient::new(channel)
        .check(HealthCheckRequest {
            service: service.to_owned(),
        })
        .await
        .unwrap()
        .into_inner()
        .status;
    ServingStatus::try_from(status).unwrap()
}

#[tokio::test]
async fn readyz_and_grpc_health_follow_the_checks_on_the_service_port() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let (reporter, health) = tonic_health::server::health_reporter();
    let readiness = Readiness::new(reporter, &["example.v1.Example"]).await;
    readiness.add_check("always", || async { Ok(()) });
    let dependency = readiness.add_flag("dependency", false, "the dependency is down");
    let stop = platform::shutdown::CancellationToken::new();
    let checker = readiness.start(stop.clone()).await.unwrap();

    let server_stop = stop.clone();
    let routes = tonic::service::Routes::new(health);
    let server = tokio::spawn({
        let readiness = readiness.clone();
        async move {
            platform::grpc::serve_ready(routes, listener, &readiness, server_stop.cancelled_owned())
                .await
        }
    });

    let (status, body) = get(&addr, "/readyz").await;
    assert_eq!(status, 503, "{body}");
    let report: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(report["status"], "not ready");
    assert_eq!(report["not_ready"], serde_json::json!(["dependency"]));
    assert_eq!(report["checks"]["dependency"], "the dependency is down");
    assert_eq!(report["checks"]["always"], "ok");
    for service in ["", "example.v1.Example"] {
        assert_eq!(
            grpc_health(&addr, service).await,
            ServingStatus::NotServing,
            "{service:?}"
        );
    }
    let (status, _) = get(&addr, "/healthz").await;
    assert_eq!(status, 200, "liveness does not depend on readiness");
    let metrics = platform::metrics::render();
    assert!(
        metrics.contains(r#"ecommerce_readiness_check{check="dependency"} 0"#),
        "{metrics}"
    );

    // The flag wakes the checker: no need to wait for the period.
    dependency.set(true);
    let mut ready = false;
    for _ in 0..100 {
        if get(&addr, "/readyz").await.0 == 200 {
            ready = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(ready, "{:?}", readiness.report());
    let (_, body) = get(&addr, "/readyz").await;
    let report: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(report["status"], "ready", "{body}");
    for service in ["", "example.v1.Example"] {
        assert_eq!(
            grpc_health(&addr, service).await,
            ServingStatus::Serving,
            "{service:?}"
        );
    }

    // Stopping turns it NOT_SERVING before the server drains.
    stop.cancel();
    server.await.unwrap().unwrap();
    checker.await.unwrap();
    assert_eq!(readiness.report().not_ready, vec!["shutting down"]);
}
