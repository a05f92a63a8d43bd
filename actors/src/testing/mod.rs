//! Test support, for this crate's tests and (with the `testing` feature) for
//! the service's: in-memory fakes of the ports, the store contract every
//! [`ScheduleStore`](crate::ports::ScheduleStore) must meet, and a paused-time
//! wait.

pub mod contract;
mod fakes;

use std::time::Duration;

pub use fakes::{Disposition, FakeBroker, FakeFeed, FakeRow, FakeStore, Published};

/// Lets (virtual, when paused) time pass in small steps until `done` holds;
/// fails after `limit`.
pub async fn advance_until(limit: Duration, mut done: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + limit;
    while !done() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "condition not met within {limit:?}"
        );
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}
