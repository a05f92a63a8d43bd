//! A bound on the change hints waiting in the listener's mailbox. A flood of
//! notifications (a million single-row statements) must not grow the daemon's
//! memory: past the bound, hints are dropped, and once the listener has
//! caught up it asks the scheduler to re-read the table instead, which
//! covers every dropped hint (the table is the truth).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

/// Shared by the connection's task (which admits hints) and the listener
/// (which handles them).
#[derive(Debug, Clone)]
pub struct ChangeFeed(Arc<Inner>);

#[derive(Debug)]
struct Inner {
    capacity: usize,
    queued: AtomicUsize,
    dropped: AtomicBool,
}

impl ChangeFeed {
    pub fn new(capacity: usize) -> Self {
        Self(Arc::new(Inner {
            capacity: capacity.max(1),
            queued: AtomicUsize::new(0),
            dropped: AtomicBool::new(false),
        }))
    }

    /// Whether one more hint may be queued; if not, it is dropped and
    /// remembered.
    pub fn admit(&self) -> bool {
        let admitted = self
            .0
            .queued
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |queued| {
                (queued < self.0.capacity).then_some(queued + 1)
            })
            .is_ok();
        if !admitted {
            self.0.dropped.store(true, Ordering::Release);
        }
        admitted
    }

    /// One queued hint was handled. Returns `true` when the queue is empty
    /// and hints were dropped since the last such answer: time to resync.
    pub fn handled(&self) -> bool {
        let left = self
            .0
            .queued
            .fetch_sub(1, Ordering::AcqRel)
            .saturating_sub(1);
        left == 0 && self.0.dropped.swap(false, Ordering::AcqRel)
    }

    /// Hints queued now.
    #[cfg(test)]
    fn queued(&self) -> usize {
        self.0.queued.load(Ordering::Acquire)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hints_past_the_bound_are_dropped_and_turn_into_one_resync() {
        let feed = ChangeFeed::new(3);
        let admitted = (0..10).filter(|_| feed.admit()).count();
        assert_eq!((admitted, feed.queued()), (3, 3));
        assert!(!feed.handled());
        assert!(!feed.handled());
        assert!(feed.handled(), "caught up after dropping hints");
        assert!(feed.admit());
        assert!(!feed.handled(), "nothing dropped since");
    }
}
