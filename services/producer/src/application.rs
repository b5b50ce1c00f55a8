//! The gRPC face of the Producer: validate, publish, answer after the ack.

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use tonic::{Request, Response, Status};

use platform::grpc::{invalid_argument, violation};
use proto::events::v1::{OrderCancelled, OrderCreated};
use proto::producer::v1::producer_service_server::ProducerService;
use proto::producer::v1::{
    PublishOrderCancelledRequest, PublishOrderCreatedRequest, PublishResponse,
};

use crate::infrastructure::{JetStreamPublisher, OutgoingEvent, PublishError, Published};

type Labels = Vec<(&'static str, &'static str)>;

pub struct ProducerGrpc {
    publisher: JetStreamPublisher,
    published: Family<Labels, Counter>,
}

impl ProducerGrpc {
    pub fn new(publisher: JetStreamPublisher) -> Self {
        let published = Family::<Labels, Counter>::default();
        platform::metrics::register(
            "producer_events_published",
            "Order events acknowledged by the stream, by event and whether the stream had it already",
            published.clone(),
        );
        ProducerGrpc {
            publisher,
            published,
        }
    }

    fn count(&self, event: &'static str, published: &Published) {
        let duplicate = if published.duplicate { "true" } else { "false" };
        self.published
            .get_or_create(&vec![("event", event), ("duplicate", duplicate)])
            .inc();
    }
}

fn check_order_id(order_id: &str) -> Result<(), Status> {
    platform::grpc::parse_uuid("event.order_id", order_id).map(|_| ())
}

fn to_status(error: PublishError) -> Status {
    tracing::warn!(%error, "publish failed");
    Status::unavailable(error.to_string())
}

fn reply(published: Published) -> Response<PublishResponse> {
    Response::new(PublishResponse {
        stream: published.stream,
        sequence: published.sequence,
        duplicate: published.duplicate,
    })
}

#[tonic::async_trait]
impl ProducerService for ProducerGrpc {
    #[tracing::instrument(skip_all, fields(order_id))]
    async fn publish_order_created(
        &self,
        request: Request<PublishOrderCreatedRequest>,
    ) -> Result<Response<PublishResponse>, Status> {
        let event: OrderCreated = request
            .into_inner()
            .event
            .ok_or_else(|| invalid_argument(vec![violation("event", "is required")]))?;
        check_order_id(&event.order_id)?;
        if event.items.is_empty() {
            return Err(invalid_argument(vec![violation(
                "event.items",
                "must not be empty",
            )]));
        }
        tracing::Span::current().record("order_id", event.order_id.as_str());
        let published = self
            .publisher
            .publish(OutgoingEvent {
                order_id: &event.order_id,
                kind: "created",
                subject: self.publisher.settings().created_subject(),
                payload: &event,
            })
            .await
            .map_err(to_status)?;
        self.count("order.created", &published);
        Ok(reply(published))
    }

    #[tracing::instrument(skip_all, fields(order_id))]
    async fn publish_order_cancelled(
        &self,
        request: Request<PublishOrderCancelledRequest>,
    ) -> Result<Response<PublishResponse>, Status> {
        let event: OrderCancelled = request
            .into_inner()
            .event
            .ok_or_else(|| invalid_argument(vec![violation("event", "is required")]))?;
        check_order_id(&event.order_id)?;
        tracing::Span::current().record("order_id", event.order_id.as_str());
        let published = self
            .publisher
            .publish(OutgoingEvent {
                order_id: &event.order_id,
                kind: "cancelled",
                subject: self.publisher.settings().cancelled_subject(),
                payload: &event,
            })
            .await
            .map_err(to_status)?;
        self.count("order.cancelled", &published);
        Ok(reply(published))
    }
}
