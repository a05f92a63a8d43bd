//! Real restarts of the servers, on throwaway instances of the test's own (a
//! private PostgreSQL cluster, a private RabbitMQ node), and a broker resource
//! alarm: faults the shared servers of the other tests must not see.
//!
//! These tests start servers and drain backlogs, so nextest runs them one at a
//! time (test group `private-servers` in .config/nextest.toml).

mod common;

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use common::private_pg::PrivatePg;
use common::private_rabbit::PrivateRabbit;
use common::process::{LogTail, Running, free_port, signal, spawn_daemon, wait_exit};
use common::schedule::{
    Reminder, Tally, account, backlog, count, pending, receive_all, reminders_where, schedule,
    sent_at_least, start_daemon_at, wait_for, wait_for_count, wait_until,
};
use common::{Received, TestBroker, TestConsumer, TestDb};
use uuid::Uuid;

const BATCH: usize = 100;
const IN_FLIGHT: usize = 4;
/// The documented duplicate window of these daemons: the batches in flight.
const WINDOW: usize = BATCH * IN_FLIGHT;

/// Quick failure detection and reconnection, batches of [`BATCH`], at most
/// [`IN_FLIGHT`] in flight.
const SETTINGS: [&str; 16] = [
    "--batch-size",
    "100",
    "--max-in-flight-batches",
    "4",
    "--listener-ping-interval",
    "500ms",
    "--query-timeout",
    "2s",
    "--database-connect-timeout",
    "1s",
    "--rabbitmq-heartbeat",
    "1s",
    "--rabbitmq-connect-timeout",
    "2s",
    "--restart-backoff-max",
    "500ms",
];

fn report(tally: Tally, faults: usize, what: &str) {
    assert!(
        tally.duplicates <= faults * WINDOW,
        "{what}: {} duplicates, more than {faults} × the window of {WINDOW}",
        tally.duplicates
    );
    eprintln!(
        "{what}: {} reminders, {} duplicates",
        tally.distinct, tally.duplicates
    );
}

fn by_id(reminders: &[Reminder]) -> HashMap<String, Reminder> {
    reminders
        .iter()
        .map(|reminder| (reminder.id.to_string(), reminder.clone()))
        .collect()
}

/// Waits (up to `limit`) until every row of the database is recorded as sent.
async fn all_sent(client: &tokio_postgres::Client, limit: Duration) {
    wait_for("every row to be sent", limit, || async {
        count(client, "NOT sent").await == 0
    })
    .await;
}

/// Every row not in `earlier` (rows written while the daemon runs, which may
/// be sent before they could be read as pending); adds them to `earlier`.
async fn written_since(
    client: &tokio_postgres::Client,
    earlier: &mut HashSet<String>,
) -> HashMap<String, Reminder> {
    let mut rows = reminders_where(client, "true").await;
    rows.retain(|id, _| !earlier.contains(id));
    earlier.extend(rows.keys().cloned());
    rows
}

/// Takes everything until 500 ms pass quietly.
async fn rest(consumer: &mut TestConsumer, received: &mut Vec<Received>) {
    while let Some(message) = consumer.next_within(Duration::from_millis(500)).await {
        received.push(message);
    }
}

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
    let broker = TestBroker::new().await;
    let mut consumer = broker.consumer().await;
    let daemon = start_daemon_at(&pg.url(), &broker, &SETTINGS).await;
    let client = pg.client().await;

    // Fast shutdown with reminders pending; two fall due while it is down.
    let before = schedule(&client, 3_600_000, &[-1, 1_500, 2_500, 8_000]).await;
    let mut received = consumer.take(1).await;
    // Recorded as sent before the stop, or it would be repeated.
    wait_for_count(&client, "NOT sent", 3).await;
    pg.stop("fast").await;
    wait_until("the daemon to notice the database is gone", || {
        !daemon.readiness.report().listener.ready
    })
    .await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    pg.start_again().await;
    let client = reconnect(&pg).await;
    let after = schedule(&client, 3_600_000, &[-1, 500, 1_000]).await;
    received.extend(consumer.take(6).await);
    all_sent(&client, Duration::from_secs(20)).await;
    rest(&mut consumer, &mut received).await;
    let mut expected = by_id(&before);
    expected.extend(by_id(&after));
    assert_eq!(
        account(&received, &expected).duplicates,
        0,
        "nothing was in flight"
    );

    // Immediate shutdown (a crash) during a drain.
    let mut earlier: HashSet<String> = expected.into_keys().collect();
    backlog(&client, 5_000).await;
    let expected = written_since(&client, &mut earlier).await;
    sent_at_least(&client, 7 + 500).await;
    pg.stop("immediate").await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    pg.start_again().await;
    let client = reconnect(&pg).await;
    assert!(
        count(&client, "NOT sent").await > 0,
        "the drain was over before the crash"
    );
    let mut received = Vec::new();
    receive_all(
        &mut consumer,
        &expected,
        &mut received,
        Duration::from_secs(40),
    )
    .await;
    all_sent(&client, Duration::from_secs(20)).await;
    rest(&mut consumer, &mut received).await;
    report(
        account(&received, &expected),
        1,
        "PostgreSQL crash mid-drain",
    );
    daemon.shutdown().await;
    drop(client);
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
    let mut rabbit = PrivateRabbit::start().await;
    let exchange = format!("test.{}", Uuid::new_v4().simple());
    let queue = rabbit.durable_queue(&exchange).await;
    let db = TestDb::migrated().await;
    let client = db.client().await;
    let settings = [
        &SETTINGS[..],
        &["--rabbitmq-confirm-timeout", "3s", "--claim-timeout", "6s"][..],
    ]
    .concat();
    let port = free_port();
    let mut daemon = Running(spawn_daemon(
        &db,
        &rabbit.broker(&exchange),
        port,
        &settings,
    ));
    let log = LogTail::follow(&mut daemon.0);
    wait_for(
        "the daemon to be ready",
        Duration::from_secs(20),
        || async { broker_ready(port).await == Some(true) },
    )
    .await;

    let mut earlier: HashSet<String> = HashSet::new();
    for (round, &rows) in backlogs.iter().enumerate() {
        let sent_before = count(&client, "sent").await;
        backlog(&client, rows).await;
        let expected = written_since(&client, &mut earlier).await;
        sent_at_least(&client, sent_before + 500).await;
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
        rabbit.start_again().await;
        all_sent(&client, Duration::from_secs(40)).await;
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
        report(account(&received, &expected), 1, what);
    }
    signal(&daemon.0, "TERM");
    assert_eq!(
        wait_exit(&mut daemon.0).await.code(),
        Some(0),
        "{}",
        log.text()
    );
}

/// Whether /readyz reports the broker ready; `None` if it does not answer.
async fn broker_ready(port: u16) -> Option<bool> {
    let response = reqwest::get(format!("http://127.0.0.1:{port}/readyz"))
        .await
        .ok()?;
    let body: serde_json::Value = response.json().await.ok()?;
    body["broker"]["ready"].as_bool()
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
            let settings = [
                &SETTINGS[..],
                &[
                    "--rabbitmq-confirm-timeout",
                    "2s",
                    "--claim-timeout",
                    claim_timeout,
                ][..],
            ]
            .concat();
            let mut daemon = Running(spawn_daemon(
                &db,
                &rabbit.broker(&exchange),
                free_port(),
                &settings,
            ));
            let log = LogTail::follow(&mut daemon.0);
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
    tokio::time::sleep(Duration::from_millis(500)).await;
    for drain in &drains {
        let sent = count(&drain.client, "sent").await;
        assert!(sent < ROWS, "the drain was over before the alarm");
        sent_when_blocked.push(sent);
    }
    // Blocked for this plus rabbitmqctl's time (~3 s): longer than the short
    // claim timeout, far shorter than the long one.
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
            report(tally, 1, "blocked past the claim timeout");
        }
        signal(&drain.daemon.0, "TERM");
        assert_eq!(
            wait_exit(&mut drain.daemon.0).await.code(),
            Some(0),
            "{}",
            drain.log.text()
        );
    }
}

/// One daemon draining its own backlog to its own queue through an alarm.
struct AlarmedDrain {
    claim_timeout: &'static str,
    queue: String,
    client: tokio_postgres::Client,
    expected: HashMap<String, Reminder>,
    daemon: Running,
    log: LogTail,
    _db: TestDb,
}
