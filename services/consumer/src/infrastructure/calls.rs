//! What the two batched gRPC clients share: sending a batch and its span.

use std::collections::HashMap;

use tonic::Status;
use tracing::Instrument;

/// Sends a batch of calls: a lone call through `single`, as it is; more in
/// one call of `many`. When the receiver refuses the batch as a whole (too
/// large, say), that is no verdict on any one call: each goes alone.
pub(super) async fn send_batch<Item, Answer, S, SF, M, MF>(
    items: Vec<Item>,
    span: tracing::Span,
    single: S,
    many: M,
) -> Result<Vec<Result<Answer, Status>>, Status>
where
    Item: Clone,
    S: Fn(Item) -> SF,
    SF: std::future::Future<Output = Result<Answer, Status>>,
    M: FnOnce(Vec<Item>) -> MF,
    MF: std::future::Future<Output = Result<Vec<Result<Answer, Status>>, Status>>,
{
    if items.len() == 1 {
        let item = items.into_iter().next().expect("one call");
        return single(item)
            .instrument(span)
            .await
            .map(|answer| vec![Ok(answer)]);
    }
    match many(items.clone()).instrument(span.clone()).await {
        Err(status) if !platform::grpc::is_transient(&status) => {
            let mut results = Vec::with_capacity(items.len());
            for item in items {
                results.push(single(item).instrument(span.clone()).await);
            }
            Ok(results)
        }
        answer => answer,
    }
}

/// The span of one outgoing call for a batch: a child of the first call's
/// trace (each call's own trace continues on the server, from the context
/// it carries).
pub(super) fn batch_span(
    name: &'static str,
    size: usize,
    first: &HashMap<String, String>,
) -> tracing::Span {
    let span = tracing::info_span!(
        "batch",
        otel.name = name,
        otel.kind = "client",
        batch_size = size
    );
    platform::telemetry::set_parent_from(&span, first);
    span
}
