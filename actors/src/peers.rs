//! Where each actor of one daemon can be reached right now.
//!
//! Only the supervisor writes an entry, when it (re)starts an actor; senders
//! read the entry at send time, so a restarted actor is found without anyone
//! holding a stale reference. A process-wide name registry would do the same
//! but would forbid two daemons in one process (as in tests).

use std::sync::{Arc, RwLock};

use ractor::{ActorRef, Message};

use crate::publisher::PublisherMessage;
use crate::scheduler::SchedulerMessage;

/// The current reference of one actor, if it is running.
pub struct Slot<M: Message>(Arc<RwLock<Option<ActorRef<M>>>>);

impl<M: Message> Clone for Slot<M> {
    fn clone(&self) -> Self {
        Self(Arc::clone(&self.0))
    }
}

impl<M: Message> Default for Slot<M> {
    fn default() -> Self {
        Self(Arc::new(RwLock::new(None)))
    }
}

impl<M: Message> Slot<M> {
    /// The running actor, if any.
    pub fn get(&self) -> Option<ActorRef<M>> {
        self.0
            .read()
            .unwrap_or_else(|poison| poison.into_inner())
            .clone()
    }

    /// Sends to the running actor; a message for an actor that is not running
    /// is dropped, as its successor starts from the database anyway.
    pub fn send(&self, message: M) -> bool {
        self.get()
            .is_some_and(|actor| actor.send_message(message).is_ok())
    }

    pub(crate) fn set(&self, actor: Option<ActorRef<M>>) {
        *self.0.write().unwrap_or_else(|poison| poison.into_inner()) = actor;
    }
}

/// The directory of one daemon's actors.
#[derive(Clone, Default)]
pub struct Peers {
    pub scheduler: Slot<SchedulerMessage>,
    pub publisher: Slot<PublisherMessage>,
}
