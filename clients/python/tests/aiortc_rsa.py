"""aiortc Peers whose DTLS certificate is RSA (OpenSSL via pyOpenSSL, as in many server-side
stacks; aiortc itself generates ECDSA certificates), against the real gateway, driven by a Python
backend with the generated stubs. The gateway answers `a=setup:passive`, so the Peer is the DTLS
client and its RSA certificate is the client certificate the gateway must request and verify.

usage: python aiortc_rsa.py GATEWAY_ADDR accept|refuse

accept: "rita" (RSA-2048 certificate) and "ben" (aiortc's default ECDSA certificate) join one
        Room; each receives the other's audio and video, and data-channel messages go both ways.
        Prints "OK frames ..." on success.
refuse: "weak" (RSA-1024 certificate, below the gateway's 2048-bit minimum) joins; its DTLS
        handshake must fail and the gateway must close its Session. Prints
        "CLOSED reason=<SessionCloseReason name> after=<seconds>s dtls=<aiortc DTLS state>
        pc=<connection state> alert=<first TLS alert description the Peer received, or none>".
Exit code 0 when the scenario ran as described.
"""
import asyncio
import os
import sys
import time

here = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(here, "..", "gen"))
sys.path.insert(0, here)

import aiortc_call  # noqa: E402  (the Peer and the waits of the two-peer aiortc test)
import grpc  # noqa: E402
from aiortc.rtcdtlstransport import RTCCertificate, generate_certificate  # noqa: E402
from cryptography.hazmat.primitives.asymmetric import rsa  # noqa: E402
from OpenSSL import SSL  # noqa: E402
from switchboard.v1 import event_pb2, event_pb2_grpc  # noqa: E402
from switchboard.v1 import room_pb2, room_pb2_grpc  # noqa: E402
from switchboard.v1 import session_pb2_grpc  # noqa: E402

ROOM = "aiortc-rsa"
aiortc_call.ROOM = ROOM


class RsaCertificate(RTCCertificate):
    """An RTCCertificate with an RSA key of `bits` bits (signed with SHA-256)."""

    bits = 2048
    # Description codes of the TLS alerts the Peer received (RFC 5246 §7.2), in order.
    alerts_received = []

    @classmethod
    def generateCertificate(cls):
        key = rsa.generate_private_key(public_exponent=65537, key_size=cls.bits)
        return cls(key=key, cert=generate_certificate(key))

    def _create_ssl_context(self, srtp_profiles):
        ctx = SSL.Context(SSL.DTLS_METHOD)
        ctx.set_options(SSL.OP_NO_TICKET)
        ctx.set_verify(SSL.VERIFY_PEER | SSL.VERIFY_FAIL_IF_NO_PEER_CERT, lambda *args: True)
        # aiortc's own cipher list (our DTLS server's certificate is ECDSA). OpenSSL's default
        # security level refuses to even load a 1024-bit key: level 0 lets the weak Peer try,
        # so that the gateway is the one refusing it.
        seclevel = b":@SECLEVEL=0" if self.bits < 2048 else b""
        ctx.set_cipher_list(
            b"ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-ECDSA-CHACHA20-POLY1305:"
            b"ECDHE-ECDSA-AES128-SHA:ECDHE-ECDSA-AES256-SHA" + seclevel
        )
        ctx.use_certificate(self._cert)
        ctx.use_privatekey(self._key)

        def on_info(_conn, where, ret):
            if where & SSL.SSL_CB_READ_ALERT:
                RsaCertificate.alerts_received.append(ret & 0xFF)

        ctx.set_info_callback(on_info)
        ctx.set_tlsext_use_srtp(b":".join(x.openssl_profile for x in srtp_profiles))
        return ctx


class WeakRsaCertificate(RsaCertificate):
    bits = 1024


def rsa_peer(name, sessions, cert_class):
    """A Peer of aiortc_call whose RTCPeerConnection holds a `cert_class` certificate."""
    original = RTCCertificate.generateCertificate
    RTCCertificate.generateCertificate = cert_class.generateCertificate
    try:
        peer = aiortc_call.Peer(name, sessions)
    finally:
        RTCCertificate.generateCertificate = original
    cert = peer.pc._RTCPeerConnection__certificates[0]
    assert isinstance(cert, cert_class), type(cert)
    return peer


async def accept(rooms, sessions, stream):
    peers, closed = {}, []

    async def relay():
        async for ev in stream:
            kind = ev.WhichOneof("kind")
            if kind == "negotiation_needed" and ev.session_id in peers:
                n = ev.negotiation_needed
                asyncio.ensure_future(peers[ev.session_id].on_gateway_offer(n.offer_id, n.sdp))
            elif kind == "session_closed":
                closed.append(ev.session_id)

    relay_task = asyncio.ensure_future(relay())
    rita = rsa_peer("rita", sessions, RsaCertificate)
    ben = aiortc_call.Peer("ben", sessions)
    for p in (rita, ben):
        await p.join(peers)
    try:
        await aiortc_call.until("both receive video and audio", 20, lambda: all(
            p.frames["video"] >= 20 and p.frames["audio"] >= 20 for p in (rita, ben)))
    except AssertionError:
        print(f"frames rita={rita.frames} ben={ben.frames} "
              f"states={rita.pc.connectionState},{ben.pc.connectionState} closed={closed}")
        raise
    await aiortc_call.until("channels open", 10,
                            lambda: rita.chat.readyState == "open" and ben.chat.readyState == "open")
    await asyncio.sleep(0.3)
    rita.chat.send("hello from an RSA certificate")
    ben.chat.send(b"\x00\x01 from ben")
    await aiortc_call.until("messages both ways", 10, lambda: ben.messages and rita.messages)
    assert ben.messages == ["hello from an RSA certificate"], ben.messages
    assert rita.messages == [b"\x00\x01 from ben"], rita.messages
    assert not closed, f"sessions closed: {closed}"
    print(f"OK frames rita={rita.frames} ben={ben.frames}")
    relay_task.cancel()
    for p in (rita, ben):
        await p.pc.close()


async def refuse(rooms, sessions, stream, timeout):
    peers, closed = {}, asyncio.get_running_loop().create_future()

    async def relay():
        async for ev in stream:
            if ev.WhichOneof("kind") == "session_closed" and ev.session_id in peers and not closed.done():
                closed.set_result(ev.session_closed.reason)

    relay_task = asyncio.ensure_future(relay())
    weak = rsa_peer("weak", sessions, WeakRsaCertificate)
    start = time.monotonic()
    await weak.join(peers)
    reason = await asyncio.wait_for(closed, timeout)
    elapsed = time.monotonic() - start
    dtls = weak.pc.sctp.transport.state if weak.pc.sctp else "none"
    assert weak.frames == {"video": 0, "audio": 0}, weak.frames
    name = event_pb2.SessionCloseReason.Name(reason)
    alert = RsaCertificate.alerts_received[0] if RsaCertificate.alerts_received else "none"
    print(f"CLOSED reason={name} after={elapsed:.1f}s dtls={dtls} pc={weak.pc.connectionState} alert={alert}")
    relay_task.cancel()
    await weak.pc.close()


async def main(addr, mode, timeout):
    async with grpc.aio.insecure_channel(addr) as channel:
        rooms = room_pb2_grpc.RoomServiceStub(channel)
        sessions = session_pb2_grpc.SessionServiceStub(channel)
        events = event_pb2_grpc.EventServiceStub(channel)
        stream = events.WatchEvents(event_pb2.WatchEventsRequest(room_id=ROOM))
        await stream.initial_metadata()
        await rooms.CreateRoom(room_pb2.CreateRoomRequest(room_id=ROOM))
        if mode == "accept":
            await accept(rooms, sessions, stream)
        elif mode == "refuse":
            await refuse(rooms, sessions, stream, timeout)
        else:
            raise ValueError(f"unknown mode {mode!r}")
        await rooms.DeleteRoom(room_pb2.DeleteRoomRequest(room_id=ROOM))
    return 0


if __name__ == "__main__":
    try:
        sys.exit(asyncio.run(asyncio.wait_for(main(sys.argv[1], sys.argv[2], 40), 60)))
    except Exception as e:  # report any failure as a non-zero exit with the reason
        print(f"FAIL: {e!r}")
        sys.exit(1)
