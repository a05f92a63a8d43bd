//! Scheduling decisions against in-memory fakes, on paused time.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use ractor::{Actor, ActorRef, ActorStatus};
use uuid::Uuid;

use super::*;
use crate::liveness::Liveness;
use crate::model::PublishOutcome;
use crate::publisher::{PublisherActor, PublisherArgs, PublisherHandle};
use crate::slot::Slot;
use crate::testing::{Disposition, advance_until};
use crate::testing::{FakeBroker, FakeStore};

fn settings() -> SchedulerSettings {
    SchedulerSettings {
        batch_size: 500,
        max_in_flight_batches: 2,
        claim_ahead: Duration::ZERO,
        max_sleep: Duration::from_secs(60),
        safety_check_interval: Duration::from_secs(300),
        contention_backoff: (Duration::from_millis(50), Duration::from_secs(1)),
    }
}

struct Harness {
    store: FakeStore,
    broker: FakeBroker,
    publisher: Slot<PublisherHandle>,
    scheduler: Slot<ActorRef<SchedulerMessage>>,
    flow: FlowControl,
    readiness: Readiness,
}

impl Harness {
    fn new() -> Self {
        let store = FakeStore::new();
        Self {
            broker: FakeBroker::new(&store),
            store,
            publisher: Slot::default(),
            scheduler: Slot::default(),
            flow: FlowControl::default(),
            readiness: Readiness::default(),
        }
    }

    async fn start_publisher(&self) {
        let args = PublisherArgs {
            connector: Arc::new(self.broker.clone()),
            confirm_timeout: Duration::from_secs(10),
            flow: self.flow.clone(),
            handle: self.publisher.clone(),
        };
        Actor::spawn(None, PublisherActor::<FakeBroker>::default(), args)
            .await
            .expect("publisher starts");
    }

    async fn start(&self, settings: SchedulerSettings) -> ActorRef<SchedulerMessage> {
        self.start_publisher().await;
        self.start_scheduler(settings).await
    }

    async fn start_scheduler(&self, settings: SchedulerSettings) -> ActorRef<SchedulerMessage> {
        let args = SchedulerArgs {
            store: self.store.clone(),
            settings,
            publisher: self.publisher.clone(),
            flow: self.flow.clone(),
            readiness: self.readiness.clone(),
            liveness: Liveness::default(),
        };
        let (scheduler, _) = Actor::spawn(None, SchedulerActor::<FakeStore>::default(), args)
            .await
            .expect("scheduler starts");
        self.scheduler.set(Some(scheduler.clone()));
        scheduler
    }

    fn changed(&self, earliest: DateTime<Utc>) {
        assert!(
            self.scheduler
                .send(SchedulerMessage::Changed(ChangeHint::Changed { earliest }))
        );
    }
}

/// Each of `ids` was published once, in order, at its time: never early,
/// at most 2 ms late.
fn assert_published_on_time(h: &Harness, ids: &[Uuid]) {
    let published = h.broker.published();
    assert_eq!(published.len(), ids.len());
    for (id, published) in ids.iter().zip(published) {
        assert_eq!(published.id, *id);
        let late = published.at - h.store.row(*id).at;
        assert!(late >= chrono::Duration::zero(), "published {late} early");
        assert!(
            late <= chrono::Duration::milliseconds(2),
            "published {late} late"
        );
        assert_eq!(h.store.row(*id).done, Some(Disposition::Published));
    }
}

#[test]
fn only_changes_at_or_before_the_armed_deadline_need_a_round() {
    let armed: DateTime<Utc> = "2030-01-01T12:00:00Z".parse().unwrap();
    let at = |offset: i64| ChangeHint::Changed {
        earliest: armed + chrono::Duration::seconds(offset),
    };
    assert!(change_needs_round(&at(-1), Some(armed)));
    assert!(change_needs_round(&at(0), Some(armed)));
    assert!(!change_needs_round(&at(1), Some(armed)));
    assert!(
        change_needs_round(&at(1), None),
        "nothing armed: any change matters"
    );
    let unknown = ChangeHint::Unrecognised {
        payload: "?".to_owned(),
    };
    assert!(change_needs_round(&unknown, Some(armed)));
}

#[tokio::test(start_paused = true)]
async fn reminders_fire_at_their_time_and_never_early() {
    let h = Harness::new();
    let ids = [2_500, 7_250, 30_000].map(|ms| h.store.insert(Duration::from_millis(ms)));
    h.start(settings()).await;
    advance_until(Duration::from_secs(40), || h.broker.published().len() == 3).await;
    assert_published_on_time(&h, &ids);
}

#[tokio::test(start_paused = true)]
async fn events_claimed_ahead_are_held_then_published_at_their_time() {
    let h = Harness::new();
    let ids = [2_500, 2_520, 7_250].map(|ms| h.store.insert(Duration::from_millis(ms)));
    let claim_ahead = Duration::from_millis(50);
    h.start(SchedulerSettings {
        claim_ahead,
        ..settings()
    })
    .await;
    // Both rows within the look-ahead of the first are claimed before it is due.
    advance_until(Duration::from_secs(3), || h.store.row(ids[1]).locked).await;
    let first_due = h.store.row(ids[0]).at;
    assert!(h.store.now() < first_due, "claimed only once due");
    assert!(h.store.now() + chrono::Duration::from_std(claim_ahead).unwrap() >= first_due);
    assert!(h.broker.published().is_empty(), "published before its time");
    advance_until(Duration::from_secs(10), || h.broker.published().len() == 3).await;
    assert_published_on_time(&h, &ids);
}

#[tokio::test(start_paused = true)]
async fn an_event_claimed_ahead_and_refused_is_pending_again_and_retried() {
    let h = Harness::new();
    let id = h.store.insert(Duration::from_millis(1_000));
    h.broker.script([PublishOutcome::Nacked]);
    h.start(SchedulerSettings {
        claim_ahead: Duration::from_millis(50),
        ..settings()
    })
    .await;
    advance_until(Duration::from_secs(60), || h.broker.published().len() == 2).await;
    let published = h.broker.published();
    assert!(published.iter().all(|p| p.id == id));
    assert_eq!(h.store.row(id).attempts, 2);
    assert!(published[0].at >= h.store.row(id).at, "published early");
    assert_eq!(h.store.row(id).done, Some(Disposition::Published));
}

#[tokio::test(start_paused = true)]
async fn an_insert_earlier_than_the_armed_deadline_rearms_at_once() {
    let h = Harness::new();
    h.store.insert(Duration::from_secs(60));
    h.start(settings()).await;
    advance_until(Duration::from_secs(1), || h.store.next_due_queries() == 1).await;
    let early = h.store.insert(Duration::from_secs(5));
    h.changed(h.store.row(early).at);
    advance_until(Duration::from_secs(6), || !h.broker.published().is_empty()).await;
    let published = h.broker.published();
    assert_eq!(published[0].id, early);
    assert!(published[0].at - h.store.row(early).at <= chrono::Duration::milliseconds(2));
}

#[tokio::test(start_paused = true)]
async fn a_change_after_the_armed_deadline_does_not_query_the_database() {
    let h = Harness::new();
    let armed = h.store.insert(Duration::from_secs(60));
    h.start(settings()).await;
    advance_until(Duration::from_secs(1), || h.store.next_due_queries() == 1).await;
    let later = h.store.insert(Duration::from_secs(120));
    h.changed(h.store.row(later).at);
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(h.store.next_due_queries(), 1);
    advance_until(Duration::from_secs(60), || h.broker.published().len() == 1).await;
    assert_eq!(h.broker.published()[0].id, armed);
}

#[tokio::test(start_paused = true)]
async fn a_deleted_reminder_is_not_sent() {
    let h = Harness::new();
    let doomed = h.store.insert(Duration::from_secs(10));
    let kept = h.store.insert(Duration::from_secs(20));
    h.start(settings()).await;
    advance_until(Duration::from_secs(1), || h.store.next_due_queries() == 1).await;
    let doomed_at = h.store.row(doomed).at;
    h.store.remove(doomed);
    h.changed(doomed_at);
    advance_until(Duration::from_secs(25), || !h.broker.published().is_empty()).await;
    let published = h.broker.published();
    assert_eq!(published.len(), 1);
    assert_eq!(published[0].id, kept);
}

#[tokio::test(start_paused = true)]
async fn a_moved_reminder_fires_at_its_new_time_only() {
    let h = Harness::new();
    h.start(settings()).await;
    let moved = h.store.insert(Duration::from_secs(10));
    h.changed(h.store.row(moved).at);
    advance_until(Duration::from_secs(1), || h.store.next_due_queries() >= 1).await;
    let old_at = h.store.row(moved).at;
    h.store.remove(moved);
    let replacement = h.store.insert(Duration::from_secs(30));
    h.changed(old_at);
    advance_until(Duration::from_secs(40), || !h.broker.published().is_empty()).await;
    let published = h.broker.published();
    assert_eq!(published.len(), 1);
    assert_eq!(published[0].id, replacement);
    assert!(published[0].at >= h.store.row(replacement).at);
}

#[tokio::test(start_paused = true)]
async fn a_backlog_drains_in_bounded_batches_oldest_first() {
    let h = Harness::new();
    h.broker.set_confirm_delay(Duration::from_millis(10));
    let ids: Vec<_> = (0..2_100u64)
        .map(|n| {
            h.store
                .insert_overdue(Duration::from_secs(10_000 - n), None)
        })
        .collect();
    h.start(settings()).await;
    advance_until(Duration::from_secs(10), || h.store.pending() == 0).await;
    let published = h.broker.published();
    assert_eq!(published.len(), 2_100, "each reminder exactly once");
    assert!(h.broker.batch_sizes().iter().all(|size| *size <= 500));
    let order: Vec<_> = published.iter().map(|p| p.id).collect();
    assert_eq!(order, ids, "oldest first");
    assert!(
        ids.iter()
            .all(|id| h.store.row(*id).done == Some(Disposition::Published))
    );
}

#[tokio::test(start_paused = true)]
async fn reminders_of_games_already_started_are_skipped_not_published() {
    let h = Harness::new();
    let stale = h
        .store
        .insert_overdue(Duration::from_secs(3_600), Some(Duration::from_secs(60)));
    let zero_minute = h
        .store
        .insert_overdue(Duration::from_secs(1), Some(Duration::from_secs(1)));
    let live = h.store.insert_overdue(Duration::from_secs(30), None);
    h.start(settings()).await;
    advance_until(Duration::from_secs(1), || h.store.pending() == 0).await;
    assert_eq!(h.store.row(stale).done, Some(Disposition::SkippedStale));
    assert_eq!(h.store.row(zero_minute).done, Some(Disposition::Published));
    assert_eq!(h.store.row(live).done, Some(Disposition::Published));
    let published: Vec<_> = h.broker.published().iter().map(|p| p.id).collect();
    assert!(!published.contains(&stale));
}

#[tokio::test(start_paused = true)]
async fn a_refused_event_waits_for_its_retry_while_the_scheduler_goes_on() {
    let h = Harness::new();
    let first = h.store.insert_overdue(Duration::from_secs(2), None);
    let refused = h.store.insert_overdue(Duration::from_secs(1), None);
    h.broker
        .script([PublishOutcome::Confirmed, PublishOutcome::Returned]);
    let scheduler = h.start(settings()).await;
    advance_until(Duration::from_secs(1), || {
        h.store.row(refused).attempts == 1
    })
    .await;
    assert_eq!(h.store.row(first).done, Some(Disposition::Published));
    let row = h.store.row(refused);
    assert_eq!(row.done, None, "a returned message is not delivered");
    assert!(!row.locked);
    assert!(row.last_error.unwrap().contains("returned unroutable"));
    assert_eq!(scheduler.get_status(), ActorStatus::Running);
    advance_until(Duration::from_secs(3), || h.store.pending() == 0).await;
    assert_eq!(h.store.row(refused).done, Some(Disposition::Published));
    assert_eq!(h.store.row(refused).attempts, 2);
    assert_eq!(scheduler.get_status(), ActorStatus::Running);
}

#[tokio::test(start_paused = true)]
async fn an_event_refused_on_every_attempt_is_dead_lettered_and_others_go_out_on_time() {
    let h = Harness::new();
    let refused = h.store.insert_overdue(Duration::from_secs(1), None);
    let later = h.store.insert(Duration::from_millis(1_500));
    // Attempts at 0 s and 1 s, the later event at 1.5 s, the last attempt at 3 s.
    h.broker.script([
        PublishOutcome::Returned,
        PublishOutcome::Returned,
        PublishOutcome::Confirmed,
        PublishOutcome::Returned,
    ]);
    let scheduler = h.start(settings()).await;
    advance_until(Duration::from_secs(10), || {
        h.store.row(refused).dead_lettered
    })
    .await;
    let row = h.store.row(refused);
    assert_eq!((row.attempts, row.done), (3, None));
    let on_time = h
        .broker
        .published()
        .iter()
        .find(|p| p.id == later)
        .map(|p| p.at)
        .expect("the later event was published");
    assert!(on_time - h.store.row(later).at < chrono::Duration::milliseconds(10));
    assert_eq!(h.store.pending(), 0, "a dead letter is not pending");
    assert_eq!(scheduler.get_status(), ActorStatus::Running);
}

#[tokio::test(start_paused = true)]
async fn unconfirmed_events_stay_pending_and_fail_the_scheduler() {
    let h = Harness::new();
    let first = h.store.insert_overdue(Duration::from_secs(2), None);
    let second = h.store.insert_overdue(Duration::from_secs(1), None);
    h.broker.script([
        PublishOutcome::Confirmed,
        PublishOutcome::Unknown("the channel closed".to_owned()),
    ]);
    let scheduler = h.start(settings()).await;
    advance_until(Duration::from_secs(1), || {
        scheduler.get_status() == ActorStatus::Stopped
    })
    .await;
    assert_eq!(h.store.row(first).done, Some(Disposition::Published));
    let row = h.store.row(second);
    assert_eq!((row.done, row.attempts), (None, 0), "not an attempt");
    assert!(!row.locked);
}

#[tokio::test(start_paused = true)]
async fn a_database_failure_fails_the_scheduler_and_marks_the_database_unready() {
    let h = Harness::new();
    h.store.fail_with(Some("connection refused"));
    let scheduler = h.start(settings()).await;
    advance_until(Duration::from_secs(1), || {
        scheduler.get_status() == ActorStatus::Stopped
    })
    .await;
    let report = h.readiness.report();
    assert!(!report.database.ready);
    assert!(
        report
            .database
            .detail
            .unwrap()
            .contains("connection refused")
    );
}

#[tokio::test(start_paused = true)]
async fn a_reminder_held_by_another_claim_is_polled_until_free() {
    let h = Harness::new();
    let held = h.store.insert_overdue(Duration::from_secs(1), None);
    h.store.set_locked(held, true);
    h.start(settings()).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(h.broker.published().is_empty());
    let polls = h.store.claims();
    assert!(
        (3..=60).contains(&polls),
        "polled {polls} times in 3 s: backoff, not a spin"
    );
    h.store.set_locked(held, false);
    advance_until(Duration::from_millis(1_300), || {
        h.broker.published().len() == 1
    })
    .await;
}

#[tokio::test(start_paused = true)]
async fn without_a_publisher_nothing_is_claimed_until_a_resync() {
    let h = Harness::new();
    let due = h.store.insert_overdue(Duration::from_secs(1), None);
    h.start_scheduler(settings()).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(h.store.claims(), 0);
    h.start_publisher().await;
    assert!(h.scheduler.send(SchedulerMessage::Resync));
    advance_until(Duration::from_secs(1), || h.store.row(due).done.is_some()).await;
}

#[tokio::test(start_paused = true)]
async fn the_safety_check_finds_rows_written_without_a_notification() {
    let h = Harness::new();
    h.start(settings()).await;
    advance_until(Duration::from_secs(1), || h.store.next_due_queries() == 1).await;
    let silent = h.store.insert(Duration::from_secs(1));
    advance_until(Duration::from_secs(301), || {
        h.store.row(silent).done.is_some()
    })
    .await;
}

#[tokio::test(start_paused = true)]
async fn long_sleeps_are_capped_so_clock_steps_are_corrected() {
    let h = Harness::new();
    let far = h.store.insert(Duration::from_secs(600));
    h.start(settings()).await;
    advance_until(Duration::from_secs(601), || h.store.row(far).done.is_some()).await;
    assert!(
        h.store.next_due_queries() >= 10,
        "re-read at least once a minute"
    );
}

#[tokio::test(start_paused = true)]
async fn draining_waits_for_claimed_batches_to_settle() {
    let h = Harness::new();
    h.broker.set_confirm_delay(Duration::from_secs(2));
    let due = h.store.insert_overdue(Duration::from_secs(1), None);
    let scheduler = h.start(settings()).await;
    advance_until(Duration::from_secs(1), || !h.broker.published().is_empty()).await;
    assert_eq!(h.store.row(due).done, None, "still awaiting its confirm");
    let drained = scheduler
        .call(SchedulerMessage::Drain, Some(Duration::from_secs(5)))
        .await
        .expect("drain answers");
    assert!(matches!(drained, ractor::rpc::CallResult::Success(())));
    assert_eq!(h.store.row(due).done, Some(Disposition::Published));
    let later = h.store.insert_overdue(Duration::from_secs(1), None);
    assert!(h.scheduler.send(SchedulerMessage::Resync));
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(
        h.store.row(later).done,
        None,
        "nothing is claimed after draining"
    );
}

#[tokio::test(start_paused = true)]
async fn broker_flow_control_pauses_claims_until_lifted() {
    let h = Harness::new();
    h.flow.set_blocked(true);
    let due = h.store.insert_overdue(Duration::from_secs(1), None);
    h.start(settings()).await;
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(h.store.claims(), 0);
    h.flow.set_blocked(false);
    advance_until(Duration::from_secs(1), || h.store.row(due).done.is_some()).await;
}
