"""A GStreamer webrtcbin Peer (libnice ICE, OpenSSL DTLS with webrtcbin's default RSA-2048
certificate) and its backend, through the gateway's gRPC API: joins ROOM as PARTICIPANT,
publishes VP8 video and Opus audio, sends "hello from webrtcbin" every second on a data channel,
answers the gateway's offers, counts the RTP buffers it receives per media kind and keeps the
data-channel messages, and after SECONDS seconds prints one JSON line:

  {"connected_at": s, "disconnected_at": s|null, "closed": reason|null,
   "rtp": {"video": n, "audio": n}, "rtp_10s": {...} (10 s after connecting),
   "offer_audio_codecs": [...] (the rtpmap names of the gateway's offers' audio m-lines),
   "answer_audio_codecs": [...] (what webrtcbin answered to them),
   "dtls_key": "RSA"|"EC"|"?" , "ice_state": ..., "errors": [...], "messages": [...]}

followed by the same as flat `name=value` lines (see `finish`).

Times are seconds since the script started. Run with /usr/bin/python3 (python3-gi) plus grpcio:
clients/gstreamer/.venv (made with --system-site-packages, see scripts/test.sh).

usage: python webrtcbin_peer.py GATEWAY_ADDR ROOM PARTICIPANT SECONDS
"""
import base64
import json
import os
import sys
import threading
import time

here = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(here, "..", "python", "gen"))

import gi  # noqa: E402

gi.require_version("Gst", "1.0")
gi.require_version("GstWebRTC", "1.0")
gi.require_version("GstSdp", "1.0")
import grpc  # noqa: E402
from gi.repository import GLib, Gst, GstSdp, GstWebRTC  # noqa: E402
from switchboard.v1 import event_pb2, event_pb2_grpc  # noqa: E402
from switchboard.v1 import room_pb2, room_pb2_grpc  # noqa: E402
from switchboard.v1 import session_pb2, session_pb2_grpc  # noqa: E402

START = time.monotonic()


def now():
    return round(time.monotonic() - START, 2)


def call(el, sig, *args, key=None):
    """Emits a promise-taking action signal and waits for the reply (copied: the promise owns it)."""
    p = Gst.Promise.new()
    el.emit(sig, *args, p)
    p.wait()
    r = p.get_reply()
    if r is not None and r.has_field("error"):
        raise RuntimeError(f"{sig}: {r.get_value('error')}")
    return r.get_value(key).copy() if key else None


def description(kind, sdp):
    res, msg = GstSdp.SDPMessage.new_from_text(sdp)
    assert res == GstSdp.SDPResult.OK, res
    return GstWebRTC.WebRTCSessionDescription.new(kind, msg)


def audio_codecs(sdp):
    """The rtpmap codec names of every audio m-section of `sdp`, in order."""
    out, audio = [], False
    for line in sdp.splitlines():
        if line.startswith("m="):
            audio = line.startswith("m=audio")
        elif audio and line.startswith("a=rtpmap:"):
            out.append(line.split(" ", 1)[1].split("/")[0])
    return out


def key_type(pem):
    """RSA or EC: the public-key algorithm OID of the first certificate in `pem`."""
    body = pem.split("-----BEGIN CERTIFICATE-----", 1)[-1].split("-----END CERTIFICATE-----", 1)[0]
    der = base64.b64decode("".join(body.split()))
    if bytes.fromhex("06092a864886f70d010101") in der:  # rsaEncryption
        return "RSA"
    if bytes.fromhex("06072a8648ce3d0201") in der:  # id-ecPublicKey
        return "EC"
    return "?"


class WebrtcbinPeer:
    def __init__(self, addr, room, name):
        self.channel = grpc.insecure_channel(addr)
        self.rooms = room_pb2_grpc.RoomServiceStub(self.channel)
        self.sessions = session_pb2_grpc.SessionServiceStub(self.channel)
        self.events = event_pb2_grpc.EventServiceStub(self.channel)
        self.room, self.name = room, name
        self.res = {"connected_at": None, "disconnected_at": None, "closed": None,
                    "rtp": {"video": 0, "audio": 0}, "rtp_10s": None, "offer_audio_codecs": [], "answer_audio_codecs": [],
                    "dtls_key": "?", "ice_state": None, "errors": [], "messages": []}
        self.session_id = None
        self.pending_candidates = []
        self.offer_applied = False
        self.negotiated = False

        self.pipe = Gst.parse_launch(
            "webrtcbin name=w bundle-policy=max-bundle "
            "videotestsrc is-live=true pattern=ball ! video/x-raw,width=320,height=240,framerate=30/1 ! "
            "vp8enc deadline=1 ! rtpvp8pay pt=96 ! "
            "application/x-rtp,media=video,encoding-name=VP8,payload=96,clock-rate=90000 ! w. "
            "audiotestsrc is-live=true wave=sine ! audioconvert ! audioresample ! opusenc ! rtpopuspay pt=111 ! "
            "application/x-rtp,media=audio,encoding-name=OPUS,payload=111,clock-rate=48000 ! w.")
        self.w = self.pipe.get_by_name("w")
        # libnice skips loopback interfaces; keep the agent referenced (an unowned reference in 1.22).
        self.agent = self.w.get_property("ice-agent")
        self.agent.emit("add-local-ip-address", "127.0.0.1")
        self.w.connect("on-negotiation-needed", self.on_negotiation_needed)
        self.w.connect("on-ice-candidate", self.on_ice_candidate)
        self.w.connect("pad-added", self.on_pad)

    # --- backend side -------------------------------------------------------------------------
    def join(self):
        try:
            self.rooms.CreateRoom(room_pb2.CreateRoomRequest(room_id=self.room))
        except grpc.RpcError as e:
            if e.code() != grpc.StatusCode.ALREADY_EXISTS:
                raise
        stream = self.events.WatchEvents(event_pb2.WatchEventsRequest(room_id=self.room))
        created = self.sessions.CreateSession(
            session_pb2.CreateSessionRequest(room_id=self.room, participant_id=self.name))
        self.session_id = created.session.session_id

        def pump():
            try:
                for ev in stream:
                    if ev.session_id == self.session_id:
                        GLib.idle_add(self.on_event, ev)
            except grpc.RpcError:
                pass

        threading.Thread(target=pump, daemon=True).start()
        self.stream = stream
        # The data channel must exist in READY so that it is part of the first offer.
        self.pipe.set_state(Gst.State.READY)
        self.chat = self.w.emit("create-data-channel", "chat", None)
        self.chat.connect("on-message-string", self.on_message)
        self.pipe.set_state(Gst.State.PLAYING)
        GLib.timeout_add(1000, self.say_hello)

    def on_message(self, _channel, text):
        self.res["messages"].append(text)

    def say_hello(self):
        """Sends a message every second once the channel is open (the other Peer may join later)."""
        if self.chat.get_property("ready-state") == GstWebRTC.WebRTCDataChannelState.OPEN:
            self.chat.emit("send-string", "hello from webrtcbin")
        return True

    def on_event(self, ev):
        kind = ev.WhichOneof("kind")
        if kind == "negotiation_needed":
            n = ev.negotiation_needed
            self.res["offer_audio_codecs"].append(audio_codecs(n.sdp))
            try:
                call(self.w, "set-remote-description", description(GstWebRTC.WebRTCSDPType.OFFER, n.sdp))
                answer = call(self.w, "create-answer", None, key="answer")
                call(self.w, "set-local-description", answer)
                sdp = answer.sdp.as_text()
                self.res["answer_audio_codecs"].append(audio_codecs(sdp))
                self.sessions.ApplyAnswer(session_pb2.ApplyAnswerRequest(
                    session_id=self.session_id, sdp=sdp, offer_id=n.offer_id))
            except Exception as e:  # recorded, the caller decides what must have worked
                self.res["errors"].append(f"gateway offer {n.offer_id}: {e}")
        elif kind == "session_connected" and self.res["connected_at"] is None:
            self.res["connected_at"] = now()
            GLib.timeout_add(10_000, self.snapshot)
            self.res["dtls_key"] = self.dtls_key()
        elif kind == "session_disconnected" and self.res["disconnected_at"] is None:
            self.res["disconnected_at"] = now()
        elif kind == "session_closed":
            self.res["closed"] = event_pb2.SessionCloseReason.Name(ev.session_closed.reason)
        return False

    def snapshot(self):
        self.res["rtp_10s"] = dict(self.res["rtp"])
        return False

    # --- webrtcbin side ------------------------------------------------------------------------
    def on_negotiation_needed(self, _):
        if self.negotiated:  # negotiate once; later changes come as the gateway's offers
            return
        self.negotiated = True
        GLib.idle_add(self.offer)

    def offer(self):
        try:
            off = call(self.w, "create-offer", None, key="offer")
            call(self.w, "set-local-description", off)
            answer = self.sessions.ApplyOffer(
                session_pb2.ApplyOfferRequest(session_id=self.session_id, sdp=off.sdp.as_text()))
            call(self.w, "set-remote-description", description(GstWebRTC.WebRTCSDPType.ANSWER, answer.sdp))
            self.offer_applied = True
            for c in self.pending_candidates:
                self.add_candidate(c)
            self.pending_candidates = []
        except Exception as e:
            self.res["errors"].append(f"first offer: {e}")
        return False

    def on_ice_candidate(self, _, mline, cand):
        GLib.idle_add(self.queue_candidate, cand)

    def queue_candidate(self, cand):
        if self.offer_applied:
            self.add_candidate(cand)
        else:
            self.pending_candidates.append(cand)
        return False

    def add_candidate(self, cand):
        if " tcp " in cand.lower():  # libnice also gathers ICE-TCP; UDP is what this test uses
            return
        try:
            self.sessions.AddIceCandidate(session_pb2.AddIceCandidateRequest(
                session_id=self.session_id, candidate=cand))
        except grpc.RpcError as e:
            self.res["errors"].append(f"candidate {cand!r}: {e.code().name} {e.details()}")

    def on_pad(self, _, pad):
        if pad.direction != Gst.PadDirection.SRC:
            return
        caps = pad.get_current_caps()
        kind = caps.get_structure(0).get_string("media") if caps else "unknown"
        sink = Gst.ElementFactory.make("fakesink")
        sink.set_property("sync", False)
        self.pipe.add(sink)
        sink.sync_state_with_parent()
        pad.link(sink.get_static_pad("sink"))

        def count(_pad, _info):
            self.res["rtp"][kind] = self.res["rtp"].get(kind, 0) + 1
            return Gst.PadProbeReturn.OK

        sink.get_static_pad("sink").add_probe(Gst.PadProbeType.BUFFER, count)

    def dtls_key(self):
        """The key type of webrtcbin's own DTLS certificate (its dtlsdec's PEM)."""
        it = self.w.iterate_recurse()
        while True:
            ok, el = it.next()
            if ok != Gst.IteratorResult.OK:
                return "?"
            if el.get_factory() and el.get_factory().get_name() == "dtlsdec":
                return key_type(el.get_property("pem") or "")

    def finish(self, loop):
        r = self.res
        r["ice_state"] = self.w.get_property("ice-connection-state").value_nick
        if r["dtls_key"] == "?":
            r["dtls_key"] = self.dtls_key()
        print(json.dumps(r), flush=True)
        # The same, flat, for the Rust test to read.
        conn, disc, at10 = r["connected_at"], r["disconnected_at"], r["rtp_10s"] or {}
        flat = {
            "connected": conn is not None,
            "dtls_key": r["dtls_key"],
            "rtp_10s_video": at10.get("video", 0),
            "rtp_10s_audio": at10.get("audio", 0),
            "disconnected_after": round(disc - conn, 1) if conn is not None and disc is not None else "never",
            "closed": r["closed"] or "no",
            "offer_audio_codecs": ",".join("/".join(a) for a in r["offer_audio_codecs"]) or "none",
            "answer_audio_codecs": ",".join("/".join(a) for a in r["answer_audio_codecs"]) or "none",
            "errors": len(r["errors"]),
            "messages_from_aiortc": sum(m == "hello from aiortc" for m in r["messages"]),
        }
        for k, v in flat.items():
            print(f"{k}={v}", flush=True)
        loop.quit()
        return False


def main(addr, room, name, seconds):
    Gst.init(None)
    peer = WebrtcbinPeer(addr, room, name)
    loop = GLib.MainLoop()
    peer.join()
    GLib.timeout_add(int(seconds * 1000), peer.finish, loop)
    loop.run()
    peer.stream.cancel()
    peer.pipe.set_state(Gst.State.NULL)
    return 0


if __name__ == "__main__":
    try:
        code = main(sys.argv[1], sys.argv[2], sys.argv[3], float(sys.argv[4]))
    except Exception as e:  # report any failure as a non-zero exit with the reason
        print(f"FAIL: {e!r}", flush=True)
        code = 1
    os._exit(code)
