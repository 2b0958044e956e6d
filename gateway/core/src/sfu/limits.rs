//! Input bounds of the signaling path: how large an SDP may be, how many m-lines and candidates
//! it and a Session may hold, and how a parse error is told to the backend.
//!
//! It owns [`SignalingLimits`] and the cheap line scans that enforce them *before* str0m parses
//! anything (parsing a 4 MB SDP with thousands of m-lines blocks a Worker for seconds), and the
//! translation of str0m's parse errors into a line number and the offending line. It must not
//! touch an `Rtc` or change Session state: callers decide what to do with a refusal.

use std::collections::HashSet;

use super::Sfu;
use super::track::OutState;
use crate::error::CoreError;
use crate::keys::SessionKey;

/// Bounds on what a backend may hand the core for one Session (SDP and trickled candidates).
/// Each is a gateway config key in `[signaling]`; refusals name the key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SignalingLimits {
    /// Largest SDP (offer or answer) accepted, in bytes (`signaling.max_sdp_bytes`).
    pub max_sdp_bytes: usize,
    /// Most m-lines in one SDP (`signaling.max_mlines_per_sdp`).
    pub max_mlines_per_sdp: usize,
    /// Most m-lines one Session may have: those of its last SDP plus the TrackOuts the gateway
    /// still has to offer (`signaling.max_mlines_per_session`). A Peer offer or a `Subscribe`
    /// past it is refused, an automatic subscription skipped. A subscriber gets about two
    /// m-lines per other Participant, so this must fit a full Room.
    pub max_mlines_per_session: usize,
    /// Most distinct `a=candidate` lines in one SDP (`signaling.max_candidates_per_sdp`).
    pub max_candidates_per_sdp: usize,
    /// Most trickled remote candidates one Session accepts between ICE restarts
    /// (`signaling.max_remote_candidates`). str0m keeps at most 100 candidate pairs anyway.
    pub max_remote_candidates: usize,
}

impl Default for SignalingLimits {
    fn default() -> Self {
        Self {
            max_sdp_bytes: 4 << 20,
            max_mlines_per_sdp: 2048,
            max_mlines_per_session: 2048,
            max_candidates_per_sdp: 64,
            max_remote_candidates: 256,
        }
    }
}

/// What the line scan of an SDP found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct SdpShape {
    /// `m=` lines.
    pub(super) mlines: usize,
}

/// Checks an SDP against the limits with one pass over its lines (no parsing): its size, its
/// m-lines and its distinct candidates. Refusals are `InvalidArgument` on `sdp`, naming the key.
pub(super) fn check_sdp(sdp: &str, limits: &SignalingLimits) -> Result<SdpShape, CoreError> {
    let over = |what: String| CoreError::InvalidArgument {
        field: "sdp",
        reason: what,
    };
    if sdp.len() > limits.max_sdp_bytes {
        return Err(over(format!(
            "is {} bytes, more than signaling.max_sdp_bytes ({})",
            sdp.len(),
            limits.max_sdp_bytes
        )));
    }
    let mut mlines = 0usize;
    let mut candidates: HashSet<&str> = HashSet::new();
    for line in sdp.lines() {
        let line = line.trim_end();
        if line.starts_with("m=") {
            mlines += 1;
            if mlines > limits.max_mlines_per_sdp {
                return Err(over(format!(
                    "has more than signaling.max_mlines_per_sdp ({}) m-lines",
                    limits.max_mlines_per_sdp
                )));
            }
        } else if let Some(c) = line.strip_prefix("a=candidate:") {
            // The same candidate may be repeated in every m-section of a bundle: count it once.
            candidates.insert(c);
            if candidates.len() > limits.max_candidates_per_sdp {
                return Err(over(format!(
                    "has more than signaling.max_candidates_per_sdp ({}) distinct candidates",
                    limits.max_candidates_per_sdp
                )));
            }
        }
    }
    Ok(SdpShape { mlines })
}

/// The refusal of an SDP that would give a Session more m-lines than it may have.
pub(super) fn too_many_session_mlines(mlines: usize, limits: &SignalingLimits) -> CoreError {
    tracing::debug!(
        mlines,
        "refused: more m-lines than signaling.max_mlines_per_session"
    );
    CoreError::LimitReached {
        limit: "signaling.max_mlines_per_session",
        max: limits.max_mlines_per_session as u64,
    }
}

impl Sfu {
    /// The m-lines a Session has or will have once the gateway offered its queued TrackOuts:
    /// those of its last SDP plus the TrackOuts not yet in an applied SDP. Stopped m-lines stay
    /// in the SDP (str0m appends new ones after them), so they count.
    pub(super) fn session_mlines(&self, key: SessionKey) -> usize {
        let Some(s) = self.sessions.get(&key) else {
            return 0;
        };
        let unoffered = s
            .tracks_out
            .values()
            .filter(|o| matches!(o.state, OutState::ToOpen | OutState::Negotiating(_)))
            .count();
        s.sdp_mlines + unoffered
    }
}

/// Longest excerpt of an offending line quoted in an error.
const EXCERPT_CHARS: usize = 60;

/// A str0m parse error as one stable line for the backend, saying where the input is wrong.
///
/// str0m's text names the memory address where its parser stopped (`PointerOffset(0x…)`): an
/// address inside `input`. That address must never leave the process (it says where the heap
/// is), but it does tell where the error is, so it becomes a line number and an excerpt of that
/// line. Any other address-looking text is removed.
pub(super) fn parse_error(e: &dyn std::fmt::Display, input: &str) -> String {
    let text = e.to_string();
    let mut out = String::with_capacity(text.len());
    let mut at: Option<usize> = None;
    let mut rest = text.as_str();
    while let Some(i) = rest.find("PointerOffset(") {
        out.push_str(&rest[..i]);
        rest = &rest[i + "PointerOffset(".len()..];
        let end = rest.find(')').unwrap_or(rest.len());
        if at.is_none() {
            at = offset_in(&rest[..end], input);
        }
        rest = rest.get(end + 1..).unwrap_or("");
    }
    out.push_str(rest);
    let what = out
        .split('\n')
        .map(|l| l.trim().trim_end_matches(" at"))
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join("; ");
    match at.map(|off| line_at(input, off)) {
        Some((n, line)) => format!("line {n} ({line:?}): {what}"),
        None => what,
    }
}

/// The byte offset into `input` of the hexadecimal address `hex` (`0x…`), if it points into it.
fn offset_in(hex: &str, input: &str) -> Option<usize> {
    let addr = usize::from_str_radix(hex.trim().strip_prefix("0x")?, 16).ok()?;
    let base = input.as_ptr() as usize;
    let off = addr.checked_sub(base)?;
    (off <= input.len()).then_some(off)
}

/// The 1-based line number at byte `off` of `input` and that line, cut to [`EXCERPT_CHARS`].
fn line_at(input: &str, off: usize) -> (usize, String) {
    let mut off = off.min(input.len());
    while !input.is_char_boundary(off) {
        off -= 1;
    }
    let before = &input[..off];
    let n = before.matches('\n').count() + 1;
    let start = before.rfind('\n').map_or(0, |i| i + 1);
    let line = input[start..].lines().next().unwrap_or("").trim_end();
    let mut excerpt: String = line.chars().take(EXCERPT_CHARS).collect();
    if line.chars().count() > EXCERPT_CHARS {
        excerpt.push('…');
    }
    (n, excerpt)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_errors_name_a_line_and_no_memory_address() {
        let input = "v=0\r\no=- 1 2 IN IP4 0.0.0.0\r\nbogus line here\r\n";
        let at = input.as_ptr() as usize + input.find("bogus").unwrap();
        let e = format!("Parse error at PointerOffset({at:#x})\nUnexpected `b`\nExpected `a`\n");
        let msg = parse_error(&e, input);
        assert_eq!(
            msg,
            "line 3 (\"bogus line here\"): Parse error; Unexpected `b`; Expected `a`"
        );
        assert!(!msg.contains("0x"), "{msg}");
        // An address outside the input is dropped, not shown.
        let e = "Parse error at PointerOffset(0x10)\nUnexpected end of input";
        assert_eq!(
            parse_error(&e, input),
            "Parse error; Unexpected end of input"
        );
        assert_eq!(parse_error(&"plain", input), "plain");
    }

    #[test]
    fn long_lines_are_cut() {
        let long = "a=".to_string() + &"x".repeat(500);
        let (n, l) = line_at(&long, 100);
        assert_eq!(n, 1);
        assert_eq!(l.chars().count(), EXCERPT_CHARS + 1);
    }

    #[test]
    fn the_line_scan_counts_mlines_and_distinct_candidates() {
        let limits = SignalingLimits {
            max_sdp_bytes: 1000,
            max_mlines_per_sdp: 2,
            max_mlines_per_session: 2,
            max_candidates_per_sdp: 1,
            max_remote_candidates: 1,
        };
        let c = "a=candidate:1 1 udp 1 192.0.2.1 1000 typ host\r\n";
        let ok = format!("v=0\r\nm=audio 9 x 0\r\n{c}m=video 9 x 0\r\n{c}");
        assert_eq!(check_sdp(&ok, &limits).unwrap(), SdpShape { mlines: 2 });
        let three = format!("{ok}m=video 9 x 0\r\n");
        let e = check_sdp(&three, &limits).unwrap_err().to_string();
        assert!(e.contains("signaling.max_mlines_per_sdp"), "{e}");
        let two_candidates = format!("{ok}{}", c.replace("1000", "1001"));
        let e = check_sdp(&two_candidates, &limits).unwrap_err().to_string();
        assert!(e.contains("signaling.max_candidates_per_sdp"), "{e}");
        let big = "x".repeat(1001);
        let e = check_sdp(&big, &limits).unwrap_err().to_string();
        assert!(e.contains("signaling.max_sdp_bytes"), "{e}");
    }
}
