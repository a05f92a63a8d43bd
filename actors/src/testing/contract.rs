//! The behaviour every [`ScheduleStore`] must show, as scenarios that run
//! against the in-memory fake (this crate's tests) and the PostgreSQL store
//! (`tests/store_contract.rs`), so the fake the actor tests rely on cannot
//! drift from the real store.
//!
//! A store under test comes with a [`ContractFixture`] that writes rows and
//! reads their state relative to the store's own clock. Stores are set up with
//! a stale grace of [`STALE_GRACE`]. [`store_contract_tests!`](crate::store_contract_tests)
//! turns the scenarios into tests for one fixture.

use std::future::Future;
use std::time::Duration;

use chrono::TimeDelta;
use uuid::Uuid;

use crate::model::DueEvent;
use crate::ports::{Claim, RetryPolicy, ScheduleStore, Undelivered};

/// The stale grace every store under test is configured with.
pub const STALE_GRACE: Duration = Duration::from_secs(60);

/// How every store under test retries refused events.
pub const RETRY: RetryPolicy = RetryPolicy {
    base: Duration::from_millis(400),
    max: Duration::from_secs(1),
    max_attempts: 2,
};

/// Slack for durations computed by the store's clock while the test runs.
const SLACK: Duration = Duration::from_secs(5);

/// What a stored reminder looks like from outside.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RowState {
    Pending,
    Published,
    SkippedStale,
    DeadLettered,
}

/// A store under test and the means to arrange and inspect its rows.
pub trait ContractFixture: Sync {
    type Store: ScheduleStore;

    /// A handle on the store. Handles claim independently, as replicas do.
    fn store(&self) -> Self::Store;

    /// Adds a pending reminder due at now + `due_in` (negative: overdue), for
    /// a game starting at now + `game_starts_in` (`None`: a row from a writer
    /// that records no game start).
    fn insert(
        &self,
        due_in: TimeDelta,
        game_starts_in: Option<TimeDelta>,
    ) -> impl Future<Output = Uuid> + Send;

    /// The reminder's state as another connection sees it.
    fn state(&self, id: Uuid) -> impl Future<Output = RowState> + Send;
}

fn ids(events: &[DueEvent]) -> Vec<Uuid> {
    events.iter().map(|e| e.id).collect()
}

fn ago(seconds: i64) -> TimeDelta {
    TimeDelta::seconds(-seconds)
}

fn ahead(seconds: i64) -> TimeDelta {
    TimeDelta::seconds(seconds)
}

fn within(actual: Duration, expected: Duration, what: &str) {
    assert!(
        actual + SLACK >= expected && actual <= expected + SLACK,
        "{what}: {actual:?}, expected about {expected:?}"
    );
}

/// Claims on `store` until the claim holds `expected` rows: a dropped claim's
/// rows may stay locked until the server has rolled it back.
async fn claim_eventually<S: ScheduleStore>(store: &S, expected: usize) -> S::Claim {
    let deadline = tokio::time::Instant::now() + SLACK;
    loop {
        let claim = store.claim_due(100, Duration::ZERO).await.expect("claim");
        if claim.events().len() == expected {
            return claim;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "claim holds {} rows, expected {expected}",
            claim.events().len()
        );
        drop(claim);
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Due rows are claimed oldest first, at most `limit`; rows not yet due are
/// not; lateness is measured from the due time.
pub async fn claims_oldest_first_up_to_the_limit<F: ContractFixture>(fixture: &F) {
    let second = fixture.insert(ago(20), None).await;
    let oldest = fixture.insert(ago(30), None).await;
    let third = fixture.insert(ago(10), None).await;
    let future = fixture.insert(ahead(3_600), None).await;
    let store = fixture.store();
    let claim = store.claim_due(2, Duration::ZERO).await.expect("claim");
    assert_eq!(ids(claim.events()), [oldest, second]);
    within(
        claim.events()[0].lateness,
        Duration::from_secs(30),
        "lateness",
    );
    claim.commit(Vec::new()).await.expect("commit");
    assert_eq!(fixture.state(oldest).await, RowState::Published);
    assert_eq!(fixture.state(second).await, RowState::Published);
    assert_eq!(fixture.state(third).await, RowState::Pending);
    let rest = store.claim_due(100, Duration::ZERO).await.expect("claim");
    assert_eq!(ids(rest.events()), [third], "{future} is not due");
}

/// A claim with a look-ahead also takes rows due within it and says how far
/// ahead each was; rows due later are not taken, and already due rows are
/// not ahead. Dropping the claim leaves them pending.
pub async fn claims_ahead_within_the_look_ahead<F: ContractFixture>(fixture: &F) {
    let due = fixture.insert(ago(10), None).await;
    let soon = fixture.insert(ahead(20), None).await;
    let later = fixture.insert(ahead(3_600), None).await;
    let store = fixture.store();
    let claim = store
        .claim_due(100, Duration::from_secs(30))
        .await
        .expect("claim");
    assert_eq!(
        ids(claim.events()),
        [due, soon],
        "{later} is beyond the look-ahead"
    );
    let [due_event, soon_event] = claim.events() else {
        unreachable!()
    };
    assert_eq!(due_event.ahead, Duration::ZERO);
    assert_eq!(soon_event.lateness, Duration::ZERO);
    assert!(
        soon_event.ahead > Duration::ZERO && soon_event.ahead <= Duration::from_secs(20),
        "ahead {:?}",
        soon_event.ahead
    );
    assert!(!soon_event.stale);
    drop(claim);
    let again = claim_eventually(&store, 1).await;
    assert_eq!(
        ids(again.events()),
        [due],
        "without a look-ahead only what is due"
    );
    drop(again);
    assert_eq!(fixture.state(soon).await, RowState::Pending);
}

/// A row held by one claim is skipped by another (`SKIP LOCKED`), not waited for.
pub async fn a_held_row_is_skipped_by_another_claim<F: ContractFixture>(fixture: &F) {
    let first = fixture.insert(ago(20), None).await;
    let second = fixture.insert(ago(10), None).await;
    let replica_a = fixture.store();
    let replica_b = fixture.store();
    let held = replica_a.claim_due(1, Duration::ZERO).await.expect("claim");
    assert_eq!(ids(held.events()), [first]);
    let other = tokio::time::timeout(SLACK, replica_b.claim_due(100, Duration::ZERO))
        .await
        .expect("a claim never waits for another")
        .expect("claim");
    assert_eq!(ids(other.events()), [second]);
}

/// A reminder whose game has started and which is more than the grace late is
/// claimed as stale and recorded as skipped; others are published.
pub async fn stale_rows_are_skipped_and_the_rest_published<F: ContractFixture>(fixture: &F) {
    let stale = fixture.insert(ago(600), Some(ago(300))).await;
    let late_within_grace = fixture.insert(ago(10), Some(ago(5))).await;
    let without_game = fixture.insert(ago(600), None).await;
    let claim = fixture
        .store()
        .claim_due(100, Duration::ZERO)
        .await
        .expect("claim");
    let stale_flags: Vec<(Uuid, bool)> = claim.events().iter().map(|r| (r.id, r.stale)).collect();
    assert_eq!(
        stale_flags,
        [
            (stale, true),
            (without_game, false),
            (late_within_grace, false)
        ]
    );
    claim.commit(Vec::new()).await.expect("commit");
    assert_eq!(fixture.state(stale).await, RowState::SkippedStale);
    assert_eq!(fixture.state(late_within_grace).await, RowState::Published);
    assert_eq!(fixture.state(without_game).await, RowState::Published);
}

/// A message expires when it would become stale: at the game's start, or at
/// the end of the grace if that is later; rows without a game start never do.
pub async fn expiry_is_when_the_reminder_would_become_stale<F: ContractFixture>(fixture: &F) {
    let before_game = fixture.insert(ago(1), Some(ahead(3_600))).await;
    let game_started = fixture.insert(ago(10), Some(ago(5))).await;
    let without_game = fixture.insert(ago(1), None).await;
    let claim = fixture
        .store()
        .claim_due(100, Duration::ZERO)
        .await
        .expect("claim");
    let expiry = |id: Uuid| {
        claim
            .events()
            .iter()
            .find(|r| r.id == id)
            .expect("claimed")
            .expires_in
    };
    within(
        expiry(before_game).expect("expires"),
        Duration::from_secs(3_600),
        "until the game starts",
    );
    within(
        expiry(game_started).expect("expires"),
        STALE_GRACE - Duration::from_secs(10),
        "until the grace ends",
    );
    assert_eq!(expiry(without_game), None);
}

/// The next deadline is the earliest pending row outside the caller's
/// in-flight claims, with the delay left by the store's clock.
pub async fn next_due_looks_past_rows_in_flight<F: ContractFixture>(fixture: &F) {
    let store = fixture.store();
    assert_eq!(store.next_due(&[]).await.expect("next due"), None);
    let sooner = fixture.insert(ahead(3_600), None).await;
    fixture.insert(ahead(7_200), None).await;
    let next = store.next_due(&[]).await.expect("next due").expect("a row");
    within(next.delay, Duration::from_secs(3_600), "delay");
    let past = store
        .next_due(&[sooner])
        .await
        .expect("next due")
        .expect("a row");
    within(
        past.delay,
        Duration::from_secs(7_200),
        "delay past the in-flight row",
    );
    assert!(past.at > next.at);
    fixture.insert(ago(5), None).await;
    let due = store.next_due(&[]).await.expect("next due").expect("a row");
    assert_eq!(due.delay, Duration::ZERO, "a due row has no delay left");
}

/// Committing with some reminders undelivered records the rest and leaves
/// those pending, claimable again.
pub async fn a_partial_commit_leaves_the_undelivered_pending<F: ContractFixture>(fixture: &F) {
    let first = fixture.insert(ago(30), None).await;
    let undelivered = fixture.insert(ago(20), None).await;
    let third = fixture.insert(ago(10), None).await;
    let store = fixture.store();
    let claim = store.claim_due(100, Duration::ZERO).await.expect("claim");
    assert_eq!(claim.events().len(), 3);
    let unanswered = Undelivered {
        id: undelivered,
        refusal: None,
    };
    let dead = claim.commit(vec![unanswered]).await.expect("commit");
    assert!(dead.is_empty());
    assert_eq!(fixture.state(first).await, RowState::Published);
    assert_eq!(fixture.state(undelivered).await, RowState::Pending);
    assert_eq!(fixture.state(third).await, RowState::Published);
    let again = claim_eventually(&store, 1).await;
    assert_eq!(ids(again.events()), [undelivered]);
}

/// An event the broker refused is not claimed again before its next attempt,
/// which the next-due query reports; after its last attempt it is
/// dead-lettered: never claimed, never due. Other events are not held up.
pub async fn a_refused_event_waits_for_its_next_attempt_then_is_dead_lettered<
    F: ContractFixture,
>(
    fixture: &F,
) {
    let refused = fixture.insert(ago(20), None).await;
    let store = fixture.store();
    let claim = store.claim_due(100, Duration::ZERO).await.expect("claim");
    assert_eq!(ids(claim.events()), [refused]);
    let refusal = || Undelivered {
        id: refused,
        refusal: Some("returned unroutable".to_owned()),
    };
    let dead = claim.commit(vec![refusal()]).await.expect("commit");
    assert!(dead.is_empty(), "one attempt of two");
    assert_eq!(fixture.state(refused).await, RowState::Pending);
    let other = fixture.insert(ago(10), None).await;
    let claim = claim_eventually(&store, 1).await;
    assert_eq!(ids(claim.events()), [other], "the refused event waits");
    claim.commit(Vec::new()).await.expect("commit");
    let next = store.next_due(&[]).await.expect("next due").expect("a row");
    assert!(
        next.delay > Duration::ZERO && next.delay <= RETRY.delay(1),
        "the next attempt is within the first retry delay: {:?}",
        next.delay
    );
    tokio::time::sleep(next.delay).await;
    let claim = claim_eventually(&store, 1).await;
    assert_eq!(ids(claim.events()), [refused]);
    let dead = claim.commit(vec![refusal()]).await.expect("commit");
    assert_eq!(dead, [refused], "dead-lettered after its last attempt");
    assert_eq!(fixture.state(refused).await, RowState::DeadLettered);
    assert!(store.next_due(&[]).await.expect("next due").is_none());
    let claim = store.claim_due(100, Duration::ZERO).await.expect("claim");
    assert!(claim.events().is_empty());
}

/// Dropping a claim without committing releases its rows unchanged.
pub async fn dropping_a_claim_releases_its_rows_unchanged<F: ContractFixture>(fixture: &F) {
    let first = fixture.insert(ago(20), None).await;
    let second = fixture.insert(ago(10), None).await;
    let store = fixture.store();
    let claim = store.claim_due(100, Duration::ZERO).await.expect("claim");
    assert_eq!(ids(claim.events()), [first, second]);
    drop(claim);
    assert_eq!(fixture.state(first).await, RowState::Pending);
    assert_eq!(fixture.state(second).await, RowState::Pending);
    let again = claim_eventually(&store, 2).await;
    assert_eq!(ids(again.events()), [first, second]);
}

/// One test per contract scenario, for the fixture `$fixture` (an expression,
/// awaited inside each test, that makes a fresh fixture).
#[macro_export]
macro_rules! store_contract_tests {
    ($fixture:expr) => {
        $crate::store_contract_tests!(@tests $fixture;
            claims_oldest_first_up_to_the_limit,
            claims_ahead_within_the_look_ahead,
            a_held_row_is_skipped_by_another_claim,
            stale_rows_are_skipped_and_the_rest_published,
            expiry_is_when_the_reminder_would_become_stale,
            next_due_looks_past_rows_in_flight,
            a_partial_commit_leaves_the_undelivered_pending,
            a_refused_event_waits_for_its_next_attempt_then_is_dead_lettered,
            dropping_a_claim_releases_its_rows_unchanged,
        );
    };
    (@tests $fixture:expr; $($scenario:ident,)*) => {
        $(
            #[tokio::test]
            async fn $scenario() {
                let fixture = $fixture;
                $crate::testing::contract::$scenario(&fixture).await;
            }
        )*
    };
}

#[cfg(test)]
mod fake_store {
    use super::*;
    use crate::testing::{Disposition, FakeStore};

    impl ContractFixture for FakeStore {
        type Store = FakeStore;

        fn store(&self) -> FakeStore {
            self.clone()
        }

        async fn insert(&self, due_in: TimeDelta, game_starts_in: Option<TimeDelta>) -> Uuid {
            self.insert_at(due_in, game_starts_in)
        }

        async fn state(&self, id: Uuid) -> RowState {
            let row = self.row(id);
            if row.dead_lettered {
                return RowState::DeadLettered;
            }
            match row.done {
                None => RowState::Pending,
                Some(Disposition::Published) => RowState::Published,
                Some(Disposition::SkippedStale) => RowState::SkippedStale,
            }
        }
    }

    crate::store_contract_tests!(FakeStore::new().with_retry(RETRY));
}
