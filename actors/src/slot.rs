//! Where a restartable actor can be reached right now.
//!
//! Only the supervisor empties a slot, when the actor it holds fails; the
//! actor's next incarnation fills it again. Users read the slot at send time,
//! so a restarted actor is found without anyone holding a stale reference. A
//! process-wide name registry would do the same but would forbid two daemons in
//! one process (as in tests).

use std::sync::{Arc, RwLock};

use ractor::{ActorRef, Message};

/// The current value of one restartable part (its mailbox, or a handle to it),
/// if it is running.
pub struct Slot<T>(Arc<RwLock<Option<T>>>);

impl<T> Clone for Slot<T> {
    fn clone(&self) -> Self {
        Self(Arc::clone(&self.0))
    }
}

impl<T> Default for Slot<T> {
    fn default() -> Self {
        Self(Arc::new(RwLock::new(None)))
    }
}

impl<T: Clone> Slot<T> {
    /// The running part, if any.
    pub fn get(&self) -> Option<T> {
        self.0
            .read()
            .unwrap_or_else(|poison| poison.into_inner())
            .clone()
    }

    /// Fills (or, with `None`, empties) the slot.
    pub fn set(&self, value: Option<T>) {
        *self.0.write().unwrap_or_else(|poison| poison.into_inner()) = value;
    }
}

impl<M: Message> Slot<ActorRef<M>> {
    /// Sends to the running actor; a message for an actor that is not running
    /// is dropped, as its successor starts from the database anyway.
    pub fn send(&self, message: M) -> bool {
        self.get()
            .is_some_and(|actor| actor.send_message(message).is_ok())
    }
}
