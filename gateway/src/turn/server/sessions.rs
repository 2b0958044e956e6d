//! Credentials bound to Sessions: which identities are live Sessions (their allocations may be
//! refreshed past the credential's expiry) and which are revoked (their Session ended: their
//! allocations are gone and their credentials are refused, 401, until they would have expired
//! anyway).
//!
//! Owns the two tables; they are bounded: an identity is live from its `CreateSession` until its
//! `SessionClosed`, and revoked until `now + turn.credential_ttl_secs` (no credential minted
//! before the revocation outlives that), at most [`MAX_TRACKED`] of each. It must not decide
//! anything about allocations beyond ending a revoked identity's.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use switchboard_core::{EventKind, SessionCloseReason, SfuEvent};

use super::{FiveTuple, Shared, lock};
use crate::events::{EventBody, EventStreamError, EventSubscription};

/// Most identities held live, and most held revoked. Past it a new Session's credentials simply
/// expire with their lifetime (no live exception), and the revocation closest to its end is
/// forgotten first.
pub(super) const MAX_TRACKED: usize = 1 << 18;

/// The live and revoked identities.
#[derive(Debug, Default)]
pub(super) struct Sessions {
    live: HashSet<String>,
    /// Identity → when to forget it.
    revoked: HashMap<String, SystemTime>,
}

impl Sessions {
    pub(super) fn is_live(&self, identity: &str) -> bool {
        self.live.contains(identity)
    }

    pub(super) fn is_revoked(&self, identity: &str) -> bool {
        self.revoked.contains_key(identity)
    }

    fn start(&mut self, identity: &str) {
        if !self.is_revoked(identity) && self.live.len() < MAX_TRACKED {
            self.live.insert(identity.to_string());
        }
    }

    fn revoke(&mut self, identity: &str, forget_at: SystemTime) {
        self.live.remove(identity);
        if self.revoked.len() >= MAX_TRACKED
            && !self.revoked.contains_key(identity)
            && let Some(first) = self
                .revoked
                .iter()
                .min_by_key(|(_, t)| **t)
                .map(|(k, _)| k.clone())
        {
            self.revoked.remove(&first);
        }
        self.revoked.insert(identity.to_string(), forget_at);
    }

    /// Forgets revocations whose credentials have expired anyway.
    pub(super) fn forget_expired(&mut self, now: SystemTime) {
        self.revoked.retain(|_, t| *t > now);
    }
}

impl Shared {
    /// `identity` is a new Session's (credentials were just minted for it).
    pub(crate) fn session_started(&self, identity: &str) {
        lock(&self.sessions).start(identity);
    }

    /// The Session `identity` ended: its allocations end now and its credentials are refused
    /// until they would have expired.
    pub(crate) fn revoke(&self, identity: &str) {
        let ttl = Duration::from_secs(self.config.credential_ttl_secs);
        lock(&self.sessions).revoke(identity, SystemTime::now() + ttl);
        let gone: Vec<FiveTuple> = lock(&self.state)
            .allocations
            .values()
            .filter(|a| a.identity == identity)
            .map(|a| a.five)
            .collect();
        for five in &gone {
            self.remove(five);
        }
        tracing::debug!(
            identity,
            allocations = gone.len(),
            "TURN credentials revoked"
        );
    }

    /// Revokes the identity of every Session that closes, until the event stream ends. When it
    /// falls behind, closes may have been missed: every live Session loses its exception to
    /// credential expiry (safe: the sweep then ends every allocation whose credential expired).
    pub(crate) async fn watch_sessions(self: Arc<Self>, mut events: EventSubscription) {
        loop {
            let ev = tokio::select! {
                _ = self.cancel.cancelled() => return,
                ev = events.next() => ev,
            };
            match ev {
                Ok(e) => match &e.body {
                    // At shutdown the Sessions' DTLS close alerts may still be on their way
                    // through the relays; the server stops after the Workers and drops
                    // everything then.
                    EventBody::Sfu(SfuEvent {
                        kind:
                            EventKind::SessionClosed {
                                reason: SessionCloseReason::GatewayShutdown,
                                ..
                            },
                        ..
                    }) => {}
                    EventBody::Sfu(SfuEvent {
                        session: Some(id),
                        kind: EventKind::SessionClosed { .. },
                        ..
                    }) => self.revoke(id.as_str()),
                    _ => {}
                },
                Err(EventStreamError::Lagged { missed }) => {
                    tracing::warn!(
                        missed,
                        "TURN fell behind the event stream; live Sessions' credentials now end \
                         at their expiry"
                    );
                    lock(&self.sessions).live.clear();
                }
                Err(EventStreamError::Closed) => return,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_revoked_identity_cannot_come_back_and_is_forgotten_at_its_expiry() {
        let mut s = Sessions::default();
        let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1000);
        s.start("a");
        assert!(s.is_live("a") && !s.is_revoked("a"));
        s.revoke("a", t0 + Duration::from_secs(600));
        assert!(!s.is_live("a") && s.is_revoked("a"));
        s.start("a");
        assert!(!s.is_live("a"), "a late registration does not revive it");
        s.forget_expired(t0 + Duration::from_secs(599));
        assert!(s.is_revoked("a"));
        s.forget_expired(t0 + Duration::from_secs(600));
        assert!(!s.is_revoked("a"));
    }

    #[test]
    fn the_tables_are_bounded() {
        let mut s = Sessions::default();
        let t0 = SystemTime::UNIX_EPOCH;
        for i in 0..MAX_TRACKED + 5 {
            s.start(&i.to_string());
            s.revoke(&format!("r{i}"), t0 + Duration::from_secs(i as u64 + 1));
        }
        assert_eq!(s.live.len(), MAX_TRACKED);
        assert_eq!(s.revoked.len(), MAX_TRACKED);
        assert!(!s.is_revoked("r0"), "the soonest to expire went first");
        assert!(s.is_revoked(&format!("r{}", MAX_TRACKED + 4)));
    }
}
