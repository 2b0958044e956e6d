//! Credentials minted for a Session live and die with it (issue 16, defect 5): closing the
//! Session through the API ends its allocations and its credentials are refused with 401 (the
//! code for an expired credential: a revoked one is treated exactly like it, so a client learns
//! nothing more than "these credentials no longer work"), while a live Session's allocation
//! keeps allocating and refreshing past the credential's expiry and nobody else does.

use super::*;

async fn close_session(gw: &Gateway, sid: &str) {
    use switchboard::v1 as pb;
    let url = format!("http://{}", gw.grpc_addr());
    let mut sessions = pb::session_service_client::SessionServiceClient::connect(url)
        .await
        .unwrap();
    sessions
        .close_session(pb::CloseSessionRequest {
            session_id: sid.into(),
        })
        .await
        .unwrap();
}

/// Whether anything relayed reaches `c` within a second.
async fn nothing_relayed(c: &mut TurnClient) -> bool {
    tokio::time::timeout(Duration::from_secs(1), c.recv_relayed())
        .await
        .map_or(true, |r| r.is_err())
}

#[tokio::test]
async fn closing_a_session_ends_its_allocations_and_refuses_its_credentials() {
    let (gw, a) = start_with(|_| {}).await;
    let (sid, ice) = create_session(&gw).await;
    let turn = &ice[0];
    let mut c = TurnClient::udp(a.udp).await.unwrap();
    let relayed = c
        .allocate(&turn.username, &turn.credential)
        .await
        .expect("allocation with the Session's credentials");
    let mut t = TurnClient::tcp(a.tcp).await.unwrap();
    t.allocate(&turn.username, &turn.credential)
        .await
        .expect("a second allocation, over TCP");
    let peer = echo_peer().await;
    c.create_permission(peer).await.expect("CreatePermission");
    c.send_indication(peer, b"before").await.unwrap();
    assert_eq!(
        c.recv_relayed().await.unwrap(),
        Relayed::Data(peer, b"before".to_vec())
    );

    close_session(&gw, &sid).await;
    crate_wait(|| gw.turn().unwrap().stats().allocations == 0).await;

    // The relay stopped both ways: the client's data goes nowhere, and a peer writing to the old
    // relayed address reaches nobody.
    let sent = gw.turn().unwrap().stats().bytes_to_peers;
    c.send_indication(peer, b"after").await.unwrap();
    let probe = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    probe.send_to(b"to the old relay", relayed).await.unwrap();
    assert!(
        nothing_relayed(&mut c).await,
        "a closed Session relays nothing"
    );
    assert_eq!(gw.turn().unwrap().stats().bytes_to_peers, sent);

    // The credentials have not expired, yet they are refused: a new Allocate, and a Refresh.
    let mut again = TurnClient::udp(a.udp).await.unwrap();
    assert_eq!(
        again.allocate(&turn.username, &turn.credential).await,
        Err(401)
    );
    assert_eq!(c.refresh(600).await, Err(401));
    assert_eq!(t.refresh(600).await, Err(401));

    // Another Session's credentials are untouched.
    let (_, ice2) = create_session(&gw).await;
    let mut other = TurnClient::udp(a.udp).await.unwrap();
    other
        .allocate(&ice2[0].username, &ice2[0].credential)
        .await
        .expect("another Session allocates");

    // RemoveParticipant ends a Session the same way.
    use switchboard::v1 as pb;
    let url = format!("http://{}", gw.grpc_addr());
    pb::room_service_client::RoomServiceClient::connect(url)
        .await
        .unwrap()
        .remove_participant(pb::RemoveParticipantRequest {
            room_id: "turnroom".into(),
            participant_id: "alice".into(),
        })
        .await
        .unwrap();
    crate_wait(|| gw.turn().unwrap().stats().allocations == 0).await;
    assert_eq!(other.refresh(600).await, Err(401));
    gw.shutdown().await;
}

#[tokio::test]
async fn a_live_session_s_credentials_work_past_their_expiry_and_others_do_not() {
    let (gw, a) = start_with(|c| c.turn.credential_ttl_secs = 2).await;
    let (sid, ice) = create_session(&gw).await;
    let mut c = TurnClient::udp(a.udp).await.unwrap();
    let relayed = c
        .allocate(&ice[0].username, &ice[0].credential)
        .await
        .expect("Session allocation");
    // Credentials of an identity that is no Session, with the same lifetime.
    let m = gw.turn().unwrap().mint("not-a-session");
    let mut o = TurnClient::udp(a.udp).await.unwrap();
    o.allocate(&m.username, &m.password)
        .await
        .expect("other allocation");

    // Let both credentials expire (they carry whole seconds).
    let expired = m.expires_at + Duration::from_millis(1100);
    let wait = expired
        .duration_since(SystemTime::now())
        .unwrap_or_default();
    tokio::time::sleep(wait).await;

    c.refresh(600)
        .await
        .expect("a live Session refreshes past the expiry");
    relay_both_ways(&mut c, relayed, "past expiry").await;
    // An ICE restart allocates again with the same credentials.
    let mut restarted = TurnClient::tcp(a.tcp).await.unwrap();
    restarted
        .allocate(&ice[0].username, &ice[0].credential)
        .await
        .expect("a live Session allocates past the expiry");
    assert_eq!(o.refresh(600).await, Err(401), "anyone else cannot");
    let mut o2 = TurnClient::udp(a.udp).await.unwrap();
    assert_eq!(o2.allocate(&m.username, &m.password).await, Err(401));

    close_session(&gw, &sid).await;
    crate_wait(|| gw.turn().unwrap().stats().allocations == 0).await;
    assert_eq!(
        c.refresh(600).await,
        Err(401),
        "not after the Session ended"
    );
    gw.shutdown().await;
}
