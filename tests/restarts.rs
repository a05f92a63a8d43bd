//! Real restarts of the servers, on throwaway instances of the test's own (a
//! private PostgreSQL cluster, a primary with a standby to promote, a private
//! RabbitMQ node), and a broker resource alarm: faults the shared servers of
//! the other tests must not see.
//!
//! These tests start servers and drain backlogs, so nextest runs them one at a
//! time (test group `private-servers` in .config/nextest.toml).

pub mod common;

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use common::TestDb;
use common::private_pg::PrivatePg;
use common::private_rabbit::{DurableQueue, PrivateRabbit};
use common::process::{LogTail, Running, free_port, spawn_followed, terminate};
use common::rig::{
    QUICK_DETECTION, Rig, all_sent, assert_within_window, broker_ready, by_id, drain_settings,
    overriding,
};
use common::schedule::{
    Reminder, account, backlog, count, daemon_args_at, pending, receive_all, reminders_where,
    schedule, sent_at_least, wait_for, wait_for_count, wait_until, written_since,
};
use notification_scheduler::daemon::RunningDaemon;
use uuid::Uuid;

/// A client of the private cluster, retried while it is (re)starting.
async fn reconnect(pg: &PrivatePg) -> tokio_postgres::Client {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Ok((client, connection)) =
            tokio_postgres::connect(&pg.url(), tokio_postgres::NoTls).await
        {
            tokio::spawn(connection);
            return client;
        }
        assert!(Instant::now() < deadline, "the private cluster is down");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// PostgreSQL stopped (fast: sessions terminated) with reminders pending and
/// some falling due while it is down, and started again, then more written;
/// then stopped immediately (a crash) during a backlog drain and started
/// again. Every reminder arrives; a crash repeats at most the batches in flight.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_stopped_and_restarted_while_reminders_are_pending_loses_nothing() {
    let pg = PrivatePg::start().await;
    let mut rig = Rig::on_database(pg.url(), pg.client().await).await;
    let daemon = rig
        .start_daemon(&overriding(
            &drain_settings(),
            // The default crash backoff, as for the broker outages below.
            &[("--restart-backoff-max", "10s")],
        ))
        .await;

    // Fast shutdown with reminders pending; two fall due while it is down.
    let before = schedule(&rig.client, 3_600_000, &[-1, 1_500, 2_500, 8_000]).await;
    let mut received = rig.consumer.take(1).await;
    // Recorded as sent before the stop, or it would be repeated.
    wait_for_count(&rig.client, "NOT sent", 3).await;
    pg.stop("fast").await;
    wait_until("the daemon to notice the database is gone", || {
        !daemon.readiness.report().listener.ready
    })
    .await;
    // Not synchronisation: the outage lasts until the reminders due at 1.5 s
    // and 2.5 s have fallen due while the database is down.
    tokio::time::sleep(Duration::from_secs(3)).await;
    pg.start_again().await;
    let back = Instant::now();
    // The two that fell due during the outage go out first.
    received.extend(rig.consumer.take(1).await);
    eprintln!(
        "delivery resumed {:?} after PostgreSQL accepted connections again",
        back.elapsed()
    );
    rig.client = reconnect(&pg).await;
    let after = schedule(&rig.client, 3_600_000, &[-1, 500, 1_000]).await;
    received.extend(rig.consumer.take(5).await);
    rig.finish(&mut received).await;
    let mut expected = by_id(&before);
    expected.extend(by_id(&after));
    assert_eq!(
        account(&received, &expected).duplicates,
        0,
        "nothing was in flight"
    );

    // Immediate shutdown (a crash) during a drain.
    let mut earlier: HashSet<String> = expected.into_keys().collect();
    backlog(&rig.client, 5_000).await;
    let expected = written_since(&rig.client, &mut earlier).await;
    sent_at_least(&rig.client, 7 + 500).await;
    pg.stop("immediate").await;
    wait_until("the daemon to notice the database crashed", || {
        !daemon.readiness.report().listener.ready
    })
    .await;
    pg.start_again().await;
    rig.client = reconnect(&pg).await;
    assert!(
        count(&rig.client, "NOT sent").await > 0,
        "the drain was over before the crash"
    );
    let received = rig.receive_all(&expected, Duration::from_secs(40)).await;
    assert_within_window(
        account(&received, &expected),
        1,
        "PostgreSQL crash mid-drain",
    );
    daemon.shutdown().await;
    drop(rig);
    drop(pg);
}

/// A private RabbitMQ node stopped cleanly (`rabbitmqctl stop`) during a
/// drain and started again: confirmed messages are persistent in a durable
/// queue, so the queue ends up with every reminder, and at most the batches in
/// flight are repeated.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rabbitmq_stopped_and_restarted_during_a_drain_loses_nothing() {
    // rabbitmqctl takes about 2 s to act: the backlog must outlast that, also
    // when the drain runs alone on the machine (15,000 once did not).
    broker_outages(Outage::Stop, &[40_000]).await;
}

/// The same with `kill -9` of the node (a crash), three times: confirmed
/// messages survive it too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rabbitmq_killed_during_a_drain_loses_nothing() {
    broker_outages(Outage::Kill, &[5_000, 5_000, 5_000]).await;
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Outage {
    Stop,
    Kill,
}

/// One private node, one daemon process; for each backlog size: write the
/// backlog, take the node down mid-drain, start it again, and account for
/// every reminder in the durable queue.
async fn broker_outages(outage: Outage, backlogs: &[i64]) {
    let started = Instant::now();
    // Each step is printed as it starts, so that a test cut off by the
    // runner's limit shows where it was.
    let step = |what: &str| eprintln!("[{:.1?}] {what}", started.elapsed());
    step("starting a private node");
    let mut rabbit = PrivateRabbit::start().await;
    let exchange = format!("test.{}", Uuid::new_v4().simple());
    let queue = rabbit.durable_queue(&exchange).await;
    let db = TestDb::migrated().await;
    let client = db.client().await;
    let settings = overriding(
        &drain_settings(),
        &[
            ("--rabbitmq-confirm-timeout", "3s"),
            ("--claim-timeout", "6s"),
            // The default crash backoff: waiting for the broker to come back
            // must not depend on it (the printed recovery time shows it).
            ("--restart-backoff-max", "10s"),
        ],
    );
    let port = free_port();
    step("starting the daemon");
    let (mut daemon, log) = spawn_followed(&db.url, &rabbit.broker(&exchange), port, &settings);
    wait_for(
        "the daemon to be ready",
        Duration::from_secs(20),
        || async { broker_ready(port).await == Some(true) },
    )
    .await;

    let mut earlier: HashSet<String> = HashSet::new();
    for (round, &rows) in backlogs.iter().enumerate() {
        step(&format!("round {round}: writing {rows} reminders"));
        let sent_before = count(&client, "sent").await;
        backlog(&client, rows).await;
        let expected = written_since(&client, &mut earlier).await;
        sent_at_least(&client, sent_before + 500).await;
        step(&format!("round {round}: taking the node down"));
        match outage {
            Outage::Stop => rabbit.stop().await,
            Outage::Kill => rabbit.kill(),
        }
        let unsent = count(&client, "NOT sent").await;
        assert!(
            unsent > 0,
            "round {round}: the drain was over before the broker went down"
        );
        wait_for(
            "the daemon to notice the broker is gone",
            Duration::from_secs(20),
            || async { broker_ready(port).await == Some(false) },
        )
        .await;
        step(&format!("round {round}: starting the node again"));
        rabbit.start_again().await;
        step(&format!("round {round}: the node accepts connections"));
        let back = Instant::now();
        let sent_then = count(&client, "sent").await;
        wait_for("delivery to resume", Duration::from_secs(20), || async {
            count(&client, "sent").await > sent_then
        })
        .await;
        eprintln!(
            "round {round}: delivery resumed {:?} after RabbitMQ accepted connections again",
            back.elapsed()
        );
        all_sent(&client, Duration::from_secs(40)).await;
        step(&format!(
            "round {round}: every row sent; draining the queue"
        ));
        let received = rabbit.drain_queue(&queue, Duration::from_secs(1)).await;
        let lost: Vec<&String> = {
            let got: HashSet<&str> = received.iter().map(|m| m.message_id.as_str()).collect();
            expected
                .keys()
                .filter(|id| !got.contains(id.as_str()))
                .collect()
        };
        assert!(
            lost.is_empty(),
            "round {round}: {} of {} reminders recorded as published never reached the queue \
             (e.g. {:?}); the daemon reused a connection inside an open claim: {}",
            lost.len(),
            expected.len(),
            lost.first(),
            log.contains("there is already a transaction in progress")
        );
        let what = match outage {
            Outage::Stop => "broker stopped and restarted",
            Outage::Kill => "broker killed and restarted",
        };
        eprintln!(
            "{what} with {unsent} of {rows} rows unsent, {:?} into the test",
            started.elapsed()
        );
        assert_within_window(account(&received, &expected), 1, what);
    }
    terminate(&mut daemon, &log).await;
}

/// The rows recorded as sent once that count has settled: unchanged for
/// 250 ms (read every 25 ms), within 10 s.
async fn settled_sent(client: &tokio_postgres::Client) -> i64 {
    const STEADY: Duration = Duration::from_millis(250);
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut sent = count(client, "sent").await;
    let mut since = Instant::now();
    loop {
        tokio::time::sleep(Duration::from_millis(25)).await;
        let now = count(client, "sent").await;
        if now != sent {
            (sent, since) = (now, Instant::now());
        } else if since.elapsed() >= STEADY {
            return sent;
        }
        assert!(
            Instant::now() < deadline,
            "the sent count never settled (last {sent})"
        );
    }
}

/// A memory alarm on the broker (`set_vm_memory_high_watermark` to almost
/// nothing) during a drain: the broker blocks publishers (connection.blocked),
/// the daemon stops claiming and nothing more is recorded as sent; when the
/// alarm clears, the drain resumes and nothing is lost. Two daemons (each with
/// its own database and queue) live through the same alarm: one whose claim
/// timeout outlasts it sends no reminder twice; one whose claim timeout (3 s)
/// runs out while blocked has its claims ended by PostgreSQL, and the batches
/// in flight are repeated, within the documented window.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_memory_alarm_pauses_delivery_until_it_clears_and_nothing_is_lost() {
    // The backlog outlasts the ~2.5 s rabbitmqctl takes to raise the alarm
    // (in trials the alarm caught both drains at 5,000 to 6,000 rows).
    const ROWS: i64 = 15_000;
    let started = Instant::now();
    let rabbit = PrivateRabbit::start().await;
    // Both backlogs first, then both daemons at once, so that the alarm
    // catches both drains halfway.
    let mut prepared = Vec::new();
    for claim_timeout in ["30s", "3s"] {
        let exchange = format!("test.{}", Uuid::new_v4().simple());
        let queue = rabbit.durable_queue(&exchange).await;
        let db = TestDb::migrated().await;
        let client = db.client().await;
        backlog(&client, ROWS).await;
        let expected = pending(&client).await;
        prepared.push((claim_timeout, exchange, queue, db, client, expected));
    }
    let drains: Vec<AlarmedDrain> = prepared
        .into_iter()
        .map(|(claim_timeout, exchange, queue, db, client, expected)| {
            let settings = overriding(
                &drain_settings(),
                &[
                    ("--rabbitmq-confirm-timeout", "2s"),
                    ("--claim-timeout", claim_timeout),
                ],
            );
            let (daemon, log) =
                spawn_followed(&db.url, &rabbit.broker(&exchange), free_port(), &settings);
            AlarmedDrain {
                claim_timeout,
                queue,
                client,
                expected,
                daemon,
                log,
                _db: db,
            }
        })
        .collect();
    for drain in &drains {
        sent_at_least(&drain.client, 500).await;
    }

    rabbit
        .ctl(&["set_vm_memory_high_watermark", "0.0000001"])
        .await;
    let mut sent_when_blocked = Vec::new();
    for drain in &drains {
        drain
            .log
            .wait_for_line("broker blocked publishing", Duration::from_secs(10))
            .await;
    }
    // Batches confirmed before the alarm settle at once; then nothing moves.
    for drain in &drains {
        let sent = settled_sent(&drain.client).await;
        assert!(sent < ROWS, "the drain was over before the alarm");
        sent_when_blocked.push(sent);
    }
    // Not synchronisation: the alarm lasts this plus rabbitmqctl's time
    // (~3 s), longer than the short claim timeout, far shorter than the long
    // one, and nothing may be recorded as sent meanwhile.
    tokio::time::sleep(Duration::from_secs(3)).await;
    for (drain, sent) in drains.iter().zip(&sent_when_blocked) {
        assert_eq!(
            count(&drain.client, "sent").await,
            *sent,
            "nothing is recorded as sent while the broker blocks publishing"
        );
    }
    rabbit.ctl(&["set_vm_memory_high_watermark", "0.4"]).await;
    for drain in &drains {
        drain
            .log
            .wait_for_line("broker unblocked publishing", Duration::from_secs(10))
            .await;
    }
    eprintln!(
        "alarm at {sent_when_blocked:?} of {ROWS} rows sent, cleared {:?} into the test",
        started.elapsed()
    );

    for mut drain in drains {
        all_sent(&drain.client, Duration::from_secs(45)).await;
        let received = rabbit
            .drain_queue(&drain.queue, Duration::from_secs(1))
            .await;
        let tally = account(&received, &drain.expected);
        if drain.claim_timeout == "30s" {
            assert_eq!(
                tally.duplicates,
                0,
                "blocked for less than the claim timeout, nothing repeats; log:\n{}",
                drain.log.text()
            );
        } else {
            assert_within_window(tally, 1, "blocked past the claim timeout");
        }
        terminate(&mut drain.daemon, &drain.log).await;
    }
}

/// One daemon draining its own backlog to its own queue through an alarm.
struct AlarmedDrain {
    claim_timeout: &'static str,
    queue: DurableQueue,
    client: tokio_postgres::Client,
    expected: HashMap<String, Reminder>,
    daemon: Running,
    log: LogTail,
    _db: TestDb,
}

/// `RABBITMQ_URL` naming two nodes: when the node the daemon is connected to
/// is killed, it connects to the other and delivers what falls due, nothing
/// lost. (The nodes are independent here; each has the exchange and a queue.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn given_two_nodes_the_daemon_moves_to_the_other_when_its_node_is_killed() {
    let (mut first, mut second) = tokio::join!(PrivateRabbit::start(), PrivateRabbit::start());
    let exchange = format!("test.{}", Uuid::new_v4().simple());
    let queues = [
        first.durable_queue(&exchange).await,
        second.durable_queue(&exchange).await,
    ];
    let db = TestDb::migrated().await;
    let client = db.client().await;
    let port = free_port();
    let broker = PrivateRabbit::nodes_broker(&[&first, &second], &exchange);
    let (mut daemon, log) = spawn_followed(&db.url, &broker, port, &QUICK_DETECTION);
    wait_for(
        "the daemon to be ready",
        Duration::from_secs(20),
        || async { broker_ready(port).await == Some(true) },
    )
    .await;
    let on_first = first.has_connection("notification-scheduler daemon").await;
    let (connected, other, other_queue) = if on_first {
        (&mut first, &second, &queues[1])
    } else {
        (&mut second, &first, &queues[0])
    };
    assert!(
        connected
            .has_connection("notification-scheduler daemon")
            .await,
        "the daemon is connected to one of the nodes"
    );
    connected.kill();
    let killed = Instant::now();
    let mut earlier = HashSet::new();
    let due_soon = schedule(&client, 3_600_000, &[200, 400, 600]).await;
    let expected = written_since(&client, &mut earlier).await;
    assert_eq!(expected.len(), due_soon.len());
    all_sent(&client, Duration::from_secs(30)).await;
    eprintln!(
        "reminders due 200-600 ms after the node was killed all sent {:?} after the kill",
        killed.elapsed()
    );
    assert!(other.has_connection("notification-scheduler daemon").await);
    let received = other.drain_queue(other_queue, Duration::from_secs(1)).await;
    let got: HashSet<&str> = received.iter().map(|m| m.message_id.as_str()).collect();
    for id in expected.keys() {
        assert!(
            got.contains(id.as_str()),
            "reminder {id} not on the surviving node"
        );
    }
    terminate(&mut daemon, &log).await;
}

/// A primary with a synchronous streaming standby, and a daemon whose
/// `DATABASE_URL` lists both (no `target_session_attrs`: read-write by
/// default). The primary crashes (immediate stop) mid-drain. Until the standby
/// is promoted, the daemon turns it down as read-only and says so; after the
/// promotion the pool, the claims and the LISTEN connection all move to it:
/// every reminder arrives, none early, at most the batches in flight repeat,
/// and reminders written to the new primary afterwards go out on time (only
/// its LISTEN connection can wake the idle daemon for them). Prints how soon
/// delivery resumed after the promotion (docs/DELIVERY.md, "Failures").
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn given_a_primary_and_a_standby_the_daemon_follows_the_promotion_after_a_crash_mid_drain() {
    let primary = PrivatePg::start().await;
    let standby = PrivatePg::standby_of(&primary).await;
    // Asynchronous replication would lose the commits the standby had not
    // received: reminders written, and sent marks (their batches repeat).
    primary.require_synchronous_standby().await;
    let both = format!(
        "postgresql://postgres@127.0.0.1:{},127.0.0.1:{}/postgres",
        primary.port, standby.port
    );
    let mut rig = Rig::on_database(both, primary.client().await).await;
    let daemon = rig
        .start_daemon(&overriding(
            &drain_settings(),
            // The default crash backoff: the printed recovery is what an
            // operator would see.
            &[("--restart-backoff-max", "10s")],
        ))
        .await;

    backlog(&rig.client, 30_000).await;
    // Every row, sent or not: the drain starts as soon as they are written.
    let expected = reminders_where(&rig.client, "true").await;
    sent_at_least(&rig.client, 2_000).await;
    primary.stop("immediate").await;
    let refused = |detail: &Option<String>| {
        detail
            .as_deref()
            .is_some_and(|detail| detail.contains("the server is read-only"))
    };
    wait_until("the daemon to turn the standby down as read-only", || {
        let report = daemon.readiness.report();
        refused(&report.database.detail) && refused(&report.listener.detail)
    })
    .await;
    let detail = daemon
        .readiness
        .report()
        .database
        .detail
        .unwrap_or_default();
    assert!(
        detail.contains("target_session_attrs=read-write"),
        "{detail}"
    );
    eprintln!("before the promotion: {detail}");
    let standby_client = standby.client().await;
    let unsent = count(&standby_client, "NOT sent").await;
    assert!(unsent > 0, "the drain was over before the crash");

    let promoting = chrono::Utc::now();
    let started = Instant::now();
    standby.promote().await;
    eprintln!(
        "pg_ctl promote returned after {:?}, {unsent} of 30000 rows unsent",
        started.elapsed()
    );
    rig.client = standby_client;
    let mut received = Vec::new();
    receive_all(
        &mut rig.consumer,
        &expected,
        &mut received,
        Duration::from_secs(40),
    )
    .await;
    rig.finish(&mut received).await;
    let resumed = received
        .iter()
        .map(|message| message.received_at)
        .filter(|at| *at >= promoting)
        .min()
        .expect("deliveries after the promotion");
    eprintln!(
        "first delivery {} ms after pg_ctl promote was run",
        (resumed - promoting).num_milliseconds()
    );
    assert_within_window(
        account(&received, &expected),
        1,
        "primary crashed mid-drain, standby promoted",
    );

    // The drain is over and the daemon idle: only a notification on the new
    // primary wakes it before these fall due.
    let after = schedule(&rig.client, 3_600_000, &[300, 600, 900]).await;
    let received = rig.consumer.take(after.len()).await;
    for (message, due) in received.iter().zip(&after) {
        assert_eq!(message.message_id, due.id.to_string());
        let late = message.received_at - due.at;
        assert!(
            late >= chrono::Duration::zero() && late < chrono::Duration::seconds(1),
            "a reminder written to the new primary arrived {late} after its time"
        );
        eprintln!(
            "written to the new primary: {} ms late",
            late.num_milliseconds()
        );
    }
    assert!(daemon.readiness.report().ready());
    daemon.shutdown().await;
    drop(rig);
    drop(standby);
    drop(primary);
}

/// A daemon whose `DATABASE_URL` names a standby alone (nothing asks for a
/// read-write session) connects, but its LISTEN and its claims are refused:
/// it reports that the server is read-only and how to configure the URL, and
/// delivers once the standby is promoted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_daemon_given_only_a_standby_says_it_is_read_only_and_delivers_once_it_is_promoted() {
    let primary = PrivatePg::start().await;
    let standby = PrivatePg::standby_of(&primary).await;
    primary.require_synchronous_standby().await;
    let client = primary.client().await;
    let overdue = schedule(&client, 3_600_000, &[-1]).await;
    let mut rig = Rig::on_database(standby.url(), standby.client().await).await;
    let daemon = RunningDaemon::start(&daemon_args_at(
        &standby.url(),
        &rig.daemon_broker(),
        &QUICK_DETECTION,
    ))
    .await
    .expect("daemon starts");
    let refused = |detail: &Option<String>| {
        detail.as_deref().is_some_and(|detail| {
            detail.contains("the server is read-only")
                && detail.contains("target_session_attrs=read-write")
        })
    };
    wait_until("the daemon to report the standby read-only", || {
        let report = daemon.readiness.report();
        refused(&report.database.detail) && refused(&report.listener.detail)
    })
    .await;
    let report = daemon.readiness.report();
    eprintln!(
        "claims: {}\nLISTEN: {}",
        report.database.detail.unwrap_or_default(),
        report.listener.detail.unwrap_or_default()
    );

    primary.stop("immediate").await;
    standby.promote().await;
    let received = rig.consumer.take(1).await;
    assert_eq!(received[0].message_id, overdue[0].id.to_string());
    daemon.shutdown().await;
    drop(rig);
    drop(client);
    drop(standby);
    drop(primary);
}
