//! The RFC 4571 splitter of ICE-TCP connections, as a pure state machine: bytes in as the socket
//! delivers them, whole frames out. It owns the framing rules (a 16-bit big-endian length, never
//! zero, at most `tcp_max_frame_bytes`; the first frame must look like STUN) and does no IO: the
//! reader task in `tcp.rs` feeds it, and the fuzz body feeds it arbitrary splits.

/// Why a stream was given up as garbage.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum BadFraming {
    /// A zero length or one over the limit.
    Length(usize),
    /// The first frame is not STUN (every ICE-TCP connection starts with a check).
    FirstNotStun,
}

/// Splits a byte stream into RFC 4571 frames. Holds at most one partial frame plus the last
/// chunk pushed.
#[derive(Debug)]
pub(crate) struct Deframer {
    buf: Vec<u8>,
    /// Bytes of `buf` already returned as frames.
    start: usize,
    max_frame_bytes: usize,
    first: bool,
}

impl Deframer {
    pub(crate) fn new(max_frame_bytes: usize) -> Self {
        Self {
            buf: Vec::new(),
            start: 0,
            max_frame_bytes,
            first: true,
        }
    }

    /// Appends bytes read from the stream.
    pub(crate) fn push(&mut self, data: &[u8]) {
        if self.start > 0 {
            self.buf.drain(..self.start);
            self.start = 0;
        }
        self.buf.extend_from_slice(data);
    }

    /// Bytes held (a partial frame and frames not taken yet).
    #[cfg(any(test, feature = "testing"))]
    pub(crate) fn buffered(&self) -> usize {
        self.buf.len() - self.start
    }

    /// The next whole frame, `Ok(None)` when more bytes are needed, or why the stream is garbage
    /// (it stays so: the connection must close).
    pub(crate) fn next_frame(&mut self) -> Result<Option<Vec<u8>>, BadFraming> {
        let rest = &self.buf[self.start..];
        let [hi, lo, ..] = *rest else {
            return Ok(None);
        };
        let len = usize::from(u16::from_be_bytes([hi, lo]));
        if len == 0 || len > self.max_frame_bytes {
            return Err(BadFraming::Length(len));
        }
        let Some(frame) = rest.get(2..2 + len) else {
            return Ok(None);
        };
        if self.first && !looks_like_stun(frame) {
            return Err(BadFraming::FirstNotStun);
        }
        self.first = false;
        let frame = frame.to_vec();
        self.start += 2 + len;
        Ok(Some(frame))
    }
}

/// Whether `buf` starts like a STUN message (RFC 5389: top two bits zero, the magic cookie).
pub(crate) fn looks_like_stun(buf: &[u8]) -> bool {
    buf.len() >= 20 && buf[0] & 0xC0 == 0 && buf[4..8] == [0x21, 0x12, 0xA4, 0x42]
}

/// Fuzz body: `data` is a stream cut into chunks at the sizes its first bytes give. Property: the
/// frames out are exactly those of splitting the whole stream at once (chunking never changes
/// the result), each within the limit and prefixed by its length in the stream, and the buffer
/// never holds more than one frame plus one chunk.
#[cfg(feature = "testing")]
pub fn fuzz_ice_tcp_frames(data: &[u8]) {
    const MAX: usize = 600;
    let (cuts, stream) = data.split_at(data.len().min(8));
    let whole = split_all(stream, MAX);
    let mut d = Deframer::new(MAX);
    let mut got = Vec::new();
    let mut rest = stream;
    let mut sizes = cuts.iter().map(|&c| usize::from(c) + 1).cycle();
    let mut verdict = Ok(());
    'outer: while !rest.is_empty() {
        let n = sizes.next().unwrap_or(rest.len()).min(rest.len());
        let (chunk, tail) = rest.split_at(n);
        rest = tail;
        d.push(chunk);
        assert!(
            d.buffered() <= 2 + MAX + 256,
            "buffer grew to {}",
            d.buffered()
        );
        loop {
            match d.next_frame() {
                Ok(Some(f)) => got.push(f),
                Ok(None) => break,
                Err(e) => {
                    verdict = Err(e);
                    break 'outer;
                }
            }
        }
    }
    assert_eq!((got.clone(), verdict), whole, "chunking changed the frames");
    let mut at = 0;
    for f in &got {
        assert!(!f.is_empty() && f.len() <= MAX);
        assert_eq!(&stream[at..at + 2], &(f.len() as u16).to_be_bytes());
        assert_eq!(&stream[at + 2..at + 2 + f.len()], &f[..]);
        at += 2 + f.len();
    }
}

#[cfg(feature = "testing")]
fn split_all(stream: &[u8], max: usize) -> (Vec<Vec<u8>>, Result<(), BadFraming>) {
    let mut d = Deframer::new(max);
    d.push(stream);
    let mut v = Vec::new();
    loop {
        match d.next_frame() {
            Ok(Some(f)) => v.push(f),
            Ok(None) => return (v, Ok(())),
            Err(e) => return (v, Err(e)),
        }
    }
}
