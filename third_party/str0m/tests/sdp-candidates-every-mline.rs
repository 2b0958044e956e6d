//! Local candidates are written into every m-section of our offers and answers,
//! followed by `a=end-of-candidates` when we are an ICE-lite agent.

use std::net::Ipv4Addr;

use str0m::media::{Direction, MediaKind};
use str0m::{Candidate, Rtc};
use tracing::info_span;

mod common;
use common::{TestRtc, init_crypto_default, init_log, negotiate};

/// The m-sections of an SDP, each as its text from `m=` to the next `m=`.
fn sections(sdp: &str) -> Vec<&str> {
    sdp.split("\r\nm=").skip(1).collect()
}

fn lite_and_full() -> (TestRtc, TestRtc) {
    let now = std::time::Instant::now();
    let mut lite = TestRtc::new_with_rtc(
        info_span!("LITE"),
        Rtc::builder().set_ice_lite(true).build(now),
    );
    let mut full = TestRtc::new_with_rtc(info_span!("FULL"), Rtc::builder().build(now));
    let c = Candidate::host((Ipv4Addr::new(1, 1, 1, 1), 1000).into(), "udp").unwrap();
    lite.add_local_candidate(c);
    let c = Candidate::host((Ipv4Addr::new(2, 2, 2, 2), 2000).into(), "udp").unwrap();
    full.add_local_candidate(c);
    (lite, full)
}

fn assert_every_section_has_candidates(sdp: &str, end_of_candidates: bool, host: &str) {
    let sections = sections(sdp);
    assert!(sections.len() >= 3, "expected 3 m-sections: {sdp}");
    for s in sections {
        let port0 = s.split(' ').nth(1) == Some("0");
        if port0 {
            assert!(!s.contains("a=candidate"), "stopped m-line with candidates: {s}");
            continue;
        }
        assert!(s.contains(host), "m-section without our candidate: {s}");
        let cand_pos = s.rfind("a=candidate").unwrap();
        match s.find("a=end-of-candidates") {
            Some(eoc) => {
                assert!(end_of_candidates, "full ICE agent wrote end-of-candidates: {s}");
                assert!(eoc > cand_pos, "end-of-candidates before a candidate: {s}");
            }
            None => assert!(!end_of_candidates, "no end-of-candidates: {s}"),
        }
    }
}

#[test]
pub fn lite_answer_has_candidates_in_every_mline() {
    init_log();
    init_crypto_default();
    let (mut lite, mut full) = lite_and_full();

    let (offer, pending) = full.span.in_scope(|| {
        let mut api = full.rtc.sdp_api();
        api.add_media(MediaKind::Audio, Direction::SendRecv, None, None, None);
        api.add_media(MediaKind::Video, Direction::SendRecv, None, None, None);
        api.add_channel("data".into());
        api.apply().unwrap()
    });
    // The full ICE offerer: candidates everywhere, but it may gather more later.
    assert_every_section_has_candidates(&offer.to_sdp_string(), false, "2.2.2.2 2000");

    let answer = lite
        .span
        .in_scope(|| lite.rtc.sdp_api().accept_offer(offer))
        .unwrap();
    assert_every_section_has_candidates(&answer.to_sdp_string(), true, "1.1.1.1 1000");
    full.span
        .in_scope(|| full.rtc.sdp_api().accept_answer(pending, answer))
        .unwrap();
}

#[test]
pub fn lite_offer_has_candidates_in_every_mline_but_stopped() {
    init_log();
    init_crypto_default();
    let (mut lite, mut full) = lite_and_full();

    let mids = negotiate(&mut full, &mut lite, |api| {
        api.add_channel("data".into());
        [
            api.add_media(MediaKind::Audio, Direction::SendRecv, None, None, None),
            api.add_media(MediaKind::Video, Direction::SendRecv, None, None, None),
        ]
    });
    // Renegotiation offered by the ICE-lite side: stop one m-line and add one.
    let (offer, _pending) = lite.span.in_scope(|| {
        let mut api = lite.rtc.sdp_api();
        api.stop_media(mids[0]);
        api.add_media(MediaKind::Video, Direction::SendOnly, None, None, None);
        api.apply().unwrap()
    });
    let sdp = offer.to_sdp_string();
    assert_eq!(sections(&sdp).len(), 4, "{sdp}");
    assert_every_section_has_candidates(&sdp, true, "1.1.1.1 1000");
}
