//! The schema, its migrations and its change trigger, against a real server.

pub mod common;

use common::{TestDb, WAIT};
use futures_util::StreamExt;
use notification_scheduler::db::migrate::{self, MigrateError};
use tokio::sync::mpsc;
use tokio_postgres::{AsyncMessage, NoTls};

#[tokio::test]
async fn migrations_apply_to_an_empty_database_and_rerunning_is_a_no_op() {
    let db = TestDb::empty().await;
    let mut client = db.client().await;
    let first = migrate::run(&mut client).await.expect("first run");
    let every: Vec<_> = migrate::MIGRATIONS.iter().map(|m| m.version).collect();
    assert_eq!(first.applied, every);
    let second = migrate::run(&mut client).await.expect("second run");
    assert!(second.applied.is_empty());
    assert_eq!(second.already_applied, every.len());
    migrate::verify(&client).await.expect("schema is current");
}

#[tokio::test]
async fn concurrent_runs_apply_each_migration_once() {
    let db = TestDb::empty().await;
    let runs = (0..4).map(|_| async {
        let mut client = db.client().await;
        migrate::run(&mut client).await
    });
    let reports = futures_util::future::join_all(runs).await;
    let applied: usize = reports
        .into_iter()
        .map(|report| report.expect("every run succeeds").applied.len())
        .sum();
    assert_eq!(applied, migrate::MIGRATIONS.len());
    let rows: i64 = db
        .client()
        .await
        .query_one(
            "SELECT count(*) FROM notification_scheduler_migrations",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(rows, migrate::MIGRATIONS.len() as i64);
}

/// A migrated database changed by `sql`, and the error with which running
/// the migrations again refuses it.
async fn rerun_after(sql: &str) -> (TestDb, tokio_postgres::Client, MigrateError) {
    let db = TestDb::migrated().await;
    let mut client = db.client().await;
    client.execute(sql, &[]).await.unwrap();
    let err = migrate::run(&mut client).await.expect_err("refused");
    (db, client, err)
}

#[tokio::test]
async fn a_changed_applied_migration_is_refused() {
    let (_db, client, err) = rerun_after(
        "UPDATE notification_scheduler_migrations SET checksum = 'edited' WHERE version = 2",
    )
    .await;
    assert!(
        matches!(err, MigrateError::Changed { version: 2, .. }),
        "{err}"
    );
    assert!(
        err.to_string()
            .contains("0002_notification_schedule was changed"),
        "{err}"
    );
    assert!(migrate::verify(&client).await.is_err());
}

#[tokio::test]
async fn a_migration_from_a_newer_build_is_refused_by_migrate_but_not_at_start() {
    let (_db, client, err) = rerun_after(
        "INSERT INTO notification_scheduler_migrations (version, name, checksum) VALUES (99, '0099_future', 'x')",
    )
    .await;
    assert!(err.to_string().contains("0099_future"), "{err}");
    assert!(err.to_string().contains("newer version"), "{err}");
    // An old replica restarting during a rolling upgrade still starts.
    migrate::verify(&client)
        .await
        .expect("a newer, additive schema is accepted at start");
}

#[tokio::test]
async fn the_daemon_start_check_reports_missing_migrations() {
    let db = TestDb::empty().await;
    let client = db.client().await;
    let err = migrate::verify(&client).await.expect_err("not migrated");
    let message = err.to_string();
    assert!(message.contains("0001_game_sessions"), "{message}");
    assert!(
        message.contains("notification-scheduler migrate"),
        "{message}"
    );
}

async fn insert_game(client: &tokio_postgres::Client) -> uuid::Uuid {
    client
        .query_one(
            "INSERT INTO game_sessions (title, scheduled_at) VALUES ('g', now() + interval '1 day') RETURNING id",
            &[],
        )
        .await
        .unwrap()
        .get(0)
}

#[tokio::test]
async fn the_schema_rejects_duplicate_reminders_negative_minutes_and_unknown_games() {
    let db = TestDb::migrated().await;
    let client = db.client().await;
    let game = insert_game(&client).await;
    let insert = "INSERT INTO notification_schedule (game_id, reminder_minutes, notification_time) \
                  VALUES ($1, $2, now() + interval '1 hour')";
    client
        .execute(insert, &[&game, &15])
        .await
        .expect("first reminder");
    let cases = [
        (game, 15, "23505"),                // unique (game_id, reminder_minutes)
        (game, -1, "23514"),                // reminder_minutes >= 0
        (uuid::Uuid::new_v4(), 5, "23503"), // foreign key to game_sessions
    ];
    for (game_id, minutes, code) in cases {
        let err = client
            .execute(insert, &[&game_id, &minutes])
            .await
            .expect_err("rejected");
        assert_eq!(err.code().map(|c| c.code()), Some(code), "{err}");
    }
    client
        .execute("DELETE FROM game_sessions WHERE id = $1", &[&game])
        .await
        .unwrap();
    let left: i64 = client
        .query_one("SELECT count(*) FROM notification_schedule", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(left, 0, "deleting a game deletes its reminders");
}

/// Collects notifications on the change channel up to a marker payload, which
/// the writer sends last: notifications of one session arrive in order.
struct Listener {
    payloads: mpsc::UnboundedReceiver<String>,
    _client: tokio_postgres::Client,
}

impl Listener {
    async fn start(db: &TestDb) -> Self {
        let (client, mut connection) = tokio_postgres::connect(&db.url, NoTls).await.unwrap();
        let (sender, payloads) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            let mut messages = futures_util::stream::poll_fn(move |cx| connection.poll_message(cx));
            while let Some(Ok(message)) = messages.next().await {
                if let AsyncMessage::Notification(notification) = message {
                    let _ = sender.send(notification.payload().to_owned());
                }
            }
        });
        client
            .batch_execute("LISTEN notification_schedule_changed")
            .await
            .unwrap();
        Self {
            payloads,
            _client: client,
        }
    }

    /// Runs `sql` with `writer`; the notifications it caused.
    async fn after(
        &mut self,
        writer: &tokio_postgres::Client,
        sql: &str,
    ) -> Vec<serde_json::Value> {
        writer.execute(sql, &[]).await.unwrap();
        self.until_marker(writer).await
    }

    async fn until_marker(&mut self, writer: &tokio_postgres::Client) -> Vec<serde_json::Value> {
        writer
            .batch_execute("NOTIFY notification_schedule_changed, 'marker'")
            .await
            .unwrap();
        let mut seen = Vec::new();
        loop {
            let payload = tokio::time::timeout(WAIT, self.payloads.recv())
                .await
                .expect("marker arrives")
                .expect("listener alive");
            if payload == "marker" {
                return seen;
            }
            seen.push(serde_json::from_str(&payload).expect("JSON payload"));
        }
    }
}

/// The `earliest_notification_time` of a change notification.
fn earliest(hint: &serde_json::Value) -> chrono::DateTime<chrono::Utc> {
    hint["earliest_notification_time"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap()
}

/// `minutes` before the start of the game the trigger test writes.
fn before_start(minutes: i64) -> chrono::DateTime<chrono::Utc> {
    "2030-01-01T12:00:00Z"
        .parse::<chrono::DateTime<chrono::Utc>>()
        .unwrap()
        - chrono::Duration::minutes(minutes)
}

#[tokio::test]
async fn the_trigger_notifies_once_per_statement_with_the_earliest_affected_time() {
    let db = TestDb::migrated().await;
    let mut listener = Listener::start(&db).await;
    let writer = db.client().await;
    writer
        .batch_execute("SET TimeZone = 'Asia/Kolkata'")
        .await
        .unwrap();
    let game = insert_game(&writer).await;

    writer
        .execute(
            "INSERT INTO notification_schedule (game_id, reminder_minutes, notification_time) \
             SELECT $1, m, timestamptz '2030-01-01 12:00:00+00' - m * interval '1 minute' \
               FROM generate_series(1, 1000) AS m",
            &[&game],
        )
        .await
        .unwrap();
    let inserted = listener.until_marker(&writer).await;
    assert_eq!(
        inserted.len(),
        1,
        "one notification for a 1000-row insert: {inserted:?}"
    );
    assert_eq!(inserted[0]["operation"], "INSERT");
    assert_eq!(earliest(&inserted[0]), before_start(1000));

    // Marking rows sent is the daemon's bookkeeping: it cannot make any deadline earlier.
    assert!(
        listener
            .after(
                &writer,
                "UPDATE notification_schedule SET sent = true, sent_at = now() WHERE reminder_minutes > 900",
            )
            .await
            .is_empty()
    );

    // Moving a pending row reports the earlier of its old and new time.
    let moved = listener
        .after(
            &writer,
            "UPDATE notification_schedule SET notification_time = notification_time + interval '1 day' \
              WHERE reminder_minutes = 500",
        )
        .await;
    assert_eq!(moved.len(), 1, "{moved:?}");
    assert_eq!(moved[0]["operation"], "UPDATE");
    assert_eq!(earliest(&moved[0]), before_start(500));

    let deleted = listener
        .after(
            &writer,
            "DELETE FROM notification_schedule WHERE reminder_minutes < 100",
        )
        .await;
    assert_eq!(deleted.len(), 1, "{deleted:?}");
    assert_eq!(deleted[0]["operation"], "DELETE");

    // Deleting only rows already sent changes nothing pending.
    assert!(
        listener
            .after(&writer, "DELETE FROM notification_schedule WHERE sent")
            .await
            .is_empty()
    );
}

/// The plan of `query` on a migrated database with sequential scans off.
async fn plan_of(query: &str, params: &[&(dyn tokio_postgres::types::ToSql + Sync)]) -> String {
    let db = TestDb::migrated().await;
    let client = db.client().await;
    client
        .batch_execute("SET enable_seqscan = off")
        .await
        .unwrap();
    let plan: Vec<String> = client
        .query(&format!("EXPLAIN {query}"), params)
        .await
        .unwrap()
        .iter()
        .map(|row| row.get(0))
        .collect();
    plan.join("\n")
}

#[tokio::test]
async fn the_next_due_query_reads_the_partial_index() {
    let plan = plan_of(
        &notification_scheduler::db::kind_sql::next_due(notification_scheduler::kinds::ALL),
        &[&Vec::<uuid::Uuid>::new()],
    )
    .await;
    assert!(plan.contains("notification_schedule_due_idx"), "{plan}");
    assert!(plan.contains("game_status_schedule_pending_idx"), "{plan}");
}

#[tokio::test]
async fn adopting_the_original_schema_keeps_every_instant_and_drops_its_row_trigger() {
    let db = TestDb::empty().await;
    let client = db.client().await;
    // The original: string game ids, naive UTC timestamps, a per-row trigger.
    client
        .batch_execute(
            "CREATE TABLE game_sessions (id varchar(36) PRIMARY KEY, title text NOT NULL,
                 scheduled_at timestamp NOT NULL, reminder_minutes integer[],
                 created_at timestamp NOT NULL DEFAULT now(), updated_at timestamp NOT NULL DEFAULT now());
             CREATE TABLE notification_schedule (
                 id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
                 game_id varchar(36) NOT NULL REFERENCES game_sessions(id) ON DELETE CASCADE,
                 reminder_minutes integer NOT NULL,
                 notification_time timestamp NOT NULL,
                 sent boolean NOT NULL DEFAULT false,
                 created_at timestamp NOT NULL DEFAULT now(),
                 CONSTRAINT uq_notification_schedule_game_reminder UNIQUE (game_id, reminder_minutes));
             CREATE INDEX ix_notification_schedule_next ON notification_schedule (notification_time) WHERE sent = false;
             CREATE FUNCTION notify_schedule_changed() RETURNS trigger LANGUAGE plpgsql AS $$
             BEGIN
                 PERFORM pg_notify('notification_schedule_changed',
                     json_build_object('operation', TG_OP, 'game_id', NEW.game_id)::text);
                 RETURN NEW;
             END $$;
             CREATE TRIGGER notification_schedule_trigger AFTER INSERT OR UPDATE ON notification_schedule
                 FOR EACH ROW EXECUTE FUNCTION notify_schedule_changed();
             INSERT INTO game_sessions (id, title, scheduled_at) VALUES ('game-1', 'legacy', '2030-01-01 12:00:00');
             INSERT INTO notification_schedule (game_id, reminder_minutes, notification_time)
                 VALUES ('game-1', 60, '2030-01-01 11:00:00');",
        )
        .await
        .unwrap();
    let mut migrator = db.client().await;
    // A non-UTC session must not shift the stored instants.
    migrator
        .batch_execute("SET TimeZone = 'America/New_York'")
        .await
        .unwrap();
    migrate::run(&mut migrator)
        .await
        .expect("adopts the original schema");

    let row = client
        .query_one(
            "SELECT notification_time, pg_typeof(notification_time)::text FROM notification_schedule",
            &[],
        )
        .await
        .unwrap();
    let time: chrono::DateTime<chrono::Utc> = row.get(0);
    assert_eq!(
        time,
        "2030-01-01T11:00:00Z"
            .parse::<chrono::DateTime<chrono::Utc>>()
            .unwrap()
    );
    assert_eq!(row.get::<_, String>(1), "timestamp with time zone");
    let triggers: Vec<String> = client
        .query(
            "SELECT tgname::text FROM pg_trigger WHERE tgrelid = 'notification_schedule'::regclass \
              AND NOT tgisinternal ORDER BY 1",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|row| row.get(0))
        .collect();
    assert_eq!(
        triggers,
        [
            "notification_schedule_notify_delete",
            "notification_schedule_notify_insert",
            "notification_schedule_notify_update"
        ]
    );
    // Older writers that set only the original columns keep working.
    client
        .execute(
            "INSERT INTO notification_schedule (game_id, reminder_minutes, notification_time) \
             VALUES ('game-1', 15, '2030-01-01 11:45:00+00')",
            &[],
        )
        .await
        .expect("a legacy-shaped insert");
}

#[tokio::test]
async fn lookups_by_game_use_the_unique_index_which_leads_with_game_id() {
    let plan = plan_of(
        "SELECT * FROM notification_schedule WHERE game_id = $1",
        &[&uuid::Uuid::new_v4()],
    )
    .await;
    assert!(
        plan.contains("notification_schedule_game_id_reminder_minutes_key"),
        "{plan}"
    );
}
