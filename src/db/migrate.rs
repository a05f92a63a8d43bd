//! Versioned schema migrations from `migrations/`, embedded in the binary.
//!
//! Each migration runs in its own transaction together with its history row, so
//! a failure leaves the database at the previous version. A session advisory
//! lock serialises concurrent runs (several replicas starting with `--migrate`).
//! A migration whose text changed after it was applied is refused: the database
//! would otherwise silently differ from what the code describes.
//!
//! Not refinery: it has neither the advisory lock across replicas nor the rule
//! that a database migrated by a newer build is accepted with a warning.

use sha2::{Digest, Sha256};
use tokio_postgres::Client;

use super::DbError;

/// One embedded migration.
#[derive(Debug, Clone, Copy)]
pub struct Migration {
    /// Position in the sequence, from the file name's numeric prefix.
    pub version: i32,
    /// File name without the extension, e.g. `0001_game_sessions`.
    pub name: &'static str,
    /// The SQL, run as one multi-statement batch.
    pub sql: &'static str,
}

macro_rules! migration {
    ($version:literal, $name:literal) => {
        Migration {
            version: $version,
            name: $name,
            sql: include_str!(concat!("../../migrations/", $name, ".sql")),
        }
    };
}

/// Every migration, in order. A test checks this list against `migrations/`.
pub const MIGRATIONS: &[Migration] = &[
    migration!(1, "0001_game_sessions"),
    migration!(2, "0002_notification_schedule"),
    migration!(3, "0003_notify_trigger"),
    migration!(4, "0004_trace_context"),
    migration!(5, "0005_game_status_schedule"),
    migration!(6, "0006_scheduled_message"),
    migration!(7, "0007_delivery_attempts"),
    migration!(8, "0008_idle_cost"),
    migration!(9, "0009_daemon_heartbeat"),
];

/// Key of the advisory lock held while migrating ("notifsch" in ASCII).
const MIGRATION_LOCK_KEY: i64 = 0x6e6f_7469_6673_6368;

/// A migration run that could not complete.
#[derive(Debug, thiserror::Error)]
pub enum MigrateError {
    #[error(transparent)]
    Db(#[from] DbError),
    #[error(
        "migration {name} was changed after it was applied \
         (applied checksum {applied}, this build has {embedded}); restore the original \
         file and put the change in a new migration"
    )]
    Changed {
        version: i32,
        name: String,
        applied: String,
        embedded: String,
    },
    #[error(
        "the database has migration {name}, which this build does not know; \
         it was applied by a newer version of notification-scheduler"
    )]
    UnknownApplied { version: i32, name: String },
    #[error("migration {name} failed and was rolled back: {reason}")]
    Failed {
        version: i32,
        name: &'static str,
        reason: String,
    },
    #[error(
        "the database schema is not up to date (missing {missing}); \
         run `notification-scheduler migrate` or start the daemon with --migrate"
    )]
    Pending { missing: String },
}

/// What a run did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MigrationReport {
    /// Versions applied by this run, in order.
    pub applied: Vec<i32>,
    /// Versions that were already present.
    pub already_applied: usize,
}

/// Hex SHA-256 of a migration's text, independent of line-ending style.
pub fn checksum(sql: &str) -> String {
    let digest = Sha256::digest(sql.replace("\r\n", "\n").as_bytes());
    digest.iter().map(|byte| format!("{byte:02x}")).collect()
}

struct AppliedMigration {
    version: i32,
    name: String,
    checksum: String,
}

/// Applies every pending migration. Safe to run concurrently and repeatedly.
pub async fn run(client: &mut Client) -> Result<MigrationReport, MigrateError> {
    client
        // UTC so that migrations converting naive timestamps keep every instant;
        // warnings only, so "already exists, skipping" notices stay out of the log.
        .batch_execute("SET TimeZone = 'UTC'; SET client_min_messages = warning")
        .await
        .map_err(|err| DbError::query("preparing the migration session", err))?;
    let acquired: bool = client
        .query_one("SELECT pg_try_advisory_lock($1)", &[&MIGRATION_LOCK_KEY])
        .await
        .map_err(|err| DbError::query("taking the migration lock", err))?
        .get(0);
    if !acquired {
        tracing::info!("another migration run holds the lock; waiting for it to finish");
        client
            .execute("SELECT pg_advisory_lock($1)", &[&MIGRATION_LOCK_KEY])
            .await
            .map_err(|err| DbError::query("waiting for the migration lock", err))?;
    }
    let result = apply_pending(client).await;
    // Closing the session would also release the lock; unlock explicitly so a
    // pooled or reused client is left clean.
    let unlocked = client
        .execute("SELECT pg_advisory_unlock($1)", &[&MIGRATION_LOCK_KEY])
        .await;
    let report = result?;
    unlocked.map_err(|err| DbError::query("releasing the migration lock", err))?;
    Ok(report)
}

/// Fails unless every migration of this build is applied (and none changed).
///
/// Migrations of a newer build are accepted with a warning: they are additive
/// (docs/deployment.md), so during a rolling upgrade an old replica that
/// restarts after `migrate` ran keeps working.
pub async fn verify(client: &Client) -> Result<(), MigrateError> {
    let applied = applied_migrations(client).await?;
    let known: Vec<AppliedMigration> = applied
        .into_iter()
        .filter(|done| {
            let known = MIGRATIONS.iter().any(|m| m.version == done.version);
            if !known {
                tracing::warn!(
                    migration = done.name.as_str(),
                    "the database has a migration of a newer build; running on its additive schema"
                );
            }
            known
        })
        .collect();
    let pending = pending_after(&known)?;
    if pending.is_empty() {
        return Ok(());
    }
    let missing = pending
        .iter()
        .map(|m| m.name)
        .collect::<Vec<_>>()
        .join(", ");
    Err(MigrateError::Pending { missing })
}

async fn apply_pending(client: &mut Client) -> Result<MigrationReport, MigrateError> {
    client
        .batch_execute(
            "CREATE TABLE IF NOT EXISTS notification_scheduler_migrations (
                 version    integer     PRIMARY KEY,
                 name       text        NOT NULL,
                 checksum   text        NOT NULL,
                 applied_at timestamptz NOT NULL DEFAULT now()
             )",
        )
        .await
        .map_err(|err| DbError::query("creating the migration history table", err))?;
    let applied = applied_migrations(client).await?;
    let pending = pending_after(&applied)?;
    let mut report = MigrationReport {
        applied: Vec::new(),
        already_applied: applied.len(),
    };
    for migration in pending {
        apply(client, migration).await?;
        tracing::info!(
            version = migration.version,
            name = migration.name,
            "applied migration"
        );
        report.applied.push(migration.version);
    }
    Ok(report)
}

async fn applied_migrations(client: &Client) -> Result<Vec<AppliedMigration>, MigrateError> {
    let exists: bool = client
        .query_one(
            "SELECT to_regclass('notification_scheduler_migrations') IS NOT NULL",
            &[],
        )
        .await
        .map_err(|err| DbError::query("reading the migration history", err))?
        .get(0);
    if !exists {
        return Ok(Vec::new());
    }
    let rows = client
        .query(
            "SELECT version, name, checksum FROM notification_scheduler_migrations ORDER BY version",
            &[],
        )
        .await
        .map_err(|err| DbError::query("reading the migration history", err))?;
    Ok(rows
        .iter()
        .map(|row| AppliedMigration {
            version: row.get(0),
            name: row.get(1),
            checksum: row.get(2),
        })
        .collect())
}

/// Checks the history against this build and returns what is left to apply.
fn pending_after(applied: &[AppliedMigration]) -> Result<Vec<&'static Migration>, MigrateError> {
    for done in applied {
        let Some(known) = MIGRATIONS.iter().find(|m| m.version == done.version) else {
            return Err(MigrateError::UnknownApplied {
                version: done.version,
                name: done.name.clone(),
            });
        };
        let embedded = checksum(known.sql);
        if embedded != done.checksum {
            return Err(MigrateError::Changed {
                version: done.version,
                name: done.name.clone(),
                applied: done.checksum.clone(),
                embedded,
            });
        }
    }
    Ok(MIGRATIONS
        .iter()
        .filter(|m| !applied.iter().any(|done| done.version == m.version))
        .collect())
}

async fn apply(client: &mut Client, migration: &'static Migration) -> Result<(), MigrateError> {
    let failed = |err: tokio_postgres::Error| MigrateError::Failed {
        version: migration.version,
        name: migration.name,
        reason: super::describe(&err),
    };
    let transaction = client.transaction().await.map_err(failed)?;
    transaction
        .batch_execute(migration.sql)
        .await
        .map_err(failed)?;
    transaction
        .execute(
            "INSERT INTO notification_scheduler_migrations (version, name, checksum) VALUES ($1, $2, $3)",
            &[&migration.version, &migration.name, &checksum(migration.sql)],
        )
        .await
        .map_err(failed)?;
    transaction.commit().await.map_err(failed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_file_in_the_migrations_folder_is_embedded_in_order() {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/migrations");
        let mut files: Vec<String> = std::fs::read_dir(dir)
            .expect("migrations folder")
            .map(|entry| {
                entry
                    .expect("entry")
                    .file_name()
                    .into_string()
                    .expect("utf-8")
            })
            .filter(|name| name.ends_with(".sql"))
            .collect();
        files.sort();
        let embedded: Vec<String> = MIGRATIONS
            .iter()
            .map(|m| format!("{}.sql", m.name))
            .collect();
        assert_eq!(files, embedded);
        for (index, migration) in MIGRATIONS.iter().enumerate() {
            assert_eq!(migration.version, index as i32 + 1);
            assert!(
                migration
                    .name
                    .starts_with(&format!("{:04}_", migration.version))
            );
        }
    }

    #[test]
    fn checksums_ignore_line_endings_but_not_content() {
        assert_eq!(checksum("SELECT 1;\n"), checksum("SELECT 1;\r\n"));
        assert_ne!(checksum("SELECT 1;"), checksum("SELECT 2;"));
    }
}
