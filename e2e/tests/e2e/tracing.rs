//! One OpenTelemetry trace per request, end to end: an in-process fake OTLP
//! collector receives the spans of every service; an order placed through
//! the gateway with a `traceparent` of the test's own yields spans of that
//! one trace from the gateway, Order, the Producer, the Consumer and
//! Inventory, and the Consumer's and Inventory's spans descend from the
//! Producer's publish (the trace crosses NATS in the message headers). A
//! cancel is traced the same way, and the exporters flush on SIGTERM.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use e2e::api::Api;
use e2e::{Stack, StackOptions, eventually};
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::any_value;
use reqwest::StatusCode;
use serde_json::{Value, json};

const WAIT: Duration = Duration::from_secs(30);

/// One span as the collector received it.
#[derive(Debug, Clone)]
struct Received {
    service: String,
    name: String,
    trace_id: String,
    span_id: String,
    parent_span_id: String,
}

/// A fake OTLP/gRPC collector that keeps every span it is sent.
#[derive(Clone, Default)]
struct Collector {
    spans: Arc<Mutex<Vec<Received>>>,
}

#[tonic::async_trait]
impl TraceService for Collector {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        let mut received = Vec::new();
        for resource_spans in request.into_inner().resource_spans {
            let service = resource_spans
                .resource
                .iter()
                .flat_map(|r| &r.attributes)
                .find(|kv| kv.key == "service.name")
                .and_then(|kv| kv.value.as_ref()?.value.as_ref())
                .and_then(|v| match v {
                    any_value::Value::StringValue(s) => Some(s.clone()),
                    _ => None,
                })
                .unwrap_or_default();
            for scope in resource_spans.scope_spans {
                for span in scope.spans {
                    received.push(Received {
                        service: service.clone(),
                        name: span.name,
                        trace_id: hex(&span.trace_id),
                        span_id: hex(&span.span_id),
                        parent_span_id: hex(&span.parent_span_id),
                    });
                }
            }
        }
        self.spans.lock().unwrap().extend(received);
        Ok(tonic::Response::new(ExportTraceServiceResponse {
            partial_success: None,
        }))
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

impl Collector {
    /// Serves on a free port of 127.0.0.1; the endpoint URL.
    async fn start() -> (Collector, String) {
        let collector = Collector::default();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tonic::transport::Server::builder()
            .add_service(TraceServiceServer::new(collector.clone()))
            .serve_with_incoming(platform::grpc::accepted_without_delay(listener));
        tokio::spawn(server);
        (collector, format!("http://{addr}"))
    }

    fn trace(&self, trace_id: &str) -> Trace {
        Trace(
            self.spans
                .lock()
                .unwrap()
                .iter()
                .filter(|s| s.trace_id == trace_id)
                .cloned()
                .collect(),
        )
    }
}

/// The spans of one trace.
struct Trace(Vec<Received>);

impl Trace {
    fn services(&self) -> BTreeSet<&str> {
        self.0.iter().map(|s| s.service.as_str()).collect()
    }

    /// `span` and its ancestors (as far as they were received), nearest first.
    fn ancestry<'a>(&'a self, span: &'a Received) -> Vec<&'a Received> {
        let by_id: HashMap<&str, &Received> =
            self.0.iter().map(|s| (s.span_id.as_str(), s)).collect();
        let mut chain = vec![span];
        let mut current = span;
        while let Some(parent) = by_id.get(current.parent_span_id.as_str()) {
            if chain.len() > self.0.len() {
                break;
            }
            chain.push(parent);
            current = parent;
        }
        chain
    }

    /// Whether some span of `service` whose name contains `name` descends
    /// from a span of the Producer (through the NATS hop, via the Consumer).
    fn descends_from_producer(&self, service: &str, name: &str) -> bool {
        self.0
            .iter()
            .filter(|s| s.service == service && s.name.contains(name))
            .any(|span| {
                let chain = self.ancestry(span);
                let services: Vec<&str> = chain.iter().map(|s| s.service.as_str()).collect();
                let producer = services.iter().position(|s| *s == "producer");
                let consumer = services.iter().position(|s| *s == "consumer");
                // The Producer is an ancestor, and the Consumer sits between
                // (or is the span itself).
                matches!((producer, consumer), (Some(p), Some(c)) if c < p)
            })
    }

    fn describe(&self) -> String {
        self.0
            .iter()
            .map(|s| {
                format!(
                    "{} {} {} <- {}",
                    s.service, s.name, s.span_id, s.parent_span_id
                )
            })
            .collect::<Vec<_>>()
            .join("\n")
    }
}

/// A random trace id and the `traceparent` of a remote parent in it.
fn new_traceparent() -> (String, String) {
    let trace_id = uuid::Uuid::new_v4().simple().to_string();
    let parent = &uuid::Uuid::new_v4().simple().to_string()[..16];
    (trace_id.clone(), format!("00-{trace_id}-{parent}-01"))
}

/// Calls carrying a W3C `traceparent` of the test's own.
trait Traced {
    async fn call_traced(
        &self,
        method: reqwest::Method,
        path: &str,
        token: Option<&str>,
        traceparent: Option<&str>,
        body: Option<Value>,
    ) -> (StatusCode, reqwest::header::HeaderMap, Value);
}

impl Traced for Api {
    async fn call_traced(
        &self,
        method: reqwest::Method,
        path: &str,
        token: Option<&str>,
        traceparent: Option<&str>,
        body: Option<Value>,
    ) -> (StatusCode, reqwest::header::HeaderMap, Value) {
        let headers: Vec<(&str, &str)> = traceparent
            .map(|t| ("traceparent", t))
            .into_iter()
            .collect();
        self.call_with_headers(method, path, token, &headers, body)
            .await
    }
}

#[tokio::test]
async fn an_order_and_its_cancel_are_each_one_trace_across_grpc_and_nats() {
    let (collector, endpoint) = Collector::start().await;
    let mut stack = Stack::start(
        StackOptions::default()
            .with_env("OTEL_EXPORTER_OTLP_ENDPOINT", &endpoint)
            .with_env("OTEL_BSP_SCHEDULE_DELAY", "100"),
    )
    .await;
    let api = Api::new(&stack);

    // A customer, and a product the admin creates.
    let username = format!("tracer{}", &uuid::Uuid::new_v4().simple().to_string()[..8]);
    let password = "tracer-password-1";
    let (status, _, body) = api
        .call_traced(
            reqwest::Method::POST,
            "/users/register",
            None,
            None,
            Some(json!({"username": username, "email": format!("{username}@example.com"), "password": password})),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "register: {body}");
    let customer = api.login(&username, password).await.0;
    let admin = api.admin().await;
    let (status, _, product) = api
        .call_traced(
            reqwest::Method::POST,
            "/products",
            Some(&admin),
            None,
            Some(
                json!({"name": "Traced lamp", "category": "Lighting", "stock": 10, "price": 12.5}),
            ),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "product: {product}");
    let product_id = product["id"].as_str().unwrap().to_owned();

    // The order, under a trace of the test's own.
    let (order_trace, traceparent) = new_traceparent();
    let (status, headers, order) = api
        .call_traced(
            reqwest::Method::POST,
            "/orders",
            Some(&customer),
            Some(&traceparent),
            Some(json!({"items": [{"product_id": product_id, "quantity": 3}]})),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "order: {order}");
    assert_eq!(
        headers.get("x-trace-id").and_then(|v| v.to_str().ok()),
        Some(order_trace.as_str()),
        "the gateway continues the caller's trace"
    );
    let order_id = order["id"].as_str().unwrap().to_owned();
    eventually(WAIT, "the order to be CONFIRMED", || async {
        let (_, _, body) = api
            .call_traced(
                reqwest::Method::GET,
                &format!("/orders/{order_id}"),
                Some(&customer),
                None,
                None,
            )
            .await;
        (body["status"] == "CONFIRMED").then_some(())
    })
    .await;

    let expected: BTreeSet<&str> = ["gateway", "order", "producer", "consumer", "inventory"].into();
    eventually(WAIT, "the order's spans from every service", || async {
        let trace = collector.trace(&order_trace);
        let complete = expected.is_subset(&trace.services())
            && trace.descends_from_producer("consumer", "")
            && trace.descends_from_producer("inventory", "ApplyOrder")
            && trace.descends_from_producer("order", "RecordOutcome");
        complete.then_some(())
    })
    .await;
    let trace = collector.trace(&order_trace);
    for name in [
        "POST /orders",
        "/ecommerce.order.v1.OrderService/CreateOrder",
        "/ecommerce.inventory.v1.InventoryService/ApplyOrder",
    ] {
        assert!(
            trace.0.iter().any(|s| s.name == name),
            "a span {name:?} in the order's trace:\n{}",
            trace.describe()
        );
    }

    // The gateway's request log line carries the trace and its own span id.
    let gateway_log = stack.process("gateway").log();
    let request_line = gateway_log
        .lines()
        .find(|l| l.contains("request") && l.contains("path=/orders") && l.contains(&order_trace))
        .unwrap_or_else(|| panic!("no request line with trace {order_trace}:\n{gateway_log}"));
    assert!(
        request_line.contains(&format!("trace_id={order_trace} span_id=")),
        "{request_line}"
    );
    // So do the lines of the Consumer's handling of the event.
    let consumer_log = stack.process("consumer").log();
    assert!(
        consumer_log
            .lines()
            .any(|l| l.contains("order event handled")
                && l.contains(&format!("trace_id={order_trace}"))),
        "the Consumer's line carries the trace id:\n{consumer_log}"
    );

    // The cancel: a trace of its own, through the outbox, NATS and back to
    // Inventory's ReleaseOrder.
    let (cancel_trace, traceparent) = new_traceparent();
    let (status, _, body) = api
        .call_traced(
            reqwest::Method::POST,
            &format!("/orders/{order_id}/cancel"),
            Some(&customer),
            Some(&traceparent),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "cancel: {body}");
    eventually(WAIT, "the stock to come back", || async {
        (api.stock_of(&product_id).await == 10).then_some(())
    })
    .await;

    // Stop every service gracefully: the exporters flush what they hold.
    for (service, exit) in stack.terminate_all().await {
        assert!(exit.success(), "{service} exits 0 on SIGTERM, got {exit}");
    }
    let trace = collector.trace(&cancel_trace);
    assert!(
        expected.is_subset(&trace.services()),
        "the cancel's spans from every service: {:?}\n{}",
        trace.services(),
        trace.describe()
    );
    assert!(
        trace.descends_from_producer("consumer", "")
            && trace.descends_from_producer("inventory", "ReleaseOrder"),
        "the cancel's handling descends from the Producer's publish:\n{}",
        trace.describe()
    );
    // The gateway names its span by the route, never by the concrete path.
    assert!(
        trace.0.iter().any(|s| s.name == "POST /orders/{id}/cancel"),
        "a span named by the cancel route:\n{}",
        trace.describe()
    );
}

/// With a schedule delay far beyond the test, spans leave only when the
/// provider shuts down: on SIGTERM.
#[tokio::test]
async fn spans_are_flushed_when_a_service_is_terminated() {
    let (collector, endpoint) = Collector::start().await;
    let mut stack = Stack::start(
        StackOptions::only(&["inventory"])
            .with_env("OTEL_EXPORTER_OTLP_ENDPOINT", &endpoint)
            .with_env("OTEL_BSP_SCHEDULE_DELAY", "600000"),
    )
    .await;
    let (trace_id, traceparent) = new_traceparent();
    let mut request = tonic::Request::new(proto::inventory::v1::GetProductRequest {
        id: uuid::Uuid::new_v4().to_string(),
    });
    request
        .metadata_mut()
        .insert("traceparent", traceparent.parse().unwrap());
    let mut client = proto::inventory::v1::inventory_service_client::InventoryServiceClient::new(
        stack.channel("inventory").await,
    );
    let answer = client.get_product(request).await;
    assert_eq!(answer.unwrap_err().code(), tonic::Code::NotFound);
    assert!(
        collector.trace(&trace_id).0.is_empty(),
        "nothing is exported before the schedule delay"
    );

    let exit = stack
        .process("inventory")
        .terminate(Duration::from_secs(15))
        .await;
    assert!(exit.success(), "{exit}");
    let trace = collector.trace(&trace_id);
    assert!(
        trace
            .0
            .iter()
            .any(|s| s.service == "inventory" && s.name.ends_with("/GetProduct")),
        "the call's span was flushed on SIGTERM:\n{}",
        trace.describe()
    );
}
