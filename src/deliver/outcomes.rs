//! Delivery outcomes, recorded in groups: every delivery waits until its outcome is stored (so
//! that shutdown and the worker limit still count it), but outcomes that finish while a group
//! is being stored go together into the next one — one store operation, and one commit, for
//! many deliveries instead of one each. No timer: a lone outcome is stored at once.

use std::sync::Arc;

use tokio::sync::{mpsc, oneshot};

use crate::store::{Completion, Store, now_ms};

/// The most outcomes stored in one operation.
const MAX_GROUP: usize = 256;

type Reply = oneshot::Sender<Result<(), String>>;

const STOPPED: &str = "the outcome recorder has stopped";

/// A handle to the task that stores outcomes; cheap to clone.
#[derive(Clone)]
pub(super) struct Outcomes {
    queue: mpsc::UnboundedSender<(Completion, Reply)>,
}

impl Outcomes {
    /// Starts the recording task for the dispatcher `owner`. It ends when every handle is gone.
    pub(super) fn start(store: Arc<dyn Store>, owner: String) -> Self {
        let (queue, mut pending) = mpsc::unbounded_channel::<(Completion, Reply)>();
        tokio::spawn(async move {
            while let Some(first) = pending.recv().await {
                let mut group = vec![first];
                while group.len() < MAX_GROUP {
                    match pending.try_recv() {
                        Ok(next) => group.push(next),
                        Err(_) => break,
                    }
                }
                let (done, replies): (Vec<Completion>, Vec<Reply>) = group.into_iter().unzip();
                let stored = store
                    .complete(&owner, now_ms(), done)
                    .await
                    .map_err(|e| e.to_string());
                for reply in replies {
                    let _ = reply.send(stored.clone());
                }
            }
        });
        Self { queue }
    }

    /// Stores one outcome (with whichever others are waiting); returns once it is stored.
    pub(super) async fn record(&self, completion: Completion) -> Result<(), String> {
        let (reply, stored) = oneshot::channel();
        self.queue
            .send((completion, reply))
            .map_err(|_| STOPPED.to_string())?;
        stored.await.map_err(|_| STOPPED.to_string())?
    }
}
