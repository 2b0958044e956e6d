//! TURN credential policy for Sessions: which ICE servers a new Session's Peer is handed, with
//! credentials minted for that Session (identity = the Session id).
//!
//! Owns the list built at start-up (the embedded server, then `[[ice_servers]]` in order) and the
//! minting per Session. It must not talk to any server, keep per-Session state of its own (the
//! embedded server records which identities are live Sessions, see `sessions`), or log secrets.

use std::time::{Duration, SystemTime};

use super::EmbeddedTurn;
use super::credentials::mint_credential;
use super::settings::{EXTERNAL_CREDENTIAL_TTL_SECS, IceServerConfig};

/// An ICE server for a Peer's `RTCPeerConnection` (`iceServers` entry).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct IceServer {
    /// `stun:`, `turn:` or `turns:` URLs.
    pub urls: Vec<String>,
    /// TURN username (minted ones are `<unix expiry>:<session id>`).
    pub username: String,
    /// TURN password.
    pub credential: String,
}

/// The ICE servers of every new Session: the embedded TURN server (when running) and the
/// configured `[[ice_servers]]` (credentials minted per Session for those with a
/// `shared_secret`, valid `credential_ttl_secs` or a day).
#[derive(Debug, Clone, Default)]
pub(crate) struct IceServers {
    configured: Vec<IceServerConfig>,
    embedded: Option<EmbeddedTurn>,
}

impl IceServers {
    pub(crate) fn new(configured: Vec<IceServerConfig>, embedded: Option<EmbeddedTurn>) -> Self {
        Self {
            configured,
            embedded,
        }
    }

    /// The list for the Session `identity`, credentials minted at `now`.
    pub(crate) fn for_session(&self, identity: &str, now: SystemTime) -> Vec<IceServer> {
        let mut out = Vec::with_capacity(self.configured.len() + 1);
        if let Some(e) = &self.embedded {
            let c = e.mint_for_session(identity, now);
            out.push(IceServer {
                urls: e.urls.clone(),
                username: c.username,
                credential: c.password,
            });
        }
        for s in &self.configured {
            let (username, credential) = if s.shared_secret.is_empty() {
                (s.username.clone(), s.credential.clone())
            } else {
                let ttl = match s.credential_ttl_secs {
                    0 => EXTERNAL_CREDENTIAL_TTL_SECS,
                    t => t,
                };
                let c = mint_credential(
                    s.shared_secret.as_bytes(),
                    identity,
                    Duration::from_secs(ttl),
                    now,
                );
                (c.username, c.password)
            };
            out.push(IceServer {
                urls: s.urls.clone(),
                username,
                credential,
            });
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::turn::credentials::{check_username, password_for};

    #[test]
    fn static_entries_pass_through_and_secret_entries_are_minted_per_session() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000);
        let servers = IceServers::new(
            vec![
                IceServerConfig {
                    urls: vec!["stun:stun.example.org".into()],
                    ..Default::default()
                },
                IceServerConfig {
                    urls: vec!["turn:turn.example.org".into()],
                    shared_secret: "s".into(),
                    ..Default::default()
                },
                IceServerConfig {
                    urls: vec!["turn:short.example.org".into()],
                    shared_secret: "s".into(),
                    credential_ttl_secs: 60,
                    ..Default::default()
                },
            ],
            None,
        );
        let l = servers.for_session("ss_1", now);
        assert_eq!(l.len(), 3);
        assert_eq!(l[0].username, "");
        assert_eq!(l[1].username, "87400:ss_1", "a day by default");
        assert_eq!(l[1].credential, password_for(b"s", "87400:ss_1"));
        assert_eq!(l[2].username, "1060:ss_1");
        assert_eq!(check_username(&l[2].username, now), Ok("ss_1"));
    }
}
