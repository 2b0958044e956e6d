//! Data channels through the core: broadcast, directed messages, reliability modes end to end,
//! text versus binary, ordering under loss and reordering, slow receivers, size limits, and the
//! backend's side (send and receive).

mod support;

use std::time::Duration;

use support::*;
use switchboard_core::*;
use switchboard_testpeer::{ChannelConfig, Publish, Received, Reliability};

fn chan(label: &str, ordered: bool, reliability: Reliability) -> ChannelConfig {
    ChannelConfig {
        label: label.into(),
        ordered,
        reliability,
        ..Default::default()
    }
}

fn data_only(label: &'static str) -> Publish {
    Publish {
        audio: false,
        video: false,
        data_label: Some(label),
        simulcast: false,
    }
}

fn received(net: &Net, i: usize) -> Vec<Received> {
    net.peer(i).stats.received.clone()
}

/// Steps until every listed Peer has an open channel with `label` (and a little more, so the
/// gateway's side of each channel is open too).
fn wait_channels(net: &mut Net, peers: &[usize], label: &str) {
    let label = label.to_string();
    let peers = peers.to_vec();
    net.run_until(Duration::from_secs(5), "channels open", |n| {
        peers
            .iter()
            .all(|&p| n.peers[p].core.clone_has_channel(&label))
    });
    net.run_for(Duration::from_millis(200));
}

trait HasChannel {
    fn clone_has_channel(&self, label: &str) -> bool;
}
impl HasChannel for switchboard_testpeer::PeerCore {
    fn clone_has_channel(&self, label: &str) -> bool {
        self.has_channel(label)
    }
}

#[test]
fn broadcast_to_a_room_of_four_keeps_text_and_binary_apart() {
    let mut net = Net::new();
    let room = net.room("four");
    let p: Vec<usize> = ["a", "b", "c", "d"]
        .iter()
        .map(|n| net.join(&room, n, data_only("chat")))
        .collect();
    wait_channels(&mut net, &p, "chat");
    assert!(
        net.peers[p[0]]
            .core
            .send_on("chat", false, "héllo".as_bytes())
    );
    assert!(net.peers[p[0]].core.send_on("chat", true, &[0, 1, 2, 255]));
    net.run_until(Duration::from_secs(2), "three receivers got both", |n| {
        p[1..].iter().all(|&i| n.peer(i).stats.received.len() == 2)
    });
    for &i in &p[1..] {
        assert_eq!(
            received(&net, i),
            vec![
                Received {
                    label: "chat".into(),
                    binary: false,
                    data: "héllo".as_bytes().to_vec()
                },
                Received {
                    label: "chat".into(),
                    binary: true,
                    data: vec![0, 1, 2, 255]
                },
            ]
        );
    }
    net.run_for(Duration::from_millis(200));
    assert!(received(&net, p[0]).is_empty(), "no echo");
}

#[test]
fn directed_messages_reach_only_their_target_with_the_sender_named() {
    let mut net = Net::new();
    let room = net.room("direct");
    let other_room = net.room("elsewhere");
    let a = net.join(&room, "a", data_only(DIRECT_LABEL));
    let b = net.join(&room, "b", data_only(DIRECT_LABEL));
    let c = net.join(&room, "c", data_only(DIRECT_LABEL));
    let x = net.join(&other_room, "x", data_only(DIRECT_LABEL));
    wait_channels(&mut net, &[a, b, c, x], DIRECT_LABEL);
    let (sa, sc, sx) = (
        net.peers[a].session.to_string(),
        net.peers[c].session.to_string(),
        net.peers[x].session.to_string(),
    );
    let mut msg = format!("{sc}\n").into_bytes();
    msg.extend_from_slice(b"for carol only");
    assert!(net.peers[a].core.send_on(DIRECT_LABEL, false, &msg));
    // A target in another Room is not reachable.
    assert!(
        net.peers[a]
            .core
            .send_on(DIRECT_LABEL, false, format!("{sx}\nhi").as_bytes())
    );
    // No header at all.
    assert!(
        net.peers[a]
            .core
            .send_on(DIRECT_LABEL, true, b"no envelope")
    );
    net.run_until(Duration::from_secs(2), "carol got it", |n| {
        !n.peer(c).stats.received.is_empty()
    });
    net.run_for(Duration::from_millis(300));
    let got = received(&net, c);
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].data, format!("{sa}\nfor carol only").into_bytes());
    assert!(received(&net, b).is_empty());
    assert!(received(&net, x).is_empty());
    assert!(net.sfu.counters().data_dropped >= 2);
}

#[test]
fn each_reliability_mode_is_negotiated_end_to_end() {
    let mut net = Net::new();
    let room = net.room("modes");
    let modes = [
        chan("ordered-reliable", true, Reliability::Reliable),
        chan("unordered-reliable", false, Reliability::Reliable),
        chan(
            "no-retransmits",
            false,
            Reliability::MaxRetransmits { retransmits: 0 },
        ),
        chan(
            "lifetime",
            true,
            Reliability::MaxPacketLifetime { lifetime: 150 },
        ),
    ];
    let a = net.join_with(&room, "a", Publish::default(), &modes);
    let b = net.join_with(&room, "b", Publish::default(), &modes);
    for m in &modes {
        wait_channels(&mut net, &[a, b], &m.label);
    }
    for m in &modes {
        assert!(
            net.peers[a]
                .core
                .send_on(&m.label, false, m.label.as_bytes())
        );
    }
    net.run_until(Duration::from_secs(2), "one message per mode", |n| {
        n.peer(b).stats.received.len() == modes.len()
    });
    for m in &modes {
        let r = received(&net, b);
        assert!(
            r.iter()
                .any(|r| r.label == m.label && r.data == m.label.as_bytes())
        );
        // Both ends of the relay use the same semantics.
        let cb = net.peers[b].core.channel_config(&m.label).unwrap();
        assert_eq!(
            (cb.ordered, cb.reliability),
            (m.ordered, m.reliability),
            "{}",
            m.label
        );
    }
}

#[test]
fn a_channel_with_another_configuration_for_a_label_is_closed() {
    let mut net = Net::new();
    let room = net.room("mismatch");
    let a = net.join(&room, "a", data_only("chat"));
    wait_channels(&mut net, &[a], "chat");
    let c = net.join_with(
        &room,
        "c",
        Publish::default(),
        &[chan(
            "chat",
            false,
            Reliability::MaxRetransmits { retransmits: 1 },
        )],
    );
    let sc = net.peers[c].session.clone();
    net.run_until(
        Duration::from_secs(3),
        "c's channel closed by the gateway",
        |n| {
            n.peer(c)
                .stats
                .closed_channels
                .contains(&"chat".to_string())
        },
    );
    assert!(net.events_of(&sc).iter().any(|k| matches!(k,
        EventKind::ChannelClosed { label, reason: ChannelCloseReason::ConfigMismatch } if label == "chat")));
}

#[test]
fn ordered_messages_stay_in_order_over_a_lossy_reordering_link() {
    let mut net = Net::new();
    let room = net.room("order");
    let a = net.join(&room, "a", data_only("chat"));
    let b = net.join(&room, "b", data_only("chat"));
    wait_channels(&mut net, &[a, b], "chat");
    for p in [a, b] {
        net.peers[p].loss_every = Some(5);
        net.peers[p].reorder = true;
    }
    let mut sent = 0u32;
    while sent < 300 {
        // Ten at a time, as an application would, so every message goes through the relay's
        // ordering and retransmission both ways.
        for _ in 0..10 {
            assert!(
                net.peers[a]
                    .core
                    .send_on("chat", false, format!("{sent:04}").as_bytes())
            );
            sent += 1;
        }
        net.step();
    }
    net.run_until(Duration::from_secs(20), "all 300 through", |n| {
        n.peer(b).stats.received.len() == 300
    });
    let got: Vec<String> = received(&net, b)
        .into_iter()
        .map(|r| String::from_utf8(r.data).unwrap())
        .collect();
    let want: Vec<String> = (0..300).map(|i| format!("{i:04}")).collect();
    assert_eq!(got, want);
}

#[test]
fn a_slow_receiver_is_cut_off_without_hurting_the_others() {
    let mut config = config();
    config.data_send_buffer_bytes = 32 * 1024;
    let mut net = Net::with_config(config);
    let room = net.room("slow");
    let fast_label = "fast";
    let chans = [
        chan("chat", true, Reliability::Reliable),
        chan(
            fast_label,
            false,
            Reliability::MaxRetransmits { retransmits: 0 },
        ),
    ];
    let a = net.join_with(&room, "a", Publish::default(), &chans);
    let b = net.join_with(&room, "b", Publish::default(), &chans);
    let c = net.join_with(&room, "c", Publish::default(), &chans);
    wait_channels(&mut net, &[a, b, c], "chat");
    wait_channels(&mut net, &[a, b, c], fast_label);
    // Carol stops reading: nothing she would acknowledge arrives anymore.
    net.peers[c].cut = true;
    let sc = net.peers[c].session.clone();
    let payload = vec![7u8; 2048];
    for i in 0..100 {
        assert!(
            net.peers[a].core.send_on("chat", true, &payload),
            "message {i}"
        );
        assert!(net.peers[a].core.send_on(fast_label, true, &payload));
        net.step();
        net.step();
    }
    net.run_until(
        Duration::from_secs(10),
        "bob got every reliable message",
        |n| {
            n.peer(b)
                .stats
                .received
                .iter()
                .filter(|r| r.label == "chat")
                .count()
                == 100
        },
    );
    let closed: Vec<&EventKind> = net
        .events_of(&sc)
        .into_iter()
        .filter(|k| {
            matches!(
                k,
                EventKind::ChannelClosed {
                    reason: ChannelCloseReason::SlowReceiver,
                    ..
                }
            )
        })
        .collect();
    assert_eq!(
        closed.len(),
        1,
        "only carol's reliable channel was closed: {closed:?}"
    );
    let c = net.sfu.counters();
    assert_eq!(c.data_slow_receivers, 1);
    assert!(
        c.data_dropped > 0,
        "unreliable messages to carol were dropped: {c:?}"
    );
    // Bob's session and channels are untouched.
    assert!(
        net.events_of(&net.peers[b].session)
            .iter()
            .all(|k| !matches!(k, EventKind::ChannelClosed { .. }))
    );
}

#[test]
fn oversized_messages_are_dropped_and_the_channel_stays_open() {
    let mut config = config();
    config.data_max_message_bytes = 1024;
    let mut net = Net::with_config(config);
    let room = net.room("big");
    let a = net.join(&room, "a", data_only("chat"));
    let b = net.join(&room, "b", data_only("chat"));
    wait_channels(&mut net, &[a, b], "chat");
    assert!(net.peers[a].core.send_on("chat", true, &vec![1u8; 2000]));
    assert!(net.peers[a].core.send_on("chat", true, &vec![2u8; 1000]));
    net.run_until(Duration::from_secs(2), "the small one arrives", |n| {
        !n.peer(b).stats.received.is_empty()
    });
    net.run_for(Duration::from_millis(200));
    let got = received(&net, b);
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].data, vec![2u8; 1000]);
    assert_eq!(net.sfu.counters().data_oversized, 1);
    assert!(net.peers[a].core.has_channel("chat"));
}

#[test]
fn the_backend_sends_to_a_room_or_to_chosen_sessions() {
    let mut net = Net::new();
    let room = net.room("backend");
    let a = net.join(&room, "a", data_only("chat"));
    let b = net.join_with(
        &room,
        "b",
        data_only("chat"),
        &[chan(
            "ticker",
            false,
            Reliability::MaxRetransmits { retransmits: 0 },
        )],
    );
    wait_channels(&mut net, &[a, b], "chat");
    wait_channels(&mut net, &[b], "ticker");
    let now = net.now;
    let all = net
        .sfu
        .send_data(now, &room, &[], "chat", false, b"to all", true)
        .unwrap();
    assert_eq!(all.delivered, 2);
    let sb = net.peers[b].session.clone();
    let one = net
        .sfu
        .send_data(
            now,
            &room,
            std::slice::from_ref(&sb),
            "chat",
            true,
            b"to b",
            false,
        )
        .unwrap();
    assert_eq!(one.delivered, 1);
    // A reliable send finds no reliable "ticker"; an unreliable one reaches b, and a has none.
    let r = net
        .sfu
        .send_data(now, &room, &[], "ticker", false, b"tick", true)
        .unwrap();
    assert_eq!((r.delivered, r.no_channel.len()), (0, 2));
    let r = net
        .sfu
        .send_data(now, &room, &[], "ticker", false, b"tick", false)
        .unwrap();
    assert_eq!((r.delivered, r.no_channel.len()), (1, 1));
    net.run_until(Duration::from_secs(2), "delivered", |n| {
        n.peer(a).stats.received.len() == 1 && n.peer(b).stats.received.len() == 3
    });
    assert_eq!(received(&net, a)[0].data, b"to all");
    assert!(
        received(&net, b)
            .iter()
            .any(|r| r.label == "ticker" && r.data == b"tick")
    );
    assert!(
        received(&net, b)
            .iter()
            .any(|r| r.binary && r.data == b"to b")
    );

    let ghost = SessionId::parse("ss_00aaaaaaaaaaaaaaaaaaaa").unwrap();
    assert!(matches!(
        net.sfu
            .send_data(now, &room, &[ghost], "chat", false, b"x", false),
        Err(CoreError::SessionNotFound(_))
    ));
    assert!(matches!(
        net.sfu.send_data(now, &room, &[], "", false, b"x", false),
        Err(CoreError::InvalidArgument { field: "label", .. })
    ));
    let big = vec![0u8; 70 * 1024];
    assert!(matches!(
        net.sfu
            .send_data(now, &room, &[], "chat", true, &big, false),
        Err(CoreError::InvalidArgument { field: "data", .. })
    ));
}

#[test]
fn peers_reach_the_backend_on_opted_in_labels_only() {
    let mut net = Net::new();
    let room = net.room_with_backend_labels("captions", &["captions"]);
    let chans = [chan("captions", true, Reliability::Reliable)];
    let a = net.join_with(&room, "a", data_only("chat"), &chans);
    let b = net.join_with(&room, "b", data_only("chat"), &chans);
    wait_channels(&mut net, &[a, b], "captions");
    wait_channels(&mut net, &[a, b], "chat");
    assert!(net.peers[a].core.send_on("captions", false, b"hello world"));
    assert!(
        net.peers[a]
            .core
            .send_on("chat", false, b"not for the backend")
    );
    net.run_until(Duration::from_secs(2), "b got both", |n| {
        n.peer(b).stats.received.len() == 2
    });
    let sa = net.peers[a].session.clone();
    let to_backend: Vec<&EventKind> = net
        .events_of(&sa)
        .into_iter()
        .filter(|k| matches!(k, EventKind::DataReceived { .. }))
        .collect();
    assert_eq!(
        to_backend,
        vec![&EventKind::DataReceived {
            label: "captions".into(),
            binary: false,
            data: b"hello world".to_vec()
        }]
    );
}
