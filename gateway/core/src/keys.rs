//! The core's internal keys: [`RoomKey`], [`SessionKey`] and [`TrackKey`], handed out by one
//! [`KeyGen`] per [`crate::Sfu`].
//!
//! They index the core's own maps and never leave it (backends see [`crate::RoomId`],
//! [`crate::SessionId`] and [`crate::TrackId`]). Each is its own type, so a Session's key can never
//! be used where a Track's is meant. They are chosen locally, so they need no protection against
//! hash flooding. This file must not know what the keys point at.

/// Key of a Room inside one Sfu.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) struct RoomKey(u64);

/// Key of a Session inside one Sfu.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) struct SessionKey(u64);

/// Key of a published Track (its TrackIn) inside one Sfu; a subscriber's TrackOut of it is found
/// under the same key in the subscriber's Session.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) struct TrackKey(u64);

/// Hands out keys from one counter, so they are unique and ordered by creation across all kinds.
#[derive(Debug)]
pub(crate) struct KeyGen {
    next: u64,
}

impl Default for KeyGen {
    fn default() -> Self {
        Self { next: 1 }
    }
}

impl KeyGen {
    fn next(&mut self) -> u64 {
        let k = self.next;
        self.next += 1;
        k
    }

    pub(crate) fn room(&mut self) -> RoomKey {
        RoomKey(self.next())
    }

    pub(crate) fn session(&mut self) -> SessionKey {
        SessionKey(self.next())
    }

    pub(crate) fn track(&mut self) -> TrackKey {
        TrackKey(self.next())
    }
}

#[cfg(test)]
impl SessionKey {
    /// A key for the crate's unit tests.
    pub(crate) fn test(n: u64) -> Self {
        Self(n)
    }
}
