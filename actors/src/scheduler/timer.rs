//! The wake-up at a deadline, to a fraction of a millisecond.
//!
//! Tokio's timer counts whole milliseconds and rounds a deadline up to the
//! next one, and its driver parks with a millisecond timeout: a plain sleep
//! wakes 0 to 2 ms late, which was most of a reminder's lateness. So the
//! timer sleeps on tokio to shortly before the deadline, then the rest on a
//! blocking thread with the kernel's high-resolution timer (microseconds
//! late, the thread's timer slack). Waking early is harmless, never an early
//! delivery: the claim compares with the database clock and a round that
//! finds nothing due yet arms again.

use std::time::Duration;

use ractor::{ActorRef, Message};
use tokio::task::JoinHandle;
use tokio::time::Instant;

/// How long before the deadline the tokio sleep ends: more than its rounding.
#[cfg(not(test))]
const PRECISE_TAIL: Duration = Duration::from_millis(2);
/// The unit tests run on tokio's paused clock, which a thread's sleep does not
/// follow (and which stops advancing while one runs): there the timer is
/// tokio's alone.
#[cfg(test)]
const PRECISE_TAIL: Duration = Duration::ZERO;

/// Sends `message()` to `actor` after `delay`; aborting the handle cancels it.
pub fn send_after<M, F>(actor: ActorRef<M>, delay: Duration, message: F) -> JoinHandle<()>
where
    M: Message,
    F: FnOnce() -> M + Send + 'static,
{
    let deadline = Instant::now() + delay;
    tokio::spawn(async move {
        sleep_until(deadline).await;
        let _ = actor.send_message(message());
    })
}

/// Returns at `deadline`, to a fraction of a millisecond, never before it.
pub async fn sleep_until(deadline: Instant) {
    if let Some(coarse) = deadline.checked_sub(PRECISE_TAIL) {
        tokio::time::sleep_until(coarse).await;
    }
    let rest = deadline.saturating_duration_since(Instant::now());
    if !rest.is_zero() {
        let _ = tokio::task::spawn_blocking(move || std::thread::sleep(rest)).await;
    }
}
