//! Capped exponential backoff with jitter, shared by every retry in the actor
//! system (actor restarts, contention polls), so retries neither hammer a
//! recovering server nor fall into lock-step across replicas.

use std::time::Duration;

/// Delays growing from `min` by doubling up to `max`, each scaled by a random
/// factor in [0.75, 1.25] (never above `max`).
#[derive(Debug, Clone)]
pub struct Backoff {
    min: Duration,
    max: Duration,
    attempt: u32,
}

impl Backoff {
    /// A backoff whose first delay is about `min` and which never exceeds `max`.
    pub fn new(min: Duration, max: Duration) -> Self {
        Self {
            min,
            max: max.max(min),
            attempt: 0,
        }
    }

    /// The delay before the next attempt; each call doubles the base delay.
    pub fn next_delay(&mut self) -> Duration {
        let base = self
            .min
            .saturating_mul(1u32.checked_shl(self.attempt).unwrap_or(u32::MAX))
            .min(self.max);
        self.attempt = self.attempt.saturating_add(1);
        let jittered = base.mul_f64(0.75 + fastrand::f64() * 0.5);
        jittered.min(self.max)
    }

    /// Starts again from `min`, after a success.
    pub fn reset(&mut self) {
        self.attempt = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grows_by_doubling_within_jitter_and_stays_capped() {
        let min = Duration::from_millis(100);
        let max = Duration::from_secs(3);
        let mut backoff = Backoff::new(min, max);
        for attempt in 0..40u32 {
            let delay = backoff.next_delay();
            let base = min.saturating_mul(2u32.saturating_pow(attempt)).min(max);
            assert!(
                delay >= base.mul_f64(0.75),
                "attempt {attempt}: {delay:?} < 0.75 × {base:?}"
            );
            assert!(delay <= max, "attempt {attempt}: {delay:?} above the cap");
        }
        backoff.reset();
        assert!(backoff.next_delay() <= min.mul_f64(1.25));
    }
}
