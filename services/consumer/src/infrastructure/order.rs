//! Order over gRPC, RecordOutcome calls coalesced into RecordOutcomes batches.

use tonic::Status;
use uuid::Uuid;

use platform::batch::{BatchSettings, Batcher};
use platform::config::{CallSettings, ServiceAddr};
use platform::grpc::{TracedChannel, from_item_error};
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
                // A lone verdict goes as a batch of one too: Order records a
                // PENDING order's verdict in one statement that way, where
                // RecordOutcome reads, locks and reads again in a transaction.
                let many = |outcomes| record_outcomes(client.clone(), outcomes);
                let single = |item| {
                    let client = client.clone();
                    async move {
                        record_outcomes(client, vec![item])
                            .await?
                            .pop()
                            .unwrap_or_else(|| {
                                Err(Status::internal("RecordOutcomes answered no result"))
                            })
                    }
                };
                send_batch(items, span, single, many).await
            }
        });
        Ok(GrpcOrders { record })
    }
}

/// One RecordOutcomes call: whether each verdict was a replay, in order.
async fn record_outcomes(
    mut client: OrderServiceClient<TracedChannel>,
    outcomes: Vec<RecordOutcomesItem>,
) -> Result<Vec<Result<bool, Status>>, Status> {
    let answer = client
        .record_outcomes(RecordOutcomesRequest { outcomes })
        .await?;
    Ok(answer
        .into_inner()
        .results
        .into_iter()
        .map(|r| match r.result {
            Some(record_outcomes_result::Result::Replayed(replayed)) => Ok(replayed),
            Some(record_outcomes_result::Result::Error(e)) => Err(from_item_error(e)),
            None => Err(Status::internal("RecordOutcomes answered an empty result")),
        })
        .collect())
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
