//! A throwaway RabbitMQ node of the test's own, for faults the shared broker
//! must not see: stopping, killing and restarting it, and resource alarms.
//!
//! The node is `test-<unique>@localhost` on free AMQP and distribution ports,
//! with its database, logs and Erlang cookie (in its own `HOME`) in a
//! temporary directory, no plugins, and none of the machine's RabbitMQ
//! configuration (`/etc/rabbitmq` would pin the shared node's name and port).
//! It runs as a child process in a process group of its own; dropping the
//! guard kills that group and removes the directory, also when the test panics.
//! It registers with the machine's epmd (Erlang starts one if none runs).
//!
//! The scripts come from `/usr/lib/rabbitmq/bin` (Debian; the `/usr/sbin`
//! wrappers switch to the `rabbitmq` user and its cookie) or else the `PATH`.

use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Stdio};
use std::time::Duration;

use lapin::{Connection, ConnectionProperties};
use notification_scheduler::broker::consumer::{QueueKind, ReminderConsumer};
use uuid::Uuid;

use super::process::free_port;
use super::{Received, TestBroker, bind};

/// Longest time a node may take to start or stop.
const NODE_WAIT: Duration = Duration::from_secs(60);

/// Longest time one connection attempt to a starting node may take.
const CONNECT_WAIT: Duration = Duration::from_secs(5);

/// A durable queue on the node, bound to an exchange for the reminders.
pub struct DurableQueue {
    pub exchange: String,
    pub name: String,
    /// A quorum queue (replicated over a cluster's nodes) or a classic one.
    quorum: bool,
}

impl DurableQueue {
    fn kind(&self) -> QueueKind {
        if self.quorum {
            QueueKind::Quorum(self.name.clone())
        } else {
            QueueKind::Durable(self.name.clone())
        }
    }
}

pub struct PrivateRabbit {
    pub node: String,
    pub port: u16,
    dist_port: u16,
    dir: PathBuf,
    child: Option<Child>,
    /// How many times the node was started, to keep each start's output.
    starts: usize,
}

impl PrivateRabbit {
    /// A new node, started and accepting AMQP connections.
    pub async fn start() -> Self {
        let cookie = Uuid::new_v4().simple().to_string().to_uppercase();
        let mut node = Self::configured(&cookie);
        node.start_again().await;
        node
    }

    /// A cluster of `size` new nodes, started concurrently and joined to the
    /// first with `rabbitmqctl join_cluster` (they share an Erlang cookie).
    pub async fn start_cluster(size: usize) -> Vec<Self> {
        let cookie = Uuid::new_v4().simple().to_string().to_uppercase();
        let mut nodes: Vec<Self> = (0..size).map(|_| Self::configured(&cookie)).collect();
        futures_util::future::join_all(nodes.iter_mut().map(Self::start_again)).await;
        let first = nodes[0].node.clone();
        for node in &nodes[1..] {
            node.ctl(&["stop_app"]).await;
            node.ctl(&["join_cluster", &first]).await;
            node.ctl(&["start_app"]).await;
        }
        for node in &nodes {
            node.ctl(&["await_startup", "--timeout", "60"]).await;
        }
        let status = nodes[0]
            .ctl(&["cluster_status", "--formatter", "json"])
            .await;
        for node in &nodes {
            assert!(
                status.contains(&node.node),
                "node {} is not in the cluster: {status}",
                node.node
            );
        }
        nodes
    }

    /// A node configured (not started) with the given Erlang cookie.
    fn configured(cookie: &str) -> Self {
        let unique = Uuid::new_v4().simple().to_string();
        let dir = std::env::temp_dir().join(format!("ns-rabbit-{unique}"));
        for sub in ["home", "mnesia", "log"] {
            std::fs::create_dir_all(dir.join(sub)).expect("create the node directory");
        }
        let node = Self {
            node: format!("test-{}@localhost", &unique[..12]),
            port: free_port(),
            dist_port: free_port(),
            dir,
            child: None,
            starts: 0,
        };
        let write = |name: &str, text: &str| {
            std::fs::write(node.dir.join(name), text).expect("write the node configuration")
        };
        write("enabled_plugins", "[].\n");
        write("rabbitmq-env.conf", "");
        write(
            "rabbitmq.conf",
            &format!(
                "listeners.tcp.default = 127.0.0.1:{}\n\
                 loopback_users.guest = true\n\
                 vm_memory_high_watermark.relative = 0.4\n\
                 disk_free_limit.absolute = 1MB\n",
                node.port
            ),
        );
        let cookie_file = node.dir.join("home/.erlang.cookie");
        std::fs::write(&cookie_file, cookie).expect("write the Erlang cookie");
        std::fs::set_permissions(
            &cookie_file,
            std::os::unix::fs::PermissionsExt::from_mode(0o400),
        )
        .expect("the cookie is private");
        node
    }

    /// amqp:// URL of the node's default vhost.
    pub fn url(&self) -> String {
        format!("amqp://guest:guest@127.0.0.1:{}/%2f", self.port)
    }

    /// Daemon settings for an exchange on this node (nothing to clean up: the
    /// node goes away with the test).
    pub fn broker(&self, exchange: &str) -> TestBroker {
        TestBroker {
            url: self.url(),
            exchange: exchange.to_owned(),
            connection: None,
        }
    }

    /// Daemon settings naming every node of `nodes` (`RABBITMQ_URL` as a
    /// list), for an exchange on each.
    pub fn nodes_broker(nodes: &[&PrivateRabbit], exchange: &str) -> TestBroker {
        let urls: Vec<String> = nodes.iter().map(|node| node.url()).collect();
        TestBroker {
            url: urls.join(","),
            exchange: exchange.to_owned(),
            connection: None,
        }
    }

    /// Whether a connection named like `name` is open on this node.
    pub async fn has_connection(&self, name: &str) -> bool {
        self.ctl(&["list_connections", "--quiet", "client_properties"])
            .await
            .contains(name)
    }

    /// Starts the node (again, on the same data) and waits until an AMQP
    /// connection succeeds.
    pub async fn start_again(&mut self) {
        assert!(self.child.is_none(), "the node is already running");
        self.starts += 1;
        let output = std::fs::File::create(self.dir.join(format!("start-{}.out", self.starts)))
            .expect("create the node's output file");
        let child = self
            .command("rabbitmq-server")
            .stdin(Stdio::null())
            .stdout(output.try_clone().expect("duplicate the output file"))
            .stderr(output)
            .process_group(0)
            .spawn()
            .expect("run rabbitmq-server");
        self.child = Some(child);
        let deadline = tokio::time::Instant::now() + NODE_WAIT;
        loop {
            // A node that accepts TCP while it boots may not answer the AMQP
            // handshake for a while: each attempt is bounded.
            let url = self.url();
            let attempt = Connection::connect(&url, ConnectionProperties::default());
            if let Ok(Ok(connection)) = tokio::time::timeout(CONNECT_WAIT, attempt).await {
                let _ = connection.close(200, "ready".into()).await;
                return;
            }
            if let Some(status) = self.child.as_mut().and_then(|child| child.try_wait().ok()?) {
                self.child = None;
                panic!(
                    "rabbitmq-server exited with {status} while starting:\n{}",
                    self.output()
                );
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "node {} did not accept connections within {NODE_WAIT:?}:\n{}",
                self.node,
                self.output()
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Stops the node cleanly (`rabbitmqctl stop`) and waits until it exited.
    pub async fn stop(&mut self) {
        self.ctl(&["stop"]).await;
        let mut child = self.child.take().expect("the node is running");
        let deadline = tokio::time::Instant::now() + NODE_WAIT;
        while child.try_wait().expect("wait for the node").is_none() {
            assert!(
                tokio::time::Instant::now() < deadline,
                "node {} did not exit after rabbitmqctl stop",
                self.node
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Kills the node and everything it started (SIGKILL to its process
    /// group): a crash, not a shutdown.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = std::process::Command::new("kill")
                .args(["-KILL", "--", &format!("-{}", child.id())])
                .status();
            let _ = child.wait();
        }
    }

    /// Runs `rabbitmqctl -n NODE ARGS`, failing the test if it fails.
    pub async fn ctl(&self, args: &[&str]) -> String {
        let mut command = tokio::process::Command::from(self.command("rabbitmqctl"));
        command
            .args(["-n", &self.node])
            .args(args)
            .stdin(Stdio::null())
            .kill_on_drop(true);
        let output = tokio::time::timeout(NODE_WAIT, command.output())
            .await
            .unwrap_or_else(|_| {
                panic!(
                    "rabbitmqctl {args:?} did not finish within {NODE_WAIT:?}:\n{}",
                    self.output()
                )
            })
            .expect("run rabbitmqctl");
        let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
        assert!(
            output.status.success(),
            "rabbitmqctl {args:?} failed ({}):\n{stdout}{}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
        );
        stdout
    }

    /// Declares `exchange` (a durable topic, as the daemon does) and a durable
    /// queue bound to it for the reminders' routing key, so that published
    /// messages wait there across restarts of the node. Call it before any
    /// daemon publishes: the consumer that declares them takes what arrives
    /// until it is dropped here.
    pub async fn durable_queue(&self, exchange: &str) -> DurableQueue {
        self.declare(exchange, false).await
    }

    /// Like [`Self::durable_queue`], a quorum queue: on a cluster, declared
    /// after the nodes joined, it has a replica on each of them.
    pub async fn quorum_queue(&self, exchange: &str) -> DurableQueue {
        self.declare(exchange, true).await
    }

    async fn declare(&self, exchange: &str, quorum: bool) -> DurableQueue {
        let queue = DurableQueue {
            exchange: exchange.to_owned(),
            name: format!("reminders.{}", Uuid::new_v4().simple()),
            quorum,
        };
        drop(self.bind(&queue).await);
        queue
    }

    /// Whether the node's process is running (not killed or stopped).
    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }

    /// Takes every message waiting in `queue`, until none arrives for `quiet`.
    pub async fn drain_queue(&self, queue: &DurableQueue, quiet: Duration) -> Vec<Received> {
        let mut consumer = self.bind(queue).await;
        let mut received = Vec::new();
        while let Ok(Some(message)) = tokio::time::timeout(quiet, consumer.next()).await {
            received.push(message.expect("delivery").into());
        }
        received
    }

    async fn bind(&self, queue: &DurableQueue) -> ReminderConsumer {
        bind(&self.url(), &queue.exchange, queue.kind()).await
    }

    /// What the node printed while starting, and the tail of its log.
    pub fn output(&self) -> String {
        let read = |path: PathBuf| std::fs::read_to_string(path).unwrap_or_default();
        let starts: String = (1..=self.starts)
            .map(|start| read(self.dir.join(format!("start-{start}.out"))))
            .collect();
        let log = read(self.dir.join("log").join(format!("{}.log", self.node)));
        let tail: Vec<&str> = log.lines().rev().take(40).collect();
        let tail: Vec<&str> = tail.into_iter().rev().collect();
        format!("{starts}\n--- log tail ---\n{}", tail.join("\n"))
    }

    fn command(&self, script: &str) -> std::process::Command {
        let debian = PathBuf::from("/usr/lib/rabbitmq/bin").join(script);
        let program = if debian.exists() {
            debian
        } else {
            PathBuf::from(script)
        };
        let mut command = std::process::Command::new(program);
        command
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("LANG", "C.UTF-8")
            .env("HOME", self.dir.join("home"))
            .env("RABBITMQ_NODENAME", &self.node)
            .env("RABBITMQ_NODE_IP_ADDRESS", "127.0.0.1")
            .env("RABBITMQ_NODE_PORT", self.port.to_string())
            .env("RABBITMQ_DIST_PORT", self.dist_port.to_string())
            .env("RABBITMQ_MNESIA_BASE", self.dir.join("mnesia"))
            .env("RABBITMQ_LOG_BASE", self.dir.join("log"))
            .env(
                "RABBITMQ_ENABLED_PLUGINS_FILE",
                self.dir.join("enabled_plugins"),
            )
            .env("RABBITMQ_CONFIG_FILE", self.dir.join("rabbitmq.conf"))
            .env(
                "RABBITMQ_ADVANCED_CONFIG_FILE",
                self.dir.join("advanced.config"),
            )
            .env("RABBITMQ_CONF_ENV_FILE", self.dir.join("rabbitmq-env.conf"))
            .env(
                "RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS",
                "-kernel inet_dist_use_interface {127,0,0,1}",
            )
            .current_dir(&self.dir);
        command
    }
}

impl Drop for PrivateRabbit {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
