//! Pages of `ListRooms` and `ListSessions`, and the bounds the [`crate::GatewayHandle`] checks
//! before a request reaches a Worker.
//!
//! It owns the page request and page types, the opaque page token (the last id of the previous
//! page, ordered by id across Workers, so a page is stable while Rooms come and go) and its
//! decoding. It must not talk to Workers: `handle.rs` asks each Worker for one page and merges.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use switchboard_core::CoreError;

/// One page of a listing to fetch.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PageRequest {
    /// Most items returned; 0 means `listing.default_page_size`, more than
    /// `listing.max_page_size` is lowered to it.
    pub page_size: u32,
    /// Empty for the first page, else the `next_page_token` of the previous page.
    pub page_token: String,
}

/// One page of a listing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Page<T> {
    /// The items, ordered by id.
    pub items: Vec<T>,
    /// The token of the next page; empty when this is the last page.
    pub next_page_token: String,
}

/// The bounds the handle checks itself (from `[listing]` and `[signaling]`).
#[derive(Debug, Clone, Copy)]
pub(crate) struct HandleBounds {
    pub(crate) default_page_size: u32,
    pub(crate) max_page_size: u32,
    pub(crate) max_sdp_bytes: usize,
    /// When a Worker refuses new Rooms and Sessions (`[overload]`).
    pub(crate) overload: crate::driver::Overload,
}

impl HandleBounds {
    /// The page size a request gets.
    pub(crate) fn page_size(&self, asked: u32) -> usize {
        let n = if asked == 0 {
            self.default_page_size
        } else {
            asked.min(self.max_page_size)
        };
        n.max(1) as usize
    }

    /// Refuses an SDP over `signaling.max_sdp_bytes` before it is queued to a Worker (the Worker
    /// checks again: the core's contract).
    pub(crate) fn check_sdp(&self, sdp: &str) -> Result<(), CoreError> {
        if sdp.len() > self.max_sdp_bytes {
            return Err(CoreError::InvalidArgument {
                field: "sdp",
                reason: format!(
                    "is {} bytes, more than signaling.max_sdp_bytes ({})",
                    sdp.len(),
                    self.max_sdp_bytes
                ),
            });
        }
        Ok(())
    }
}

/// What a token lists, so that a token of one listing is refused by another.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Listing {
    Rooms,
    Sessions,
}

impl Listing {
    fn prefix(self) -> &'static str {
        match self {
            Self::Rooms => "r1:",
            Self::Sessions => "s1:",
        }
    }
}

/// The token naming the page after the item with id `last`.
pub(crate) fn encode_token(listing: Listing, last: &str) -> String {
    URL_SAFE_NO_PAD.encode(format!("{}{last}", listing.prefix()))
}

/// The id after which the requested page starts (`None` for the first page), parsed with
/// `parse`. A token that no page of this listing produced is `InvalidArgument` on `page_token`.
pub(crate) fn decode_token<T>(
    listing: Listing,
    token: &str,
    parse: impl FnOnce(&str) -> Option<T>,
) -> Result<Option<T>, CoreError> {
    if token.is_empty() {
        return Ok(None);
    }
    let bad = || CoreError::InvalidArgument {
        field: "page_token",
        reason: "not a next_page_token of this listing".into(),
    };
    // Ids are short (`MAX_ID_LEN`): a long token is refused before decoding.
    if token.len() > 512 {
        return Err(bad());
    }
    let bytes = URL_SAFE_NO_PAD.decode(token).map_err(|_| bad())?;
    let text = String::from_utf8(bytes).map_err(|_| bad())?;
    let id = text.strip_prefix(listing.prefix()).ok_or_else(bad)?;
    parse(id).map(Some).ok_or_else(bad)
}

/// Merges the pages of several Workers (each at most `size + 1` items after the same id) into one
/// page of `size`, ordered by `id`, with the token of the next page if there is one.
pub(crate) fn merge<T>(
    listing: Listing,
    mut items: Vec<T>,
    size: usize,
    id: impl Fn(&T) -> String,
) -> Page<T> {
    items.sort_by_key(&id);
    let next_page_token = if items.len() > size {
        items.truncate(size);
        items
            .last()
            .map_or(String::new(), |t| encode_token(listing, &id(t)))
    } else {
        String::new()
    };
    Page {
        items,
        next_page_token,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_round_trip_and_refuse_other_listings_and_garbage() {
        let t = encode_token(Listing::Rooms, "room-7");
        let parse = |s: &str| Some(s.to_string());
        assert_eq!(
            decode_token(Listing::Rooms, &t, parse).unwrap(),
            Some("room-7".to_string())
        );
        assert_eq!(decode_token(Listing::Rooms, "", parse).unwrap(), None);
        for bad in [
            encode_token(Listing::Sessions, "room-7"),
            "!!".to_string(),
            "x".repeat(600),
        ] {
            let e = decode_token(Listing::Rooms, &bad, parse).unwrap_err();
            assert!(e.to_string().contains("page_token"), "{e}");
        }
    }

    #[test]
    fn a_merged_page_has_a_token_only_when_more_follow() {
        let p = merge(Listing::Rooms, vec![3, 1, 2], 2, |n| n.to_string());
        assert_eq!(p.items, vec![1, 2]);
        assert_eq!(p.next_page_token, encode_token(Listing::Rooms, "2"));
        let p = merge(Listing::Rooms, vec![2, 1], 2, |n| n.to_string());
        assert!(p.next_page_token.is_empty());
    }
}
