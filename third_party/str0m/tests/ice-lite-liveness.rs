//! An ICE-lite agent keeps the pair alive on fresh authenticated SRTP/SRTCP from the
//! selected pair when the peer sends no consent requests (as libnice does by default);
//! a silent peer, a peer that only sends (unauthenticated) Binding Indications, and an
//! attacker replaying the peer's old packets from its address are still dropped.

use std::collections::VecDeque;
use std::net::{Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use str0m::media::{Direction, MediaKind, Mid};
use str0m::net::{Protocol, Receive};
use str0m::{Candidate, Event, IceConnectionState, Input, Output, Rtc, RtcError};

mod common;
use common::{init_crypto_default, init_log};

struct Side {
    rtc: Rtc,
    addr: SocketAddr,
    ice: IceConnectionState,
    timeout: Instant,
    media_rx: usize,
}

impl Side {
    fn drain(&mut self, out: &mut VecDeque<(SocketAddr, SocketAddr, Vec<u8>)>) -> Result<(), RtcError> {
        loop {
            match self.rtc.poll_output()? {
                Output::Timeout(t) => {
                    self.timeout = t;
                    return Ok(());
                }
                Output::Transmit(t) => out.push_back((t.source, t.destination, t.contents.into())),
                Output::Event(Event::IceConnectionStateChange(s)) => self.ice = s,
                Output::Event(Event::MediaData(_)) => self.media_rx += 1,
                Output::Event(_) => {}
            }
        }
    }

    fn receive(&mut self, now: Instant, src: SocketAddr, bytes: &[u8]) -> Result<(), RtcError> {
        let r = Receive::new(Protocol::Udp, src, self.addr, bytes)?;
        self.rtc.handle_input(Input::Receive(now, r))
    }
}

#[derive(Clone, Copy, PartialEq, Debug)]
enum Peer {
    /// Publishes audio (SRTP + SRTCP sender reports).
    Sends,
    /// Only receives our audio (SRTCP receiver reports).
    Receives,
    /// Sends nothing at all.
    Silent,
    /// Sends only Binding Indications (no authentication, RFC 8445 §11).
    IndicationsOnly,
    /// Gone; an attacker replays its earlier packets from its address.
    Replayed,
}

/// How long the replayed peer talks (and is recorded): long enough for SRTCP reports.
const REPLAY_CAPTURE: Duration = Duration::from_secs(11);

fn is_stun(b: &[u8]) -> bool {
    b.first().is_some_and(|b| *b < 4)
}

fn binding_indication(n: u8) -> Vec<u8> {
    let mut b = vec![0x00, 0x11, 0x00, 0x00, 0x21, 0x12, 0xa4, 0x42];
    b.extend_from_slice(&[n; 12]);
    b
}

/// Runs 60 s of simulated time after connecting, the peer sending no Binding Requests.
/// Returns the server's ICE state at the end and when it left `Connected`/`Completed`.
fn run(peer: Peer) -> Result<(IceConnectionState, Option<Duration>), RtcError> {
    let start = Instant::now();
    let mut server = Side {
        rtc: Rtc::builder().set_ice_lite(true).build(start),
        addr: (Ipv4Addr::new(1, 1, 1, 1), 1000).into(),
        ice: IceConnectionState::New,
        timeout: start,
        media_rx: 0,
    };
    let mut client = Side {
        rtc: Rtc::builder().build(start),
        addr: (Ipv4Addr::new(2, 2, 2, 2), 2000).into(),
        ice: IceConnectionState::New,
        timeout: start,
        media_rx: 0,
    };
    server
        .rtc
        .add_local_candidate(Candidate::host(server.addr, "udp").unwrap());
    client
        .rtc
        .add_local_candidate(Candidate::host(client.addr, "udp").unwrap());

    let mut api = client.rtc.sdp_api();
    let mid: Mid = api.add_media(MediaKind::Audio, Direction::SendRecv, None, None, None);
    let (offer, pending) = api.apply().unwrap();
    let answer = server.rtc.sdp_api().accept_offer(offer)?;
    client.rtc.sdp_api().accept_answer(pending, answer)?;

    let mut to_server = VecDeque::new();
    let mut to_client = VecDeque::new();
    let mut now = start;
    let mut connected_at: Option<Instant> = None;
    let mut left_connected: Option<Duration> = None;
    let mut captured: Vec<Vec<u8>> = vec![];
    let mut next_frame = start;
    let mut replay_idx = 0;
    let mut indications = 0u8;

    loop {
        server.drain(&mut to_client)?;
        client.drain(&mut to_server)?;

        let since = connected_at.map(|c| now - c);
        if since.is_some_and(|s| s > Duration::from_secs(60)) {
            break;
        }

        while let Some((src, _dst, bytes)) = to_server.pop_front() {
            let Some(since) = since else {
                server.receive(now, src, &bytes)?;
                continue;
            };
            // Connected: the peer sends no consent requests, like libnice.
            if is_stun(&bytes) {
                continue;
            }
            match peer {
                Peer::Sends | Peer::Receives => server.receive(now, src, &bytes)?,
                Peer::Silent | Peer::IndicationsOnly => {}
                Peer::Replayed => {
                    // The peer talks for a while, then is gone; its packets are recorded.
                    if since < REPLAY_CAPTURE {
                        captured.push(bytes.clone());
                        server.receive(now, src, &bytes)?;
                    }
                }
            }
        }
        while let Some((src, _dst, bytes)) = to_client.pop_front() {
            client.receive(now, src, &bytes)?;
        }

        if let Some(since) = since {
            // Replay one recorded packet every 100 ms, from the peer's address.
            if peer == Peer::Replayed && since >= REPLAY_CAPTURE && !captured.is_empty() {
                if (since.as_millis() / 100) as usize > replay_idx {
                    let b = captured[replay_idx % captured.len()].clone();
                    replay_idx += 1;
                    server.receive(now, client.addr, &b)?;
                }
            }
            if peer == Peer::IndicationsOnly && since.as_millis() % 2500 < 20 {
                indications = indications.wrapping_add(1);
                server.receive(now, client.addr, &binding_indication(indications))?;
            }
        }

        let both = client.rtc.is_connected() && server.rtc.is_connected();
        if connected_at.is_none() && both {
            connected_at = Some(now);
        }
        if connected_at.is_some()
            && left_connected.is_none()
            && !matches!(
                server.ice,
                IceConnectionState::Connected | IceConnectionState::Completed
            )
        {
            left_connected = Some(now - connected_at.unwrap());
        }

        // 20 ms audio frames from whichever side sends.
        if connected_at.is_some() && now >= next_frame {
            let sender = match peer {
                Peer::Sends | Peer::Replayed => Some(&mut client),
                Peer::Receives | Peer::Silent | Peer::IndicationsOnly => Some(&mut server),
            };
            if let Some(s) = sender {
                let pt = s.rtc.codec_config().find(|p| p.spec().codec.is_audio()).unwrap().pt();
                if let Some(w) = s.rtc.writer(mid) {
                    w.write(pt, now, (now - start).into(), vec![1_u8; 80])?;
                }
            }
            next_frame = now + Duration::from_millis(20);
        }

        if connected_at.is_none() && now - start > Duration::from_secs(5) {
            panic!("did not connect");
        }

        let next = server.timeout.min(client.timeout).min(next_frame);
        now = next.clamp(now + Duration::from_millis(1), now + Duration::from_millis(20));
        server.rtc.handle_input(Input::Timeout(now))?;
        client.rtc.handle_input(Input::Timeout(now))?;
    }

    if peer == Peer::Sends {
        assert!(server.media_rx > 1000, "server got {} frames", server.media_rx);
    }
    if peer == Peer::Receives {
        assert!(client.media_rx > 1000, "client got {} frames", client.media_rx);
    }
    Ok((server.ice, left_connected))
}

#[test]
pub fn authenticated_media_keeps_an_ice_lite_pair_alive() -> Result<(), RtcError> {
    init_log();
    init_crypto_default();
    for peer in [Peer::Sends, Peer::Receives] {
        let (state, left) = run(peer)?;
        assert!(
            left.is_none(),
            "{peer:?}: left connected after {left:?} ({state:?})"
        );
    }
    Ok(())
}

#[test]
pub fn silent_or_unauthenticated_peer_is_dropped() -> Result<(), RtcError> {
    init_log();
    init_crypto_default();
    for peer in [Peer::Silent, Peer::IndicationsOnly, Peer::Replayed] {
        let (state, left) = run(peer)?;
        let left = left.unwrap_or_else(|| panic!("{peer:?}: still {state:?} after 60 s"));
        // 15 s after the last sign of life.
        let last_sign = if peer == Peer::Replayed {
            REPLAY_CAPTURE
        } else {
            Duration::ZERO
        };
        assert!(
            left <= last_sign + Duration::from_secs(16),
            "{peer:?}: dropped only after {left:?}"
        );
    }
    Ok(())
}
