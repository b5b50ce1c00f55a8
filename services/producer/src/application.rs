//! The gRPC face of the Producer: validate, publish, answer after the ack.

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use tonic::{Request, Response, Status};

use platform::grpc::{invalid_argument, violation};
use proto::events::v1::{OrderCancelled, OrderCreated};
use proto::producer::v1::producer_service_server::ProducerService;
use proto::producer::v1::{
    PublishBatchRequest, PublishBatchResponse, PublishBatchResult, PublishOrderCancelledRequest,
    PublishOrderCreatedRequest, PublishResponse, batch_event, publish_batch_result,
};
use tracing::Instrument;

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

    fn created<'a>(&self, event: &'a OrderCreated) -> OutgoingEvent<'a, OrderCreated> {
        OutgoingEvent {
            order_id: &event.order_id,
            kind: "created",
            subject: self.publisher.settings().created_subject(),
            payload: event,
        }
    }

    fn cancelled<'a>(&self, event: &'a OrderCancelled) -> OutgoingEvent<'a, OrderCancelled> {
        OutgoingEvent {
            order_id: &event.order_id,
            kind: "cancelled",
            subject: self.publisher.settings().cancelled_subject(),
            payload: event,
        }
    }

    fn count(&self, event: &'static str, published: &Published) {
        let duplicate = if published.duplicate { "true" } else { "false" };
        self.published
            .get_or_create(&vec![("event", event), ("duplicate", duplicate)])
            .inc();
    }
}

/// The most events one PublishBatch call may carry.
pub const MAX_BATCH_EVENTS: usize = platform::batch::MAX_BATCH_CALLS;

fn check_order_id(order_id: &str) -> Result<(), Status> {
    platform::grpc::parse_uuid("event.order_id", order_id).map(|_| ())
}

fn check_created(event: &OrderCreated) -> Result<(), Status> {
    check_order_id(&event.order_id)?;
    if event.items.is_empty() {
        return Err(invalid_argument(vec![violation(
            "event.items",
            "must not be empty",
        )]));
    }
    Ok(())
}

fn item_error(status: &Status) -> proto::common::v1::ItemError {
    platform::grpc::item_error(status)
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
        check_created(&event)?;
        tracing::Span::current().record("order_id", event.order_id.as_str());
        let published = self
            .publisher
            .publish(self.created(&event))
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
            .publish(self.cancelled(&event))
            .await
            .map_err(to_status)?;
        self.count("order.cancelled", &published);
        Ok(reply(published))
    }

    async fn publish_batch(
        &self,
        request: Request<PublishBatchRequest>,
    ) -> Result<Response<PublishBatchResponse>, Status> {
        let events = request.into_inner().events;
        if events.len() > MAX_BATCH_EVENTS {
            return Err(invalid_argument(vec![violation(
                "events",
                format!("at most {MAX_BATCH_EVENTS} events, got {}", events.len()),
            )]));
        }
        // Every valid event is sent first, then every acknowledgement is
        // awaited: one round trip to the stream for the whole batch.
        let mut pending = Vec::with_capacity(events.len());
        for event in events {
            let span = tracing::info_span!(
                "producer.publish",
                otel.kind = "producer",
                order_id = tracing::field::Empty
            );
            platform::telemetry::set_parent_from(&span, &event.trace_context);
            let sent = match event.event {
                Some(batch_event::Event::Created(created)) => match check_created(&created) {
                    Ok(()) => {
                        span.record("order_id", created.order_id.as_str());
                        let sent = self.publisher.send(self.created(&created));
                        Ok(("order.created", sent.instrument(span.clone()).await))
                    }
                    Err(status) => Err(status),
                },
                Some(batch_event::Event::Cancelled(cancelled)) => {
                    match check_order_id(&cancelled.order_id) {
                        Ok(()) => {
                            span.record("order_id", cancelled.order_id.as_str());
                            let sent = self.publisher.send(self.cancelled(&cancelled));
                            Ok(("order.cancelled", sent.instrument(span.clone()).await))
                        }
                        Err(status) => Err(status),
                    }
                }
                None => Err(invalid_argument(vec![violation("event", "is required")])),
            };
            pending.push(sent);
        }
        let mut results = Vec::with_capacity(pending.len());
        // Every acknowledgement at once: a stream that stops answering costs
        // one timeout, not one per event.
        let answers = futures::future::join_all(pending.into_iter().map(|sent| async move {
            match sent {
                Err(status) => Err(status),
                Ok((_, Err(error))) => Err(to_status(error)),
                Ok((event, Ok(ack))) => match ack.acknowledged().await {
                    Ok(published) => Ok((event, published)),
                    Err(error) => Err(to_status(error)),
                },
            }
        }))
        .await;
        for answer in answers {
            let result = answer.map(|(event, published)| {
                self.count(event, &published);
                published
            });
            results.push(PublishBatchResult {
                result: Some(match result {
                    Ok(published) => publish_batch_result::Result::Published(PublishResponse {
                        stream: published.stream,
                        sequence: published.sequence,
                        duplicate: published.duplicate,
                    }),
                    Err(status) => publish_batch_result::Result::Error(item_error(&status)),
                }),
            });
        }
        Ok(Response::new(PublishBatchResponse { results }))
    }
}
