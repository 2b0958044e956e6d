//! `RtcConfig::set_send_on_remote_media(false)`: m-lines a remote offer adds are answered
//! without our send direction (`sendrecv` → `recvonly`, `recvonly` → `inactive`), with no
//! SSRC or msid of ours, until the application turns sending on.

use std::time::Instant;

use str0m::media::{Direction, MediaKind, Mid};
use str0m::Rtc;
use tracing::info_span;

mod common;
use common::{TestRtc, init_crypto_default, init_log, negotiate};

fn section<'a>(sdp: &'a str, mid: Mid) -> &'a str {
    sdp.split("\r\nm=")
        .find(|s| s.contains(&format!("a=mid:{mid}\r\n")))
        .unwrap_or_else(|| panic!("no m-section for {mid}: {sdp}"))
}

fn pair(send_on_remote_media: bool) -> (TestRtc, TestRtc) {
    let now = Instant::now();
    let peer = TestRtc::new_with_rtc(info_span!("PEER"), Rtc::builder().build(now));
    let sfu = TestRtc::new_with_rtc(
        info_span!("SFU"),
        Rtc::builder()
            .set_send_on_remote_media(send_on_remote_media)
            .build(now),
    );
    (peer, sfu)
}

/// The peer offers; returns the answer SDP.
fn offer_answer(
    peer: &mut TestRtc,
    sfu: &mut TestRtc,
    f: impl FnOnce(&mut str0m::change::SdpApi) -> Vec<Mid>,
) -> (Vec<Mid>, String) {
    let mut api = peer.rtc.sdp_api();
    let mids = f(&mut api);
    let (offer, pending) = api.apply().unwrap();
    let answer = sfu.rtc.sdp_api().accept_offer(offer).unwrap();
    let sdp = answer.to_sdp_string();
    peer.rtc.sdp_api().accept_answer(pending, answer).unwrap();
    (mids, sdp)
}

#[test]
pub fn publishing_mlines_are_answered_recvonly() {
    init_log();
    init_crypto_default();
    let (mut peer, mut sfu) = pair(false);

    let (mids, sdp) = offer_answer(&mut peer, &mut sfu, |api| {
        vec![
            api.add_media(MediaKind::Audio, Direction::SendRecv, None, None, None),
            api.add_media(MediaKind::Video, Direction::SendRecv, None, None, None),
            api.add_media(MediaKind::Video, Direction::RecvOnly, None, None, None),
        ]
    });
    for (mid, want) in [
        (mids[0], "a=recvonly"),
        (mids[1], "a=recvonly"),
        (mids[2], "a=inactive"),
    ] {
        let s = section(&sdp, mid);
        assert!(s.contains(want), "{mid}: {s}");
        assert!(!s.contains("a=ssrc:"), "SSRC of ours on {mid}: {s}");
        assert!(!s.contains("a=msid:"), "msid of ours on {mid}: {s}");
        assert_eq!(sfu.media(mid).unwrap().direction(), want[2..].into());
    }
    assert_eq!(peer.media(mids[0]).unwrap().direction(), Direction::SendOnly);

    // A renegotiation offer from the peer keeps them receive-only.
    let (_, sdp) = offer_answer(&mut peer, &mut sfu, |api| {
        vec![api.add_media(MediaKind::Audio, Direction::SendRecv, None, None, None)]
    });
    assert!(section(&sdp, mids[0]).contains("a=recvonly"), "{sdp}");
    assert!(section(&sdp, mids[2]).contains("a=inactive"), "{sdp}");

    // The application can still send on one: it renegotiates, and it sticks.
    negotiate(&mut sfu, &mut peer, |api| {
        api.set_direction(mids[0], Direction::SendRecv)
    });
    assert_eq!(sfu.media(mids[0]).unwrap().direction(), Direction::SendRecv);
    let (_, sdp) = offer_answer(&mut peer, &mut sfu, |api| {
        vec![api.add_media(MediaKind::Video, Direction::SendRecv, None, None, None)]
    });
    let s = section(&sdp, mids[0]);
    assert!(s.contains("a=sendrecv") && s.contains("a=msid:"), "{s}");
}

#[test]
pub fn default_answers_sendrecv_with_our_ssrc() {
    init_log();
    init_crypto_default();
    let (mut peer, mut sfu) = pair(true);
    let (mids, sdp) = offer_answer(&mut peer, &mut sfu, |api| {
        vec![api.add_media(MediaKind::Audio, Direction::SendRecv, None, None, None)]
    });
    let s = section(&sdp, mids[0]);
    assert!(s.contains("a=sendrecv") && s.contains("a=ssrc:") && s.contains("a=msid:"), "{s}");
}

#[test]
pub fn our_own_mlines_are_not_affected() {
    init_log();
    init_crypto_default();
    let (mut peer, mut sfu) = pair(false);
    let mid = negotiate(&mut sfu, &mut peer, |api| {
        api.add_media(MediaKind::Video, Direction::SendOnly, None, None, None)
    });
    // The peer re-offers our sendonly m-line as recvonly: we keep sending.
    let (_, sdp) = offer_answer(&mut peer, &mut sfu, |api| {
        vec![api.add_media(MediaKind::Audio, Direction::SendRecv, None, None, None)]
    });
    let s = section(&sdp, mid);
    assert!(s.contains("a=sendonly") && s.contains("a=msid:"), "{s}");
}
