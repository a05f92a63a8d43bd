//! The clustered servers production runs, started by the tests on this
//! machine: a three-node RabbitMQ cluster with a quorum queue, and a
//! PostgreSQL primary with a standby. Faults here kill a node under the
//! daemon or its replicas; the shared servers never see them.
//!
//! These tests start servers and drain backlogs, so nextest runs them one at a
//! time with the other such tests (test group `private-servers` in
//! .config/nextest.toml).

pub mod common;

use std::collections::HashSet;
use std::time::{Duration, Instant};

use common::TestDb;
use common::private_pg::PrivatePg;
use common::private_rabbit::{DurableQueue, PrivateRabbit};
use common::process::{free_port, spawn_followed, terminate};
use common::rig::{all_sent, assert_within_window, broker_ready, drain_settings, overriding};
use common::schedule::{account, backlog, count, schedule, sent_at_least, wait_for, written_since};
use uuid::Uuid;

/// The daemon's AMQP connection name, as the nodes list it.
const DAEMON_CONNECTION: &str = "notification-scheduler daemon";

/// The index of the running node the daemon is connected to, waiting (up to
/// 20 s) while it reconnects.
async fn connected_node(nodes: &[PrivateRabbit]) -> usize {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        for (at, node) in nodes.iter().enumerate() {
            if node.is_running() && node.has_connection(DAEMON_CONNECTION).await {
                return at;
            }
        }
        assert!(
            Instant::now() < deadline,
            "the daemon is connected to no running node"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Waits (up to 60 s) until every node holds an online replica of `queue`:
/// a node started again rejoins the cluster and its replica catches up.
async fn replicated_on_all(nodes: &[PrivateRabbit], queue: &DurableQueue) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let online = nodes[0]
            .ctl(&[
                "list_queues",
                "--quiet",
                "--no-table-headers",
                "name",
                "online",
            ])
            .await;
        let line = online
            .lines()
            .find(|line| line.starts_with(&queue.name))
            .unwrap_or_default()
            .to_owned();
        if nodes.iter().all(|node| line.contains(&node.node)) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "the quorum queue is not back on every node: {line}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// When `node` reports a leader for `queue` other than `old` (at most 60 s).
async fn new_leader(node: &PrivateRabbit, queue: &DurableQueue, old: &str) -> Instant {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let leaders = node
            .ctl(&[
                "list_queues",
                "--quiet",
                "--no-table-headers",
                "name",
                "leader",
            ])
            .await;
        let line = leaders
            .lines()
            .find(|line| line.starts_with(&queue.name))
            .unwrap_or_default();
        if line.contains('@') && !line.contains(old) {
            return Instant::now();
        }
        assert!(
            Instant::now() < deadline,
            "the quorum queue has no new leader: {line}"
        );
    }
}

/// A three-node cluster and a quorum queue bound to the exchange; the daemon
/// is given every node. Killing (SIGKILL) the node the daemon is connected to,
/// which holds the queue's leader, during a 50,000-reminder drain loses nothing: the daemon moves to another
/// node, and repeats at most the batches in flight, with the same message
/// id. Then, with that node back and the daemon idle, the node it is now
/// connected to is killed with reminders falling due during the failover:
/// they are delivered, none early.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_node_killed_under_the_daemon_loses_nothing() {
    let mut nodes = PrivateRabbit::start_cluster(3).await;
    let exchange = format!("test.{}", Uuid::new_v4().simple());
    let db = TestDb::migrated().await;
    let client = db.client().await;
    let broker = PrivateRabbit::nodes_broker(&nodes.iter().collect::<Vec<_>>(), &exchange);
    let settings = overriding(
        &drain_settings(),
        &[
            ("--rabbitmq-confirm-timeout", "3s"),
            ("--claim-timeout", "6s"),
        ],
    );
    let port = free_port();
    let (mut daemon, log) = spawn_followed(&db.url, &broker, port, &settings);
    wait_for(
        "the daemon to be ready",
        Duration::from_secs(20),
        || async { broker_ready(port).await == Some(true) },
    )
    .await;
    // Declared on the daemon's node, the queue's leader is there: the kill
    // below takes the daemon's connection and the queue's leader at once.
    let victim = connected_node(&nodes).await;
    let queue = nodes[victim].quorum_queue(&exchange).await;
    replicated_on_all(&nodes, &queue).await;

    let mut earlier = HashSet::new();
    backlog(&client, 50_000).await;
    let expected = written_since(&client, &mut earlier).await;
    sent_at_least(&client, 500).await;
    assert_eq!(connected_node(&nodes).await, victim);
    nodes[victim].kill();
    let killed = Instant::now();
    let sent_then = count(&client, "sent").await;
    assert!(sent_then < 50_000, "the drain was over before the kill");
    let survivors: Vec<&PrivateRabbit> = nodes.iter().filter(|n| n.is_running()).collect();
    let elected = new_leader(survivors[0], &queue, &nodes[victim].node).await;
    let elected = elected.duration_since(killed);
    let deadline = Instant::now() + Duration::from_secs(120);
    while count(&client, "sent").await <= sent_then + 400 {
        assert!(
            Instant::now() < deadline,
            "delivery did not resume within 120 s; the daemon's log:\n{}",
            log.text()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let resumed = killed.elapsed();
    all_sent(&client, Duration::from_secs(120)).await;
    eprintln!(
        "drain: node killed with {} of 50000 unsent; the queue had a new leader {elected:?} \
         after the kill, delivery resumed {resumed:?} after it, all sent {:?} after it",
        50_000 - sent_then,
        killed.elapsed()
    );
    let survivor = connected_node(&nodes).await;
    assert_ne!(survivor, victim);
    let received = nodes[survivor]
        .drain_queue(&queue, Duration::from_secs(1))
        .await;
    assert_within_window(
        account(&received, &expected),
        1,
        "cluster node killed mid-drain",
    );

    nodes[victim].start_again().await;
    replicated_on_all(&nodes, &queue).await;
    let victim = connected_node(&nodes).await;
    nodes[victim].kill();
    let killed = Instant::now();
    schedule(
        &client,
        3_600_000,
        &[200, 400, 600, 800, 1_000, 1_500, 2_000],
    )
    .await;
    let expected = written_since(&client, &mut earlier).await;
    all_sent(&client, Duration::from_secs(30)).await;
    eprintln!(
        "idle: reminders due 200-2000 ms after the kill all sent {:?} after it",
        killed.elapsed()
    );
    let survivor = connected_node(&nodes).await;
    let received = nodes[survivor]
        .drain_queue(&queue, Duration::from_secs(1))
        .await;
    let tally = account(&received, &expected);
    assert_eq!(tally.duplicates, 0, "an idle failover repeats nothing");
    let ids: Vec<Uuid> = expected.values().map(|reminder| reminder.id).collect();
    let latest: f64 = client
        .query_one(
            "SELECT extract(epoch FROM max(sent_at - notification_time))::float8 \
               FROM notification_schedule WHERE id = ANY($1)",
            &[&ids],
        )
        .await
        .expect("read the lateness")
        .get(0);
    eprintln!(
        "idle: the latest was recorded sent {:.0} ms after its time",
        latest * 1000.0
    );
    terminate(&mut daemon, &log).await;
}

/// What /readyz on `port` says of the LISTEN connection (which reconnects
/// whatever the broker does), if it answers.
async fn listener_detail(port: u16) -> Option<String> {
    let response = reqwest::get(format!("http://127.0.0.1:{port}/readyz"))
        .await
        .ok()?;
    let body: serde_json::Value = response.json().await.ok()?;
    body["listener"]["detail"].as_str().map(str::to_owned)
}

/// Three daemon replicas given every node of a three-node RabbitMQ cluster
/// (a quorum queue bound) and a PostgreSQL primary with a synchronous
/// standby. During a 30,000-reminder drain the primary crashes and, at the
/// same moment, a RabbitMQ node the replicas use is killed; the standby is
/// promoted once every replica has found it read-only. Every reminder is
/// delivered, none early, and the repeats stay within the window of each
/// replica for each of the two faults.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_replicas_live_through_a_broker_node_kill_and_a_database_failover_at_once() {
    const REPLICAS: usize = 3;
    let (mut nodes, primary) = tokio::join!(PrivateRabbit::start_cluster(3), PrivatePg::start());
    let standby = PrivatePg::standby_of(&primary).await;
    primary.require_synchronous_standby().await;
    let exchange = format!("test.{}", Uuid::new_v4().simple());
    let queue = nodes[0].quorum_queue(&exchange).await;
    replicated_on_all(&nodes, &queue).await;
    let both = format!(
        "postgresql://postgres@127.0.0.1:{},127.0.0.1:{}/postgres",
        primary.port, standby.port
    );
    let broker = PrivateRabbit::nodes_broker(&nodes.iter().collect::<Vec<_>>(), &exchange);
    let settings = overriding(
        &drain_settings(),
        &[
            ("--rabbitmq-confirm-timeout", "3s"),
            ("--claim-timeout", "6s"),
        ],
    );
    let ports: Vec<u16> = (0..REPLICAS).map(|_| free_port()).collect();
    let mut replicas: Vec<_> = ports
        .iter()
        .map(|&port| spawn_followed(&both, &broker, port, &settings))
        .collect();
    for &port in &ports {
        wait_for(
            "every replica to be ready",
            Duration::from_secs(20),
            || async { broker_ready(port).await == Some(true) },
        )
        .await;
    }

    let victim = connected_node(&nodes).await;
    let client = primary.client().await;
    backlog(&client, 30_000).await;
    let expected = written_since(&client, &mut HashSet::new()).await;
    sent_at_least(&client, 2_000).await;
    nodes[victim].kill();
    primary.stop("immediate").await;
    let crashed = Instant::now();
    for &port in &ports {
        wait_for(
            "every replica to find the standby read-only",
            Duration::from_secs(20),
            || async {
                listener_detail(port)
                    .await
                    .is_some_and(|detail| detail.contains("read-only"))
            },
        )
        .await;
    }
    let client = standby.client().await;
    let unsent = count(&client, "NOT sent").await;
    assert!(unsent > 0, "the drain was over before the faults");
    standby.promote().await;
    let promoted = Instant::now();
    all_sent(&client, Duration::from_secs(120)).await;
    eprintln!(
        "{REPLICAS} replicas: {unsent} of 30000 unsent at the faults; all sent {:?} after the \
         promotion ({:?} after the faults)",
        promoted.elapsed(),
        crashed.elapsed()
    );
    let survivor = connected_node(&nodes).await;
    let received = nodes[survivor]
        .drain_queue(&queue, Duration::from_secs(1))
        .await;
    assert_within_window(
        account(&received, &expected),
        2 * REPLICAS,
        "three replicas, a broker node killed and the primary crashed at once",
    );
    for (daemon, log) in &mut replicas {
        terminate(daemon, log).await;
    }
}
