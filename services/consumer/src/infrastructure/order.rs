//! Order over gRPC, RecordOutcome calls coalesced into RecordOutcomes batches.

use tonic::Status;
use uuid::Uuid;

use platform::batch::{BatchSettings, Batcher};
use platform::config::{CallSettings, ServiceAddr};
use platform::grpc::from_item_error;
use proto::order::v1::order_service_client::OrderServiceClient;
use proto::order::v1::{
    OrderOutcome, RecordOutcomeRequest, RecordOutcomesItem, RecordOutcomesRequest,
    record_outcomes_result,
};

use super::calls::{batch_span, send_batch};
use crate::application::{self};
use crate::domain::Verdict;

/// Order over gRPC; concurrent RecordOutcome calls are coalesced into
/// RecordOutcomes batches like Inventory's.
#[derive(Clone)]
pub struct GrpcOrders {
    record: Batcher<RecordOutcomesItem, bool>,
}

impl GrpcOrders {
    pub fn new(
        addr: &ServiceAddr,
        calls: CallSettings,
        batching: BatchSettings,
    ) -> anyhow::Result<Self> {
        let client = OrderServiceClient::new(platform::grpc::channel(addr, calls)?);
        let record = Batcher::spawn(batching, move |items: Vec<RecordOutcomesItem>| {
            let client = client.clone();
            async move {
                let span = batch_span(
                    "order.record_outcomes",
                    items.len(),
                    &items[0].trace_context,
                );
                let single = |item: RecordOutcomesItem| {
                    let mut client = client.clone();
                    async move {
                        let outcome = item.outcome.unwrap_or_default();
                        Ok(client.record_outcome(outcome).await?.into_inner().replayed)
                    }
                };
                let many = |outcomes: Vec<RecordOutcomesItem>| {
                    let mut client = client.clone();
                    async move {
                        let answer = client
                            .record_outcomes(RecordOutcomesRequest { outcomes })
                            .await?;
                        Ok(answer
                            .into_inner()
                            .results
                            .into_iter()
                            .map(|r| match r.result {
                                Some(record_outcomes_result::Result::Replayed(replayed)) => {
                                    Ok(replayed)
                                }
                                Some(record_outcomes_result::Result::Error(e)) => {
                                    Err(from_item_error(e))
                                }
                                None => {
                                    Err(Status::internal("RecordOutcomes answered an empty result"))
                                }
                            })
                            .collect())
                    }
                };
                send_batch(items, span, single, many).await
            }
        });
        Ok(GrpcOrders { record })
    }
}

impl application::Orders for GrpcOrders {
    async fn record_outcome(&self, order_id: Uuid, verdict: &Verdict) -> Result<(), Status> {
        let (outcome, reason) = match verdict {
            Verdict::Confirmed => (OrderOutcome::Confirmed, String::new()),
            Verdict::Rejected { reason } => (OrderOutcome::Rejected, reason.clone()),
        };
        self.record
            .call(RecordOutcomesItem {
                outcome: Some(RecordOutcomeRequest {
                    order_id: order_id.to_string(),
                    outcome: outcome as i32,
                    reason,
                }),
                trace_context: platform::telemetry::current_context_map(),
            })
            .await?;
        Ok(())
    }
}
