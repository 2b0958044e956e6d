// werift (a pure TypeScript WebRTC stack) in a Room, with this script as its own small backend
// on the gRPC API (issue #15.4). The watcher, a werift Peer that publishes audio and video,
// joins with another werift publisher that stays; then CYCLES more werift publishers join and
// leave one after the other. The watcher answers every offer of the gateway: each joining
// publisher adds two m-lines, each leaving one stops them, and the next joining one is put into
// those stopped slots (recycled: new mid, new msid). werift 0.24 failed `createAnswer` on an
// offer with a stopped m-line followed by a new one, so without the gateway's recycling this
// fails at the second publisher that leaves.
//
// The publishers send generated RTP (Opus-sized audio payloads every 20 ms, VP8 key-frame
// payloads every 33 ms; nothing decodes them), counted per sending Session at the watcher.
//
// usage: node werift-cycles.mjs GATEWAY_ADDR [CYCLES=5]
// Prints `name=value` lines (checked by gateway/tests/werift.rs); exits 1 with `FAIL: reason` on a
// failure. Every wait is bounded.
import { RTCPeerConnection, RtpHeader, RtpPacket, useSdesMid } from "werift";
import { sections, until } from "../web/test/util.mjs";
import { connect } from "./api.mjs";

const [addr, cyclesArg] = process.argv.slice(2);
if (!addr) {
  console.error("usage: node werift-cycles.mjs GATEWAY_ADDR [CYCLES]");
  process.exit(2);
}
const CYCLES = Number(cyclesArg || 5);
const ROOM = "werift";
const api = connect(addr);
const { rooms, sessions, events, call } = api;

/** One werift Peer with its Session: publishes generated audio and video, counts what it gets. */
class Peer {
  constructor(name) {
    this.name = name;
    this.sessionId = null;
    this.pc = new RTCPeerConnection({
      iceServers: [],
      // werift leaves out loopback addresses; the test runs in a namespace that has only lo.
      iceAdditionalHostAddresses: ["127.0.0.1"],
      iceUseIpv6: false,
      bundlePolicy: "max-bundle",
      headerExtensions: { audio: [useSdesMid()], video: [useSdesMid()] },
    });
    this.audio = this.pc.addTransceiver("audio", { direction: "sendonly" });
    this.video = this.pc.addTransceiver("video", { direction: "sendonly" });
    this.received = new Map(); // sending Session id -> { audio, video } RTP packets
    this.offers = 0;
    this.answered = 0;
    this.errors = [];
    this.timers = [];
    this.queue = Promise.resolve();
    this.pc.ontrack = ({ track, transceiver, streams }) => {
      // The gateway's msid names the sending Session.
      const from =
        streams?.[0]?.id ||
        sections(this.pc.remoteDescription?.sdp).find((m) => m.mid === transceiver.mid)?.stream ||
        "?";
      track.onReceiveRtp.subscribe(() => {
        const n = this.received.get(from) || { audio: 0, video: 0 };
        n[track.kind] += 1;
        this.received.set(from, n);
      });
    };
  }

  /** Creates the Session, sends werift's offer and applies the gateway's answer. */
  async join(registry) {
    const { session } = await call(sessions, "CreateSession", { room_id: ROOM, participant_id: this.name });
    this.sessionId = session.session_id;
    // Registered before the offer: the gateway's own offer can follow its answer at once.
    registry.set(this.sessionId, this);
    await this.serially(async () => {
      await this.pc.setLocalDescription(await this.pc.createOffer());
      await until(`${this.name} gathers its candidates`, 5000, () => this.pc.iceGatheringState === "complete");
      const { sdp } = await call(sessions, "ApplyOffer", { session_id: this.sessionId, sdp: this.pc.localDescription.sdp });
      await this.pc.setRemoteDescription({ type: "answer", sdp });
    });
    await until(`${this.name} connects`, 10000, () => this.pc.connectionState === "connected" || this.pc.connectionState);
    this.send(this.audio, 20, 960, () => Buffer.from([0xfc, 0xff, 0xfe])); // an Opus frame (silence-sized)
    this.send(this.video, 33, 3000, () =>
      // VP8 payload descriptor (S=1, partition 0), then a key-frame tag and start code, 320x240.
      Buffer.from([0x10, 0x50, 0x01, 0x00, 0x9d, 0x01, 0x2a, 0x40, 0x01, 0xf0, 0x00, ...Array(100).fill(0)]),
    );
  }

  /** Answers one gateway offer (in order with everything else this Peer negotiates). */
  onOffer(offerId, sdp) {
    this.offers += 1;
    return this.serially(async () => {
      try {
        await this.pc.setRemoteDescription({ type: "offer", sdp });
        await this.pc.setLocalDescription(await this.pc.createAnswer());
        await call(sessions, "ApplyAnswer", { session_id: this.sessionId, sdp: this.pc.localDescription.sdp, offer_id: offerId });
        this.answered += 1;
      } catch (e) {
        this.errors.push(`offer ${offerId}: ${e.message || e}`);
      }
    });
  }

  serially(f) {
    const next = this.queue.then(f);
    this.queue = next.catch(() => {});
    return next;
  }

  /** Generated RTP on `transceiver` every `ms` (timestamps advancing `step`). */
  send(transceiver, ms, step, payload) {
    let seq = 0;
    let ts = 0;
    this.timers.push(
      setInterval(() => {
        const header = new RtpHeader({ sequenceNumber: seq, timestamp: ts, marker: true });
        seq = (seq + 1) & 0xffff;
        ts = (ts + step) >>> 0;
        transceiver.sender.sendRtp(new RtpPacket(header, payload())).catch(() => {});
      }, ms),
    );
  }

  got(from) {
    return this.received.get(from) || { audio: 0, video: 0 };
  }

  /** Leaves: the backend closes the Session, then the Peer connection. */
  async leave(registry) {
    for (const t of this.timers) clearInterval(t);
    await call(sessions, "CloseSession", { session_id: this.sessionId });
    registry.delete(this.sessionId);
    await this.pc.close();
  }
}

const peers = new Map();
const stream = events.WatchEvents({ room_id: ROOM }, api.md);
let code = 0;
const out = [];
const watcher = new Peer("watcher");
try {
  // The gateway streams only events after the subscription: wait for it before acting.
  await new Promise((resolve, reject) => {
    stream.on("metadata", resolve);
    stream.on("error", reject);
    setTimeout(() => reject(new Error("no event subscription within 5 s")), 5000);
  });
  stream.on("error", () => {});
  stream.on("data", (ev) => {
    const p = peers.get(ev.session_id);
    if (ev.kind === "negotiation_needed" && p) p.onOffer(ev.negotiation_needed.offer_id, ev.negotiation_needed.sdp);
  });
  await call(rooms, "CreateRoom", { room_id: ROOM });

  // The watcher receives `from`'s audio and video, both still growing.
  const receives = async (from, what) => {
    await until(`the watcher receives ${what}'s audio and video`, 15000, () => {
      const n = watcher.got(from);
      return (n.audio >= 10 && n.video >= 10) || JSON.stringify({ n, errors: watcher.errors });
    });
    const before = { ...watcher.got(from) };
    await until(`${what}'s RTP keeps arriving at the watcher`, 5000, () => {
      const n = watcher.got(from);
      return (n.audio > before.audio && n.video > before.video) || JSON.stringify(n);
    });
    return { ...watcher.got(from) };
  };
  // Every offer the watcher got is answered and its signaling is stable.
  const settled = (what) =>
    until(`the watcher answers every offer after ${what}`, 15000, () => {
      const live = watcher.offers === watcher.answered + watcher.errors.length;
      return (live && watcher.errors.length === 0 && watcher.pc.signalingState === "stable") ||
        JSON.stringify({ offers: watcher.offers, answered: watcher.answered, errors: watcher.errors, state: watcher.pc.signalingState });
    });

  await watcher.join(peers);
  out.push("connected=true");
  const stay = new Peer("stay");
  await stay.join(peers);
  const n = await receives(stay.sessionId, "the staying publisher");
  out.push(`rtp_stay=${n.audio},${n.video}`);
  await settled("the staying publisher joined");
  const mlines = [];
  for (let i = 0; i < CYCLES; i++) {
    const pub = new Peer(`pub${i}`);
    await pub.join(peers);
    const got = await receives(pub.sessionId, `publisher ${i}`);
    await settled(`publisher ${i} joined`);
    const live = sections(watcher.pc.remoteDescription.sdp).filter((m) => m.stream === pub.sessionId && m.port !== 0);
    out.push(`rtp_cycle_${i}=${got.audio},${got.video}`);
    out.push(`mids_cycle_${i}=${live.map((m) => m.mid).join(",")}`);
    await pub.leave(peers);
    await until(`the watcher's m-lines of publisher ${i} are stopped`, 15000, () => {
      const s = sections(watcher.pc.remoteDescription.sdp).filter((m) => live.some((l) => l.mid === m.mid));
      return s.every((m) => m.port === 0) || JSON.stringify(s);
    });
    await settled(`publisher ${i} left`);
    mlines.push(sections(watcher.pc.remoteDescription.sdp).length);
  }
  const after = await receives(stay.sessionId, "the staying publisher (after the cycles)");
  out.push(`rtp_stay_after=${after.audio},${after.video}`);
  out.push(`mlines=${mlines.join(",")}`);
  out.push(`offers=${watcher.offers}`, `answered=${watcher.answered}`, `errors=${watcher.errors.length}`);
  await stay.leave(peers);
  await watcher.leave(peers);
  await call(rooms, "DeleteRoom", { room_id: ROOM });
} catch (e) {
  out.push(`offers=${watcher.offers}`, `answered=${watcher.answered}`, `errors=${watcher.errors.length}`);
  out.push(`FAIL: ${e.message}${watcher.errors.length ? ` (answer errors: ${watcher.errors.join("; ")})` : ""}`);
  code = 1;
}
stream.cancel();
console.log(out.join("\n"));
process.exit(code);
