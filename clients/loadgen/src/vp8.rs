//! The synthetic VP8 the load generator publishes and reads back: payload descriptor, frame
//! header (what the SFU's key-frame detection reads) and the send stamp after it.
//!
//! Pure functions on byte slices; no state, no I/O.

/// A VP8 key-frame header (frame tag with bit 0 clear, start code 9d 01 2a, 320x240) and a
/// delta-frame header (bit 0 set): what the SFU's key-frame detection reads.
const VP8_KEY: [u8; 10] = [0x10, 0x02, 0x00, 0x9d, 0x01, 0x2a, 0x40, 0x01, 0xf0, 0x00];
const VP8_DELTA: [u8; 3] = [0x11, 0x02, 0x00];

/// The payload of one video packet: a VP8 payload descriptor (S set on the first packet of the
/// frame), then on the first packet the VP8 frame header and the send stamp.
pub fn video_payload(first: bool, key: bool, len: usize, sent_us: u64, frame: u64) -> Vec<u8> {
    let mut v = Vec::with_capacity(len);
    if first {
        v.push(0x10);
        v.extend_from_slice(if key { &VP8_KEY[..] } else { &VP8_DELTA[..] });
        v.extend_from_slice(&sent_us.to_le_bytes());
    } else {
        v.push(0x00);
    }
    v.resize(len, 0x80 | (frame % 127) as u8);
    v
}

/// If `payload` starts a VP8 frame: whether it is a key frame, and the send stamp after the
/// frame header.
pub fn frame_start(p: &[u8]) -> Option<(bool, u64)> {
    let b0 = *p.first()?;
    let (x, s, pid) = (b0 & 0x80 != 0, b0 & 0x10 != 0, b0 & 0x07);
    if !s || pid != 0 {
        return None;
    }
    let mut i = 1;
    if x {
        let ext = *p.get(i)?;
        i += 1;
        if ext & 0x80 != 0 {
            i += if *p.get(i)? & 0x80 != 0 { 2 } else { 1 };
        }
        if ext & 0x40 != 0 {
            i += 1;
        }
        if ext & 0x30 != 0 {
            i += 1;
        }
    }
    let key = *p.get(i)? & 0x01 == 0;
    let at = i + if key { VP8_KEY.len() } else { VP8_DELTA.len() };
    let stamp = u64::from_le_bytes(p.get(at..at + 8)?.try_into().ok()?);
    Some((key, stamp))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frame_start_reads_the_stamp_with_and_without_picture_id() {
        let p = video_payload(true, true, 100, 123_456, 1);
        assert_eq!(frame_start(&p), Some((true, 123_456)));
        let d = video_payload(true, false, 100, 7, 1);
        assert_eq!(frame_start(&d), Some((false, 7)));
        assert_eq!(frame_start(&video_payload(false, false, 100, 7, 1)), None);
        // An SFU may add a 15-bit picture id: X=1, I=1, M=1.
        let mut ext = vec![0x90, 0x80, 0x81, 0x23];
        ext.extend_from_slice(&p[1..]);
        assert_eq!(frame_start(&ext), Some((true, 123_456)));
    }
}
