//! Broker flow control as seen by the delivery path: while the broker blocks
//! publishers (memory or disk alarm), nothing new is claimed, and confirm
//! timeouts do not run.

use tokio::sync::watch;

/// Whether the broker currently accepts publishes. The publisher writes it;
/// delivery rounds and confirm waits read it.
#[derive(Debug, Clone)]
pub struct FlowControl {
    blocked: watch::Sender<bool>,
}

impl Default for FlowControl {
    fn default() -> Self {
        Self {
            blocked: watch::Sender::new(false),
        }
    }
}

impl FlowControl {
    /// Records the broker's flow state; returns whether it changed.
    pub fn set_blocked(&self, blocked: bool) -> bool {
        let changed = self.blocked.send_if_modified(|current| {
            let changed = *current != blocked;
            *current = blocked;
            changed
        });
        if changed {
            crate::metrics::broker_blocked(blocked);
        }
        changed
    }

    /// Whether publishing is paused now.
    pub fn is_blocked(&self) -> bool {
        *self.blocked.borrow()
    }

    /// A receiver to wait on changes.
    pub fn subscribe(&self) -> watch::Receiver<bool> {
        self.blocked.subscribe()
    }

    /// Returns once publishing is allowed.
    pub async fn wait_until_open(&self) {
        let mut receiver = self.subscribe();
        // The sender lives in `self`, so the channel cannot close while waiting.
        let _ = receiver.wait_for(|blocked| !blocked).await;
    }
}
