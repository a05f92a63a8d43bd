//! `notification-scheduler watch`: binds a temporary queue (or, with
//! `--quorum-queue`, a durable quorum queue) to the exchange with the routing
//! key of every kind of the service's own events and prints each event as it
//! is delivered, until Ctrl-C.

use crate::broker::consumer::{QueueKind, ReminderConsumer};
use crate::config::WatchArgs;
use crate::{kinds, shutdown};

/// Prints one line per delivered message: receive time, message id, lateness
/// is left to the reader; the body is printed as sent.
pub async fn run(args: WatchArgs) -> anyhow::Result<()> {
    let delivered = kinds::delivered(&args.rabbitmq_routing_key);
    let routing_keys: Vec<&str> = delivered
        .iter()
        .filter_map(|d| d.routing_key.as_deref())
        .collect();
    let queue = match &args.quorum_queue {
        Some(name) => QueueKind::Quorum(name.clone()),
        None => QueueKind::Temporary,
    };
    let mut consumer = ReminderConsumer::bind(
        &args.rabbitmq_url,
        &args.rabbitmq_exchange,
        &routing_keys,
        queue,
        100,
    )
    .await?;
    eprintln!(
        "watching exchange '{}' (routing keys '{}') on {}; Ctrl-C to stop",
        args.rabbitmq_exchange,
        routing_keys.join("', '"),
        args.rabbitmq_url.masked()
    );
    let mut signal = shutdown::Signal::install()?;
    loop {
        tokio::select! {
            () = signal.received() => return Ok(()),
            message = consumer.next() => match message {
                Some(Ok(message)) => println!(
                    "{} message_id={} {}",
                    message.received_at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
                    message.message_id.as_deref().unwrap_or("-"),
                    String::from_utf8_lossy(&message.body)
                ),
                Some(Err(err)) => anyhow::bail!("the broker connection failed: {err}"),
                None => anyhow::bail!("the broker closed the connection"),
            },
        }
    }
}
