//! The `notification-scheduler` command line: subcommands, start-up, exit codes.
//!
//! Exit status: 0 on success (including a clean shutdown on SIGTERM), 2 for
//! invalid or missing configuration (one line naming the setting), 1 when the
//! command itself fails (e.g. a server is unreachable).
//!
//! - [`probe`]: the local HTTP probe behind `healthcheck`.
//! - [`watch`]: printing delivered events (`watch`).
//! - [`dead_letters`]: listing, retrying and discarding dead letters (`dead-letters`).

pub mod dead_letters;
pub mod probe;
pub mod watch;

use std::process::ExitCode;

use clap::error::{ContextKind, ContextValue, ErrorKind};
use clap::{CommandFactory, Parser, Subcommand};

use crate::config::{ApiArgs, DaemonArgs, DatabaseArgs, HealthcheckArgs, LoggingArgs, WatchArgs};
use crate::{api, daemon, db, telemetry};

/// Delivers reminders stored in PostgreSQL to RabbitMQ at their time, once.
#[derive(Debug, Parser)]
#[command(name = "notification-scheduler", version, propagate_version = true)]
pub struct Cli {
    #[command(flatten)]
    pub logging: LoggingArgs,

    #[command(subcommand)]
    pub command: Command,
}

/// What to run.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Apply pending database migrations, then exit. Safe to run repeatedly and concurrently.
    Migrate(MigrateArgs),
    /// Deliver reminders: supervised actors that publish each reminder to
    /// RabbitMQ at its time. Serves /healthz and /readyz.
    Daemon(Box<DaemonArgs>),
    /// Serve the games HTTP API: games and their reminder schedules.
    Api(Box<ApiArgs>),
    /// Print each reminder event as it is delivered (binds a temporary queue).
    Watch(WatchArgs),
    /// List, retry or discard dead letters: events the broker refused on
    /// every attempt (DELIVERY_MAX_ATTEMPTS).
    DeadLetters(dead_letters::DeadLettersArgs),
    /// Exit 0 if a local health endpoint answers 200, else 1 (for container
    /// health checks; needs no curl).
    Healthcheck(HealthcheckArgs),
    /// Print docs/configuration.md, generated from these definitions.
    #[command(hide = true)]
    ConfigReference,
}

/// Settings of `migrate`.
#[derive(Debug, clap::Args)]
pub struct MigrateArgs {
    #[command(flatten)]
    pub database: DatabaseArgs,
}

/// Exit status for configuration errors, as with clap's own usage errors.
const EXIT_CONFIG: u8 = 2;

/// Parses the command line and environment, runs the command, returns the exit status.
pub fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(err)
            if matches!(
                err.kind(),
                ErrorKind::DisplayHelp | ErrorKind::DisplayVersion
            ) =>
        {
            let _ = err.print();
            return ExitCode::SUCCESS;
        }
        Err(err) => {
            eprintln!("error: {}", describe_usage_error(&err));
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    if let Err(err) = validate(&cli.command) {
        eprintln!("error: {err}");
        return ExitCode::from(EXIT_CONFIG);
    }
    run_with_telemetry(&cli.logging, run(cli.command))
}

/// Runs `command` on a multi-thread runtime with logs and telemetry set up as
/// `logging` says, logs its error, flushes telemetry, and returns the exit
/// status. The benchmark's binary starts the same way.
pub fn run_with_telemetry(
    logging: &LoggingArgs,
    command: impl Future<Output = anyhow::Result<()>>,
) -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        // At least two workers even on a one-CPU container: exporters and the
        // delivery path must not wait behind each other.
        .worker_threads(std::thread::available_parallelism().map_or(2, |n| n.get().max(2)))
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("error: cannot start the async runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(async {
        // The gRPC exporter needs the runtime, so telemetry starts inside it.
        let telemetry = match telemetry::init(logging) {
            Ok(telemetry) => telemetry,
            Err(message) => {
                eprintln!("error: {message}");
                return ExitCode::from(EXIT_CONFIG);
            }
        };
        let result = command.await;
        if let Err(err) = &result {
            tracing::error!("{err:#}");
        }
        telemetry.shutdown().await;
        match result {
            Ok(()) => ExitCode::SUCCESS,
            Err(_) => ExitCode::FAILURE,
        }
    })
}

/// Checks settings that depend on each other, which clap cannot.
fn validate(command: &Command) -> Result<(), crate::config::ConflictError> {
    match command {
        Command::Daemon(args) => args.validate(),
        Command::Api(args) => args.validate(),
        Command::Migrate(_)
        | Command::Watch(_)
        | Command::DeadLetters(_)
        | Command::Healthcheck(_)
        | Command::ConfigReference => Ok(()),
    }
}

async fn run(command: Command) -> anyhow::Result<()> {
    match command {
        Command::Migrate(args) => migrate(args).await,
        Command::Daemon(args) => daemon::run(*args).await,
        Command::Api(args) => api::run(*args).await,
        Command::Watch(args) => watch::run(args).await,
        Command::DeadLetters(args) => dead_letters::run(args).await,
        Command::Healthcheck(args) => healthcheck(args).await,
        Command::ConfigReference => {
            print!("{}", crate::config::reference::markdown(&Cli::command()));
            Ok(())
        }
    }
}

async fn migrate(args: MigrateArgs) -> anyhow::Result<()> {
    let url = &args.database.database_url;
    let mut client = db::connect(url, args.database.database_connect_timeout).await?;
    let report = db::migrate::run(&mut client).await?;
    tracing::info!(
        database = url.masked(),
        applied = report.applied.len(),
        already_applied = report.already_applied,
        "database schema is up to date"
    );
    Ok(())
}

async fn healthcheck(args: HealthcheckArgs) -> anyhow::Result<()> {
    let address = probe::local(args.health_addr);
    match probe::status(address, &args.path, std::time::Duration::from_secs(3)).await {
        Some(200) => Ok(()),
        Some(status) => anyhow::bail!("http://{address}{} answered {status}", args.path),
        None => anyhow::bail!("no answer from http://{address}{}", args.path),
    }
}

/// Renders a clap error as one line that names the setting by its environment
/// variable and flag, quotes the value (parsers mask passwords) and says what
/// is expected.
fn describe_usage_error(err: &clap::Error) -> String {
    let command = Cli::command();
    let invalid_args: Vec<String> = match err.get(ContextKind::InvalidArg) {
        Some(ContextValue::String(arg)) => vec![arg.clone()],
        Some(ContextValue::Strings(args)) => args.clone(),
        _ => Vec::new(),
    };
    let settings: Vec<String> = invalid_args
        .iter()
        .map(|arg| setting_name(&command, arg))
        .collect();
    match err.kind() {
        ErrorKind::ValueValidation => {
            let reason = std::error::Error::source(err)
                .map_or_else(|| "invalid value".to_owned(), ToString::to_string);
            format!("invalid {}: {reason}", settings.join(", "))
        }
        ErrorKind::InvalidValue => {
            let value = match err.get(ContextKind::InvalidValue) {
                Some(ContextValue::String(value)) => value.clone(),
                _ => String::new(),
            };
            let expected = match err.get(ContextKind::ValidValue) {
                Some(ContextValue::Strings(values)) => format!("one of {}", values.join(", ")),
                _ => "a value".to_owned(),
            };
            format!(
                "invalid {}: '{value}'; expected {expected}",
                settings.join(", ")
            )
        }
        ErrorKind::MissingRequiredArgument => {
            let described: Vec<String> = invalid_args
                .iter()
                .map(|arg| {
                    let help = find_arg(&command, arg)
                        .and_then(|a| a.get_help().map(ToString::to_string))
                        .unwrap_or_default();
                    format!("{} ({help})", setting_name(&command, arg))
                })
                .collect();
            format!("missing required setting {}", described.join("; "))
        }
        _ => err
            .render()
            .to_string()
            .lines()
            .next()
            .unwrap_or("invalid command line")
            .trim_start_matches("error: ")
            .to_owned(),
    }
}

/// Finds an argument anywhere in the command tree by its rendered form,
/// e.g. `--database-url <URL>`.
fn find_arg<'a>(command: &'a clap::Command, rendered: &str) -> Option<&'a clap::Arg> {
    let flag = rendered.split_whitespace().next()?.trim_start_matches("--");
    command
        .get_arguments()
        .find(|arg| arg.get_long() == Some(flag))
        .or_else(|| {
            command
                .get_subcommands()
                .find_map(|sub| find_arg(sub, rendered))
        })
}

/// `DATABASE_URL (--database-url)`, or the flag alone for arguments without a variable.
fn setting_name(command: &clap::Command, rendered: &str) -> String {
    let flag = rendered.split_whitespace().next().unwrap_or(rendered);
    match find_arg(command, rendered).and_then(|arg| arg.get_env()) {
        Some(env) => format!("{} ({flag})", env.to_string_lossy()),
        None => flag.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_command_line_definition_is_consistent() {
        Cli::command().debug_assert();
    }
}
