//! Restart behaviour of the supervisor against fakes, on paused time.

use std::sync::Arc;
use std::time::Duration;

use ractor::{Actor, ActorRef, ActorStatus};
use tokio::sync::watch;

use super::*;
use crate::model::PublishOutcome;
use crate::ports::{BrokerEvent, ListenEvent};
use crate::testing::{Disposition, advance_until};
use crate::testing::{FakeBroker, FakeFeed, FakeStore};

struct Harness {
    store: FakeStore,
    broker: FakeBroker,
    feed: FakeFeed,
    readiness: Readiness,
    liveness: Liveness,
    fatal: watch::Receiver<Option<String>>,
    supervisor: ActorRef<SupervisorMessage>,
}

fn settings() -> SupervisorSettings {
    SupervisorSettings {
        restart_backoff: (Duration::from_millis(100), Duration::from_secs(2)),
        reconnect_backoff: (Duration::from_millis(100), Duration::from_millis(500)),
        stable_after: Duration::from_secs(30),
        listener_ping_interval: Duration::from_secs(15),
        confirm_timeout: Duration::from_secs(10),
        watchdog_timeout: Duration::from_secs(30),
        scheduler: SchedulerSettings {
            batch_size: 100,
            max_in_flight_batches: 2,
            claim_ahead: Duration::ZERO,
            max_sleep: Duration::from_secs(60),
            safety_check_interval: Duration::from_secs(300),
            contention_backoff: (Duration::from_millis(50), Duration::from_secs(1)),
        },
    }
}

async fn start(prepare: impl FnOnce(&FakeStore, &FakeBroker)) -> Harness {
    let store = FakeStore::new();
    let broker = FakeBroker::new(&store);
    let feed = FakeFeed::default();
    prepare(&store, &broker);
    let readiness = Readiness::default();
    let liveness = Liveness::default();
    let (fatal_sender, fatal) = watch::channel(None);
    let args = SupervisorArgs {
        store: store.clone(),
        broker: Arc::new(broker.clone()),
        listen: Arc::new(feed.clone()),
        settings: settings(),
        readiness: readiness.clone(),
        liveness: liveness.clone(),
        fatal: fatal_sender,
    };
    let (supervisor, _) = Actor::spawn(None, SupervisorActor::default(), args)
        .await
        .expect("supervisor starts");
    Harness {
        store,
        broker,
        feed,
        readiness,
        liveness,
        fatal,
        supervisor,
    }
}

#[tokio::test(start_paused = true)]
async fn a_publisher_that_cannot_connect_is_retried_with_backoff_and_delivery_resumes() {
    let h = start(|store, broker| {
        store.insert_overdue(Duration::from_secs(5), None);
        broker.fail_next_connects([
            PortError::transient("connection refused"),
            PortError::transient("connection refused"),
        ]);
    })
    .await;
    assert!(!h.readiness.report().broker.ready);
    advance_until(Duration::from_secs(2), || h.store.pending() == 0).await;
    assert_eq!(h.broker.connects(), 3);
    assert!(h.readiness.report().broker.ready);
    assert!(h.readiness.report().ready());
}

#[tokio::test(start_paused = true)]
async fn a_lost_broker_connection_is_replaced() {
    let h = start(|_, _| {}).await;
    advance_until(Duration::from_secs(1), || h.readiness.report().ready()).await;
    h.broker
        .emit(BrokerEvent::Lost("connection reset".to_owned()));
    advance_until(Duration::from_secs(1), || h.broker.connects() == 2).await;
    let due = h.store.insert_overdue(Duration::from_secs(1), None);
    h.feed.emit(ListenEvent::Changed(
        crate::model::ChangeHint::Unrecognised {
            payload: String::new(),
        },
    ));
    advance_until(Duration::from_secs(1), || {
        h.store.row(due).done == Some(Disposition::Published)
    })
    .await;
}

#[tokio::test(start_paused = true)]
async fn a_batch_refused_whole_replaces_a_session_that_has_run_a_while_and_is_retried() {
    let h = start(|_, _| {}).await;
    advance_until(Duration::from_secs(1), || h.readiness.report().ready()).await;
    tokio::time::sleep(crate::publisher::REFUSED_SESSION_MIN_AGE).await;
    h.broker.script([PublishOutcome::Nacked]);
    let refused = h.store.insert_overdue(Duration::from_secs(1), None);
    let written = tokio::time::Instant::now();
    h.feed.emit(ListenEvent::Changed(
        crate::model::ChangeHint::Unrecognised {
            payload: String::new(),
        },
    ));
    advance_until(Duration::from_secs(5), || h.broker.connects() == 2).await;
    assert!(
        written.elapsed() < Duration::from_millis(500),
        "reconnected at once, not after a crash backoff: {:?}",
        written.elapsed()
    );
    advance_until(Duration::from_secs(30), || {
        h.store.row(refused).done == Some(Disposition::Published)
    })
    .await;
    assert_eq!(h.broker.connects(), 2, "one refused batch, one new session");
}

#[tokio::test(start_paused = true)]
async fn a_queue_refusing_every_attempt_keeps_a_new_session_and_the_others_go_out() {
    // A full queue refuses each of the three attempts of one row (the fake
    // store's limit); the other rows come due meanwhile, each in a batch of
    // its own.
    let h = start(|store, broker| {
        store.insert_overdue(Duration::from_secs(1), None);
        broker.script(std::iter::repeat_n(PublishOutcome::Nacked, 3));
    })
    .await;
    let others: Vec<_> = (1..=4)
        .map(|n| h.store.insert(Duration::from_millis(1_500 * n)))
        .collect();
    advance_until(Duration::from_secs(9), || h.store.pending() == 0).await;
    for id in others {
        assert_eq!(h.store.row(id).done, Some(Disposition::Published));
    }
    assert_eq!(h.broker.published().len(), 5 + 3, "three refusals");
    assert_eq!(h.broker.connects(), 1, "the session was kept");
    assert!(h.readiness.report().broker.ready);
}

#[tokio::test(start_paused = true)]
async fn a_lost_listen_connection_is_replaced_and_resyncs() {
    let h = start(|_, _| {}).await;
    advance_until(Duration::from_secs(1), || h.readiness.report().ready()).await;
    h.feed
        .emit(ListenEvent::Lost("terminated by administrator".to_owned()));
    // Written while the listener was away: no notification will ever come.
    let missed = h.store.insert_overdue(Duration::from_secs(1), None);
    advance_until(Duration::from_secs(2), || {
        h.store.row(missed).done.is_some()
    })
    .await;
    assert_eq!(h.feed.connects(), 2);
}

#[tokio::test(start_paused = true)]
async fn a_silently_dead_listen_connection_is_detected_by_its_ping() {
    let h = start(|_, _| {}).await;
    advance_until(Duration::from_secs(1), || h.readiness.report().ready()).await;
    h.feed.fail_pings(Some("no answer within 10s"));
    advance_until(Duration::from_secs(16), || {
        !h.readiness.report().listener.ready
    })
    .await;
    h.feed.fail_pings(None);
    advance_until(Duration::from_secs(3), || {
        h.readiness.report().listener.ready
    })
    .await;
    assert!(h.feed.connects() >= 2);
}

#[tokio::test(start_paused = true)]
async fn an_unrecoverable_error_stops_the_daemon_instead_of_retrying() {
    let h = start(|_, broker| {
        broker.fail_next_connects([crate::ports::PortError::unrecoverable(
            "exchange exists with another type",
        )]);
    })
    .await;
    let mut fatal = h.fatal.clone();
    let reason = fatal
        .wait_for(Option::is_some)
        .await
        .expect("fatal reported")
        .clone();
    assert_eq!(reason.as_deref(), Some("exchange exists with another type"));
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(h.broker.connects(), 1, "not retried");
}

#[tokio::test(start_paused = true)]
async fn shutdown_stops_every_child_after_claimed_batches_settle() {
    let h = start(|store, broker| {
        store.insert_overdue(Duration::from_secs(1), None);
        broker.set_confirm_delay(Duration::from_secs(1));
    })
    .await;
    advance_until(Duration::from_secs(1), || !h.broker.published().is_empty()).await;
    h.supervisor
        .call(
            |reply| SupervisorMessage::Shutdown {
                grace: Duration::from_secs(5),
                reply,
            },
            Some(Duration::from_secs(10)),
        )
        .await
        .expect("shutdown answers");
    assert_eq!(h.store.pending(), 0, "the in-flight batch settled first");
    assert_eq!(h.supervisor.get_children().len(), 0);
    assert_eq!(h.supervisor.get_status(), ActorStatus::Running);
}

#[tokio::test(start_paused = true)]
async fn a_broker_that_cannot_be_reached_is_retried_often_so_delivery_resumes_soon() {
    let h = start(|store, broker| {
        store.insert_overdue(Duration::from_secs(5), None);
        broker.fail_next_connects((0..20).map(|_| PortError::unavailable("connection refused")));
    })
    .await;
    advance_until(Duration::from_secs(30), || h.store.pending() == 0).await;
    assert_eq!(h.broker.connects(), 21);
    let gaps = h.broker.connect_gaps();
    assert!(
        gaps.iter().all(|gap| *gap <= Duration::from_millis(500)),
        "never longer than the reconnect cap: {gaps:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn a_publisher_that_keeps_crashing_backs_off_further() {
    let h = start(|_, broker| {
        broker.fail_next_connects((0..8).map(|_| PortError::transient("handshake failed")));
    })
    .await;
    advance_until(Duration::from_secs(30), || h.broker.connects() == 9).await;
    let longest = h.broker.connect_gaps().into_iter().max().unwrap();
    assert!(
        longest > Duration::from_millis(500),
        "a crash loop backs off beyond the reconnect cap: {longest:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn a_claim_that_never_returns_is_restarted_by_the_watchdog_before_liveness_gives_up() {
    let h = start(|store, _| {
        store.insert_overdue(Duration::from_secs(1), None);
        store.hang_claims(true);
    })
    .await;
    advance_until(Duration::from_secs(1), || h.store.claims() == 1).await;
    assert_eq!(
        h.liveness.stalled_for().map(|d| d < Duration::from_secs(1)),
        Some(true)
    );
    // The watchdog (30 s) stops the stuck scheduler; its successor claims anew.
    advance_until(Duration::from_secs(35), || h.store.claims() == 2).await;
    let stalled = h.liveness.stalled_for().expect("still due");
    assert!(stalled >= Duration::from_secs(30), "{stalled:?}");
    h.store.hang_claims(false);
    advance_until(Duration::from_secs(35), || h.store.pending() == 0).await;
    assert_eq!(h.liveness.stalled_for(), None, "caught up");
    assert_eq!(h.liveness.round_stuck_for(), None);
}

#[tokio::test(start_paused = true)]
async fn a_notification_flood_is_bounded_and_becomes_one_resync() {
    let h = start(|store, _| {
        store.insert(Duration::from_secs(3_600));
    })
    .await;
    advance_until(Duration::from_secs(1), || h.readiness.report().ready()).await;
    advance_until(Duration::from_secs(1), || h.store.next_due_queries() >= 1).await;
    tokio::time::advance(Duration::from_millis(100)).await;
    let rounds = h.store.next_due_queries();
    // Later than the armed deadline: no hint by itself calls for a round.
    let later = h.store.now() + chrono::Duration::hours(2);
    for _ in 0..(crate::listener::CHANGE_FEED_CAPACITY * 10) {
        h.feed
            .emit(ListenEvent::Changed(crate::model::ChangeHint::Changed {
                earliest: later,
            }));
    }
    advance_until(Duration::from_secs(1), || {
        h.store.next_due_queries() > rounds
    })
    .await;
    tokio::time::advance(Duration::from_millis(100)).await;
    assert_eq!(
        h.store.next_due_queries(),
        rounds + 1,
        "the dropped hints became exactly one re-read"
    );
}

#[tokio::test(start_paused = true)]
async fn a_frozen_publisher_is_replaced_and_delivery_resumes() {
    let h = start(|store, broker| {
        store.insert_overdue(Duration::from_secs(1), None);
        // The broker takes the messages and never confirms them.
        broker.set_confirm_delay(Duration::from_secs(3_600));
    })
    .await;
    advance_until(Duration::from_secs(1), || h.broker.published().len() == 1).await;
    // Past the confirm timeout (10 s) the publisher reconnects.
    advance_until(Duration::from_secs(15), || h.broker.connects() == 2).await;
    h.broker.set_confirm_delay(Duration::ZERO);
    advance_until(Duration::from_secs(30), || h.store.pending() == 0).await;
    assert_eq!(h.liveness.stalled_for(), None, "caught up");
}
