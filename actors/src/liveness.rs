//! Whether delivery makes progress, for the liveness endpoint and the
//! supervisor's watchdog. The scheduler records its rounds and settled
//! batches; readers ask how long delivery has been stuck.
//!
//! Progress is a round that finished or a batch that settled. Work is due
//! from the start of a round until a round finishes with nothing left to
//! claim now, so a long backlog drain (one round, batches settling all along)
//! is progress, and a claim failing in a loop (a table locked by a long
//! migration) is not.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;

/// Shared, cheaply cloned record of delivery progress.
#[derive(Debug, Clone, Default)]
pub struct Liveness(Arc<Mutex<Record>>);

#[derive(Debug, Default)]
struct Record {
    /// A round is running, since then.
    round_since: Option<Instant>,
    /// Work has been due, since then.
    due_since: Option<Instant>,
    /// The last progress.
    progressed_at: Option<Instant>,
}

impl Record {
    /// Time since `since` or the last progress after it.
    fn without_progress_since(&self, since: Instant) -> Duration {
        self.progressed_at
            .map_or(since, |at| at.max(since))
            .elapsed()
    }
}

impl Liveness {
    fn lock(&self) -> std::sync::MutexGuard<'_, Record> {
        self.0.lock().unwrap_or_else(|poison| poison.into_inner())
    }

    /// A round starts: something may be due.
    pub fn round_started(&self) {
        let now = Instant::now();
        let mut progress = self.lock();
        progress.round_since = Some(now);
        progress.due_since.get_or_insert(now);
    }

    /// A round ended. `progressed`: it reached the database and the broker;
    /// `caught_up`: nothing is left to claim now.
    pub fn round_finished(&self, progressed: bool, caught_up: bool) {
        let mut progress = self.lock();
        progress.round_since = None;
        if progressed {
            progress.progressed_at = Some(Instant::now());
        }
        if caught_up {
            progress.due_since = None;
        }
    }

    /// A round was abandoned (it failed, or its scheduler stopped): the work
    /// it was doing is still due.
    pub fn round_abandoned(&self) {
        self.lock().round_since = None;
    }

    /// A claimed batch settled with the broker's answers.
    pub fn batch_settled(&self) {
        self.lock().progressed_at = Some(Instant::now());
    }

    /// How long delivery has made no progress while work was due; `None`
    /// when nothing is due.
    pub fn stalled_for(&self) -> Option<Duration> {
        let progress = self.lock();
        progress
            .due_since
            .map(|since| progress.without_progress_since(since))
    }

    /// How long the running round has made no progress; `None` when no round
    /// runs.
    pub fn round_stuck_for(&self) -> Option<Duration> {
        let progress = self.lock();
        progress
            .round_since
            .map(|since| progress.without_progress_since(since))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_failing_loop_stalls_and_a_draining_round_does_not() {
        let liveness = Liveness::default();
        assert_eq!(liveness.stalled_for(), None);
        liveness.round_started();
        tokio::time::advance(Duration::from_secs(5)).await;
        liveness.batch_settled();
        tokio::time::advance(Duration::from_secs(2)).await;
        assert_eq!(liveness.round_stuck_for(), Some(Duration::from_secs(2)));
        assert_eq!(liveness.stalled_for(), Some(Duration::from_secs(2)));
        liveness.round_finished(true, true);
        assert_eq!(
            (liveness.stalled_for(), liveness.round_stuck_for()),
            (None, None)
        );

        liveness.round_started();
        liveness.round_abandoned();
        tokio::time::advance(Duration::from_secs(3)).await;
        liveness.round_started();
        liveness.round_abandoned();
        tokio::time::advance(Duration::from_secs(3)).await;
        assert_eq!(liveness.stalled_for(), Some(Duration::from_secs(6)));
        assert_eq!(liveness.round_stuck_for(), None);
    }
}
