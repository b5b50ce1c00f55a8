//! Call coalescing: many concurrent callers, few round trips.
//!
//! A [`Batcher`] takes single calls from any number of tasks and hands them
//! to one `send` function as batches: whatever queued up while the previous
//! batches were in flight goes out together (at most `max_batch`), so a lone
//! call to an eager batcher (no linger) waits only for one pass of the
//! scheduler and a busy one shares its round trip and its commit with the
//! calls beside it. A batcher given a linger also holds a batch that long for
//! calls that come one by one. Each caller gets its own answer back.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{Semaphore, mpsc, oneshot};
use tonic::Status;

/// The most calls one batch call may carry, for every batch RPC of the
/// platform (ApplyOrders, RecordOutcomes, PublishBatch): a receiver refuses
/// more, and a sender never forms more.
pub const MAX_BATCH_CALLS: usize = 1000;

/// The longest a batch (or the outbox relay) may linger for more calls: each
/// attempt of a call waits it again, and a stopping service waits for the
/// calls in hand.
pub const MAX_LINGER: Duration = Duration::from_secs(1);

type Waiting<Req, Resp> = (Req, oneshot::Sender<Result<Resp, Status>>);

/// How a batcher groups calls.
#[derive(Debug, Clone, Copy)]
pub struct BatchSettings {
    /// The most calls in one batch.
    pub max_batch: usize,
    /// Batches in flight at once; more calls wait and join the next batch.
    pub max_in_flight: usize,
    /// How long a batch that is not full may wait for more calls, counted
    /// from when the batcher took its first call (zero: it goes as soon as
    /// a slot is free, with no timer). Where no person awaits the answer, a
    /// few milliseconds turn evenly spaced calls into batches.
    pub linger: Duration,
}

impl BatchSettings {
    /// Batches of at most `max_batch`, `max_in_flight` at once, none waiting
    /// for more calls than are there.
    pub const fn eager(max_batch: usize, max_in_flight: usize) -> Self {
        BatchSettings {
            max_batch,
            max_in_flight,
            linger: Duration::ZERO,
        }
    }
}

pub struct Batcher<Req, Resp> {
    queue: mpsc::UnboundedSender<Waiting<Req, Resp>>,
}

impl<Req, Resp> Clone for Batcher<Req, Resp> {
    fn clone(&self) -> Self {
        Batcher {
            queue: self.queue.clone(),
        }
    }
}

impl<Req, Resp> Batcher<Req, Resp>
where
    Req: Send + 'static,
    Resp: Send + 'static,
{
    /// Starts the task that forms batches. `send` answers a batch with one
    /// result per call, in the batch's order; an error of the whole batch
    /// (the receiver unreachable, say) is every caller's answer. The task
    /// ends when every clone of the batcher is dropped.
    pub fn spawn<F, Fut>(settings: BatchSettings, send: F) -> Self
    where
        F: Fn(Vec<Req>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<Vec<Result<Resp, Status>>, Status>> + Send + 'static,
    {
        let max_batch = settings.max_batch.max(1);
        let (queue, mut incoming) = mpsc::unbounded_channel::<Waiting<Req, Resp>>();
        let slots = Arc::new(Semaphore::new(settings.max_in_flight.max(1)));
        let send = Arc::new(send);
        tokio::spawn(async move {
            while let Some(first) = incoming.recv().await {
                let linger_until = tokio::time::Instant::now() + settings.linger;
                // Wait for a free slot first: the calls arriving meanwhile
                // join this batch instead of each taking a slot alone.
                let Ok(slot) = slots.clone().acquire_owned().await else {
                    return;
                };
                // Let the tasks that are ready right now run first: callers
                // woken together (the messages of one fetch, requests read
                // in one poll) then join this batch instead of the first
                // going out alone. Costs a lone call one trip through the
                // scheduler, not a timer.
                tokio::task::yield_now().await;
                let mut batch = vec![first];
                while batch.len() < max_batch {
                    match incoming.try_recv() {
                        Ok(next) => batch.push(next),
                        Err(_) => break,
                    }
                }
                // The calls arriving before the linger is over join too. No
                // linger, no timer: one would hold the batch until the
                // runtime next reads its clock.
                if !settings.linger.is_zero() {
                    let linger = tokio::time::sleep_until(linger_until);
                    tokio::pin!(linger);
                    while batch.len() < max_batch {
                        tokio::select! {
                            next = incoming.recv() => match next {
                                Some(next) => batch.push(next),
                                None => break,
                            },
                            () = &mut linger => break,
                        }
                    }
                }
                // Callers that gave up (their future dropped) need no answer.
                batch.retain(|(_, reply)| !reply.is_closed());
                if batch.is_empty() {
                    continue;
                }
                let (requests, replies): (Vec<Req>, Vec<_>) = batch.into_iter().unzip();
                let answer = send(requests);
                tokio::spawn(async move {
                    let _slot = slot;
                    deliver(answer.await, replies);
                });
            }
        });
        Batcher { queue }
    }

    /// Makes one call as part of the next batch.
    pub async fn call(&self, request: Req) -> Result<Resp, Status> {
        let (reply, answer) = oneshot::channel();
        self.queue
            .send((request, reply))
            .map_err(|_| Status::unavailable("the batcher has stopped"))?;
        answer
            .await
            .map_err(|_| Status::unavailable("the batch was dropped before it was answered"))?
    }
}

fn deliver<Resp>(
    answer: Result<Vec<Result<Resp, Status>>, Status>,
    replies: Vec<oneshot::Sender<Result<Resp, Status>>>,
) {
    match answer {
        Ok(results) if results.len() == replies.len() => {
            for (reply, result) in replies.into_iter().zip(results) {
                let _ = reply.send(result);
            }
        }
        Ok(results) => {
            let status = Status::internal(format!(
                "a batch of {} calls was answered with {} results",
                replies.len(),
                results.len()
            ));
            for reply in replies {
                let _ = reply.send(Err(status.clone()));
            }
        }
        Err(status) => {
            for reply in replies {
                let _ = reply.send(Err(status.clone()));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;
    use std::time::Duration;

    use super::*;

    #[tokio::test]
    async fn concurrent_calls_share_batches_and_each_gets_its_own_answer() {
        let sizes = Arc::new(Mutex::new(Vec::new()));
        let seen = sizes.clone();
        let batcher = Batcher::spawn(BatchSettings::eager(10, 1), move |batch: Vec<u32>| {
            seen.lock().unwrap().push(batch.len());
            async move {
                tokio::time::sleep(Duration::from_millis(20)).await;
                Ok(batch.into_iter().map(|n| Ok(n * 2)).collect())
            }
        });
        let calls = (0..25u32).map(|n| {
            let batcher = batcher.clone();
            tokio::spawn(async move { (n, batcher.call(n).await) })
        });
        for call in futures::future::join_all(calls).await {
            let (n, answer) = call.unwrap();
            assert_eq!(answer.unwrap(), n * 2);
        }
        let sizes = sizes.lock().unwrap().clone();
        assert_eq!(sizes.iter().sum::<usize>(), 25);
        assert!(sizes.iter().all(|&s| s <= 10), "{sizes:?}");
        assert!(sizes.len() < 25, "calls were not batched: {sizes:?}");
    }

    /// Callers woken by one event (the messages of one fetch) are ready
    /// together: the first must not go out alone just because a slot is
    /// free. One worker thread, so the batcher, woken by the first call,
    /// would otherwise run next (Tokio's LIFO slot) ahead of the others.
    #[tokio::test(flavor = "multi_thread", worker_threads = 1)]
    async fn callers_woken_together_share_a_batch_though_slots_are_free() {
        let sizes = Arc::new(Mutex::new(Vec::new()));
        let seen = sizes.clone();
        let batcher = Batcher::spawn(BatchSettings::eager(16, 8), move |batch: Vec<u32>| {
            seen.lock().unwrap().push(batch.len());
            async move { Ok(batch.into_iter().map(Ok).collect()) }
        });
        let go = Arc::new(tokio::sync::Notify::new());
        let callers: Vec<_> = (0..6u32)
            .map(|n| {
                let (batcher, go) = (batcher.clone(), go.clone());
                tokio::spawn(async move {
                    go.notified().await;
                    batcher.call(n).await
                })
            })
            .collect();
        // Every caller is waiting before they are woken at once.
        tokio::time::sleep(Duration::from_millis(50)).await;
        tokio::spawn(async move { go.notify_waiters() });
        for (n, caller) in callers.into_iter().enumerate() {
            assert_eq!(caller.await.unwrap().unwrap(), n as u32);
        }
        let sizes = sizes.lock().unwrap().clone();
        assert_eq!(sizes, vec![6], "calls woken together went out apart");
    }

    /// Evenly spaced calls (every 4 ms here): a batch waits up to its linger
    /// (10 ms) for the calls behind its first, and goes at once when full.
    #[tokio::test(start_paused = true)]
    async fn a_lingering_batch_takes_the_calls_behind_its_first_and_goes_when_full() {
        let sizes = Arc::new(Mutex::new(Vec::new()));
        let seen = sizes.clone();
        let batcher = Batcher::spawn(
            BatchSettings {
                max_batch: 3,
                max_in_flight: 8,
                linger: Duration::from_millis(10),
            },
            move |batch: Vec<u32>| {
                seen.lock().unwrap().push(batch.len());
                async move { Ok(batch.into_iter().map(Ok).collect()) }
            },
        );
        let start = tokio::time::Instant::now();
        let mut callers = Vec::new();
        for n in 0..5u32 {
            let batcher = batcher.clone();
            callers.push(tokio::spawn(async move {
                let answer = batcher.call(n).await.unwrap();
                (answer, start.elapsed())
            }));
            tokio::time::sleep(Duration::from_millis(4)).await;
        }
        let mut answered = Vec::new();
        for (n, caller) in callers.into_iter().enumerate() {
            let (answer, at) = caller.await.unwrap();
            assert_eq!(answer, n as u32);
            answered.push(at.as_millis());
        }
        assert_eq!(*sizes.lock().unwrap(), vec![3, 2]);
        // Full with the call at 8 ms; the call at 12 ms waited until 22 ms.
        assert_eq!(answered, vec![8, 8, 8, 22, 22]);
    }

    #[tokio::test]
    async fn an_error_of_the_whole_batch_reaches_every_caller() {
        let batcher = Batcher::spawn(BatchSettings::eager(4, 2), |_: Vec<u32>| async {
            Err::<Vec<Result<u32, Status>>, _>(Status::unavailable("down"))
        });
        let answers = futures::future::join_all((0..6u32).map(|n| batcher.call(n))).await;
        assert!(
            answers
                .iter()
                .all(|a| a.as_ref().unwrap_err().code() == tonic::Code::Unavailable)
        );
    }

    #[tokio::test]
    async fn a_miscounted_answer_is_an_error_not_a_wrong_reply() {
        let batcher = Batcher::spawn(BatchSettings::eager(4, 1), |_: Vec<u32>| async {
            Ok(vec![Ok(1u32)])
        });
        let answers = futures::future::join_all((0..3u32).map(|n| batcher.call(n))).await;
        let wrong = answers.iter().filter(|a| a.is_err()).count();
        // The first call may travel alone and be answered rightly.
        assert!(wrong >= 2, "{answers:?}");
    }
}
