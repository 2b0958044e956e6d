//! Fuzz bodies (feature `testing`): plain functions that take arbitrary bytes and assert
//! properties. The `fuzz/` crate's cargo-fuzz targets call them; `tests/fuzz.rs` replays the
//! checked-in corpus (`fuzz/corpus/<target>/`) and deterministic random inputs through them on
//! stable Rust. None of them may panic on any input: a panic is a bug in the core.
//!
//! Must not do IO nor read the clock: every body takes its start instant from the caller, and
//! time advances only as the input says.

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::OnceLock;
use std::time::{Duration, Instant, SystemTime};

use str0m::config::DtlsCert;

use crate::{
    Command, Datagram, Output, ParticipantId, Permissions, Reply, RoomId, RoomSpec, SessionId,
    SessionSpec, Sfu, SfuConfig, Transport,
};

/// One DTLS certificate for every Session (drawing one per Session would dominate the run time).
fn cert() -> DtlsCert {
    static C: OnceLock<DtlsCert> = OnceLock::new();
    C.get_or_init(|| {
        str0m::crypto::from_feature_flags()
            .dtls_provider
            .generate_certificate()
            .expect("the crypto provider generates a certificate")
    })
    .clone()
}

const GW: SocketAddr = SocketAddr::new(std::net::IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1)), 5000);

fn peer_addr(i: u8) -> SocketAddr {
    SocketAddr::new(
        Ipv4Addr::new(10, 0, 1, i % 4).into(),
        6000 + u16::from(i % 4),
    )
}

/// A core on a fixed address with a fixed seed and the shared certificate.
pub fn new_sfu(now: Instant) -> Sfu {
    let config = SfuConfig {
        candidate_addrs: vec![GW],
        tcp_candidate_addrs: vec![SocketAddr::new(GW.ip(), 5001)],
        ..SfuConfig::default()
    };
    let mut sfu = Sfu::new(now, config, [7; 32]).expect("a valid fixed configuration");
    sfu.pin_dtls_cert(cert());
    sfu
}

fn drain(sfu: &mut Sfu) -> Instant {
    loop {
        if let Output::Timeout(t) = sfu.poll_output() {
            return t;
        }
    }
}

fn room_id(i: u8) -> RoomId {
    RoomId::parse(&format!("r{}", i % 3)).expect("a valid id")
}

fn create_room(sfu: &mut Sfu, now: Instant, room: RoomId) {
    let spec = RoomSpec {
        id: Some(room),
        max_sessions: Some(4),
        empty_timeout: Some(Duration::from_secs(1)),
        metadata: String::new(),
        created_at: SystemTime::UNIX_EPOCH,
        backend_data_labels: vec!["*".into()],
    };
    let _ = sfu.handle_command(now, SystemTime::UNIX_EPOCH, Command::CreateRoom(spec));
}

fn create_session(sfu: &mut Sfu, now: Instant, room: RoomId, who: u8) -> Option<SessionId> {
    let spec = SessionSpec {
        room,
        participant: ParticipantId::parse(&format!("p{}", who % 3)).expect("a valid id"),
        metadata: String::new(),
        permissions: Permissions {
            publish: true,
            subscribe: true,
            data: true,
        },
        created_at: SystemTime::UNIX_EPOCH,
        auto_subscribe: who.is_multiple_of(2),
    };
    match sfu.handle_command(now, SystemTime::UNIX_EPOCH, Command::CreateSession(spec)) {
        Ok(Reply::Session(s)) => Some(s.id),
        _ => None,
    }
}

fn check(sfu: &Sfu) {
    if let Err(e) = sfu.check_invariants() {
        panic!("invariant broken: {e}");
    }
}

/// Closes everything the way a backend and time would, then asserts the core is back to zero:
/// no Rooms, Sessions, Tracks, routes, index entries or timers.
pub fn assert_returns_to_zero(sfu: &mut Sfu, mut now: Instant) {
    for r in 0..3 {
        let room = room_id(r);
        let _ = sfu.handle_command(now, SystemTime::UNIX_EPOCH, Command::DeleteRoom { room });
    }
    let rooms: Vec<RoomId> = sfu.held().0;
    for room in rooms {
        let _ = sfu.handle_command(now, SystemTime::UNIX_EPOCH, Command::DeleteRoom { room });
    }
    // Closing Sessions linger for their DTLS close; timers run them out.
    for _ in 0..200 {
        let next = drain(sfu);
        check(sfu);
        if sfu.n_sessions() == 0 && sfu.n_rooms() == 0 && sfu.n_index_entries() == (0, 0, 0) {
            break;
        }
        now = next.max(now + Duration::from_millis(1));
        sfu.handle_timeout(now);
    }
    drain(sfu);
    let state = (
        sfu.n_rooms(),
        sfu.n_sessions(),
        sfu.n_tracks(),
        sfu.n_routes(),
        sfu.n_index_entries(),
    );
    assert_eq!(state, (0, 0, 0, 0, (0, 0, 0)), "state left after close");
}

/// `stun_local_ufrag` on arbitrary bytes: never panics; a ufrag found lies inside the buffer's
/// USERNAME attribute (a sub-slice of the input) and has no colon.
pub fn stun_local_ufrag(data: &[u8]) {
    if let Some(u) = crate::demux::stun_local_ufrag(data) {
        let (start, end) = (data.as_ptr() as usize, data.as_ptr() as usize + data.len());
        let p = u.as_ptr() as usize;
        assert!(p >= start && p + u.len() <= end, "ufrag outside the input");
        assert!(!u.contains(&b':'), "ufrag holds the separator");
    }
}

/// A valid offer, used as the base the SDP body mutates and the datagram body negotiates with.
pub const BASE_OFFER: &str = include_str!("fuzzing_offer.sdp");

/// A core with one Room and two Sessions, the first negotiated with [`BASE_OFFER`].
fn live_core(now: Instant) -> (Sfu, Vec<SessionId>) {
    let mut sfu = new_sfu(now);
    create_room(&mut sfu, now, room_id(0));
    let mut ids = Vec::new();
    for who in 0..2 {
        if let Some(id) = create_session(&mut sfu, now, room_id(0), who) {
            ids.push(id);
        }
    }
    let _ = sfu.handle_command(
        now,
        SystemTime::UNIX_EPOCH,
        Command::ApplyOffer {
            session: ids[0].clone(),
            sdp: BASE_OFFER.to_string(),
        },
    );
    drain(&mut sfu);
    (sfu, ids)
}

/// Datagram demux and everything behind it: the input's first byte picks the source and the
/// transport; with its top bit set the rest follows a STUN header naming a live Session's ufrag,
/// so the bytes reach `Rtc::accepts`. Never panics; invariants hold; everything closes to zero.
pub fn datagram(now: Instant, data: &[u8]) {
    let (mut sfu, _) = live_core(now);
    let Some((&sel, rest)) = data.split_first() else {
        return;
    };
    let transport = if sel & 0x40 != 0 {
        Transport::Tcp
    } else {
        Transport::Udp
    };
    let contents = if sel & 0x80 != 0 {
        let ufrag = sfu.session_ufrags().into_iter().next().unwrap_or_default();
        stun_with_username(&format!("{ufrag}:peer"), rest)
    } else {
        rest.to_vec()
    };
    for chunk in contents.chunks(1500).take(8) {
        let d = Datagram {
            transport,
            source: peer_addr(sel),
            destination: GW,
            contents: chunk,
        };
        sfu.handle_datagram(now, d);
        drain(&mut sfu);
        check(&sfu);
    }
    assert_returns_to_zero(&mut sfu, now);
}

/// A STUN Binding request header with USERNAME `user`, followed by `attrs` as further
/// attributes (lengths kept consistent, so the parser walks into them).
fn stun_with_username(user: &str, attrs: &[u8]) -> Vec<u8> {
    let mut body = Vec::new();
    body.extend_from_slice(&0x0006u16.to_be_bytes());
    body.extend_from_slice(&(user.len() as u16).to_be_bytes());
    body.extend_from_slice(user.as_bytes());
    while !body.len().is_multiple_of(4) {
        body.push(0);
    }
    let n = attrs.len().min(1000) & !3;
    body.extend_from_slice(&attrs[..n]);
    let mut m = vec![0x00, 0x01];
    m.extend_from_slice(&(body.len() as u16).to_be_bytes());
    m.extend_from_slice(&[0x21, 0x12, 0xA4, 0x42]);
    m.extend_from_slice(&[9; 12]);
    m.extend_from_slice(&body);
    m
}

/// SDP through `apply_offer` (and `apply_answer`, refused or not) on a fresh Session: never
/// panics, errors are errors; invariants hold; everything closes to zero.
pub fn sdp(now: Instant, data: &[u8]) {
    let mut sfu = new_sfu(now);
    create_room(&mut sfu, now, room_id(0));
    let Some(id) = create_session(&mut sfu, now, room_id(0), 0) else {
        return;
    };
    let sdp = String::from_utf8_lossy(data).into_owned();
    let t = SystemTime::UNIX_EPOCH;
    let offer = Command::ApplyOffer {
        session: id.clone(),
        sdp: sdp.clone(),
    };
    let _ = sfu.handle_command(now, t, offer);
    drain(&mut sfu);
    check(&sfu);
    let answer = Command::ApplyAnswer {
        session: id,
        sdp,
        offer_id: Some(1),
    };
    let _ = sfu.handle_command(now, t, answer);
    drain(&mut sfu);
    check(&sfu);
    assert_returns_to_zero(&mut sfu, now);
}

/// Sequences of core operations decoded from bytes (each operation one byte plus arguments):
/// Rooms, Sessions, offers (the base offer, possibly cut), closes, participant removal, mutes,
/// subscriptions, datagrams and time. Property: no panic, [`Sfu::check_invariants`] after every
/// step, and back to zero after everything closes.
pub fn commands(start: Instant, data: &[u8]) {
    let mut sfu = new_sfu(start);
    let mut now = start;
    let t = SystemTime::UNIX_EPOCH;
    let mut sessions: Vec<SessionId> = Vec::new();
    let mut it = data.iter().copied();
    fn arg(it: &mut impl Iterator<Item = u8>) -> u8 {
        it.next().unwrap_or(0)
    }
    fn pick(v: &[SessionId], i: u8) -> Option<SessionId> {
        v.get(usize::from(i) % v.len().max(1)).cloned()
    }
    let mut steps = 0;
    while let Some(op) = it.next() {
        steps += 1;
        if steps > 64 {
            break;
        }
        let a = arg(&mut it);
        match op % 12 {
            0 => create_room(&mut sfu, now, room_id(a)),
            1 => {
                let room = room_id(a);
                let _ = sfu.handle_command(now, t, Command::DeleteRoom { room });
            }
            2 => {
                let who = arg(&mut it);
                if let Some(id) = create_session(&mut sfu, now, room_id(a), who) {
                    sessions.push(id);
                }
            }
            3 => {
                if let Some(session) = pick(&sessions, a) {
                    let _ = sfu.handle_command(now, t, Command::CloseSession { session });
                }
            }
            4 | 5 => {
                if let Some(session) = pick(&sessions, a) {
                    let cut = usize::from(arg(&mut it)) * 16;
                    let sdp = if op % 12 == 4 || cut >= BASE_OFFER.len() {
                        BASE_OFFER.to_string()
                    } else {
                        BASE_OFFER[..cut].to_string()
                    };
                    let _ = sfu.handle_command(now, t, Command::ApplyOffer { session, sdp });
                }
            }
            6 => {
                let room = room_id(a);
                let participant =
                    ParticipantId::parse(&format!("p{}", arg(&mut it) % 3)).expect("a valid id");
                let cmd = Command::RemoveParticipant { room, participant };
                let _ = sfu.handle_command(now, t, cmd);
            }
            7 => {
                now += Duration::from_millis(u64::from(a) * 40);
                sfu.handle_timeout(now);
            }
            8 => {
                let len = usize::from(arg(&mut it)) % 64;
                let bytes: Vec<u8> = (&mut it).take(len).collect();
                let d = Datagram {
                    transport: if a & 1 == 0 {
                        Transport::Udp
                    } else {
                        Transport::Tcp
                    },
                    source: peer_addr(a),
                    destination: GW,
                    contents: &bytes,
                };
                sfu.handle_datagram(now, d);
            }
            9 => sfu.handle_tcp_closed(now, peer_addr(a)),
            10 => {
                if let Some(session) = pick(&sessions, a) {
                    let _ = sfu.handle_command(now, t, Command::GetSession { session });
                }
                let _ = sfu.handle_command(
                    now,
                    t,
                    Command::ListRooms {
                        after: None,
                        limit: 100,
                    },
                );
            }
            _ => {
                // Operations on Tracks the Session may or may not have: refused or applied.
                let (Some(session), Some(other)) =
                    (pick(&sessions, a), pick(&sessions, arg(&mut it)))
                else {
                    continue;
                };
                let _ = sfu.handle_command(now, t, Command::GetSession { session: other });
                let _ = sfu.handle_command(
                    now,
                    t,
                    Command::ListSessions {
                        room: room_id(a),
                        after: None,
                        limit: 100,
                    },
                );
                let _ = sfu.handle_command(now, t, Command::CloseSession { session });
            }
        }
        drain(&mut sfu);
        check(&sfu);
    }
    assert_returns_to_zero(&mut sfu, now);
}
