//! One str0m Peer of the load generator: it publishes synthetic media, receives what the SFU
//! forwards, and counts it.
//!
//! It owns the Peer's `Rtc` (RTP mode, so every received packet is decrypted and seen once, and
//! str0m sends honest receiver reports, NACKs and TWCC feedback for everything that arrived) and
//! its counters. It does no I/O: the media loop (`media.rs`) hands it datagrams and time, and it
//! hands datagrams back through a send function. It never blocks and never allocates per received
//! packet beyond what str0m does.
//!
//! Published media: Opus-like audio (one 20 ms packet every 20 ms) and VP8-like video at 30 fps,
//! 4 packets of 1000 bytes per frame (≈ 120 packets/s, ≈ 1 Mbit/s); key frames (8 packets) first
//! and on every key-frame request. The first packet of each frame, and every audio packet, carries
//! the send time (µs since the run's epoch, little endian) right after the codec header, so a
//! receiver measures one-way lateness; packets without a stamp take their frame's (same RTP
//! timestamp) or are placed by RTP time relative to the last stamped frame.

use std::cell::RefCell;
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::{Duration, Instant};

use str0m::change::{SdpAnswer, SdpOffer, SdpPendingOffer};
use str0m::channel::ChannelId;
use str0m::format::Codec;
use str0m::media::{
    Direction, KeyframeRequestKind, MediaKind, Mid, Pt, Rid, Simulcast, SimulcastLayer,
};
use str0m::net::{Protocol, Receive};
use str0m::rtp::{RtpPacket, RtpWrite};
use str0m::{Candidate, Event, Input, Output, Rtc, RtcError};

use crate::Error;
use crate::delay::Delays;
use crate::vp8::{frame_start, video_payload};

/// A packet later than this after its send time counts as late.
pub const LATE_AFTER: Duration = Duration::from_millis(500);
/// Video frames per second.
const FPS: u32 = 30;
/// Packets of a delta frame (key frames have twice as many) and their payload size (bytes, VP8
/// descriptor included).
const DELTA_PACKETS: usize = 4;
const VIDEO_PAYLOAD: usize = 1000;
/// Audio: one packet of this many bytes every 20 ms.
const AUDIO_PAYLOAD: usize = 80;
/// Simulcast layers: rid, packets per delta frame (key frames twice as many), payload bytes.
const LAYERS: [(&str, usize, usize); 3] = [("q", 1, 500), ("h", 2, 800), ("f", 4, 1000)];

/// What a Peer does.
#[derive(Debug, Clone, Copy, Default)]
pub struct PeerOptions {
    /// Publish one audio and one video track.
    pub publish: bool,
    /// Publish the video as three simulcast layers (`q`, `h`, `f`).
    pub simulcast: bool,
    /// Renegotiate over the data channel with JSON `{"type":"offer"|"answer","sdp":…}` (str0m's
    /// chat example) instead of through the backend.
    pub dc_signaling: bool,
    /// Index of the Room it joins (to know what it should receive).
    pub room: usize,
}

/// Counters of one Peer (cumulative).
#[derive(Debug, Clone, Copy, Default)]
pub struct Counters {
    /// RTP packets received and decrypted (audio and video, retransmissions included).
    pub received: u64,
    /// Of those, video.
    pub video: u64,
    /// Packets expected from the sequence numbers seen (per stream: highest − first + 1).
    pub expected: u64,
    /// Received packets later than [`LATE_AFTER`] after their send time.
    pub late: u64,
    /// Sum of lateness over received packets, µs (for the mean).
    pub delay_sum_us: u64,
    /// Packets published.
    pub sent: u64,
    /// Of those, audio.
    pub sent_audio: u64,
    /// Key-frame requests received (publishers).
    pub keyframe_requests: u64,
    /// ICE+DTLS connected.
    pub connected: bool,
    /// Where the SFU's first datagram came from (with several Workers: which Worker's socket).
    pub sfu_addr: Option<SocketAddr>,
    /// The Peer's `Rtc` failed or closed.
    pub failed: bool,
    /// From the start of the join (CreateSession or the HTTP offer) to the first complete key
    /// frame received.
    pub join: Option<Duration>,
}

/// A received RTP stream (one SSRC).
struct RxStream {
    ssrc: u32,
    video: bool,
    first_seq: u64,
    max_seq: u64,
    /// RTP timestamp and send time (µs) of the last frame whose first packet was seen.
    cur_ts: Option<(u32, u64)>,
    /// A key frame being received: its RTP timestamp, first sequence number, packets so far.
    key: Option<(u32, u64, u64)>,
    /// A complete key frame arrived (a decoder could start).
    keyed: bool,
    /// When we last asked for a key frame (PLI), like a decoder waiting for one.
    last_pli: Option<Instant>,
}

/// A receiver without a key frame asks again this often.
const PLI_INTERVAL: Duration = Duration::from_millis(500);

/// One published video layer.
struct TxLayer {
    rid: Option<Rid>,
    packets: usize,
    payload: usize,
    seq: u64,
    want_key: bool,
}

struct Publisher {
    audio_mid: Mid,
    video_mid: Mid,
    audio_seq: u64,
    layers: Vec<TxLayer>,
    next_audio: Option<Instant>,
    next_video: Option<Instant>,
    frames: u64,
    started: Option<Instant>,
}

/// One Peer: an `Rtc` plus what it publishes and counts.
pub struct Peer {
    rtc: Rtc,
    addr: SocketAddr,
    epoch: Instant,
    join_started: Instant,
    timeout: Instant,
    pending: Option<SdpPendingOffer>,
    channel: Option<ChannelId>,
    dc_signaling: bool,
    publisher: Option<Publisher>,
    simulcast: bool,
    room: usize,
    streams: Vec<RxStream>,
    counters: Counters,
    /// The media loop's delay histograms, shared by its Peers (one thread).
    delays: Rc<RefCell<Delays>>,
}

impl Peer {
    /// A Peer on the UDP socket bound at `addr`. `epoch` is the run's time origin (send stamps),
    /// `join_started` when its join began; received packets' delays go into `delays`.
    pub fn new(
        addr: SocketAddr,
        opts: PeerOptions,
        epoch: Instant,
        join_started: Instant,
        delays: Rc<RefCell<Delays>>,
    ) -> Self {
        let now = Instant::now();
        let mut rtc = Rtc::builder().set_rtp_mode(true).build(now);
        rtc.add_local_candidate(Candidate::host(addr, "udp").expect("a loopback host address"));
        let publisher = opts.publish.then(|| Publisher {
            audio_mid: Mid::from("a"),
            video_mid: Mid::from("v"),
            audio_seq: 1,
            layers: Vec::new(),
            next_audio: None,
            next_video: None,
            frames: 0,
            started: None,
        });
        Self {
            rtc,
            addr,
            epoch,
            join_started,
            timeout: now,
            pending: None,
            channel: None,
            dc_signaling: opts.dc_signaling,
            publisher,
            simulcast: opts.simulcast,
            room: opts.room,
            streams: Vec::new(),
            counters: Counters::default(),
            delays,
        }
    }

    /// The Peer's counters, with `expected` summed over its streams.
    pub fn counters(&self) -> Counters {
        let mut c = self.counters;
        c.expected = self
            .streams
            .iter()
            .map(|s| s.max_seq - s.first_seq + 1)
            .sum();
        c
    }

    /// Index of the Peer's Room.
    pub fn room(&self) -> usize {
        self.room
    }

    /// Whether this Peer publishes.
    pub fn publishes(&self) -> bool {
        self.publisher.is_some()
    }

    /// Creates the first offer: audio and video send-only when publishing, and always a data
    /// channel (receive-only Peers need one m-line; str0m's chat renegotiates over it).
    pub fn create_offer(&mut self, send: &mut dyn FnMut(SocketAddr, &[u8])) -> String {
        let simulcast = self.simulcast;
        let mut api = self.rtc.sdp_api();
        if let Some(p) = &mut self.publisher {
            p.audio_mid = api.add_media(MediaKind::Audio, Direction::SendOnly, None, None, None);
            let sim = simulcast.then(|| {
                let mut s = Simulcast::new();
                for (rid, _, _) in LAYERS {
                    s.add_send_layer(SimulcastLayer::new(rid));
                }
                s
            });
            p.video_mid = api.add_media(MediaKind::Video, Direction::SendOnly, None, None, sim);
            p.layers = if simulcast {
                LAYERS
                    .iter()
                    .map(|(rid, packets, payload)| TxLayer {
                        rid: Some(Rid::from(*rid)),
                        packets: *packets,
                        payload: *payload,
                        seq: 1,
                        want_key: true,
                    })
                    .collect()
            } else {
                vec![TxLayer {
                    rid: None,
                    packets: DELTA_PACKETS,
                    payload: VIDEO_PAYLOAD,
                    seq: 1,
                    want_key: true,
                }]
            };
        }
        api.add_channel("loadgen".to_string());
        let (offer, pending) = api.apply().expect("the first offer has changes");
        self.pending = Some(pending);
        self.drain(send);
        offer.to_sdp_string()
    }

    /// Applies the SFU's answer to our offer.
    pub fn accept_answer(
        &mut self,
        sdp: &str,
        send: &mut dyn FnMut(SocketAddr, &[u8]),
    ) -> Result<(), Error> {
        let answer = SdpAnswer::from_sdp_string(sdp).map_err(RtcError::from)?;
        let Some(pending) = self.pending.take() else {
            return Err(Error::Signaling(
                "an answer but no offer outstanding".into(),
            ));
        };
        self.rtc.sdp_api().accept_answer(pending, answer)?;
        self.drain(send);
        Ok(())
    }

    /// Whether an offer of ours awaits its answer.
    pub fn has_pending_offer(&self) -> bool {
        self.pending.is_some()
    }

    /// Answers an offer of the SFU (renegotiation).
    pub fn accept_offer(
        &mut self,
        sdp: &str,
        send: &mut dyn FnMut(SocketAddr, &[u8]),
    ) -> Result<String, RtcError> {
        let offer = SdpOffer::from_sdp_string(sdp)?;
        let answer = self.rtc.sdp_api().accept_offer(offer)?;
        self.drain(send);
        Ok(answer.to_sdp_string())
    }

    /// Handles one datagram from `source`.
    pub fn handle_datagram(
        &mut self,
        now: Instant,
        source: SocketAddr,
        buf: &[u8],
        send: &mut dyn FnMut(SocketAddr, &[u8]),
    ) {
        let Ok(r) = Receive::new(Protocol::Udp, source, self.addr, buf) else {
            return;
        };
        self.counters.sfu_addr.get_or_insert(source);
        if self.rtc.handle_input(Input::Receive(now, r)).is_err() {
            self.counters.failed = true;
        }
        self.drain(send);
    }

    /// When the Peer next needs [`Peer::handle_timeout`].
    pub fn next_due(&self) -> Instant {
        let mut t = self.timeout;
        if let Some(p) = &self.publisher
            && self.counters.connected
        {
            for n in [p.next_audio, p.next_video].into_iter().flatten() {
                t = t.min(n);
            }
        }
        t
    }

    /// Advances time: str0m's timers and the media due.
    pub fn handle_timeout(&mut self, now: Instant, send: &mut dyn FnMut(SocketAddr, &[u8])) {
        if self.timeout <= now && self.rtc.handle_input(Input::Timeout(now)).is_err() {
            self.counters.failed = true;
        }
        self.publish(now);
        self.drain(send);
    }

    fn publish(&mut self, now: Instant) {
        if !self.rtc.is_connected() {
            return;
        }
        let Some(p) = &mut self.publisher else { return };
        let epoch = self.epoch;
        let stamp = |now: Instant| now.saturating_duration_since(epoch).as_micros() as u64;
        let audio_pt = pt_of(&self.rtc, Codec::Opus);
        let video_pt = pt_of(&self.rtc, Codec::Vp8);
        let next = *p.next_audio.get_or_insert(now);
        if now >= next {
            if let Some(pt) = audio_pt {
                let mut payload = [0u8; AUDIO_PAYLOAD];
                payload[0] = 0xfc;
                payload[1..9].copy_from_slice(&stamp(now).to_le_bytes());
                let ts = (p.audio_seq * 960) as u32;
                let w = RtpWrite::new(pt, p.audio_seq.into(), ts, now, &payload[..]);
                let mut api = self.rtc.direct_api();
                if let Some(tx) = api.stream_tx_by_mid(p.audio_mid, None) {
                    tx.write_rtp(w.marker(p.audio_seq == 1));
                    p.audio_seq += 1;
                    self.counters.sent += 1;
                    self.counters.sent_audio += 1;
                }
            }
            // Never catch up with a burst after a stall: skip what is overdue.
            let step = Duration::from_millis(20);
            p.next_audio = Some(if now - next > 10 * step {
                now + step
            } else {
                next + step
            });
        }
        let next = *p.next_video.get_or_insert(now);
        if now >= next {
            let started = *p.started.get_or_insert(now);
            let ts = (now.duration_since(started).as_micros() * 9 / 100) as u32;
            let sent_us = stamp(now);
            for layer in &mut p.layers {
                let Some(pt) = video_pt else { break };
                let mut api = self.rtc.direct_api();
                let Some(tx) = api.stream_tx_by_mid(p.video_mid, layer.rid) else {
                    continue;
                };
                let key = layer.want_key;
                let packets = if key {
                    2 * layer.packets
                } else {
                    layer.packets
                };
                for i in 0..packets {
                    let payload = video_payload(i == 0, key, layer.payload, sent_us, p.frames);
                    let w = RtpWrite::new(pt, layer.seq.into(), ts, now, payload);
                    tx.write_rtp(w.marker(i + 1 == packets).nackable(true));
                    layer.seq += 1;
                    self.counters.sent += 1;
                }
                layer.want_key = false;
            }
            p.frames += 1;
            let step = Duration::from_secs(1) / FPS;
            p.next_video = Some(if now - next > 10 * step {
                now + step
            } else {
                next + step
            });
        }
    }

    fn drain(&mut self, send: &mut dyn FnMut(SocketAddr, &[u8])) {
        loop {
            match self.rtc.poll_output() {
                Ok(Output::Timeout(t)) => {
                    self.timeout = t;
                    return;
                }
                Ok(Output::Transmit(t)) => send(t.destination, &t.contents),
                Ok(Output::Event(e)) => self.on_event(e),
                Err(_) => {
                    self.counters.failed = true;
                    self.timeout = Instant::now() + Duration::from_secs(3600);
                    return;
                }
            }
        }
    }

    fn on_event(&mut self, e: Event) {
        match e {
            Event::Connected => self.counters.connected = true,
            Event::Closed => self.counters.failed = true,
            Event::RtpPacket(p) => self.on_rtp(p),
            Event::KeyframeRequest(r) => {
                self.counters.keyframe_requests += 1;
                if let Some(p) = &mut self.publisher {
                    for l in &mut p.layers {
                        if r.rid.is_none() || l.rid == r.rid {
                            l.want_key = true;
                        }
                    }
                }
            }
            Event::ChannelOpen(id, _) => self.channel = Some(id),
            Event::ChannelData(d) if self.dc_signaling && !d.binary => self.on_dc_signal(&d.data),
            _ => {}
        }
    }

    /// str0m chat's renegotiation: an offer as JSON on the data channel; the answer goes back the
    /// same way.
    fn on_dc_signal(&mut self, data: &[u8]) {
        let Ok(v) = serde_json::from_slice::<serde_json::Value>(data) else {
            return;
        };
        let sdp = v.get("sdp").and_then(|s| s.as_str());
        match (v.get("type").and_then(|t| t.as_str()), sdp) {
            (Some("offer"), Some(sdp)) => {
                let Ok(offer) = SdpOffer::from_sdp_string(sdp) else {
                    return;
                };
                let Ok(answer) = self.rtc.sdp_api().accept_offer(offer) else {
                    self.counters.failed = true;
                    return;
                };
                let json = serde_json::json!({"type": "answer", "sdp": answer.to_sdp_string()});
                if let Some(mut ch) = self.channel.and_then(|id| self.rtc.channel(id)) {
                    let _ = ch.write(false, json.to_string().as_bytes());
                }
            }
            (Some("answer"), Some(sdp)) => {
                if let (Some(pending), Ok(a)) =
                    (self.pending.take(), SdpAnswer::from_sdp_string(sdp))
                {
                    let _ = self.rtc.sdp_api().accept_answer(pending, a);
                }
            }
            _ => {}
        }
    }

    fn on_rtp(&mut self, p: RtpPacket) {
        let now = p.timestamp;
        let now_us = now.saturating_duration_since(self.epoch).as_micros() as u64;
        let ssrc = *p.header.ssrc;
        let seq = *p.seq_no;
        let idx = match self.streams.iter().position(|s| s.ssrc == ssrc) {
            Some(i) => i,
            None => {
                let mut api = self.rtc.direct_api();
                let mid = api.stream_rx(&p.header.ssrc).map(|s| s.mid());
                let video = mid
                    .and_then(|m| self.rtc.media(m))
                    .map(|m| m.kind() == MediaKind::Video)
                    .unwrap_or(p.payload.len() > AUDIO_PAYLOAD);
                self.streams.push(RxStream {
                    ssrc,
                    video,
                    first_seq: seq,
                    max_seq: seq,
                    cur_ts: None,
                    key: None,
                    keyed: false,
                    last_pli: None,
                });
                self.streams.len() - 1
            }
        };
        let s = &mut self.streams[idx];
        s.first_seq = s.first_seq.min(seq);
        s.max_seq = s.max_seq.max(seq);
        self.counters.received += 1;
        let ts = p.header.timestamp;
        let sent_us = if s.video {
            self.counters.video += 1;
            if let Some((key, stamp)) = frame_start(&p.payload) {
                s.cur_ts = Some((ts, stamp));
                if key {
                    s.key = Some((ts, seq, 0));
                }
            }
            // Packets of a frame whose first packet was not seen: place them by RTP time.
            s.cur_ts.map(|(t, stamp)| {
                let d = ts.wrapping_sub(t) as i32 as i64 * 1000 / 90;
                stamp.saturating_add_signed(d)
            })
        } else {
            p.payload
                .get(1..9)
                .map(|b| u64::from_le_bytes(b.try_into().expect("8 bytes")))
        };
        if let Some(sent) = sent_us.filter(|t| *t <= now_us + 1_000_000) {
            let delay = now_us.saturating_sub(sent);
            self.counters.delay_sum_us += delay;
            self.delays.borrow_mut().record(s.video, delay);
            if delay > LATE_AFTER.as_micros() as u64 {
                self.counters.late += 1;
            }
        }
        // Join: the first key frame received complete (all its packets, first to marker).
        if let Some((kts, kseq, n)) = &mut s.key
            && *kts == ts
        {
            *n += 1;
            if p.header.marker && *n == seq - *kseq + 1 {
                s.keyed = true;
                if self.counters.join.is_none() {
                    self.counters.join = Some(now.saturating_duration_since(self.join_started));
                }
            }
        }
        // Like a browser's decoder: video without a key frame yet asks for one (str0m chat
        // forwards these requests; Switchboard also asks on its own when a Peer subscribes).
        if s.video && !s.keyed {
            let ask = match s.last_pli {
                // The first packet starts a key frame: give it time to arrive.
                None if s.key.is_some() => {
                    s.last_pli = Some(now);
                    false
                }
                Some(t) => now.duration_since(t) >= PLI_INTERVAL,
                None => true,
            };
            if ask {
                s.last_pli = Some(now);
            }
            if ask && let Some(rx) = self.rtc.direct_api().stream_rx(&p.header.ssrc) {
                rx.request_keyframe(KeyframeRequestKind::Pli);
            }
        }
    }
}

fn pt_of(rtc: &Rtc, codec: Codec) -> Option<Pt> {
    rtc.codec_config()
        .iter()
        .find(|p| p.spec().codec == codec)
        .map(|p| p.pt())
}
