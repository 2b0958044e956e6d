//! Authentication of TURN requests: the long-term credential check (RFC 8489 §9.2.4) with the
//! shared-secret passwords, the live-Session exception to credential expiry, revocation, and the
//! error responses (signed once a request is authenticated, with REALM and NONCE on a challenge).
//!
//! It keeps no state of its own: nonces are stateless, and which identities are live or revoked
//! is `sessions`' table. It must not answer an unauthenticated request with anything but a
//! challenge or a plain error.

use std::sync::Arc;
use std::time::SystemTime;

use turn_types::stun::attribute::{
    AttributeType, ErrorCode, Fingerprint, MessageIntegrity, MessageIntegritySha256, Nonce, Realm,
    Software, Username,
};
use turn_types::stun::message::{
    IntegrityAlgorithm, LongTermKeyCredentials, Message, MessageIntegrityCredentials,
    MessageWriteExt, MessageWriteVec,
};
use turn_types::stun::prelude::{Attribute, AttributeStaticType, MessageWrite};

use super::allocations::Allocation;
use super::{FiveTuple, Shared, bump, lock, method_name};
use crate::turn::credentials::{self, CredentialError};

/// A request refused: the code, whether the response can be signed, and for 401/438 the
/// challenge attributes.
pub(super) struct Refusal {
    pub(super) code: u16,
    pub(super) sign: Option<(MessageIntegrityCredentials, IntegrityAlgorithm)>,
    challenge: bool,
    unknown: Vec<AttributeType>,
}

impl Refusal {
    pub(super) fn plain(code: u16) -> Self {
        Self {
            code,
            sign: None,
            challenge: false,
            unknown: Vec::new(),
        }
    }
    fn challenge(code: u16) -> Self {
        Self {
            challenge: true,
            ..Self::plain(code)
        }
    }
    pub(super) fn signed(code: u16, auth: &Authed) -> Self {
        Self {
            sign: Some((auth.creds.clone(), auth.algo)),
            ..Self::plain(code)
        }
    }
}

/// A request whose credentials checked out.
pub(super) struct Authed {
    pub(super) username: String,
    pub(super) identity: String,
    /// Whole seconds a lifetime granted now may last: until the credential expires (at least
    /// 1), or unbounded (`u32::MAX`) for a live Session, which revocation ends instead.
    pub(super) credential_left: u32,
    creds: MessageIntegrityCredentials,
    algo: IntegrityAlgorithm,
}

impl Shared {
    pub(super) fn refuse(&self, five: FiveTuple, msg: &Message<'_>, r: Refusal) -> Vec<u8> {
        let c = &self.counters;
        match r.code {
            401 | 438 => bump(&c.refused_unauthorized),
            403 => bump(&c.refused_forbidden),
            486 => bump(&c.refused_quota),
            508 => bump(&c.refused_capacity),
            _ => bump(&c.refused_other),
        }
        tracing::debug!(client = %crate::telemetry::Redact(five.client), transport = ?five.transport, method = method_name(msg), code = r.code, "TURN request refused");
        let mut b = Message::builder_error(msg, MessageWriteVec::with_capacity(128));
        if r.code == ErrorCode::UNKNOWN_ATTRIBUTE {
            b = Message::unknown_attributes(msg, &r.unknown, MessageWriteVec::with_capacity(128));
        } else if let Ok(e) = ErrorCode::builder(r.code).build() {
            let _ = b.add_attribute(&e);
        }
        if r.challenge {
            if let Ok(realm) = Realm::new(&self.config.realm) {
                let _ = b.add_attribute(&realm);
            }
            if let Ok(nonce) = Nonce::new(&self.nonces.issue(five.client, SystemTime::now())) {
                let _ = b.add_attribute(&nonce);
            }
        }
        if let Some((creds, algo)) = &r.sign {
            let _ = b.add_message_integrity(creds, *algo);
        }
        let _ = b.add_fingerprint();
        b.finish()
    }

    pub(super) fn success(msg: &Message<'_>) -> MessageWriteVec {
        let mut b = Message::builder_success(msg, MessageWriteVec::with_capacity(128));
        if let Ok(s) = Software::new("switchboard") {
            let _ = b.add_attribute(&s);
        }
        b
    }

    pub(super) fn finish_signed(mut b: MessageWriteVec, auth: &Authed) -> Vec<u8> {
        let _ = b.add_message_integrity(&auth.creds, auth.algo);
        let _ = b.add_fingerprint();
        b.finish()
    }

    /// The long-term credential check. A live Session's credential works past its expiry (the
    /// Session's end revokes it instead); a revoked identity is refused like an expired
    /// credential.
    pub(super) fn authenticate(
        &self,
        five: FiveTuple,
        msg: &Message<'_>,
    ) -> Result<Authed, Refusal> {
        if !msg.has_attribute(MessageIntegrity::TYPE)
            && !msg.has_attribute(MessageIntegritySha256::TYPE)
        {
            return Err(Refusal::challenge(ErrorCode::UNAUTHORIZED));
        }
        let (Ok(user), Ok(realm), Ok(nonce)) = (
            msg.attribute::<Username>(),
            msg.attribute::<Realm>(),
            msg.attribute::<Nonce>(),
        ) else {
            return Err(Refusal::plain(ErrorCode::BAD_REQUEST));
        };
        let now = SystemTime::now();
        if !self.nonces.check(nonce.nonce(), five.client, now) {
            return Err(Refusal::challenge(ErrorCode::STALE_NONCE));
        }
        if realm.realm() != self.config.realm {
            return Err(Refusal::challenge(ErrorCode::UNAUTHORIZED));
        }
        let username = user.username();
        let identity = match credentials::check_username(username, now) {
            Ok(identity) => identity,
            Err(CredentialError::Expired) => credentials::identity_of(username),
            Err(_) => return Err(Refusal::challenge(ErrorCode::UNAUTHORIZED)),
        };
        let (live, revoked) = {
            let s = lock(&self.sessions);
            (s.is_live(identity), s.is_revoked(identity))
        };
        let expired = credentials::seconds_left(username, now) == 0;
        if revoked || (expired && !live) {
            return Err(Refusal::challenge(ErrorCode::UNAUTHORIZED));
        }
        let password = credentials::password_for(&self.secret, username);
        let creds: MessageIntegrityCredentials =
            LongTermKeyCredentials::new(username.to_string(), password, self.config.realm.clone())
                .into();
        let Ok(algo) = msg.validate_integrity(&creds) else {
            return Err(Refusal::challenge(ErrorCode::UNAUTHORIZED));
        };
        let credential_left = if live {
            u32::MAX
        } else {
            credentials::seconds_left(username, now)
        };
        Ok(Authed {
            username: username.to_string(),
            identity: identity.to_string(),
            credential_left,
            creds,
            algo,
        })
    }

    /// Authenticates a request on an existing allocation (437 without one, 441 for another
    /// username) and checks its attributes against `known` (420).
    pub(super) fn authenticate_on(
        &self,
        five: FiveTuple,
        msg: &Message<'_>,
        known: &[AttributeType],
    ) -> Result<(Authed, Arc<Allocation>), Refusal> {
        let auth = self.authenticate(five, msg)?;
        let Some(alloc) = self.allocation(&five) else {
            return Err(Refusal::signed(ErrorCode::ALLOCATION_MISMATCH, &auth));
        };
        if alloc.username != auth.username {
            return Err(Refusal::signed(ErrorCode::WRONG_CREDENTIALS, &auth));
        }
        Self::check_unknown(msg, known, &auth)?;
        Ok((auth, alloc))
    }

    /// 420 (signed) naming the comprehension-required attributes outside `known` and the
    /// attributes every authenticated request may carry.
    pub(super) fn check_unknown(
        msg: &Message<'_>,
        known: &[AttributeType],
        auth: &Authed,
    ) -> Result<(), Refusal> {
        let unknown: Vec<AttributeType> = msg
            .iter_attributes()
            .map(|(_, a)| a.get_type())
            .filter(|t| t.comprehension_required() && !known.contains(t) && !COMMON.contains(t))
            .collect();
        if unknown.is_empty() {
            Ok(())
        } else {
            Err(Refusal {
                unknown,
                ..Refusal::signed(ErrorCode::UNKNOWN_ATTRIBUTE, auth)
            })
        }
    }
}

/// DONT-FRAGMENT (RFC 8656 §18.8): accepted and ignored.
pub(super) const DONT_FRAGMENT: AttributeType = AttributeType::new(0x001A);

/// Attributes every authenticated request may carry.
const COMMON: [AttributeType; 6] = [
    Username::TYPE,
    Realm::TYPE,
    Nonce::TYPE,
    MessageIntegrity::TYPE,
    MessageIntegritySha256::TYPE,
    Fingerprint::TYPE,
];
