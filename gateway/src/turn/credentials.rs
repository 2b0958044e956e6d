//! Time-limited TURN credentials: the shared-secret scheme of coturn's `use-auth-secret`
//! (draft-uberti-behave-turn-rest), and the stateless nonces of the embedded server.
//!
//! `username = "<unix expiry>:<identity>"`, `password = base64(HMAC-SHA1(secret, username))`.
//! Anyone holding the secret (the gateway, a coturn with `--static-auth-secret`) can check a
//! credential without storing it; it stops working at the expiry. This module owns the formats
//! and the HMACs; it does no IO and keeps no state.

use std::net::SocketAddr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use aws_lc_rs::hmac;
use base64::Engine;
use base64::engine::general_purpose::STANDARD;

/// A minted username and password, for an `RTCIceServer`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TurnCredential {
    /// `"<unix expiry>:<identity>"`.
    pub username: String,
    /// `base64(HMAC-SHA1(secret, username))`.
    pub password: String,
    /// When the credential stops being accepted.
    pub expires_at: SystemTime,
}

/// Mints a credential for `identity` valid for `ttl` from `now`.
pub fn mint_credential(
    secret: &[u8],
    identity: &str,
    ttl: Duration,
    now: SystemTime,
) -> TurnCredential {
    let expiry = now
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .saturating_add(ttl)
        .as_secs();
    let username = format!("{expiry}:{identity}");
    let password = password_for(secret, &username);
    TurnCredential {
        username,
        password,
        expires_at: UNIX_EPOCH + Duration::from_secs(expiry),
    }
}

/// The password belonging to `username` under `secret`.
pub fn password_for(secret: &[u8], username: &str) -> String {
    let key = hmac::Key::new(hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY, secret);
    STANDARD.encode(hmac::sign(&key, username.as_bytes()).as_ref())
}

/// Why a username is refused before its password is even looked at.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum CredentialError {
    /// Not `<digits>[:<identity>]`.
    #[error("username is not <unix expiry>:<identity>")]
    Malformed,
    /// The expiry has passed.
    #[error("credential expired")]
    Expired,
}

/// Checks the expiry in `username` and returns the identity (empty when the username is only a
/// timestamp, which coturn also accepts).
pub fn check_username(username: &str, now: SystemTime) -> Result<&str, CredentialError> {
    let (ts, identity) = username.split_once(':').unwrap_or((username, ""));
    if ts.is_empty() || ts.len() > 20 || !ts.bytes().all(|b| b.is_ascii_digit()) {
        return Err(CredentialError::Malformed);
    }
    let expiry: u64 = ts.parse().map_err(|_| CredentialError::Malformed)?;
    let now = now.duration_since(UNIX_EPOCH).unwrap_or_default().as_secs();
    if expiry <= now {
        return Err(CredentialError::Expired);
    }
    Ok(identity)
}

/// The identity part of a username (after the first `:`; empty when there is none), whether or
/// not the username is still valid.
pub(crate) fn identity_of(username: &str) -> &str {
    username.split_once(':').map_or("", |(_, id)| id)
}

/// Whole seconds until the expiry in a username [`check_username`] accepted, at least 1 and at
/// most `u32::MAX` (0 for a username it would refuse).
pub(crate) fn seconds_left(username: &str, now: SystemTime) -> u32 {
    let ts = username.split_once(':').map_or(username, |(ts, _)| ts);
    let Ok(expiry) = ts.parse::<u64>() else {
        return 0;
    };
    let now = now.duration_since(UNIX_EPOCH).unwrap_or_default().as_secs();
    u32::try_from(expiry.saturating_sub(now)).unwrap_or(u32::MAX)
}

/// Issues and checks NONCEs without storing them: `<expiry hex><mac hex>`, the MAC binding the
/// expiry to the client's transport address.
pub(crate) struct NonceKey {
    key: hmac::Key,
    lifetime: Duration,
}

impl NonceKey {
    pub(crate) fn new(random: &[u8; 32], lifetime: Duration) -> Self {
        Self {
            key: hmac::Key::new(hmac::HMAC_SHA256, random),
            lifetime,
        }
    }

    fn mac(&self, expiry: u64, client: SocketAddr) -> String {
        let mut ctx = hmac::Context::with_key(&self.key);
        ctx.update(&expiry.to_be_bytes());
        ctx.update(client.to_string().as_bytes());
        let tag = ctx.sign();
        tag.as_ref()[..12]
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
    }

    /// A fresh nonce for `client`.
    pub(crate) fn issue(&self, client: SocketAddr, now: SystemTime) -> String {
        let expiry = now
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .saturating_add(self.lifetime)
            .as_secs();
        format!("{expiry:016x}{}", self.mac(expiry, client))
    }

    /// Whether `nonce` was issued to `client` and has not expired.
    pub(crate) fn check(&self, nonce: &str, client: SocketAddr, now: SystemTime) -> bool {
        if nonce.len() != 16 + 24 || !nonce.is_ascii() {
            return false;
        }
        let Ok(expiry) = u64::from_str_radix(&nonce[..16], 16) else {
            return false;
        };
        let now = now.duration_since(UNIX_EPOCH).unwrap_or_default().as_secs();
        expiry > now
            && aws_lc_rs::constant_time::verify_slices_are_equal(
                &nonce.as_bytes()[16..],
                self.mac(expiry, client).as_bytes(),
            )
            .is_ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_vector() {
        // Computed independently (Python: base64(hmac.new(b"north", b"1700000000:alice",
        // sha1).digest())).
        assert_eq!(
            password_for(b"north", "1700000000:alice"),
            "Cd/49soE35ICqcJF/bCTn8Z4OyE="
        );
    }

    #[test]
    fn mint_and_check() {
        let now = UNIX_EPOCH + Duration::from_secs(1_000_000);
        let c = mint_credential(b"s", "ss_x", Duration::from_secs(60), now);
        assert_eq!(c.username, "1000060:ss_x");
        assert_eq!(check_username(&c.username, now), Ok("ss_x"));
        assert_eq!(
            check_username(&c.username, now + Duration::from_secs(60)),
            Err(CredentialError::Expired)
        );
        assert_eq!(check_username("x:ss", now), Err(CredentialError::Malformed));
        assert_eq!(check_username("", now), Err(CredentialError::Malformed));
        assert_eq!(check_username("9999999", now), Ok(""));
        assert_eq!(seconds_left(&c.username, now), 60);
        assert_eq!(seconds_left("9999999999999:x", now), u32::MAX);
        assert_eq!(seconds_left("x:ss", now), 0);
        assert_eq!(identity_of("5:ss_x:y"), "ss_x:y");
        assert_eq!(identity_of("5"), "");
    }

    #[test]
    fn nonces_bind_client_and_expire() {
        let k = NonceKey::new(&[7; 32], Duration::from_secs(10));
        let a: SocketAddr = "127.0.0.1:1".parse().unwrap();
        let b: SocketAddr = "127.0.0.1:2".parse().unwrap();
        let now = UNIX_EPOCH + Duration::from_secs(5000);
        let n = k.issue(a, now);
        assert!(k.check(&n, a, now));
        assert!(!k.check(&n, b, now));
        assert!(!k.check(&n, a, now + Duration::from_secs(10)));
        assert!(!k.check("garbage", a, now));
        assert!(!k.check(&"é".repeat(20), a, now));
    }
}
