// Switchboard web client: the browser side of a Switchboard call.
//
// Dependency-free ES module. It speaks a small JSON protocol over a WebSocket to the backend
// (see clients/demo for the reference backend), which relays signaling to the gateway's gRPC API.
//
// Negotiation follows the "perfect negotiation" pattern. The gateway is the polite side: when both
// sides offer at once it drops its own offer and sends a fresh one after answering ours. So this
// client is impolite: it ignores a gateway offer that collides with its own.
//
// Usage:
//   import { SwitchboardClient } from "/switchboard.js";
//   const c = new SwitchboardClient({ url: "ws://host/ws", room: "standup", name: "alice" });
//   c.addEventListener("track", (e) => show(e.detail.sessionId, e.detail.track, e.detail.stream));
//   c.addEventListener("peer-left", (e) => remove(e.detail.sessionId));
//   c.addEventListener("chat", (e) => print(e.detail.from, e.detail.text));
//   c.addEventListener("active-speaker", (e) => highlight(e.detail.sessionId)); // null: nobody
//   await c.join({ audio: true, video: true });
//   c.sendChat("hello"); c.sendDirect(otherSessionId, "psst"); await c.shareScreen();
//   c.setMicEnabled(false); c.leave();

/**
 * @typedef {{ sessionId: string, participant: string }} Peer
 */

export class SwitchboardClient extends EventTarget {
  /**
   * @param {{ url: string, room: string, name: string }} opts
   *   url: the backend's WebSocket endpoint (e.g. `ws://127.0.0.1:8080/ws`).
   */
  constructor({ url, room, name }) {
    super();
    this.url = url;
    this.room = room;
    this.name = name;
    /** @type {RTCPeerConnection | null} */
    this.pc = null;
    /** @type {WebSocket | null} */
    this.ws = null;
    /** @type {MediaStream | null} */
    this.localStream = null;
    /** @type {Map<string, Peer>} session id -> peer */
    this.peers = new Map();
    this.sessionId = null;
    this.makingOffer = false;
    this.chat = null;
    this._queue = Promise.resolve();
  }

  /**
   * Joins the Room: opens the WebSocket, captures media, connects to the gateway.
   * @param {{ audio?: boolean, video?: boolean | MediaTrackConstraints, chat?: boolean, simulcast?: boolean, direct?: boolean }} [opts]
   *   direct: open the `sb.direct` channel for `sendDirect` (messages to one Session).
   *   simulcast: send the camera as three layers (rids q, h, f at 1/4, 1/2 and full resolution);
   *   the gateway forwards one per subscriber. Browsers send all three only from 960x540 up.
   * @param {{ iceTransportPolicy?: RTCIceTransportPolicy, iceServers?: (servers: RTCIceServer[]) => RTCIceServer[] }} [ice]
   *   iceTransportPolicy: "relay" forces the call through a TURN server (the gateway's ICE servers
   *   carry short-lived TURN credentials). iceServers: filters or replaces the servers the backend
   *   returned (e.g. keep only `?transport=tcp` URLs).
   */
  async join(
    { audio = true, video = true, chat = true, simulcast = false, direct = true } = {},
    { iceTransportPolicy = "all", iceServers = (s) => s } = {},
  ) {
    const q = new URLSearchParams({ room: this.room, name: this.name });
    this.ws = new WebSocket(`${this.url}?${q}`);
    const welcome = await new Promise((resolve, reject) => {
      this.ws.onmessage = (e) => {
        const m = JSON.parse(e.data);
        if (m.type === "welcome") resolve(m);
        else if (m.type === "error") reject(new Error(m.message));
      };
      this.ws.onerror = () => reject(new Error("WebSocket failed"));
    });
    this.sessionId = welcome.session_id;
    for (const p of welcome.peers) this._addPeer(p.session_id, p.participant);

    this.iceServers = iceServers(welcome.ice_servers || []);
    const pc = new RTCPeerConnection({ iceServers: this.iceServers, iceTransportPolicy, bundlePolicy: "max-bundle" });
    this.pc = pc;
    pc.onicecandidate = ({ candidate }) =>
      this._send({
        type: "candidate",
        candidate: candidate ? candidate.candidate : "",
        sdp_mid: candidate ? candidate.sdpMid || "" : "",
      });
    pc.ontrack = (e) => {
      const stream = e.streams[0];
      const sessionId = stream ? stream.id : "";
      this._emit("track", { sessionId, participant: this.peers.get(sessionId)?.participant || "", track: e.track, stream });
    };
    pc.onconnectionstatechange = () => this._emit("connection", { state: pc.connectionState });
    pc.onnegotiationneeded = () => this._offer();
    // From here on every server message is handled, in order (the answer to our first offer can
    // arrive before getUserMedia resolves).
    this.ws.onmessage = (e) => this._enqueue(() => this._onMessage(JSON.parse(e.data)));
    this.ws.onclose = () => this._emit("closed", {});

    if (chat) {
      this.chat = pc.createDataChannel("chat");
      this.chat.onmessage = (e) => {
        try {
          const m = JSON.parse(e.data);
          this._emit("chat", { from: String(m.from), text: String(m.text) });
        } catch (_) {
          /* not ours */
        }
      };
    }
    if (direct) {
      this.direct = pc.createDataChannel("sb.direct");
      this.direct.onmessage = (e) => {
        const text = String(e.data);
        const nl = text.indexOf("\n");
        if (nl > 0) this._emit("direct", { from: text.slice(0, nl), text: text.slice(nl + 1) });
      };
    }
    if (audio || video) {
      this.localStream = await navigator.mediaDevices.getUserMedia({ audio, video });
      for (const track of this.localStream.getTracks()) {
        const init = { direction: "sendonly", streams: [this.localStream] };
        if (simulcast && track.kind === "video") {
          init.sendEncodings = [
            { rid: "q", scaleResolutionDownBy: 4, maxBitrate: 150_000 },
            { rid: "h", scaleResolutionDownBy: 2, maxBitrate: 500_000 },
            { rid: "f", maxBitrate: 1_500_000 },
          ];
        }
        pc.addTransceiver(track, init);
      }
    }
    return welcome;
  }

  /** Sends a chat message to everyone in the Room. */
  sendChat(text) {
    if (this.chat && this.chat.readyState === "open") {
      this.chat.send(JSON.stringify({ from: this.name, text }));
      return true;
    }
    return false;
  }

  /**
   * Sends a message to one Session only, over the `sb.direct` channel (opened at join when
   * `direct` is set). The receiver gets a `direct` event with the sender's session id.
   */
  sendDirect(sessionId, text) {
    if (this.direct && this.direct.readyState === "open") {
      this.direct.send(`${sessionId}\n${text}`);
      return true;
    }
    return false;
  }

  /**
   * Starts sharing the screen as an extra video track (a separate Track for subscribers).
   * Returns the MediaStream; stop its track to end the share.
   */
  async shareScreen() {
    const stream = await navigator.mediaDevices.getDisplayMedia({ video: true });
    for (const track of stream.getVideoTracks()) {
      const t = this.pc.addTransceiver(track, { direction: "sendonly", streams: [stream] });
      track.onended = () => {
        t.sender.replaceTrack(null);
        t.direction = "inactive";
      };
    }
    return stream;
  }

  /** Mutes or unmutes the microphone (the track stays negotiated). */
  setMicEnabled(on) {
    for (const t of this.localStream?.getAudioTracks() || []) t.enabled = on;
  }

  /** Turns the camera on or off (the track stays negotiated). */
  setCameraEnabled(on) {
    for (const t of this.localStream?.getVideoTracks() || []) t.enabled = on;
  }

  /**
   * Chooses what this client receives of a remote track (its `MediaStreamTrack.id`, which is the
   * gateway's track id): the highest simulcast layer (0 = lowest; null = best available) and
   * whether it is paused.
   */
  setPreference(trackId, { maxLayer = null, paused = false } = {}) {
    this._send({ type: "preference", track_id: trackId, max_layer: maxLayer, paused });
  }

  /** Restarts ICE (after a network change). */
  restartIce() {
    this.pc?.restartIce();
  }

  /** Leaves the Room. */
  leave() {
    this.ws?.close();
    this.pc?.close();
    for (const t of this.localStream?.getTracks() || []) t.stop();
  }

  _emit(type, detail) {
    this.dispatchEvent(new CustomEvent(type, { detail }));
  }

  _send(m) {
    if (this.ws && this.ws.readyState === WebSocket.OPEN) this.ws.send(JSON.stringify(m));
  }

  _enqueue(f) {
    this._queue = this._queue.then(f).catch((e) => this._emit("error", { message: String(e) }));
  }

  _addPeer(sessionId, participant) {
    // The welcome list and the join event can both name a peer that joined at that moment.
    if (this.peers.has(sessionId)) return;
    this.peers.set(sessionId, { sessionId, participant });
    this._emit("peer-joined", { sessionId, participant });
  }

  async _offer() {
    const pc = this.pc;
    try {
      this.makingOffer = true;
      await pc.setLocalDescription();
      this._send({ type: "offer", sdp: pc.localDescription.sdp });
    } finally {
      this.makingOffer = false;
    }
  }

  async _onMessage(m) {
    const pc = this.pc;
    switch (m.type) {
      case "answer":
        await pc.setRemoteDescription({ type: "answer", sdp: m.sdp });
        break;
      case "offer": {
        const collision = this.makingOffer || pc.signalingState !== "stable";
        // Impolite: the gateway yields on glare and re-offers after answering ours.
        if (collision) return;
        await pc.setRemoteDescription({ type: "offer", sdp: m.sdp });
        await pc.setLocalDescription();
        this._send({ type: "answer", sdp: pc.localDescription.sdp, offer_id: m.offer_id });
        break;
      }
      case "peer-joined":
        this._addPeer(m.session_id, m.participant);
        break;
      case "peer-left":
        this.peers.delete(m.session_id);
        this._emit("peer-left", { sessionId: m.session_id });
        break;
      case "active-speaker":
        this._emit("active-speaker", { sessionId: m.session_id || null });
        break;
      case "error":
        this._emit("error", { message: m.message });
        break;
    }
  }
}
