//! [`PeerCore`]: the sans-IO test Peer.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use str0m::change::{SdpAnswer, SdpOffer, SdpPendingOffer};
use str0m::channel::{ChannelConfig, ChannelId};
use str0m::format::Codec;
use str0m::media::{
    Direction, Frequency, MediaKind, MediaTime, Mid, Rid, Simulcast, SimulcastLayer,
};
use str0m::net::{Protocol, Receive, TcpType};
use str0m::{Candidate, Event, Input, Output, Rtc, RtcError};

/// What a Peer publishes.
#[derive(Debug, Clone, Copy, Default)]
pub struct Publish {
    /// Send one Opus-like audio track (20 ms frames).
    pub audio: bool,
    /// Send one VP8-like video track (30 fps, a key frame first and on every request).
    pub video: bool,
    /// Open a data channel with this label.
    pub data_label: Option<&'static str>,
    /// Send the video as three simulcast layers, rids `q`, `h`, `f`, with frames of
    /// [`SIMULCAST_FRAME_BYTES`] bytes (so a receiver can tell the layers apart by size).
    pub simulcast: bool,
}

/// What a Peer in a typical call publishes: audio, video (no simulcast) and a data channel
/// labelled `label`.
pub fn av(label: &'static str) -> Publish {
    Publish {
        audio: true,
        video: true,
        data_label: Some(label),
        simulcast: false,
    }
}

/// Simulcast layers sent with [`Publish::simulcast`] and their frame sizes, lowest first.
pub const SIMULCAST_FRAME_BYTES: [(&str, usize); 3] = [("q", 400), ("h", 1200), ("f", 3000)];

/// What arrived on one received m-line.
#[derive(Debug, Clone, Default)]
pub struct TrackStats {
    /// Audio or video.
    pub kind: Option<MediaKind>,
    /// Frames received.
    pub frames: u64,
    /// Of those, key frames (video).
    pub keyframes: u64,
    /// Bytes of frame payload received.
    pub bytes: u64,
    /// Size of the last frame received.
    pub last_frame_bytes: usize,
    /// Key frames received since the last change of frame size (a layer switch starts with one).
    pub keyframes_at_size: u64,
    /// Frames received since the last change of frame size.
    pub frames_at_size: u64,
    /// Whether the first frame after each change of frame size was a key frame (all true when
    /// every switch was clean).
    pub switches_at_keyframe: Vec<bool>,
    /// Codec of the last frame received (`vp8`, `vp9`, `h264`, `av1`, `opus`, …).
    pub codec: Option<String>,
    /// Whether the first frame received was a key frame (video).
    pub first_was_keyframe: Option<bool>,
}

/// One received data-channel message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Received {
    /// The channel's label.
    pub label: String,
    /// Binary (true) or text (false).
    pub binary: bool,
    /// The payload.
    pub data: Vec<u8>,
}

/// Counters of a Peer.
#[derive(Debug, Clone, Default)]
pub struct PeerStats {
    /// ICE+DTLS connected at least once.
    pub connected: bool,
    /// The connection closed.
    pub closed: bool,
    /// Received media per Track id (the msid track id the gateway put in its offer).
    pub tracks: HashMap<String, TrackStats>,
    /// Data-channel messages received, in order (payload only).
    pub messages: Vec<Vec<u8>>,
    /// Data-channel messages received, in order, with their channel label and binary flag.
    pub received: Vec<Received>,
    /// Labels of channels that were closed (by the gateway or the Peer).
    pub closed_channels: Vec<String>,
    /// Key frame requests received for the published video.
    pub keyframe_requests: u64,
    /// Video frames sent.
    pub video_frames_sent: u64,
    /// Audio frames sent.
    pub audio_frames_sent: u64,
}

/// A sans-IO WebRTC Peer. Call [`PeerCore::handle_datagram`], [`PeerCore::handle_timeout`] and
/// [`PeerCore::tick`], then take datagrams from [`PeerCore::outbox`].
pub struct PeerCore {
    /// The str0m instance.
    pub rtc: Rtc,
    /// The local address (must be the destination of datagrams handed in). For a TCP-only Peer
    /// it is its active candidate, `ip:9` (RFC 6544); the real port is the connection's.
    pub addr: SocketAddr,
    /// UDP, or TCP for a TCP-only Peer (every datagram is then a frame on a TCP connection).
    pub proto: Protocol,
    /// Datagrams to send: (source, destination, bytes).
    pub outbox: VecDeque<(SocketAddr, SocketAddr, Vec<u8>)>,
    /// Counters.
    pub stats: PeerStats,
    timeout: Instant,
    publish: Publish,
    audio_mid: Option<Mid>,
    video_mid: Option<Mid>,
    channel: Option<ChannelId>,
    channels: HashMap<ChannelId, String>,
    pending: Option<SdpPendingOffer>,
    next_audio: Option<Instant>,
    next_video: Option<Instant>,
    want_keyframe: bool,
    want_keyframe_rid: HashMap<Rid, bool>,
    video_started: Option<Instant>,
    mid_track: HashMap<Mid, String>,
    /// Payload size of video frames (several RTP packets each).
    pub video_frame_bytes: usize,
    /// Stop sending media (tracks stay negotiated).
    pub muted: bool,
    /// Audio level sent in the audio-level header extension (dBov: 0 loudest, -127 silence).
    pub audio_level: i8,
    /// Codec of the published video.
    video_codec: Codec,
    /// Simulcast layers (rids) not sent, as by a browser that deactivated those encodings.
    pub silent_layers: Vec<&'static str>,
}

/// Which codecs a Peer supports (see [`PeerCore::with_codecs`]).
#[derive(Debug, Clone, Copy, Default)]
pub struct Codecs {
    /// Only this video codec (and Opus); `None`: str0m's defaults (VP8 first).
    pub video: Option<Codec>,
    /// Offer and accept Opus RED (`red/48000/2`), and send audio as RED when negotiated.
    pub red: bool,
}

/// A VP8 key frame starts with a frame tag whose lowest bit is 0, then the start code 9d 01 2a.
const VP8_KEY_HEADER: [u8; 10] = [0x10, 0x02, 0x00, 0x9d, 0x01, 0x2a, 0x40, 0x01, 0xf0, 0x00];
/// A VP8 inter frame has the lowest bit of the frame tag set.
const VP8_DELTA_HEADER: [u8; 3] = [0x11, 0x02, 0x00];

impl PeerCore {
    /// A Peer at `addr` (a host candidate; datagrams to it must carry it as destination).
    pub fn new(now: Instant, addr: SocketAddr) -> Self {
        Self::with_codecs(now, addr, Codecs::default())
    }

    /// A Peer that supports only the given codecs; its video is published with `codecs.video`
    /// (VP8 by default), as frames that carry a recognisable key-frame header of that codec.
    pub fn with_codecs(now: Instant, addr: SocketAddr, codecs: Codecs) -> Self {
        // A loopback or test address is a valid host candidate for str0m.
        let c = Candidate::host(addr, "udp").expect("a usable host address");
        Self::with_candidate(now, c, Protocol::Udp, codecs, None)
    }

    /// Like [`PeerCore::new`], but its ICE agent keeps its pair however many checks go
    /// unanswered (str0m's retransmission limit raised out of reach), as a libnice Peer that keeps
    /// alive with Binding Indications expects no answers: with its checks dropped on the way, it
    /// goes on sending media, and only the gateway's liveness rule decides.
    pub fn with_unanswered_checks_tolerated(now: Instant, addr: SocketAddr) -> Self {
        let c = Candidate::host(addr, "udp").expect("a usable host address");
        // 100 unanswered checks at str0m's capped resend delay take minutes; str0m shifts its
        // initial RTO by the attempt count, so the limit must stay well under 128.
        Self::with_candidate(now, c, Protocol::Udp, Codecs::default(), Some(100))
    }

    /// A Peer that has only an active TCP host candidate on `ip` (RFC 6544: port 9), like a
    /// browser whose UDP is blocked: it connects over ICE-TCP to the gateway's passive TCP
    /// candidates or not at all. Its driver opens the TCP connections (see `outbox`).
    pub fn new_tcp_active(now: Instant, ip: std::net::IpAddr) -> Self {
        let c = Candidate::builder()
            .tcp()
            .host(SocketAddr::new(ip, 9))
            .tcptype(TcpType::Active)
            .build()
            .expect("a usable host address");
        Self::with_candidate(now, c, Protocol::Tcp, Codecs::default(), None)
    }

    /// `max_stun_retransmits`: str0m's limit of unanswered checks before a pair fails (its
    /// default when `None`).
    fn with_candidate(
        now: Instant,
        c: Candidate,
        proto: Protocol,
        codecs: Codecs,
        max_stun_retransmits: Option<usize>,
    ) -> Self {
        let mut builder = Rtc::builder().set_stats_interval(Some(Duration::from_secs(1)));
        if let Some(n) = max_stun_retransmits {
            builder.set_max_stun_retransmits(n);
        }
        if let Some(video) = codecs.video {
            builder = builder.clear_codecs().enable_opus(true, codecs.red);
            builder = match video {
                Codec::Vp9 => builder.enable_vp9(true),
                Codec::H264 => builder.enable_h264(true),
                Codec::Av1 => builder.enable_av1(true),
                Codec::H265 => builder.enable_h265(true),
                _ => builder.enable_vp8(true),
            };
        } else if codecs.red {
            builder = builder.enable_opus(true, true);
        }
        let mut rtc = builder.build(now);
        let addr = c.addr();
        rtc.add_local_candidate(c);
        Self {
            rtc,
            addr,
            proto,
            outbox: VecDeque::new(),
            stats: PeerStats::default(),
            timeout: now,
            publish: Publish::default(),
            audio_mid: None,
            video_mid: None,
            channel: None,
            channels: HashMap::new(),
            pending: None,
            next_audio: None,
            next_video: None,
            want_keyframe: true,
            want_keyframe_rid: HashMap::new(),
            video_started: None,
            mid_track: HashMap::new(),
            video_frame_bytes: 2500,
            muted: false,
            audio_level: -30,
            video_codec: codecs.video.unwrap_or(Codec::Vp8),
            silent_layers: Vec::new(),
        }
    }

    /// Creates the initial offer for what to publish. Returns the SDP text.
    pub fn create_offer(&mut self, publish: Publish) -> String {
        self.create_offer_with(publish, &[])
    }

    /// Like [`PeerCore::create_offer`], also opening channels with the given configurations.
    pub fn create_offer_with(&mut self, publish: Publish, channels: &[ChannelConfig]) -> String {
        self.publish = publish;
        let mut api = self.rtc.sdp_api();
        for c in channels {
            api.add_channel_with_config(c.clone());
        }
        if publish.audio {
            self.audio_mid =
                Some(api.add_media(MediaKind::Audio, Direction::SendOnly, None, None, None));
        }
        if publish.video {
            let sim = publish.simulcast.then(|| {
                let mut sim = Simulcast::new();
                for (rid, _) in SIMULCAST_FRAME_BYTES {
                    sim.add_send_layer(SimulcastLayer::new(rid));
                }
                sim
            });
            self.video_mid =
                Some(api.add_media(MediaKind::Video, Direction::SendOnly, None, None, sim));
        }
        if let Some(label) = publish.data_label {
            api.add_channel(label.to_string());
        } else if !publish.audio && !publish.video && channels.is_empty() {
            // An offer needs at least one m-line; a receive-only Peer still opens a channel.
            api.add_channel("_".to_string());
        }
        let (offer, pending) = api.apply().expect("the offer has changes");
        self.pending = Some(pending);
        self.drain();
        offer.to_sdp_string()
    }

    /// Creates a renegotiation offer of the Peer's own (used to provoke glare): it adds a
    /// receive-only audio m-line, which needs an offer.
    pub fn create_renegotiation_offer(&mut self) -> Option<String> {
        let mut api = self.rtc.sdp_api();
        api.add_media(MediaKind::Audio, Direction::RecvOnly, None, None, None);
        let (offer, pending) = api.apply()?;
        self.pending = Some(pending);
        self.drain();
        Some(offer.to_sdp_string())
    }

    /// Applies the gateway's answer to our offer.
    pub fn accept_answer(&mut self, sdp: &str) -> Result<(), RtcError> {
        let answer = SdpAnswer::from_sdp_string(sdp).map_err(RtcError::from)?;
        let pending = self.pending.take().expect("an offer is outstanding");
        self.rtc.sdp_api().accept_answer(pending, answer)?;
        self.drain();
        Ok(())
    }

    /// Answers a gateway offer (renegotiation). Returns the SDP answer.
    pub fn accept_offer(&mut self, sdp: &str) -> Result<String, RtcError> {
        let offer = SdpOffer::from_sdp_string(sdp).map_err(RtcError::from)?;
        self.pending = None;
        let answer = self.rtc.sdp_api().accept_offer(offer)?;
        self.drain();
        Ok(answer.to_sdp_string())
    }

    /// Whether an offer of ours awaits an answer.
    pub fn has_pending_offer(&self) -> bool {
        self.pending.is_some()
    }

    /// Sends a data-channel message on the channel opened by [`Publish::data_label`].
    /// Returns false if the channel is not open yet.
    pub fn send_data(&mut self, data: &[u8]) -> bool {
        let Some(id) = self.channel else {
            return false;
        };
        let ok = match self.rtc.channel(id) {
            Some(mut ch) => ch.write(false, data).unwrap_or(false),
            None => false,
        };
        self.drain();
        ok
    }

    /// Moves the Peer to a new local address (a network change) and returns an ICE-restart offer:
    /// new credentials, the new address as a host candidate.
    pub fn move_and_restart_ice(&mut self, new_addr: SocketAddr) -> Option<String> {
        let c = Candidate::host(new_addr, "udp").expect("a usable host address");
        self.rtc.add_local_candidate(c);
        self.addr = new_addr;
        let mut api = self.rtc.sdp_api();
        api.ice_restart(true);
        let (offer, pending) = api.apply()?;
        self.pending = Some(pending);
        self.drain();
        Some(offer.to_sdp_string())
    }

    /// Opens another channel on a connection that already has one (no renegotiation needed).
    pub fn open_channel(&mut self, config: ChannelConfig) {
        let mut api = self.rtc.sdp_api();
        api.add_channel_with_config(config);
        if let Some((_, pending)) = api.apply() {
            // The first channel needs an offer; tests open later channels only after one exists.
            self.pending = Some(pending);
        }
        self.drain();
    }

    /// Sends on the open channel with `label`. False if there is none or its buffer is full.
    pub fn send_on(&mut self, label: &str, binary: bool, data: &[u8]) -> bool {
        let Some(id) = self
            .channels
            .iter()
            .find(|(_, l)| *l == label)
            .map(|(id, _)| *id)
        else {
            return false;
        };
        let ok = match self.rtc.channel(id) {
            Some(mut ch) => ch.write(binary, data).unwrap_or(false),
            None => false,
        };
        self.drain();
        ok
    }

    /// Whether a channel with `label` is open.
    pub fn has_channel(&self, label: &str) -> bool {
        self.channels.values().any(|l| l == label)
    }

    /// The configuration of the open channel with `label`, as negotiated.
    pub fn channel_config(&mut self, label: &str) -> Option<ChannelConfig> {
        let id = self
            .channels
            .iter()
            .find(|(_, l)| *l == label)
            .map(|(id, _)| *id)?;
        self.rtc.channel(id).and_then(|c| c.config().cloned())
    }

    /// Whether the data channel is open.
    pub fn channel_open(&self) -> bool {
        self.channel.is_some()
    }

    /// Handles one datagram addressed to this Peer.
    pub fn handle_datagram(&mut self, now: Instant, source: SocketAddr, buf: &[u8]) {
        let Ok(r) = Receive::new(self.proto, source, self.addr, buf) else {
            return;
        };
        let input = Input::Receive(now, r);
        if !self.rtc.accepts(&input) {
            return;
        }
        let _ = self.rtc.handle_input(input);
        self.drain();
    }

    /// Advances time.
    pub fn handle_timeout(&mut self, now: Instant) {
        let _ = self.rtc.handle_input(Input::Timeout(now));
        self.drain();
    }

    /// When the Peer next needs [`PeerCore::handle_timeout`] or [`PeerCore::tick`].
    pub fn next_timeout(&self) -> Instant {
        let mut t = self.timeout;
        for n in [self.next_audio, self.next_video].into_iter().flatten() {
            t = t.min(n);
        }
        t
    }

    /// Sends the media frames due at `now`.
    pub fn tick(&mut self, now: Instant) {
        if !self.rtc.is_connected() || self.muted {
            return;
        }
        if let Some(mid) = self.audio_mid {
            let due = *self.next_audio.get_or_insert(now);
            if now >= due {
                let n = self.stats.audio_frames_sent;
                let pt = self.pt(Codec::Opus);
                if let (Some(pt), Some(w)) = (pt, self.rtc.writer(mid)) {
                    let mut frame = vec![0xfc];
                    frame.extend((0..80).map(|i| (i as u64 + n) as u8));
                    let t = MediaTime::new(n * 960, Frequency::FORTY_EIGHT_KHZ);
                    if w.audio_level(self.audio_level, self.audio_level > -100)
                        .write(pt, now, t, frame)
                        .is_ok()
                    {
                        self.stats.audio_frames_sent += 1;
                    }
                }
                self.next_audio = Some(due + Duration::from_millis(20));
            }
        }
        if let Some(mid) = self.video_mid {
            let due = *self.next_video.get_or_insert(now);
            if now >= due {
                let started = *self.video_started.get_or_insert(now);
                let elapsed = now.duration_since(started);
                let t = MediaTime::from_90khz((elapsed.as_micros() * 9 / 100) as u64);
                let pt = self.pt(self.video_codec);
                let n = self.stats.video_frames_sent;
                let layers: Vec<(Option<Rid>, usize)> = if self.publish.simulcast {
                    SIMULCAST_FRAME_BYTES
                        .iter()
                        .filter(|(r, _)| !self.silent_layers.contains(r))
                        .map(|(r, b)| (Some(Rid::from(*r)), *b))
                        .collect()
                } else {
                    vec![(None, self.video_frame_bytes)]
                };
                let mut sent = false;
                for (rid, bytes) in layers {
                    let key = match rid {
                        Some(r) => *self.want_keyframe_rid.entry(r).or_insert(true),
                        None => self.want_keyframe,
                    };
                    let frame = video_frame(self.video_codec, key, bytes, n);
                    let Some(pt) = pt else { continue };
                    let Some(mut w) = self.rtc.writer(mid) else {
                        continue;
                    };
                    if let Some(r) = rid {
                        w = w.rid(r);
                    }
                    if w.write(pt, now, t, frame).is_ok() {
                        sent = true;
                        match rid {
                            Some(r) => {
                                self.want_keyframe_rid.insert(r, false);
                            }
                            None => self.want_keyframe = false,
                        }
                    }
                }
                if sent {
                    self.stats.video_frames_sent += 1;
                }
                self.next_video = Some(due + Duration::from_millis(33));
            }
        }
        self.drain();
    }

    fn pt(&self, codec: Codec) -> Option<str0m::media::Pt> {
        self.rtc
            .codec_config()
            .find(|p| p.spec().codec == codec)
            .map(|p| p.pt())
    }

    fn drain(&mut self) {
        loop {
            match self.rtc.poll_output() {
                Ok(Output::Timeout(t)) => {
                    self.timeout = t;
                    return;
                }
                Ok(Output::Transmit(t)) => {
                    self.outbox
                        .push_back((t.source, t.destination, t.contents.into()))
                }
                Ok(Output::Event(e)) => self.on_event(e),
                Err(_) => {
                    self.stats.closed = true;
                    return;
                }
            }
        }
    }

    fn on_event(&mut self, e: Event) {
        match e {
            Event::Connected => self.stats.connected = true,
            Event::Closed => self.stats.closed = true,
            Event::ChannelOpen(id, label) => {
                if Some(label.as_str()) == self.publish.data_label {
                    self.channel = Some(id);
                }
                self.channels.insert(id, label);
            }
            Event::ChannelClose(id) => {
                if let Some(label) = self.channels.remove(&id) {
                    self.stats.closed_channels.push(label);
                }
                if self.channel == Some(id) {
                    self.channel = None;
                }
            }
            Event::ChannelData(d) => {
                let label = self.channels.get(&d.id).cloned().unwrap_or_default();
                self.stats.received.push(Received {
                    label,
                    binary: d.binary,
                    data: d.data.clone(),
                });
                self.stats.messages.push(d.data);
            }
            Event::KeyframeRequest(r) => {
                self.stats.keyframe_requests += 1;
                match r.rid {
                    Some(rid) => {
                        self.want_keyframe_rid.insert(rid, true);
                    }
                    None => {
                        self.want_keyframe = true;
                        for v in self.want_keyframe_rid.values_mut() {
                            *v = true;
                        }
                    }
                }
            }
            Event::MediaAdded(m) => {
                if let Some(media) = self.rtc.media(m.mid) {
                    self.mid_track.insert(m.mid, media.track_id().to_string());
                }
            }
            Event::MediaData(d) => {
                let track = self
                    .mid_track
                    .get(&d.mid)
                    .cloned()
                    .unwrap_or_else(|| format!("mid:{}", d.mid));
                let kind = self.rtc.media(d.mid).map(|m| m.kind());
                let codec = d.params.spec().codec;
                let st = self.stats.tracks.entry(track).or_default();
                st.kind = kind;
                st.codec = Some(codec.to_string());
                st.frames += 1;
                st.bytes += d.data.len() as u64;
                let key = kind == Some(MediaKind::Video) && frame_is_key(codec, &d.data);
                if key {
                    st.keyframes += 1;
                }
                st.first_was_keyframe.get_or_insert(key);
                if d.data.len() != st.last_frame_bytes {
                    st.switches_at_keyframe.push(key);
                    st.last_frame_bytes = d.data.len();
                    st.frames_at_size = 0;
                    st.keyframes_at_size = 0;
                }
                st.frames_at_size += 1;
                if key {
                    st.keyframes_at_size += 1;
                }
            }
            _ => {}
        }
    }

    /// Asks the gateway for a key frame on every received video m-line (as a decoder that lost
    /// a frame would).
    pub fn request_keyframes(&mut self) {
        let mids: Vec<Mid> = self.mid_track.keys().copied().collect();
        for mid in mids {
            if self
                .rtc
                .media(mid)
                .is_some_and(|m| m.kind() == MediaKind::Video)
                && let Some(mut w) = self.rtc.writer(mid)
            {
                let _ = w.request_keyframe(None, str0m::media::KeyframeRequestKind::Pli);
            }
        }
        self.drain();
    }

    /// Closes the peer connection (DTLS close_notify).
    pub fn close(&mut self) {
        let _ = self.rtc.close();
        self.drain();
    }
}

/// A fake video frame of `codec`, `bytes` long (the header included), that str0m's packetizer
/// for the codec and the gateway's key-frame detection both read as a key or delta frame.
fn video_frame(codec: Codec, key: bool, bytes: usize, n: u64) -> Vec<u8> {
    let mut frame = Vec::with_capacity(bytes);
    // Never zero: H264 must not see a start code inside the payload.
    let fill = 0x80 | (n % 127) as u8;
    match codec {
        Codec::Vp9 => {
            // Uncompressed header: frame_marker 0b10, profile 0, show_existing 0, frame_type.
            frame.push(if key { 0x80 } else { 0x84 });
        }
        Codec::H264 => {
            if key {
                // SPS, PPS, IDR slice (Annex B start codes).
                frame.extend_from_slice(&[0, 0, 0, 1, 0x67, 0x42, 0xc0, 0x1f, 0xda]);
                frame.extend_from_slice(&[0, 0, 0, 1, 0x68, 0xce, 0x3c, 0x80]);
                frame.extend_from_slice(&[0, 0, 0, 1, 0x65, 0x88]);
            } else {
                frame.extend_from_slice(&[0, 0, 0, 1, 0x41, 0x9a]);
            }
        }
        Codec::Av1 => {
            if key {
                // A sequence header OBU (type 1, with size) starts a new coded video sequence.
                frame.extend_from_slice(&[0x0a, 0x0b]);
                frame.extend_from_slice(&[
                    0x00, 0x00, 0x00, 0x02, 0xaf, 0xff, 0x9f, 0xff, 0x30, 0x08, 0x01,
                ]);
            }
            // A frame OBU (type 6, with size) filling the rest.
            let len = bytes.saturating_sub(frame.len() + 3).max(1);
            frame.push(0x32);
            frame.push(0x80 | (len & 0x7f) as u8);
            frame.push((len >> 7) as u8);
            frame.resize(frame.len() + len, fill);
            return frame;
        }
        _ => frame.extend_from_slice(if key {
            &VP8_KEY_HEADER[..]
        } else {
            &VP8_DELTA_HEADER[..]
        }),
    }
    frame.resize(bytes.max(frame.len() + 1), fill);
    frame
}

/// Whether a received (depacketized) frame of `codec` is a key frame.
fn frame_is_key(codec: Codec, data: &[u8]) -> bool {
    match codec {
        Codec::Vp8 => data.first().is_some_and(|b| b & 1 == 0),
        Codec::Vp9 => data
            .first()
            .is_some_and(|b| b & 0xc0 == 0x80 && b & 0x0c == 0),
        Codec::H264 => data
            .windows(4)
            .any(|w| w[..3] == [0, 0, 1] && matches!(w[3] & 0x1f, 5 | 7)),
        Codec::Av1 => data.first().is_some_and(|b| (b >> 3) & 0x0f == 1),
        _ => false,
    }
}
