//! What the daemon depends on and whether each dependency works, for the
//! readiness endpoint. Actors and the supervisor record state changes; the
//! return value tells them whether to log (one line per change, not per try).

use std::sync::{Arc, Mutex};

/// A dependency of the daemon.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Component {
    /// Queries on the pool (claims, next-due) succeed.
    Database,
    /// The listener's dedicated LISTEN connection is up.
    Listener,
    /// The broker connection and its confirm channel are up.
    Broker,
}

/// State of one dependency.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ComponentStatus {
    pub ready: bool,
    /// Why it is not ready, or a note such as flow control while ready.
    pub detail: Option<String>,
}

/// A consistent copy of every component's state.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ReadinessReport {
    pub database: ComponentStatus,
    pub listener: ComponentStatus,
    pub broker: ComponentStatus,
}

impl ReadinessReport {
    /// Ready when every dependency is.
    pub fn ready(&self) -> bool {
        self.database.ready && self.listener.ready && self.broker.ready
    }
}

/// Shared, cheaply cloned readiness state.
#[derive(Debug, Clone, Default)]
pub struct Readiness(Arc<Mutex<ReadinessReport>>);

impl Readiness {
    /// Records a component's state; returns whether it changed.
    pub fn set(&self, component: Component, ready: bool, detail: Option<String>) -> bool {
        let mut report = self.0.lock().unwrap_or_else(|poison| poison.into_inner());
        let status = match component {
            Component::Database => &mut report.database,
            Component::Listener => &mut report.listener,
            Component::Broker => &mut report.broker,
        };
        let next = ComponentStatus { ready, detail };
        let changed = *status != next;
        *status = next;
        changed
    }

    /// The current state of everything.
    pub fn report(&self) -> ReadinessReport {
        self.0
            .lock()
            .unwrap_or_else(|poison| poison.into_inner())
            .clone()
    }
}
