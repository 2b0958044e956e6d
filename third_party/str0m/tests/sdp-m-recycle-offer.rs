//! `RtcConfig::set_recycle_mlines(true)`: our own offers put a new m-line into a
//! stopped one (new mid, new msid) instead of appending, so the m-line count stays
//! bounded by the concurrent medias.

use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use str0m::media::{Direction, MediaKind, Mid};
use str0m::{Event, Rtc, RtcError};
use tracing::info_span;

mod common;
use common::{TestRtc, init_crypto_default, init_log, progress};

fn mlines(sdp: &str) -> Vec<&str> {
    sdp.split("\r\nm=").skip(1).collect()
}

fn msid_of<'a>(sdp: &'a str, mid: Mid) -> Option<&'a str> {
    let s = mlines(sdp)
        .into_iter()
        .find(|s| s.contains(&format!("a=mid:{mid}\r\n")))?;
    s.lines().find(|l| l.starts_with("a=msid:"))
}

/// The sending side (`l`) offers; returns the offer SDP.
fn offer(
    l: &mut TestRtc,
    r: &mut TestRtc,
    f: impl FnOnce(&mut str0m::change::SdpApi) -> Option<Mid>,
) -> Result<(Option<Mid>, String), RtcError> {
    let mut api = l.rtc.sdp_api();
    let mid = f(&mut api);
    let (offer, pending) = api.apply().expect("a change");
    let sdp = offer.to_sdp_string();
    let answer = r.rtc.sdp_api().accept_offer(offer)?;
    l.rtc.sdp_api().accept_answer(pending, answer)?;
    Ok((mid, sdp))
}

/// Sends Opus on `mid` for 200 ms and returns whether `r` received it on that mid.
fn audio_flows(l: &mut TestRtc, r: &mut TestRtc, mid: Mid) -> Result<bool, RtcError> {
    r.events.clear();
    let pt = l.params_opus().pt();
    let until = l.duration() + Duration::from_millis(200);
    while l.duration() < until {
        let wallclock = l.start + l.duration();
        let time = l.duration().into();
        l.writer(mid)
            .expect("writer for the new mid")
            .write(pt, wallclock, time, vec![1_u8; 80])?;
        progress(l, r)?;
    }
    Ok(r
        .events
        .iter()
        .any(|(_, e)| matches!(e, Event::MediaData(d) if d.mid == mid)))
}

fn connected(recycle: bool) -> Result<(TestRtc, TestRtc), RtcError> {
    let now = Instant::now();
    let mut l = TestRtc::new_with_rtc(
        info_span!("L"),
        Rtc::builder().set_recycle_mlines(recycle).build(now),
    );
    let mut r = TestRtc::new_with_rtc(info_span!("R"), Rtc::builder().build(now));
    l.set_forced_time_advance(Duration::from_millis(1));
    r.set_forced_time_advance(Duration::from_millis(1));
    l.add_host_candidate((Ipv4Addr::new(1, 1, 1, 1), 1000).into());
    r.add_host_candidate((Ipv4Addr::new(2, 2, 2, 2), 2000).into());
    offer(&mut l, &mut r, |api| {
        api.add_channel("data".into());
        None
    })?;
    while !(l.is_connected() && r.is_connected()) {
        progress(&mut l, &mut r)?;
    }
    Ok((l, r))
}

#[test]
pub fn fifty_join_leave_cycles_keep_the_mline_count() -> Result<(), RtcError> {
    init_log();
    init_crypto_default();
    let (mut l, mut r) = connected(true)?;

    // Two concurrent medias (plus the application m-line): one stays, one is replaced
    // 50 times, each time stopped in one offer and replaced in the next.
    let (steady, _) = offer(&mut l, &mut r, |api| {
        Some(api.add_media(MediaKind::Video, Direction::SendOnly, None, None, None))
    })?;
    let (mut current, mut sdp) = offer(&mut l, &mut r, |api| {
        Some(api.add_media(MediaKind::Audio, Direction::SendOnly, None, None, None))
    })?;
    let mut current = current.take().unwrap();
    assert_eq!(mlines(&sdp).len(), 3);

    for cycle in 0..50 {
        let old_msid = msid_of(&sdp, current).expect("msid").to_string();
        offer(&mut l, &mut r, |api| {
            api.stop_media(current);
            None
        })?;
        let (new, new_sdp) = offer(&mut l, &mut r, |api| {
            Some(api.add_media(MediaKind::Audio, Direction::SendOnly, None, None, None))
        })?;
        let new = new.unwrap();
        sdp = new_sdp;

        assert_eq!(mlines(&sdp).len(), 3, "cycle {cycle}: {sdp}");
        assert_ne!(new, current, "a recycled m-line has a new mid");
        assert!(msid_of(&sdp, current).is_none(), "old mid gone: {sdp}");
        let new_msid = msid_of(&sdp, new).expect("msid").to_string();
        assert_ne!(new_msid, old_msid, "a recycled m-line has a new msid");
        assert!(r.media(new).is_some() && r.media(current).is_none());
        assert!(l.media(steady.unwrap()).is_some());
        current = new;

        if cycle % 10 == 9 {
            assert!(audio_flows(&mut l, &mut r, current)?, "cycle {cycle}: no audio");
        }
    }
    Ok(())
}

#[test]
pub fn stop_and_add_in_one_offer_appends_then_recycles() -> Result<(), RtcError> {
    init_log();
    init_crypto_default();
    let (mut l, mut r) = connected(true)?;
    let (first, _) = offer(&mut l, &mut r, |api| {
        Some(api.add_media(MediaKind::Audio, Direction::SendOnly, None, None, None))
    })?;
    // The peer has not seen `first` stopped yet: its slot can't be taken in this offer.
    let (second, sdp) = offer(&mut l, &mut r, |api| {
        api.stop_media(first.unwrap());
        Some(api.add_media(MediaKind::Audio, Direction::SendOnly, None, None, None))
    })?;
    assert_eq!(mlines(&sdp).len(), 3, "{sdp}");
    // Now it can.
    let (third, sdp) = offer(&mut l, &mut r, |api| {
        api.stop_media(second.unwrap());
        Some(api.add_media(MediaKind::Video, Direction::SendOnly, None, None, None))
    })?;
    assert_eq!(mlines(&sdp).len(), 3, "{sdp}");
    // `third` is video: send audio on a fourth m-line, which takes `second`'s slot.
    let (fourth, sdp) = offer(&mut l, &mut r, |api| {
        Some(api.add_media(MediaKind::Audio, Direction::SendOnly, None, None, None))
    })?;
    assert_eq!(mlines(&sdp).len(), 3, "{sdp}");
    assert!(l.media(third.unwrap()).is_some());
    assert!(audio_flows(&mut l, &mut r, fourth.unwrap())?);
    Ok(())
}

#[test]
pub fn default_appends() -> Result<(), RtcError> {
    init_log();
    init_crypto_default();
    let (mut l, mut r) = connected(false)?;
    let (first, _) = offer(&mut l, &mut r, |api| {
        Some(api.add_media(MediaKind::Audio, Direction::SendOnly, None, None, None))
    })?;
    offer(&mut l, &mut r, |api| {
        api.stop_media(first.unwrap());
        None
    })?;
    let (_, sdp) = offer(&mut l, &mut r, |api| {
        Some(api.add_media(MediaKind::Audio, Direction::SendOnly, None, None, None))
    })?;
    assert_eq!(mlines(&sdp).len(), 3, "{sdp}");
    Ok(())
}
