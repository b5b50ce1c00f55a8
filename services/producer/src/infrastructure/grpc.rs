//! The gRPC face of the Producer: wire requests in, the use cases, answers
//! out, and the one mapping of errors to statuses.

use tonic::{Request, Response, Status};

use platform::grpc::{invalid_argument, violation};
use proto::producer::v1::producer_service_server::ProducerService;
use proto::producer::v1::{
    PublishBatchRequest, PublishBatchResponse, PublishBatchResult, PublishOrderCancelledRequest,
    PublishOrderCreatedRequest, PublishResponse, batch_event, publish_batch_result,
};

use crate::application::{BatchEvent, EventStream, Producer, ProducerError};
use crate::domain::Published;

/// The most events one PublishBatch call may carry.
pub const MAX_BATCH_EVENTS: usize = platform::batch::MAX_BATCH_CALLS;

pub struct ProducerGrpc<S> {
    producer: Producer<S>,
}

impl<S: EventStream> ProducerGrpc<S> {
    pub fn new(producer: Producer<S>) -> Self {
        ProducerGrpc { producer }
    }
}

/// Maps an error to its status: a bad event INVALID_ARGUMENT naming the
/// field, a stream that did not take it UNAVAILABLE (worth retrying).
fn to_status(error: ProducerError) -> Status {
    match error {
        ProducerError::Invalid(invalid) => {
            invalid_argument(vec![violation(invalid.field, invalid.message)])
        }
        ProducerError::Publish(error) => {
            tracing::warn!(%error, "publish failed");
            Status::unavailable(error.to_string())
        }
    }
}

fn reply(published: Published) -> PublishResponse {
    PublishResponse {
        stream: published.stream,
        sequence: published.sequence,
        duplicate: published.duplicate,
    }
}

fn required<T>(event: Option<T>) -> Result<T, Status> {
    event.ok_or_else(|| invalid_argument(vec![violation("event", "is required")]))
}

#[tonic::async_trait]
impl<S: EventStream> ProducerService for ProducerGrpc<S> {
    #[tracing::instrument(skip_all, fields(order_id))]
    async fn publish_order_created(
        &self,
        request: Request<PublishOrderCreatedRequest>,
    ) -> Result<Response<PublishResponse>, Status> {
        let event = required(request.into_inner().event)?;
        tracing::Span::current().record("order_id", event.order_id.as_str());
        let published = self
            .producer
            .publish_created(&event)
            .await
            .map_err(to_status)?;
        Ok(Response::new(reply(published)))
    }

    #[tracing::instrument(skip_all, fields(order_id))]
    async fn publish_order_cancelled(
        &self,
        request: Request<PublishOrderCancelledRequest>,
    ) -> Result<Response<PublishResponse>, Status> {
        let event = required(request.into_inner().event)?;
        tracing::Span::current().record("order_id", event.order_id.as_str());
        let published = self
            .producer
            .publish_cancelled(&event)
            .await
            .map_err(to_status)?;
        Ok(Response::new(reply(published)))
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
        let events = events
            .into_iter()
            .map(|event| {
                let kind = event.event.map(|kind| match kind {
                    batch_event::Event::Created(created) => BatchEvent::Created(created),
                    batch_event::Event::Cancelled(cancelled) => BatchEvent::Cancelled(cancelled),
                });
                (kind, event.trace_context)
            })
            .collect();
        let results = self
            .producer
            .publish_batch(events)
            .await
            .into_iter()
            .map(|result| PublishBatchResult {
                result: Some(match result {
                    Ok(published) => publish_batch_result::Result::Published(reply(published)),
                    Err(error) => publish_batch_result::Result::Error(platform::grpc::item_error(
                        &to_status(error),
                    )),
                }),
            })
            .collect();
        Ok(Response::new(PublishBatchResponse { results }))
    }
}
