//! The Producer against a real NATS server, running the real binary.

use std::time::Duration;

use async_nats::jetstream::consumer::pull;
use futures::StreamExt;
use prost::Message;
use proto::events::v1::{OrderCancelled, OrderCreated, OrderLine};
use proto::producer::v1::producer_service_client::ProducerServiceClient;
use proto::producer::v1::{PublishOrderCancelledRequest, PublishOrderCreatedRequest};
use testkit::{ServiceProcess, TestNats, free_port};

struct Producer {
    process: ServiceProcess,
    client: ProducerServiceClient<tonic::transport::Channel>,
    nats: TestNats,
}

async fn start_producer() -> Producer {
    let nats = TestNats::new();
    let addr = format!("127.0.0.1:{}", free_port());
    let mut env = nats.service_env();
    env.push(("PRODUCER_ADDR".into(), addr.clone()));
    env.push(("APP_ENV".into(), "development".into()));
    let mut process = ServiceProcess::spawn("producer", env);
    process
        .wait_grpc_healthy(&addr, Duration::from_secs(30))
        .await;
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    Producer {
        process,
        client: ProducerServiceClient::new(channel),
        nats,
    }
}

fn created(order_id: &str) -> OrderCreated {
    OrderCreated {
        order_id: order_id.to_owned(),
        user_id: uuid::Uuid::new_v4().to_string(),
        items: vec![OrderLine {
            product_id: uuid::Uuid::new_v4().to_string(),
            quantity: 2,
            unit_price: "999.99".into(),
        }],
        total: "1999.98".into(),
        created_at: None,
    }
}

#[tokio::test]
async fn publishes_acknowledged_events_with_ids_and_headers() {
    let mut producer = start_producer().await;
    let order_id = uuid::Uuid::new_v4().to_string();

    let first = producer
        .client
        .publish_order_created(PublishOrderCreatedRequest {
            event: Some(created(&order_id)),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(first.stream, producer.nats.stream);
    assert!(!first.duplicate);

    // A relay retry of the same event is deduplicated by the stream.
    let again = producer
        .client
        .publish_order_created(PublishOrderCreatedRequest {
            event: Some(created(&order_id)),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(again.duplicate);
    assert_eq!(again.sequence, first.sequence);

    // A cancel of the same order is a different message, never a duplicate.
    let cancel = producer
        .client
        .publish_order_cancelled(PublishOrderCancelledRequest {
            event: Some(OrderCancelled {
                order_id: order_id.clone(),
                user_id: String::new(),
                cancelled_at: None,
            }),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(!cancel.duplicate);
    assert_eq!(cancel.sequence, first.sequence + 1);

    let js = producer.nats.jetstream().await;
    let mut stream = js.get_stream(&producer.nats.stream).await.unwrap();
    let info = stream.info().await.unwrap();
    assert_eq!(info.state.messages, 2);
    assert_eq!(
        info.config.storage,
        async_nats::jetstream::stream::StorageType::File
    );
    assert_eq!(
        info.config.discard,
        async_nats::jetstream::stream::DiscardPolicy::New
    );

    let consumer = stream
        .create_consumer(pull::Config {
            durable_name: None,
            ..Default::default()
        })
        .await
        .unwrap();
    let mut messages = consumer.fetch().max_messages(2).messages().await.unwrap();
    let message = messages.next().await.unwrap().unwrap();
    assert_eq!(
        message.subject.as_str(),
        format!("{}.created", producer.nats.subject_prefix)
    );
    let headers = message.headers.clone().unwrap();
    assert_eq!(
        headers.get("Nats-Msg-Id").unwrap().as_str(),
        format!("{order_id}.order.created")
    );
    assert_eq!(headers.get("Event-Version").unwrap().as_str(), "1");
    assert_eq!(headers.get("Event-Type").unwrap().as_str(), "order.created");
    assert!(
        headers.get("traceparent").is_some(),
        "trace context travels with the event"
    );
    let decoded = OrderCreated::decode(message.payload.clone()).unwrap();
    assert_eq!(decoded.order_id, order_id);
    assert_eq!(decoded.items[0].unit_price, "999.99");

    let status = producer.process.terminate(Duration::from_secs(10)).await;
    assert!(
        status.success(),
        "producer exits cleanly on SIGTERM: {status}"
    );
}

#[tokio::test]
async fn refuses_invalid_events() {
    let mut producer = start_producer().await;
    let missing = producer
        .client
        .publish_order_created(PublishOrderCreatedRequest { event: None })
        .await
        .unwrap_err();
    assert_eq!(missing.code(), tonic::Code::InvalidArgument);

    let bad_id = producer
        .client
        .publish_order_created(PublishOrderCreatedRequest {
            event: Some(created("not-a-uuid")),
        })
        .await
        .unwrap_err();
    assert_eq!(bad_id.code(), tonic::Code::InvalidArgument);
    let detail = platform::grpc::error_detail(&bad_id).unwrap();
    assert_eq!(detail.field_violations[0].field, "event.order_id");
}

#[tokio::test]
async fn answers_unavailable_while_nats_is_down_and_recovers() {
    let mut private = testkit::PrivateNats::start();
    let nats = TestNats::on(private.url());
    let addr = format!("127.0.0.1:{}", free_port());
    let mut env = nats.service_env();
    env.push(("PRODUCER_ADDR".into(), addr.clone()));
    env.push(("APP_ENV".into(), "development".into()));
    let mut process = ServiceProcess::spawn("producer", env);
    process
        .wait_grpc_healthy(&addr, Duration::from_secs(30))
        .await;
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .unwrap()
        .timeout(Duration::from_secs(15))
        .connect()
        .await
        .unwrap();
    let mut client = ProducerServiceClient::new(channel);

    private.kill();
    let err = client
        .publish_order_created(PublishOrderCreatedRequest {
            event: Some(created(&uuid::Uuid::new_v4().to_string())),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::Unavailable, "{err:?}");

    private.start_again();
    let published = testkit::eventually(
        Duration::from_secs(30),
        "publish after NATS restart",
        || {
            let mut client = client.clone();
            async move {
                client
                    .publish_order_created(PublishOrderCreatedRequest {
                        event: Some(created(&uuid::Uuid::new_v4().to_string())),
                    })
                    .await
                    .ok()
            }
        },
    )
    .await;
    assert!(!published.into_inner().duplicate);
}

#[tokio::test]
async fn a_batch_publishes_every_valid_event_with_its_own_trace_and_refuses_the_rest() {
    use proto::producer::v1::{BatchEvent, PublishBatchRequest, batch_event, publish_batch_result};
    let mut producer = start_producer().await;
    let ids: Vec<String> = (0..5).map(|_| uuid::Uuid::new_v4().to_string()).collect();
    let traceparent = |n: usize| format!("00-{:032x}-{:016x}-01", n + 1, n + 1);
    let mut events: Vec<BatchEvent> = ids
        .iter()
        .enumerate()
        .map(|(n, id)| BatchEvent {
            event: Some(batch_event::Event::Created(created(id))),
            trace_context: [("traceparent".to_owned(), traceparent(n))].into(),
        })
        .collect();
    // A repeat of the first, an event without items, and an empty entry.
    events.push(events[0].clone());
    let mut no_items = created(&uuid::Uuid::new_v4().to_string());
    no_items.items.clear();
    events.push(BatchEvent {
        event: Some(batch_event::Event::Created(no_items)),
        trace_context: Default::default(),
    });
    events.push(BatchEvent::default());
    let results: Vec<publish_batch_result::Result> = producer
        .client
        .publish_batch(PublishBatchRequest { events })
        .await
        .unwrap()
        .into_inner()
        .results
        .into_iter()
        .map(|r| r.result.unwrap())
        .collect();
    assert_eq!(results.len(), 8);
    let published: Vec<_> = results[..6]
        .iter()
        .map(|r| match r {
            publish_batch_result::Result::Published(p) => p.clone(),
            other => panic!("expected published, got {other:?}"),
        })
        .collect();
    assert!(published[..5].iter().all(|p| !p.duplicate));
    assert!(
        published[5].duplicate,
        "the repeat is deduplicated by the stream"
    );
    assert_eq!(published[5].sequence, published[0].sequence);
    for refused in &results[6..] {
        match refused {
            publish_batch_result::Result::Error(e) => {
                assert_eq!(tonic::Code::from_i32(e.code), tonic::Code::InvalidArgument)
            }
            other => panic!("expected a refusal, got {other:?}"),
        }
    }

    // Each message carries the trace of its own event.
    let js = producer.nats.jetstream().await;
    let stream = js.get_stream(&producer.nats.stream).await.unwrap();
    let consumer = stream
        .create_consumer(pull::Config {
            durable_name: None,
            ..Default::default()
        })
        .await
        .unwrap();
    let mut messages = consumer.fetch().max_messages(5).messages().await.unwrap();
    for (n, id) in ids.iter().enumerate() {
        let message = messages.next().await.unwrap().unwrap();
        let headers = message.headers.clone().unwrap();
        assert_eq!(
            headers.get("Nats-Msg-Id").unwrap().as_str(),
            format!("{id}.order.created")
        );
        let trace_id = &traceparent(n)[3..35];
        assert!(
            headers
                .get("traceparent")
                .unwrap()
                .as_str()
                .contains(trace_id),
            "message {n} continues its event's trace"
        );
    }
    assert!(
        producer
            .process
            .terminate(Duration::from_secs(10))
            .await
            .success()
    );
}
