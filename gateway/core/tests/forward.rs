//! The Forwarder's pure logic: key-frame gating, seamless layer switches, pause; and key-frame
//! detection per codec (including truncated and garbage payloads).

use std::time::{Duration, Instant};

use str0m::format::Codec;
use str0m::media::Rid;
use switchboard_core::testing::{Forwarder, Layer, is_keyframe};

fn l(r: &str) -> Layer {
    Layer::Simulcast(Rid::from(r))
}

#[test]
fn starts_at_a_keyframe_and_switches_layers_seamlessly() {
    let t0 = Instant::now();
    let mut f = Forwarder::default();
    f.target = Some(l("h"));
    assert_eq!(
        f.on_packet(t0, l("h"), 5000, 90_000, false, 90_000),
        None,
        "waits for a key frame"
    );
    let a = f.on_packet(t0, l("h"), 5001, 90_000, true, 90_000).unwrap();
    assert_eq!(a.seq, 1);
    let b = f
        .on_packet(t0, l("h"), 5002, 93_000, false, 90_000)
        .unwrap();
    assert_eq!((b.seq, b.ts.wrapping_sub(a.ts)), (2, 3000));
    assert_eq!(
        f.on_packet(t0, l("q"), 100, 7, true, 90_000),
        None,
        "not the target"
    );
    f.target = Some(l("q"));
    assert!(
        f.on_packet(t0, l("q"), 101, 7, false, 90_000).is_none(),
        "switch waits for a key frame"
    );
    assert!(
        f.on_packet(t0, l("h"), 5003, 93_000, false, 90_000)
            .is_some(),
        "keeps the old layer meanwhile"
    );
    let c = f
        .on_packet(
            t0 + Duration::from_millis(33),
            l("q"),
            102,
            10,
            true,
            90_000,
        )
        .unwrap();
    assert_eq!(c.seq, 4, "sequence continues");
    assert_eq!(
        c.ts.wrapping_sub(b.ts),
        2970,
        "timestamp advances by the elapsed time"
    );
    assert!(
        f.on_packet(t0, l("h"), 5004, 96_000, true, 90_000)
            .is_none(),
        "old layer dropped"
    );
    let d = f.on_packet(t0, l("q"), 103, 3010, false, 90_000).unwrap();
    assert_eq!((d.seq, d.ts.wrapping_sub(c.ts)), (5, 3000));
    f.paused = true;
    assert!(f.on_packet(t0, l("q"), 104, 6010, true, 90_000).is_none());
}

#[test]
fn detects_keyframes_per_codec() {
    // VP8: S=1, PID=0, no extension; frame tag 0x10 (key) vs 0x11 (inter).
    assert!(is_keyframe(Codec::Vp8, &[0x10, 0x10, 0x02, 0x00]));
    assert!(!is_keyframe(Codec::Vp8, &[0x10, 0x11, 0x02, 0x00]));
    // VP8 with X, I (15-bit picture id), L, T/K.
    assert!(is_keyframe(
        Codec::Vp8,
        &[0x90, 0xf0, 0x80, 0x01, 0x05, 0x20, 0x10]
    ));
    assert!(
        !is_keyframe(Codec::Vp8, &[0x80, 0xf0, 0x80, 0x01, 0x05, 0x20, 0x10]),
        "S=0"
    );
    assert!(!is_keyframe(Codec::Vp8, &[0x90, 0xf0]), "truncated");
    assert!(is_keyframe(Codec::Vp9, &[0x08]));
    assert!(!is_keyframe(Codec::Vp9, &[0x48]));
    assert!(is_keyframe(Codec::H264, &[0x65]));
    assert!(is_keyframe(Codec::H264, &[0x7c, 0x85]));
    assert!(!is_keyframe(Codec::H264, &[0x7c, 0x05]));
    assert!(is_keyframe(Codec::H264, &[0x18, 0x00, 0x02, 0x67, 0x42]));
    assert!(!is_keyframe(Codec::H264, &[0x41]));
    for n in 0..8 {
        let junk = vec![0xffu8; n];
        for c in [Codec::Vp8, Codec::Vp9, Codec::H264, Codec::Av1] {
            let _ = is_keyframe(c, &junk);
        }
    }
}

#[test]
fn finds_the_primary_encoding_of_a_red_payload() {
    use switchboard_core::testing::red_primary;
    // One redundant block of 3 bytes (F=1, PT 111, ts offset 960, length 3), then the primary
    // header (F=0, PT 111) and the blocks.
    let mut p = vec![0xef, 0x0f, 0x00, 0x03, 0x6f];
    p.extend_from_slice(&[1, 2, 3]);
    p.extend_from_slice(&[9, 9]);
    assert_eq!(red_primary(&p), Some(8..10));
    assert_eq!(&p[red_primary(&p).unwrap()], &[9, 9]);
    // Only a primary.
    assert_eq!(red_primary(&[0x6f, 7, 7]), Some(1..3));
    // Malformed: a block longer than the payload, truncated headers, empty.
    assert_eq!(red_primary(&[0xef, 0x0f, 0x03, 0xff, 0x6f, 1]), None);
    assert_eq!(red_primary(&[0xef, 0x0f]), None);
    assert_eq!(red_primary(&[]), None);
}
