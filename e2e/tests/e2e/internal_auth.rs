//! Internal gRPC calls are authenticated: with `INTERNAL_AUTH_TOKEN` set, the
//! services reach each other (an order confirms end to end) while a caller
//! without the token, or with another, is refused, and the health service
//! stays open for probes. gRPC metrics never take an invented method as a
//! label.

use std::time::Duration;

use e2e::flow::{Shop, admin, customer, http_get};
use e2e::{Stack, StackOptions, eventually};
use proto::order::v1::order_service_client::OrderServiceClient;
use proto::order::v1::{OrderOutcome, OrderStatus, RecordOutcomeRequest};
use proto::producer::v1::PublishOrderCancelledRequest;
use proto::producer::v1::producer_service_client::ProducerServiceClient;
use proto::user::v1::GetUserRequest;
use proto::user::v1::user_service_client::UserServiceClient;
use tonic::Code;
use tonic::metadata::MetadataValue;
use tonic::service::Interceptor;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

use e2e::INTERNAL_AUTH_TOKEN as TOKEN;

#[derive(Clone)]
struct WithToken(&'static str);

impl Interceptor for WithToken {
    fn call(
        &mut self,
        mut request: tonic::Request<()>,
    ) -> Result<tonic::Request<()>, tonic::Status> {
        request.metadata_mut().insert(
            platform::internal_auth::HEADER,
            MetadataValue::from_static(self.0),
        );
        Ok(request)
    }
}

#[tokio::test]
async fn internal_calls_need_the_shared_token() {
    let stack = Stack::start(StackOptions::default().with_env("INTERNAL_AUTH_TOKEN", TOKEN)).await;

    // With the token the services reach one another: an order placed by a
    // caller holding it confirms end to end.
    let shop = Shop::with_token(&stack, Some(TOKEN)).await;
    let product = shop.create_product("Token", 5, "1.00").await;
    let buyer = customer();
    let order = shop.place_order(&buyer, &[(&product, 2)]).await.unwrap();
    shop.wait_status(
        &buyer,
        &order.id,
        OrderStatus::Confirmed,
        Duration::from_secs(60),
    )
    .await;
    assert_eq!(shop.stock(&product).await, 3);

    // Without it, or with another one, nothing an attacker wants works.
    for interceptor in [
        WithToken(""),
        WithToken("another-token-of-the-same-length-012345"),
    ] {
        let mut orders =
            OrderServiceClient::with_interceptor(stack.channel("order").await, interceptor.clone());
        let refused = orders
            .record_outcome(RecordOutcomeRequest {
                order_id: order.id.clone(),
                outcome: OrderOutcome::Rejected as i32,
                reason: "forged".into(),
            })
            .await
            .unwrap_err();
        assert_eq!(refused.code(), Code::Unauthenticated, "{refused:?}");

        let mut producer = ProducerServiceClient::with_interceptor(
            stack.channel("producer").await,
            interceptor.clone(),
        );
        let refused = producer
            .publish_order_cancelled(PublishOrderCancelledRequest { event: None })
            .await
            .unwrap_err();
        assert_eq!(refused.code(), Code::Unauthenticated, "{refused:?}");

        let mut users =
            UserServiceClient::with_interceptor(stack.channel("user").await, interceptor);
        let refused = users
            .get_user(GetUserRequest {
                caller: Some(admin()),
                user_id: buyer.user_id.clone(),
            })
            .await
            .unwrap_err();
        assert_eq!(refused.code(), Code::Unauthenticated, "{refused:?}");
    }
    let unchanged = shop.order(&buyer, &order.id).await.unwrap();
    assert_eq!(unchanged.status(), OrderStatus::Confirmed);
    assert_eq!(shop.stock(&product).await, 3);

    // The health service answers anyone (kubelet probes carry no token).
    for service in ["inventory", "order", "user", "producer"] {
        let mut health = HealthClient::new(stack.channel(service).await);
        let answer = health
            .check(tonic_health::pb::HealthCheckRequest {
                service: String::new(),
            })
            .await
            .unwrap_or_else(|e| panic!("{service} health: {e:?}"));
        assert_eq!(answer.into_inner().status(), ServingStatus::Serving);
    }

    // The refused calls are counted under one label, not by their path.
    let metrics = eventually(Duration::from_secs(5), "order's metrics", || async {
        http_get(stack.metrics_addr("order"), "/metrics").await.ok()
    })
    .await;
    assert!(
        metrics.contains(r#"method="unknown",code="Unauthenticated""#),
        "{metrics}"
    );
    assert!(
        !metrics.contains(
            r#"method="/ecommerce.order.v1.OrderService/RecordOutcome",code="Unauthenticated""#
        ),
        "{metrics}"
    );
}
