//! ICE over TCP through the core: a Peer with only an active TCP candidate reaches the core's
//! passive TCP candidate (frames tagged `Transport::Tcp`), and a closed TCP connection is handled.

mod support;

use std::time::Duration;

use support::*;
use switchboard_core::*;

#[test]
fn a_tcp_only_peer_calls_a_udp_peer_both_ways() {
    let mut net = Net::with_config(tcp_config());
    let room = net.room("tcp");
    let a = net.join_tcp(&room, "alice", av("chat"));
    let b = net.join(&room, "bob", av("chat"));
    net.run_until(Duration::from_secs(5), "both peers connected", |n| {
        n.peer(a).stats.connected && n.peer(b).stats.connected
    });
    net.run_until(Duration::from_secs(5), "media both ways", |n| {
        n.min_frames(a, b) >= 20 && n.min_frames(b, a) >= 20
    });
    net.run_until(Duration::from_secs(5), "channels open", |n| {
        n.peer(a).channel_open() && n.peer(b).channel_open()
    });
    net.run_for(Duration::from_millis(200));
    assert!(net.peers[a].core.send_data(b"over tcp"));
    assert!(net.peers[b].core.send_data(b"over udp"));
    net.run_until(Duration::from_secs(2), "data both ways", |n| {
        !n.peer(a).stats.messages.is_empty() && !n.peer(b).stats.messages.is_empty()
    });
    assert_eq!(net.peer(b).stats.messages, vec![b"over tcp".to_vec()]);
    assert_eq!(net.peer(a).stats.messages, vec![b"over udp".to_vec()]);
    // The TCP Peer's offer has no UDP candidate; the core's answer has both kinds.
    assert_eq!(net.peer(a).proto, str0m::net::Protocol::Tcp);
    assert_eq!(net.sfu.counters().session_panics, 0);
}

#[test]
fn the_answer_offers_a_passive_tcp_candidate_only_when_configured() {
    for (config, expect_tcp) in [(config(), false), (tcp_config(), true)] {
        let mut net = Net::with_config(config);
        let room = net.room("sdp");
        let s = net.session(&room, "a");
        let mut peer =
            switchboard_testpeer::PeerCore::new(net.now, "192.0.2.9:5000".parse().unwrap());
        let offer = peer.create_offer(av("chat"));
        let answer = net.sfu.apply_offer(net.now, &s, &offer).unwrap();
        let tcp_line = answer
            .lines()
            .find(|l| l.contains("candidate:") && l.contains(" tcp "));
        assert_eq!(tcp_line.is_some(), expect_tcp, "{answer}");
        if let Some(l) = tcp_line {
            assert!(l.contains("192.0.2.1 4443 typ host tcptype passive"), "{l}");
        }
        assert!(answer.contains("192.0.2.1 4000 typ host"), "{answer}");
    }
}

#[test]
fn frames_on_tcp_are_not_routed_by_a_udp_address_and_vice_versa() {
    let mut net = Net::with_config(tcp_config());
    let room = net.room("tuple");
    let a = net.join_tcp(&room, "alice", av("chat"));
    let b = net.join(&room, "bob", av("chat"));
    net.run_until(Duration::from_secs(5), "media", |n| n.min_frames(b, a) >= 5);
    let before = net.sfu.counters().datagrams_unrouted;
    // An RTP-looking datagram from the TCP Peer's address but over UDP is not the connection.
    let wire = net.peers[a].wire;
    let rtp = [0x80u8, 0x60, 0, 1, 0, 0, 0, 1, 0, 0, 0, 1, 1, 2, 3, 4];
    let routed = net.sfu.handle_datagram(
        net.now,
        Datagram {
            transport: Transport::Udp,
            source: wire,
            destination: SFU_ADDR.parse().unwrap(),
            contents: &rtp,
        },
    );
    assert!(!routed);
    let routed = net.sfu.handle_datagram(
        net.now,
        Datagram {
            transport: Transport::Tcp,
            source: net.peers[b].wire,
            destination: SFU_TCP_ADDR.parse().unwrap(),
            contents: &rtp,
        },
    );
    assert!(!routed);
    assert_eq!(net.sfu.counters().datagrams_unrouted, before + 2);
}

#[test]
fn a_closed_tcp_connection_disconnects_then_the_peer_may_come_back_on_a_new_one() {
    let mut net = Net::with_config(tcp_config());
    let room = net.room("reconnect");
    let a = net.join_tcp(&room, "alice", av("chat"));
    let b = net.join(&room, "bob", av("chat"));
    net.run_until(Duration::from_secs(5), "media", |n| n.min_frames(b, a) >= 5);
    let sid = net.peers[a].session.clone();
    let (addrs, _, _) = net.sfu.n_index_entries();
    net.tcp_reconnect(a);
    assert_eq!(
        net.sfu.n_index_entries().0,
        addrs - 1,
        "the connection is forgotten"
    );
    net.run_until(Duration::from_secs(2), "disconnected", |n| {
        n.events_of(&sid)
            .iter()
            .any(|k| matches!(k, EventKind::SessionDisconnected { .. }))
    });
    // The Peer's next checks arrive on a new connection and the Session recovers.
    net.run_until(Duration::from_secs(8), "reconnected", |n| {
        let kinds = n.events_of(&sid);
        let disc = kinds
            .iter()
            .rposition(|k| matches!(k, EventKind::SessionDisconnected { .. }));
        let conn = kinds
            .iter()
            .rposition(|k| matches!(k, EventKind::SessionConnected));
        matches!((disc, conn), (Some(d), Some(c)) if c > d)
    });
    let before = net.min_frames(b, a);
    net.run_for(Duration::from_secs(1));
    assert!(net.min_frames(b, a) > before + 10, "media flows again");
}

#[test]
fn a_tcp_peer_whose_connection_closes_for_good_is_closed_after_the_grace_period() {
    let mut net = Net::with_config(tcp_config());
    let room = net.room("gone");
    let a = net.join_tcp(&room, "alice", av("chat"));
    let b = net.join(&room, "bob", av("chat"));
    net.run_until(Duration::from_secs(5), "media", |n| n.min_frames(b, a) >= 5);
    let sid = net.peers[a].session.clone();
    net.peers[a].cut = true;
    net.tcp_reconnect(a);
    // Disconnected at once (its only pair is gone), not after ICE's consent timeout of seconds.
    net.run_for(Duration::from_millis(50));
    assert!(
        net.events_of(&sid)
            .iter()
            .any(|k| matches!(k, EventKind::SessionDisconnected { .. })),
        "disconnected right after the close"
    );
    net.run_until(Duration::from_secs(30), "closed", |n| {
        n.events_of(&sid).iter().any(|k| {
            matches!(
                k,
                EventKind::SessionClosed {
                    reason: SessionCloseReason::DisconnectTimeout,
                    ..
                }
            )
        })
    });
    assert_eq!(net.sfu.n_sessions(), 1);
    assert_eq!(net.sfu.n_index_entries().0, 1, "only bob's address is left");
}
