"""Two aiortc Peers (an independent WebRTC stack) in one Room, driven by a Python backend that
uses the generated stubs: both publish audio and video, each receives the other's, and data-channel
messages go both ways. Exit code 0 on success.

usage: python aiortc_call.py GATEWAY_ADDR
"""
import asyncio
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "gen"))

import aioice.ice  # noqa: E402
import grpc  # noqa: E402
from aiortc import RTCPeerConnection, RTCSessionDescription  # noqa: E402
from aiortc.mediastreams import AudioStreamTrack, MediaStreamError, VideoStreamTrack  # noqa: E402
from switchboard.v1 import event_pb2, event_pb2_grpc  # noqa: E402
from switchboard.v1 import room_pb2, room_pb2_grpc  # noqa: E402
from switchboard.v1 import session_pb2, session_pb2_grpc  # noqa: E402

# aioice leaves out loopback addresses; the test runs in a namespace that has only lo.
aioice.ice.get_host_addresses = lambda use_ipv4, use_ipv6: ["127.0.0.1"]

ROOM = "aiortc"


class Peer:
    def __init__(self, name, sessions):
        self.name = name
        self.sessions = sessions
        self.pc = RTCPeerConnection()
        self.session_id = None
        self.frames = {"video": 0, "audio": 0}
        self.messages = []
        self.pc.addTrack(AudioStreamTrack())
        self.pc.addTrack(VideoStreamTrack())
        self.chat = self.pc.createDataChannel("chat")
        self.chat.on("message", self.messages.append)
        self.lock = asyncio.Lock()

        @self.pc.on("track")
        def on_track(track):
            async def pull():
                try:
                    while True:
                        await track.recv()
                        self.frames[track.kind] += 1
                except MediaStreamError:
                    pass

            asyncio.ensure_future(pull())

    async def join(self, registry):
        created = await self.sessions.CreateSession(
            session_pb2.CreateSessionRequest(room_id=ROOM, participant_id=self.name)
        )
        self.session_id = created.session.session_id
        # Register before the offer: the gateway may send its own offer right after answering.
        registry[self.session_id] = self
        async with self.lock:
            await self.pc.setLocalDescription(await self.pc.createOffer())
            answer = await self.sessions.ApplyOffer(
                session_pb2.ApplyOfferRequest(session_id=self.session_id, sdp=self.pc.localDescription.sdp)
            )
            await self.pc.setRemoteDescription(RTCSessionDescription(sdp=answer.sdp, type="answer"))

    async def on_gateway_offer(self, offer_id, sdp):
        async with self.lock:
            await self.pc.setRemoteDescription(RTCSessionDescription(sdp=sdp, type="offer"))
            await self.pc.setLocalDescription(await self.pc.createAnswer())
            await self.sessions.ApplyAnswer(
                session_pb2.ApplyAnswerRequest(
                    session_id=self.session_id, sdp=self.pc.localDescription.sdp, offer_id=offer_id
                )
            )


async def until(what, seconds, cond):
    for _ in range(int(seconds * 10)):
        if cond():
            return
        await asyncio.sleep(0.1)
    raise AssertionError(f"timed out: {what}")


async def main(addr):
    async with grpc.aio.insecure_channel(addr) as channel:
        rooms = room_pb2_grpc.RoomServiceStub(channel)
        sessions = session_pb2_grpc.SessionServiceStub(channel)
        events = event_pb2_grpc.EventServiceStub(channel)
        stream = events.WatchEvents(event_pb2.WatchEventsRequest(room_id=ROOM))
        await stream.initial_metadata()
        await rooms.CreateRoom(room_pb2.CreateRoomRequest(room_id=ROOM))
        peers = {}

        async def relay():
            # The backend's job: relay the gateway's offers to the right Peer.
            async for ev in stream:
                if ev.WhichOneof("kind") == "negotiation_needed" and ev.session_id in peers:
                    n = ev.negotiation_needed
                    asyncio.ensure_future(peers[ev.session_id].on_gateway_offer(n.offer_id, n.sdp))

        relay_task = asyncio.ensure_future(relay())
        a, b = Peer("ana", sessions), Peer("ben", sessions)
        for p in (a, b):
            await p.join(peers)
        try:
            await until("both receive video and audio", 20, lambda: all(
                p.frames["video"] >= 20 and p.frames["audio"] >= 20 for p in (a, b)))
        except AssertionError:
            print(f"frames ana={a.frames} ben={b.frames} states={a.pc.connectionState},{b.pc.connectionState}")
            raise
        await until("channels open", 10, lambda: a.chat.readyState == "open" and b.chat.readyState == "open")
        await asyncio.sleep(0.3)
        a.chat.send("hola from ana")
        b.chat.send(b"\x00\x01 from ben")
        await until("messages both ways", 10, lambda: b.messages and a.messages)
        assert b.messages == ["hola from ana"], b.messages
        assert a.messages == [b"\x00\x01 from ben"], a.messages
        print(f"OK frames ana={a.frames} ben={b.frames}")
        relay_task.cancel()
        for p in (a, b):
            await p.pc.close()
        await rooms.DeleteRoom(room_pb2.DeleteRoomRequest(room_id=ROOM))
    return 0


if __name__ == "__main__":
    try:
        sys.exit(asyncio.run(asyncio.wait_for(main(sys.argv[1]), 60)))
    except Exception as e:  # report any failure as a non-zero exit with the reason
        print(f"FAIL: {e!r}")
        sys.exit(1)
