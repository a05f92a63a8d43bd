//! The PostgreSQL store held to the store contract (`actors::testing::contract`)
//! that the in-memory fake of the actor tests meets too: claim order, SKIP
//! LOCKED contention, stale skipping and expiry, next-due past in-flight rows,
//! partial commits, retries and dead letters, drop means rollback.

pub mod common;

use std::time::Duration;

use actors::testing::contract::{ContractFixture, RETRY, RowState, STALE_GRACE};
use chrono::TimeDelta;
use common::TestDb;
use notification_scheduler::db::schedule_store::{PgScheduleStore, StoreSettings};
use notification_scheduler::{db, kinds};
use uuid::Uuid;

/// A migrated database of its own, a store on it, and a connection to
/// arrange and inspect rows.
struct PgFixture {
    store: PgScheduleStore,
    client: tokio_postgres::Client,
    _db: TestDb,
}

impl PgFixture {
    async fn new() -> Self {
        let db = TestDb::migrated().await;
        let url = db.database_url();
        let timeout = Duration::from_secs(5);
        let store = PgScheduleStore::new(
            db::pool(&url, 4, timeout),
            url,
            StoreSettings {
                claim_timeout: Duration::from_secs(30),
                stale_grace: STALE_GRACE,
                query_timeout: timeout,
                retry: RETRY,
            },
            kinds::delivered("game.reminder_due"),
        );
        Self {
            store,
            client: db.client().await,
            _db: db,
        }
    }
}

impl ContractFixture for PgFixture {
    type Store = PgScheduleStore;

    fn store(&self) -> PgScheduleStore {
        self.store.clone()
    }

    async fn insert(&self, due_in: TimeDelta, game_starts_in: Option<TimeDelta>) -> Uuid {
        let due_in_ms = due_in.num_milliseconds();
        let game_starts_in_ms = game_starts_in.map(|offset| offset.num_milliseconds());
        // Times from the database clock, as every writer's rows are compared with it.
        self.client
            .query_one(
                "WITH game AS (
                     INSERT INTO game_sessions (title, scheduled_at)
                     VALUES ('contract', now()) RETURNING id)
                 INSERT INTO notification_schedule
                        (game_id, reminder_minutes, notification_time, game_scheduled_at)
                 SELECT id, 0,
                        now() + $1::bigint * interval '1 millisecond',
                        now() + $2::bigint * interval '1 millisecond'
                   FROM game
                 RETURNING id",
                &[&due_in_ms, &game_starts_in_ms],
            )
            .await
            .expect("insert a reminder")
            .get(0)
    }

    async fn state(&self, id: Uuid) -> RowState {
        let row = self
            .client
            .query_one(
                "SELECT sent, outcome, dead_lettered_at IS NOT NULL \
                   FROM notification_schedule WHERE id = $1",
                &[&id],
            )
            .await
            .expect("read a reminder");
        if row.get(2) {
            return RowState::DeadLettered;
        }
        match (row.get(0), row.get::<_, Option<&str>>(1)) {
            (false, _) => RowState::Pending,
            (true, Some("skipped_stale")) => RowState::SkippedStale,
            (true, _) => RowState::Published,
        }
    }
}

actors::store_contract_tests!(PgFixture::new().await);

/// An empty claim ends its transaction and returns its connection to the
/// pool: the next query must not wait for a new connection and cold caches.
#[tokio::test]
async fn an_empty_claim_keeps_its_connection_in_the_pool() {
    use actors::ports::{Claim, ScheduleStore};

    let fixture = PgFixture::new().await;
    let store = fixture.store();
    let backends = "SELECT coalesce(array_agg(pid ORDER BY pid), '{}') FROM pg_stat_activity \
                     WHERE datname = current_database() AND application_name = 'notification-scheduler'";
    drop(
        store
            .claim_due(10, Duration::ZERO)
            .await
            .expect("an empty claim"),
    );
    let first: Vec<i32> = fixture
        .client
        .query_one(backends, &[])
        .await
        .unwrap()
        .get(0);
    for _ in 0..5 {
        let claim = store
            .claim_due(10, Duration::ZERO)
            .await
            .expect("an empty claim");
        assert!(claim.events().is_empty());
        drop(claim);
    }
    let after: Vec<i32> = fixture
        .client
        .query_one(backends, &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(first.len(), 1, "one connection for sequential claims");
    assert_eq!(first, after, "the same connection serves every empty claim");
}
