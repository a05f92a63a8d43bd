//! A throwaway PostgreSQL cluster of the test's own, for faults a shared
//! server must not see: stopping it (fast or immediate, a crash) and starting
//! it again on the same port and data directory.
//!
//! `initdb` and `pg_ctl` come from `PG_BIN` or the newest
//! `/usr/lib/postgresql/*/bin`. PostgreSQL refuses to run as root, so when the
//! tests run as root the cluster belongs to the `postgres` user and every
//! command runs through `runuser -u postgres`. The cluster trusts local TCP
//! connections, keeps its socket in its own directory and runs with
//! `fsync=off` (safe against a crash of the server, which is all these tests
//! cause; commits stay synchronous, so nothing committed is lost).
//!
//! A cluster can also be a streaming standby of another
//! ([`PrivatePg::standby_of`]), made synchronous and promoted, for failover.
//!
//! Dropping the guard stops the server immediately (killing the postmaster if
//! `pg_ctl` cannot) and removes the directory, also when the test panics.

use std::path::{Path, PathBuf};
use std::process::Stdio;

use tokio::process::Command;
use tokio_postgres::NoTls;
use uuid::Uuid;

use super::process::free_port;

pub struct PrivatePg {
    pub port: u16,
    /// The temporary directory: data, socket and server log.
    dir: PathBuf,
    bin: PathBuf,
    /// `Some("postgres")` when the tests run as root.
    run_as: Option<String>,
}

impl PrivatePg {
    /// A new cluster, started and migrated.
    pub async fn start() -> Self {
        let cluster = Self::unborn();
        cluster
            .run(
                "initdb",
                &[
                    "-D",
                    &cluster.data().display().to_string(),
                    "-U",
                    "postgres",
                    "-A",
                    "trust",
                    "-E",
                    "UTF8",
                    "--locale=C",
                    "--no-sync",
                    "--no-instructions",
                ],
            )
            .await;
        cluster.start_again().await;
        let mut client = cluster.client().await;
        notification_scheduler::db::migrate::run(&mut client)
            .await
            .expect("migrations apply to the private cluster");
        cluster
    }

    /// A directory and a port for a cluster, nothing in it yet.
    fn unborn() -> Self {
        let run_as = (current_uid() == 0).then(|| "postgres".to_owned());
        let dir = std::env::temp_dir().join(format!("ns-pg-{}", Uuid::new_v4().simple()));
        std::fs::create_dir(&dir).expect("create the cluster directory");
        let cluster = Self {
            port: free_port(),
            dir,
            bin: postgres_bin(),
            run_as,
        };
        if let Some(user) = &cluster.run_as {
            let (uid, gid) = user_ids(user);
            std::os::unix::fs::chown(&cluster.dir, Some(uid), Some(gid))
                .expect("give the cluster directory to the postgres user");
        }
        cluster
    }

    /// A hot standby of `primary`, streaming its WAL, started. Its data
    /// (schema included) is a base backup of the primary's.
    pub async fn standby_of(primary: &PrivatePg) -> Self {
        let standby = Self::unborn();
        // -R writes standby.signal and the primary's address; initdb's
        // pg_hba.conf trusts local replication connections.
        standby
            .run(
                "pg_basebackup",
                &[
                    "-h",
                    "127.0.0.1",
                    "-p",
                    &primary.port.to_string(),
                    "-U",
                    "postgres",
                    "-D",
                    &standby.data().display().to_string(),
                    "-X",
                    "stream",
                    "-R",
                    "--no-sync",
                ],
            )
            .await;
        standby.start_again().await;
        standby
    }

    /// Makes every commit on this primary wait until its standby has the
    /// commit record on disk (`synchronous_standby_names = '*'`), and waits
    /// until a standby streams synchronously: then no commit the primary
    /// acknowledged is lost when the standby takes over.
    pub async fn require_synchronous_standby(&self) {
        let client = self.client().await;
        // Two statements: ALTER SYSTEM refuses the implicit transaction of a batch.
        for statement in [
            "ALTER SYSTEM SET synchronous_standby_names = '*'",
            "SELECT pg_reload_conf()",
        ] {
            client
                .batch_execute(statement)
                .await
                .expect("make the standby synchronous");
        }
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        loop {
            let synchronous: i64 = client
                .query_one(
                    "SELECT count(*) FROM pg_stat_replication WHERE sync_state = 'sync'",
                    &[],
                )
                .await
                .expect("read pg_stat_replication")
                .get(0);
            if synchronous > 0 {
                return;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "no standby became synchronous; server log:\n{}",
                self.log()
            );
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    }

    /// Promotes this standby to a primary and waits until it accepts writes.
    pub async fn promote(&self) {
        self.run(
            "pg_ctl",
            &[
                "-D",
                &self.data().display().to_string(),
                "-w",
                "-t",
                "60",
                "promote",
            ],
        )
        .await;
    }

    /// postgresql:// URL of the cluster's `postgres` database.
    pub fn url(&self) -> String {
        format!("postgresql://postgres@127.0.0.1:{}/postgres", self.port)
    }

    /// A connection of its own.
    pub async fn client(&self) -> tokio_postgres::Client {
        let (client, connection) = tokio_postgres::connect(&self.url(), NoTls)
            .await
            .expect("connect to the private cluster");
        tokio::spawn(connection);
        client
    }

    /// Starts the server (again) and waits until it accepts connections.
    pub async fn start_again(&self) {
        let options = format!(
            "-p {} -c listen_addresses=127.0.0.1 -k {} -c fsync=off",
            self.port,
            self.dir.display()
        );
        self.run(
            "pg_ctl",
            &[
                "-D",
                &self.data().display().to_string(),
                "-l",
                &self.dir.join("server.log").display().to_string(),
                "-o",
                &options,
                "-w",
                "-t",
                "60",
                "start",
            ],
        )
        .await;
    }

    /// Stops the server with `mode`: `fast` (sessions are terminated, a clean
    /// shutdown) or `immediate` (a crash; recovery runs at the next start).
    pub async fn stop(&self, mode: &str) {
        self.run(
            "pg_ctl",
            &[
                "-D",
                &self.data().display().to_string(),
                "-m",
                mode,
                "-w",
                "-t",
                "60",
                "stop",
            ],
        )
        .await;
    }

    /// The server log so far, for failure messages.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("server.log")).unwrap_or_default()
    }

    fn data(&self) -> PathBuf {
        self.dir.join("data")
    }

    fn command(&self, program: &str, args: &[&str]) -> std::process::Command {
        let program = self.bin.join(program);
        let mut command = match &self.run_as {
            Some(user) => {
                let mut command = std::process::Command::new("runuser");
                command.args(["-u", user, "--"]).arg(program);
                command
            }
            None => std::process::Command::new(program),
        };
        command
            .args(args)
            .current_dir(&self.dir)
            .stdin(Stdio::null());
        command
    }

    async fn run(&self, program: &str, args: &[&str]) {
        let output = Command::from(self.command(program, args))
            .output()
            .await
            .unwrap_or_else(|err| panic!("cannot run {program}: {err}"));
        assert!(
            output.status.success(),
            "{program} {args:?} failed ({}):\n{}{}\nserver log:\n{}",
            output.status,
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr),
            self.log()
        );
    }
}

impl Drop for PrivatePg {
    fn drop(&mut self) {
        let data = self.data();
        if data.join("postmaster.pid").exists() {
            let stopped = self
                .command(
                    "pg_ctl",
                    &[
                        "-D",
                        &data.display().to_string(),
                        "-m",
                        "immediate",
                        "-w",
                        "-t",
                        "20",
                        "stop",
                    ],
                )
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|status| status.success());
            if !stopped {
                kill_postmaster(&data);
            }
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Last resort: SIGKILL the postmaster named in `postmaster.pid` (its
/// backends exit when they notice it is gone).
fn kill_postmaster(data: &Path) {
    let Ok(pid_file) = std::fs::read_to_string(data.join("postmaster.pid")) else {
        return;
    };
    if let Some(pid) = pid_file.lines().next().map(str::trim)
        && pid.parse::<u32>().is_ok()
    {
        let _ = std::process::Command::new("kill")
            .args(["-KILL", pid])
            .status();
    }
}

fn postgres_bin() -> PathBuf {
    if let Ok(bin) = std::env::var("PG_BIN") {
        return PathBuf::from(bin);
    }
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| {
            let version = entry.file_name().to_str()?.parse().ok()?;
            let bin = entry.path().join("bin");
            bin.join("initdb").exists().then_some((version, bin))
        })
        .collect();
    versions.sort();
    versions.pop().map(|(_, bin)| bin).expect(
        "no PostgreSQL server binaries (initdb, pg_ctl) in /usr/lib/postgresql/*/bin; set PG_BIN",
    )
}

fn current_uid() -> u32 {
    let status = std::fs::read_to_string("/proc/self/status").expect("read /proc/self/status");
    status
        .lines()
        .find_map(|line| line.strip_prefix("Uid:"))
        .and_then(|ids| ids.split_whitespace().next())
        .and_then(|uid| uid.parse().ok())
        .expect("a Uid line")
}

fn user_ids(user: &str) -> (u32, u32) {
    let id = |flag: &str| -> u32 {
        let output = std::process::Command::new("id")
            .args([flag, user])
            .output()
            .expect("run id");
        assert!(
            output.status.success(),
            "no user {user:?}: PostgreSQL does not run as root, and the private cluster needs that user"
        );
        String::from_utf8_lossy(&output.stdout)
            .trim()
            .parse()
            .expect("a numeric id")
    };
    (id("-u"), id("-g"))
}
