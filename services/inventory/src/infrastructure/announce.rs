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
                if let Err(error) = client.publish(subject.clone(), body.into()).await {
                    tracing::debug!(%error, "a product change announcement was not sent");
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
