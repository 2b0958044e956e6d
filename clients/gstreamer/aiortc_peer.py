"""One aiortc Peer (ECDSA certificate, aiortc's default) and its backend: joins ROOM as
PARTICIPANT, publishes audio and video, sends "hello from aiortc" every second on its data
channel, receives whatever the gateway sends it for SECONDS seconds, then prints one JSON line {"frames": {"video": n, "audio": n}, "state": ...} and the
frame counts as `frames_video=n` / `frames_audio=n` lines and the number of "hello from
webrtcbin" messages as `messages_from_webrtcbin=n`.
The partner of webrtcbin_peer.py in gateway/tests/webrtcbin.rs; run with clients/python/.venv.

usage: python aiortc_peer.py GATEWAY_ADDR ROOM PARTICIPANT SECONDS
"""
import asyncio
import json
import os
import sys

here = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(here, "..", "python", "gen"))
sys.path.insert(0, os.path.join(here, "..", "python", "tests"))

import aiortc_call  # noqa: E402  (Peer: aiortc with audio, video and a data channel)
import grpc  # noqa: E402
from switchboard.v1 import event_pb2, event_pb2_grpc  # noqa: E402
from switchboard.v1 import room_pb2, room_pb2_grpc  # noqa: E402
from switchboard.v1 import session_pb2_grpc  # noqa: E402


async def main(addr, room, name, seconds):
    aiortc_call.ROOM = room
    async with grpc.aio.insecure_channel(addr) as channel:
        rooms = room_pb2_grpc.RoomServiceStub(channel)
        sessions = session_pb2_grpc.SessionServiceStub(channel)
        events = event_pb2_grpc.EventServiceStub(channel)
        try:
            await rooms.CreateRoom(room_pb2.CreateRoomRequest(room_id=room))
        except grpc.aio.AioRpcError as e:
            if e.code() != grpc.StatusCode.ALREADY_EXISTS:
                raise
        stream = events.WatchEvents(event_pb2.WatchEventsRequest(room_id=room))
        await stream.initial_metadata()
        peers = {}

        async def relay():
            async for ev in stream:
                if ev.WhichOneof("kind") == "negotiation_needed" and ev.session_id in peers:
                    n = ev.negotiation_needed
                    asyncio.ensure_future(peers[ev.session_id].on_gateway_offer(n.offer_id, n.sdp))

        relay_task = asyncio.ensure_future(relay())
        peer = aiortc_call.Peer(name, sessions)
        await peer.join(peers)
        for _ in range(int(seconds)):
            await asyncio.sleep(1)
            if peer.chat.readyState == "open":
                peer.chat.send("hello from aiortc")
        print(json.dumps({"frames": peer.frames, "state": peer.pc.connectionState}), flush=True)
        print(f"frames_video={peer.frames['video']}\nframes_audio={peer.frames['audio']}", flush=True)
        print(f"messages_from_webrtcbin={peer.messages.count('hello from webrtcbin')}", flush=True)
        relay_task.cancel()
        await peer.pc.close()
    return 0


if __name__ == "__main__":
    try:
        secs = float(sys.argv[4])
        sys.exit(asyncio.run(asyncio.wait_for(main(sys.argv[1], sys.argv[2], sys.argv[3], secs), secs + 30)))
    except Exception as e:  # report any failure as a non-zero exit with the reason
        print(f"FAIL: {e!r}")
        sys.exit(1)
