// The group-call demo page: a video grid with names, mute buttons, a chat over a data channel,
// leave. `window.demo` exposes state for the end-to-end tests.
import { SwitchboardClient } from "/switchboard.js";

const $ = (id) => document.getElementById(id);
const params = new URLSearchParams(location.search);
const tiles = new Map(); // session id -> { tile, video, stream }
const chatLog = [];
const speakers = []; // active-speaker session ids as announced, for tests
let client = null;

function tile(sessionId, label) {
  let t = tiles.get(sessionId);
  if (!t) {
    const el = document.createElement("div");
    el.className = "tile";
    el.dataset.session = sessionId;
    const video = document.createElement("video");
    video.autoplay = true;
    video.playsInline = true;
    const name = document.createElement("div");
    name.className = "name";
    el.append(video, name);
    $("grid").append(el);
    t = { el, video, name, stream: new MediaStream() };
    video.srcObject = t.stream;
    tiles.set(sessionId, t);
  }
  if (label) t.name.textContent = label;
  return t;
}

function log(text) {
  const p = document.createElement("div");
  p.textContent = text;
  $("log").append(p);
  $("log").scrollTop = 1e9;
}

/**
 * ICE options from `?relay=udp|tcp|tls|any`: only relayed candidates, through the TURN URLs of that
 * transport (none given: every candidate, every server).
 */
function iceOptions(relay) {
  if (!relay) return {};
  const keep = (url) =>
    relay === "any" ||
    (relay === "tls" ? url.startsWith("turns:") : url.startsWith("turn:") && url.includes(`transport=${relay}`));
  return {
    iceTransportPolicy: "relay",
    iceServers: (servers) =>
      servers
        .map((s) => ({ ...s, urls: [].concat(s.urls).filter(keep) }))
        .filter((s) => s.urls.length > 0),
  };
}

async function join(room, name, { simulcast = true, hd = true, relay = null } = {}) {
  const url = `${location.protocol === "https:" ? "wss" : "ws"}://${location.host}/ws`;
  client = new SwitchboardClient({ url, room, name });
  client.addEventListener("track", ({ detail }) => {
    const t = tile(detail.sessionId, detail.participant || client.peers.get(detail.sessionId)?.participant);
    t.stream.addTrack(detail.track);
    if (detail.track.kind === "video") {
      t.videoTrackId = detail.track.id;
      // A quality toggle per tile: best layer, or the lowest (saves bandwidth).
      const q = document.createElement("button");
      q.className = "quality";
      q.textContent = "HD";
      q.onclick = () => {
        const low = q.textContent === "HD";
        client.setPreference(detail.track.id, { maxLayer: low ? 0 : null });
        q.textContent = low ? "SD" : "HD";
      };
      t.el.append(q);
    }
    if (detail.track.kind === "video") t.video.srcObject = t.stream;
    detail.track.onended = () => t.stream.removeTrack(detail.track);
  });
  client.addEventListener("peer-joined", ({ detail }) => {
    log(`${detail.participant} joined`);
    if (tiles.has(detail.sessionId)) tile(detail.sessionId, detail.participant);
  });
  client.addEventListener("peer-left", ({ detail }) => {
    const t = tiles.get(detail.sessionId);
    if (t) {
      log(`${t.name.textContent} left`);
      t.el.remove();
      tiles.delete(detail.sessionId);
    }
  });
  client.addEventListener("chat", ({ detail }) => {
    chatLog.push(detail);
    log(`${detail.from}: ${detail.text}`);
  });
  client.addEventListener("active-speaker", ({ detail }) => {
    for (const [id, t] of tiles) t.el.classList.toggle("speaking", id === detail.sessionId);
    speakers.push(detail.sessionId);
  });
  client.addEventListener("connection", ({ detail }) => ($("status").textContent = detail.state));
  client.addEventListener("error", ({ detail }) => console.warn("switchboard:", detail.message));
  const video = hd ? { width: { min: 1280 }, height: { min: 720 } } : { width: 640, height: 480 };
  await client.join({ audio: true, video, simulcast }, iceOptions(relay));
  const me = tile("local", `${name} (you)`);
  me.video.muted = true;
  me.video.srcObject = client.localStream;
  for (const b of ["mic", "cam", "leave"]) $(b).disabled = false;
  $("join").hidden = true;
}

$("join").onsubmit = (e) => {
  e.preventDefault();
  join($("room").value || "lobby", $("name").value || `guest-${Math.floor(Math.random() * 1000)}`);
};
let micOn = true;
let camOn = true;
$("mic").onclick = () => {
  micOn = !micOn;
  client.setMicEnabled(micOn);
  $("mic").textContent = micOn ? "Mute mic" : "Unmute mic";
};
$("cam").onclick = () => {
  camOn = !camOn;
  client.setCameraEnabled(camOn);
  $("cam").textContent = camOn ? "Camera off" : "Camera on";
};
$("leave").onclick = () => {
  client.leave();
  for (const [id, t] of tiles) {
    t.el.remove();
    tiles.delete(id);
  }
  $("leave").disabled = true;
  $("status").textContent = "left";
};
$("chat").onsubmit = (e) => {
  e.preventDefault();
  const text = $("text").value;
  if (text && client && client.sendChat(text)) {
    log(`me: ${text}`);
    $("text").value = "";
  }
};

// For tests and the curious: what this page receives.
window.demo = {
  join,
  chatLog,
  speakers,
  highlighted: () => [...tiles.entries()].filter(([, t]) => t.el.classList.contains("speaking")).map(([id]) => id),
  sendChat: (t) => client.sendChat(t),
  leave: () => $("leave").onclick(),
  pc: () => client?.pc,
  shareScreen: () => client.shareScreen().then(() => true),
  restartIce: () => client.restartIce(),
  /** The ICE servers this page uses (as returned by the backend, after the `relay` filter). */
  iceServers: () => client?.iceServers || [],
  /** The nominated candidate pair: local and remote candidate types and protocols. */
  async selectedPair() {
    if (!client?.pc) return null;
    const stats = await client.pc.getStats();
    let pair = null;
    stats.forEach((s) => {
      if (s.type === "transport" && s.selectedCandidatePairId) pair = stats.get(s.selectedCandidatePairId);
    });
    if (!pair) return null;
    const local = stats.get(pair.localCandidateId);
    const remote = stats.get(pair.remoteCandidateId);
    return {
      state: pair.state,
      localType: local?.candidateType,
      localProtocol: local?.protocol,
      relayProtocol: local?.relayProtocol,
      remoteType: remote?.candidateType,
      remoteProtocol: remote?.protocol,
      bytesSent: pair.bytesSent || 0,
      bytesReceived: pair.bytesReceived || 0,
    };
  },
  remoteSessions: () => [...tiles.keys()].filter((k) => k !== "local"),
  /** Sets the highest layer this page receives of a remote session's video (null = best). */
  setQuality(sessionId, maxLayer) {
    const t = tiles.get(sessionId);
    if (!t || !t.videoTrackId) return false;
    client.setPreference(t.videoTrackId, { maxLayer });
    return true;
  },
  names: () => [...tiles.values()].map((t) => t.name.textContent),
  async inbound() {
    const out = [];
    if (!client?.pc) return out;
    const stats = await client.pc.getStats();
    stats.forEach((s) => {
      if (s.type === "inbound-rtp") {
        out.push({ kind: s.kind, mid: s.mid, framesDecoded: s.framesDecoded || 0, packetsReceived: s.packetsReceived || 0, bytesReceived: s.bytesReceived || 0, frameWidth: s.frameWidth || 0, frameHeight: s.frameHeight || 0 });
      }
    });
    return out;
  },
};

// Auto-join from the URL (tests): ?room=…&name=…[&simulcast=1][&hd=1][&relay=udp|tcp|tls|any]. The
// join form uses simulcast at 1280x720.
if (params.get("room") && params.get("name")) {
  join(params.get("room"), params.get("name"), {
    simulcast: params.get("simulcast") === "1",
    hd: params.get("hd") === "1",
    relay: params.get("relay"),
  });
}
