//! Product changes announced on NATS, for the gateways' product caches.
//!
//! Announcements are coalesced: whatever changed while the previous message
//! was being handed to the client goes out as one message (ids one per
//! line). They are best effort by design: the caches also bound how long
//! they keep anything, so a lost announcement delays a change, never hides it.

use std::collections::BTreeSet;

use tokio::sync::mpsc;
use uuid::Uuid;

use crate::application::ProductChangeFeed;

/// How long one announcement may wait for the NATS client.
const PUBLISH_WAIT: std::time::Duration = std::time::Duration::from_millis(200);

pub struct NatsAnnouncer {
    queue: mpsc::UnboundedSender<Vec<Uuid>>,
}

impl NatsAnnouncer {
    pub fn spawn(client: async_nats::Client, subject: String) -> Self {
        let (queue, mut changes) = mpsc::unbounded_channel::<Vec<Uuid>>();
        tokio::spawn(async move {
            while let Some(first) = changes.recv().await {
                let mut ids: BTreeSet<Uuid> = first.into_iter().collect();
                while let Ok(more) = changes.try_recv() {
                    ids.extend(more);
                }
                let body: String = ids.iter().map(|id| format!("{id}\n")).collect();
                // While NATS is away the client's queue fills and a publish
                // waits: give up on this one rather than let changes pile up
                // behind it (the caches' TTL covers what is lost).
                match tokio::time::timeout(
                    PUBLISH_WAIT,
                    client.publish(subject.clone(), body.into()),
                )
                .await
                {
                    Ok(Ok(())) => {}
                    Ok(Err(error)) => {
                        tracing::debug!(%error, "a product change announcement was not sent")
                    }
                    Err(_) => tracing::debug!("NATS is not taking announcements; one dropped"),
                }
            }
        });
        NatsAnnouncer { queue }
    }
}

impl ProductChangeFeed for NatsAnnouncer {
    fn announce(&self, ids: Vec<Uuid>) {
        if !ids.is_empty() {
            let _ = self.queue.send(ids);
        }
    }
}
