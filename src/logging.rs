//! Log output: text for people, JSON lines for collectors.

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;

use crate::config::{LogFormat, LoggingArgs};

/// Installs the global subscriber. Fails with a one-line message when RUST_LOG
/// holds directives that cannot be parsed.
pub fn init(args: &LoggingArgs) -> Result<(), String> {
    let filter = match std::env::var("RUST_LOG") {
        Ok(directives) if !directives.trim().is_empty() => EnvFilter::try_new(&directives)
            .map_err(|err| {
                format!(
                    "invalid RUST_LOG: '{directives}' ({err}); expected tracing directives such as info,actors=debug"
                )
            })?,
        // lapin logs every returned message with its whole body at warn; the
        // scheduler reports returns itself, once per batch.
        _ => EnvFilter::new(format!(
            "{},lapin::returned_messages=error",
            args.log_level.as_directive()
        )),
    };
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal());
    let installed = match args.log_format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .try_init(),
    };
    installed.map_err(|err| format!("cannot install the logger: {err}"))
}
