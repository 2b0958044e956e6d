//! The codec matrix: a publisher restricted to one video codec (VP8, VP9, H264 or AV1, plus
//! Opus) reaches a subscriber restricted to the same codec and one that supports every codec.
//! Forwarding starts at a key frame, so this also checks the key-frame detection of each codec
//! (a codec whose key frames are not recognised never starts forwarding). And Opus RED
//! (`red/48000/2`) passes through when both ends negotiate it.

mod support;

use std::time::Duration;

use str0m::media::MediaKind;
use support::*;
use switchboard_core::*;
use switchboard_testpeer::{Codec, Codecs, Publish, TrackStats};

fn av() -> Publish {
    Publish {
        audio: true,
        video: true,
        data_label: None,
        simulcast: false,
    }
}

/// What Peer `to` received of Peer `from`'s track of `kind`.
fn received(net: &Net, to: usize, from: usize, kind: MediaKind) -> Option<TrackStats> {
    net.published(from)
        .iter()
        .filter_map(|t| net.peer(to).stats.tracks.get(t))
        .find(|s| s.kind == Some(kind))
        .cloned()
}

fn frames(net: &Net, to: usize, from: usize, kind: MediaKind) -> u64 {
    received(net, to, from, kind).map_or(0, |s| s.frames)
}

#[test]
fn each_video_codec_negotiates_and_forwards_from_a_key_frame() {
    for (codec, rtpmap) in [
        (Codec::Vp8, "VP8/90000"),
        (Codec::Vp9, "VP9/90000"),
        (Codec::H264, "H264/90000"),
        (Codec::Av1, "AV1/90000"),
    ] {
        let only = Codecs {
            video: Some(codec),
            red: false,
        };
        let mut net = Net::new();
        let room = net.room("codecs");
        let a = net.join_with_codecs(&room, "alice", av(), only);
        let b = net.join_with_codecs(&room, "bob", Publish::default(), only);
        let c = net.join(&room, "carol", Publish::default());
        net.run_until(
            Duration::from_secs(10),
            &format!("{codec}: bob and carol receive alice's audio and video"),
            |n| {
                [b, c].iter().all(|&to| {
                    frames(n, to, a, MediaKind::Video) >= 10
                        && frames(n, to, a, MediaKind::Audio) >= 10
                })
            },
        );
        for (to, who) in [(b, "bob (only this codec)"), (c, "carol (every codec)")] {
            let v = received(&net, to, a, MediaKind::Video).unwrap();
            assert_eq!(
                v.codec.as_deref(),
                Some(codec.to_string().as_str()),
                "{codec}: {who} receives the publisher's codec"
            );
            assert_eq!(
                v.first_was_keyframe,
                Some(true),
                "{codec}: {who}'s first frame is a key frame"
            );
            let audio = received(&net, to, a, MediaKind::Audio).unwrap();
            assert_eq!(audio.codec.as_deref(), Some("opus"));
        }
        // The gateway offered bob the publisher's codec.
        let sb = net.peers[b].session.clone();
        let offered = net
            .events_of(&sb)
            .into_iter()
            .any(|k| matches!(k, EventKind::NegotiationNeeded { sdp, .. } if sdp.contains(rtpmap)));
        assert!(offered, "{codec}: the offer to bob lists {rtpmap}");
    }
}

#[test]
fn opus_red_passes_through_when_both_ends_negotiate_it() {
    let red = Codecs {
        video: None,
        red: true,
    };
    let audio = Publish {
        audio: true,
        ..Default::default()
    };
    let mut net = Net::new();
    let room = net.room("red");
    let a = net.join_with_codecs(&room, "alice", audio, red);
    let b = net.join_with_codecs(&room, "bob", Publish::default(), red);
    let c = net.join(&room, "carol", Publish::default());
    net.run_until(
        Duration::from_secs(10),
        "bob and carol receive alice's audio",
        |n| frames(n, b, a, MediaKind::Audio) >= 20 && frames(n, c, a, MediaKind::Audio) >= 20,
    );
    let sb = net.peers[b].session.clone();
    let offered = net.events_of(&sb).into_iter().any(
        |k| matches!(k, EventKind::NegotiationNeeded { sdp, .. } if sdp.contains("red/48000/2")),
    );
    assert!(offered, "the gateway offers RED to bob");

    // Every 5th datagram toward (and from) bob is lost. RED carries each frame again in the
    // next packet, so bob still gets (almost) every frame: only a pass-through of RED can do
    // that, since audio has no retransmission.
    net.peers[b].loss_every = Some(5);
    let sent0 = net.peer(a).stats.audio_frames_sent;
    let (b0, c0) = (
        frames(&net, b, a, MediaKind::Audio),
        frames(&net, c, a, MediaKind::Audio),
    );
    net.run_for(Duration::from_secs(5));
    let sent = net.peer(a).stats.audio_frames_sent - sent0;
    let got_b = frames(&net, b, a, MediaKind::Audio) - b0;
    let got_c = frames(&net, c, a, MediaKind::Audio) - c0;
    assert!(sent >= 240, "alice sent {sent} frames in 5 s");
    assert!(
        got_b * 100 >= sent * 97,
        "bob recovered lost frames from RED: {got_b} of {sent}"
    );
    // Carol did not negotiate RED: she gets the primary Opus encoding (RED stripped).
    assert!(got_c * 100 >= sent * 97, "carol got {got_c} of {sent}");
    let carol_audio = received(&net, c, a, MediaKind::Audio).unwrap();
    assert_eq!(carol_audio.codec.as_deref(), Some("opus"));
}
