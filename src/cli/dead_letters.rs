//! `notification-scheduler dead-letters`: lists, retries and discards the
//! events the broker refused on every attempt, straight in the database.

use clap::{Args, Subcommand};
use uuid::Uuid;

use crate::config::{DatabaseArgs, parse};
use crate::db;
use crate::dead_letters::{self, After};
use crate::kinds::Kind;

/// Settings of `dead-letters`.
#[derive(Debug, Args)]
pub struct DeadLettersArgs {
    #[command(flatten)]
    pub database: DatabaseArgs,

    #[command(subcommand)]
    pub action: Action,
}

/// What to do with the dead letters.
#[derive(Debug, Subcommand)]
pub enum Action {
    /// Print the dead letters, oldest first, one per line: kind, id, due
    /// time, dead-lettered time, attempts, last error (tab-separated).
    List {
        /// Only this kind (reminder, status_transition, scheduled_message).
        #[arg(long, value_parser = parse::kind)]
        kind: Option<&'static Kind>,
        /// At most this many.
        #[arg(long, default_value = "100", value_parser = parse::bounded_integer(1, 100_000))]
        limit: usize,
    },
    /// Put dead letters back to pending: they are delivered at once, with
    /// a fresh count of attempts.
    Retry {
        /// The ids to retry.
        #[arg(required_unless_present = "all", conflicts_with = "all")]
        ids: Vec<Uuid>,
        /// Retry every dead letter (of --kind, if given).
        #[arg(long)]
        all: bool,
        /// With --all: only this kind.
        #[arg(long, value_parser = parse::kind, requires = "all")]
        kind: Option<&'static Kind>,
    },
    /// Give up on dead letters: recorded as done (outcome 'discarded'),
    /// never delivered.
    Discard {
        /// The ids to discard.
        #[arg(required = true)]
        ids: Vec<Uuid>,
    },
}

pub async fn run(args: DeadLettersArgs) -> anyhow::Result<()> {
    let url = &args.database.database_url;
    let client = db::connect(url, args.database.database_connect_timeout).await?;
    match args.action {
        Action::List { kind, limit } => {
            let mut after: Option<After> = None;
            let mut left = limit;
            while left > 0 {
                let page = dead_letters::list(
                    &client,
                    &dead_letters::selected(kind),
                    left.min(1_000),
                    after,
                )
                .await?;
                let Some(last) = page.last() else { break };
                after = Some(After {
                    dead_lettered_at: last.dead_lettered_at,
                    id: last.id,
                });
                left -= page.len();
                for letter in &page {
                    println!(
                        "{}\t{}\t{}\t{}\t{}\t{}",
                        letter.kind,
                        letter.id,
                        letter.due_at.to_rfc3339(),
                        letter.dead_lettered_at.to_rfc3339(),
                        letter.attempts,
                        letter.last_error.as_deref().unwrap_or("-")
                    );
                }
            }
        }
        Action::Retry { ids, all, kind } => {
            let ids = (!all).then_some(ids.as_slice());
            let retried = dead_letters::retry(&client, &dead_letters::selected(kind), ids).await?;
            report("retried", &retried, ids)?;
        }
        Action::Discard { ids } => {
            let discarded = dead_letters::discard(&client, &ids).await?;
            report("discarded", &discarded, Some(&ids))?;
        }
    }
    Ok(())
}

/// Prints what was changed; fails naming the ids that are not dead letters.
fn report(
    done: &str,
    changed: &[(&'static str, Uuid)],
    asked: Option<&[Uuid]>,
) -> anyhow::Result<()> {
    for (kind, id) in changed {
        println!("{done}\t{kind}\t{id}");
    }
    eprintln!("{} dead letters {done}", changed.len());
    let missing: Vec<String> = asked
        .unwrap_or_default()
        .iter()
        .filter(|id| !changed.iter().any(|(_, changed)| changed == *id))
        .map(ToString::to_string)
        .collect();
    if !missing.is_empty() {
        anyhow::bail!(
            "not dead letters (unknown, or not dead-lettered): {}",
            missing.join(", ")
        );
    }
    Ok(())
}
