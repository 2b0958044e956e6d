//! [`EventBus`]: stamps every event with a gateway-wide sequence number and a wall-clock time, and
//! fans it out to subscribers ([`EventSubscription`]).
//!
//! Workers publish from their own threads. The short lock around "next sequence number + send"
//! keeps sequence order equal to delivery order; it is taken once per control-plane event, never
//! per packet.

use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use switchboard_core::{RoomId, SessionId, SfuEvent};
use tokio::sync::broadcast;

/// What an event says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EventBody {
    /// An event of a Room or Session.
    Sfu(SfuEvent),
    /// The gateway is shutting down; the last event of every stream.
    Draining,
}

/// One event as backends see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GatewayEvent {
    /// Strictly increasing by one per gateway process, from 1.
    pub sequence: u64,
    /// When it was published.
    pub time: SystemTime,
    /// What happened.
    pub body: EventBody,
}

impl GatewayEvent {
    /// The Room concerned, if any.
    pub fn room(&self) -> Option<&RoomId> {
        match &self.body {
            EventBody::Sfu(e) => Some(&e.room),
            EventBody::Draining => None,
        }
    }

    /// The Session concerned, if any.
    pub fn session(&self) -> Option<&SessionId> {
        match &self.body {
            EventBody::Sfu(e) => e.session.as_ref(),
            EventBody::Draining => None,
        }
    }
}

/// Which events a subscription wants.
#[derive(Debug, Clone, Default)]
pub struct EventFilter {
    /// Only this Room.
    pub room: Option<RoomId>,
    /// Only this Session.
    pub session: Option<SessionId>,
}

impl EventFilter {
    /// Whether `e` passes. `Draining` passes every filter.
    pub fn matches(&self, e: &GatewayEvent) -> bool {
        if matches!(e.body, EventBody::Draining) {
            return true;
        }
        if let Some(r) = &self.room
            && e.room() != Some(r)
        {
            return false;
        }
        if let Some(s) = &self.session
            && e.session() != Some(s)
        {
            return false;
        }
        true
    }
}

/// The gateway's event fan-out.
#[derive(Debug)]
pub struct EventBus {
    sequence: Mutex<u64>,
    tx: broadcast::Sender<Arc<GatewayEvent>>,
}

impl EventBus {
    /// A bus whose subscribers may fall `capacity` events behind before they lag.
    pub fn new(capacity: usize) -> Self {
        let (tx, _) = broadcast::channel(capacity);
        Self {
            sequence: Mutex::new(0),
            tx,
        }
    }

    /// Stamps and sends an event.
    pub fn publish(&self, body: EventBody) {
        // A poisoned lock only means another publisher panicked mid-send; the counter is intact.
        let mut seq = self.sequence.lock().unwrap_or_else(|e| e.into_inner());
        *seq += 1;
        let ev = Arc::new(GatewayEvent {
            sequence: *seq,
            time: SystemTime::now(),
            body,
        });
        // No subscribers is fine: nobody is watching.
        let _ = self.tx.send(ev);
    }

    /// Subscribes from the next event on.
    pub fn subscribe(&self, filter: EventFilter) -> EventSubscription {
        EventSubscription {
            rx: self.tx.subscribe(),
            filter,
        }
    }
}

/// Why an [`EventSubscription`] ended.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum EventStreamError {
    /// The subscriber read too slowly and `missed` events were lost.
    #[error("event stream fell behind and lost {missed} events")]
    Lagged {
        /// How many.
        missed: u64,
    },
    /// The gateway is gone.
    #[error("the gateway stopped")]
    Closed,
}

/// A stream of events that pass a filter.
#[derive(Debug)]
pub struct EventSubscription {
    rx: broadcast::Receiver<Arc<GatewayEvent>>,
    filter: EventFilter,
}

impl EventSubscription {
    /// The next matching event. After a `Draining` event the caller should stop.
    pub async fn next(&mut self) -> Result<Arc<GatewayEvent>, EventStreamError> {
        loop {
            match self.rx.recv().await {
                Ok(e) if self.filter.matches(&e) => return Ok(e),
                Ok(_) => {}
                Err(broadcast::error::RecvError::Lagged(missed)) => {
                    return Err(EventStreamError::Lagged { missed });
                }
                Err(broadcast::error::RecvError::Closed) => return Err(EventStreamError::Closed),
            }
        }
    }
}
