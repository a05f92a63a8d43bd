//! Turns the broker's confirms into one outcome per published message.
//!
//! lapin hands a mandatory message's `basic.return` to whichever confirm
//! completes next, which may belong to another message or another batch. The
//! return always arrives before the returned message's own ack, so its
//! carrier completes no later than that ack. A single collector therefore owns
//! every confirm of a channel and, before settling a batch, takes in every
//! other confirm that has already completed: by then every return for the
//! batch has been seen, and a returned message is never taken as delivered.

use std::collections::{HashMap, HashSet, VecDeque};

use actors::model::PublishOutcome;
use futures_util::FutureExt;
use futures_util::stream::{FuturesUnordered, StreamExt};
use lapin::{Confirmation, PublisherConfirm};
use tokio::sync::{mpsc, oneshot};
use uuid::Uuid;

/// Confirms of one published batch, in publish order.
pub struct PublishedBatch {
    /// Message ids, in publish order.
    pub ids: Vec<Uuid>,
    /// The confirm of each message; `Err` with its outcome if it was not
    /// published (the publish failed, or its exchange does not exist).
    pub confirms: Vec<Result<PublisherConfirm, PublishOutcome>>,
    /// Receives the outcomes once every confirm is in.
    pub reply: oneshot::Sender<Vec<PublishOutcome>>,
}

/// What one confirm said.
enum Answer {
    Ack,
    Nack,
    Failed(String),
    Unpublished(PublishOutcome),
}

struct Settling {
    ids: Vec<Uuid>,
    answers: Vec<Option<Answer>>,
    missing: usize,
    reply: oneshot::Sender<Vec<PublishOutcome>>,
}

/// Runs until the sender side is dropped and every batch is settled.
pub async fn collect(mut batches: mpsc::UnboundedReceiver<PublishedBatch>) {
    let mut in_flight = FuturesUnordered::new();
    let mut settling: HashMap<u64, Settling> = HashMap::new();
    let mut order: VecDeque<u64> = VecDeque::new();
    let mut returned: HashSet<Uuid> = HashSet::new();
    let mut next_batch = 0u64;
    let mut accepting = true;
    loop {
        tokio::select! {
            batch = batches.recv(), if accepting => {
                let Some(batch) = batch else {
                    accepting = false;
                    continue;
                };
                let key = next_batch;
                next_batch += 1;
                let mut answers = Vec::with_capacity(batch.ids.len());
                let mut missing = 0;
                for (index, confirm) in batch.confirms.into_iter().enumerate() {
                    match confirm {
                        Ok(confirm) => {
                            answers.push(None);
                            missing += 1;
                            in_flight.push(confirm.map(move |result| (key, index, result)));
                        }
                        Err(outcome) => answers.push(Some(Answer::Unpublished(outcome))),
                    }
                }
                settling.insert(key, Settling { ids: batch.ids, answers, missing, reply: batch.reply });
                order.push_back(key);
            }
            Some(first) = in_flight.next(), if !in_flight.is_empty() => {
                record(first, &mut settling, &mut returned);
                while let Some(Some(done)) = in_flight.next().now_or_never() {
                    record(done, &mut settling, &mut returned);
                }
            }
            else => break,
        }
        settle_complete(&mut settling, &mut order, &mut returned);
        if !accepting && settling.is_empty() {
            break;
        }
    }
}

fn record(
    (key, index, result): (u64, usize, lapin::Result<Confirmation>),
    settling: &mut HashMap<u64, Settling>,
    returned: &mut HashSet<Uuid>,
) {
    let answer = match result {
        Ok(confirmation) => {
            let acked = confirmation.is_ack();
            let nacked = confirmation.is_nack();
            if let Some(message) = confirmation.take_message()
                && let Some(id) = message
                    .properties
                    .message_id()
                    .as_ref()
                    .and_then(|id| id.as_str().parse::<Uuid>().ok())
            {
                returned.insert(id);
            }
            match (acked, nacked) {
                (true, _) => Answer::Ack,
                (_, true) => Answer::Nack,
                _ => Answer::Failed("publisher confirms are not enabled on the channel".to_owned()),
            }
        }
        Err(err) => Answer::Failed(err.to_string()),
    };
    if let Some(batch) = settling.get_mut(&key) {
        batch.answers[index] = Some(answer);
        batch.missing -= 1;
    }
}

fn settle_complete(
    settling: &mut HashMap<u64, Settling>,
    order: &mut VecDeque<u64>,
    returned: &mut HashSet<Uuid>,
) {
    order.retain(|key| {
        let complete = settling.get(key).is_some_and(|batch| batch.missing == 0);
        if complete && let Some(batch) = settling.remove(key) {
            let outcomes = batch
                .ids
                .iter()
                .zip(batch.answers)
                .map(|(id, answer)| {
                    if returned.remove(id) {
                        return PublishOutcome::Returned;
                    }
                    match answer {
                        Some(Answer::Ack) => PublishOutcome::Confirmed,
                        Some(Answer::Nack) => PublishOutcome::Nacked,
                        Some(Answer::Failed(reason)) => PublishOutcome::Unknown(reason),
                        Some(Answer::Unpublished(outcome)) => outcome,
                        None => PublishOutcome::Unknown("no confirm".to_owned()),
                    }
                })
                .collect();
            let _ = batch.reply.send(outcomes);
        }
        !complete
    });
}
