"""A short Switchboard backend in Python: create a Room, start a Session, watch events.

usage: python example.py [GATEWAY_ADDR]   (default 127.0.0.1:50051; run generate.sh first)
Set SWITCHBOARD_API_KEY when the gateway requires a key.
"""
import os
import sys
import threading

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "gen"))

import grpc  # noqa: E402
from switchboard.v1 import event_pb2, event_pb2_grpc  # noqa: E402
from switchboard.v1 import room_pb2, room_pb2_grpc  # noqa: E402
from switchboard.v1 import session_pb2, session_pb2_grpc  # noqa: E402


def main(addr: str) -> int:
    key = os.environ.get("SWITCHBOARD_API_KEY")
    metadata = [("authorization", f"Bearer {key}")] if key else []
    channel = grpc.insecure_channel(addr)
    rooms = room_pb2_grpc.RoomServiceStub(channel)
    sessions = session_pb2_grpc.SessionServiceStub(channel)
    events = event_pb2_grpc.EventServiceStub(channel)

    # Watch the room first, so no event is missed.
    stream = events.WatchEvents(event_pb2.WatchEventsRequest(room_id="py-example"), metadata=metadata)
    # The response headers arrive once the gateway has subscribed this stream.
    stream.initial_metadata()
    seen = []
    done = threading.Event()

    def read():
        try:
            for ev in stream:
                seen.append(ev.WhichOneof("kind"))
                print(f"event #{ev.sequence}: {ev.WhichOneof('kind')} session={ev.session_id or '-'}")
                if ev.WhichOneof("kind") == "room_closed":
                    break
        except grpc.RpcError as e:
            if e.code() != grpc.StatusCode.CANCELLED:
                raise
        finally:
            done.set()

    t = threading.Thread(target=read, daemon=True)
    t.start()

    room = rooms.CreateRoom(
        room_pb2.CreateRoomRequest(room_id="py-example", options=room_pb2.RoomOptions(max_sessions=4)),
        metadata=metadata,
    ).room
    print(f"room {room.room_id}: max {room.options.max_sessions} sessions")
    created = sessions.CreateSession(
        session_pb2.CreateSessionRequest(room_id=room.room_id, participant_id="python"),
        metadata=metadata,
    )
    print(f"session {created.session.session_id} for participant {created.session.participant_id}")
    # A backend mistake is refused with a status naming it: here INVALID_ARGUMENT for the sdp.
    try:
        sessions.ApplyOffer(
            session_pb2.ApplyOfferRequest(session_id=created.session.session_id, sdp="not sdp"),
            metadata=metadata,
        )
        print("a bad offer was accepted")
        return 1
    except grpc.RpcError as e:
        if e.code() != grpc.StatusCode.INVALID_ARGUMENT:
            print(f"a bad offer got {e.code().name}, wanted INVALID_ARGUMENT: {e.details()}")
            return 1
        print(f"a bad offer is refused: {e.code().name}: {e.details()}")
    rooms.DeleteRoom(room_pb2.DeleteRoomRequest(room_id=room.room_id), metadata=metadata)
    done.wait(10)
    stream.cancel()
    want = ["room_created", "participant_joined", "session_closed", "participant_left", "room_closed"]
    if seen != want:
        print(f"unexpected events {seen}, wanted {want}")
        return 1
    print("OK")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1] if len(sys.argv) > 1 else "127.0.0.1:50051"))
