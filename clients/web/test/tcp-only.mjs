// ICE over TCP from a real browser: two pages join one room through the demo; page "tcp"
// (Chromium, or Firefox ESR with `firefox`) drops every UDP candidate of the gateway (from its SDP
// and from trickle) before the browser sees it, as if UDP were blocked, so it can only connect to
// the gateway's passive TCP candidates (RFC 6544). Page "udp" is Chromium as it is. Both pages
// decode each other's video and hear each other's audio, chat crosses, and the "tcp" page's
// selected candidate pair is TCP while the other page's is UDP.
//
// usage: node tcp-only.mjs <demo base URL> [chromium|firefox]
// Exit 0 on success; on failure prints the reason and exits 1. Every wait is bounded.
import puppeteer from "puppeteer-core";
import { launchChromium, until } from "./lib.mjs";

const [base, tcpBrowser = "chromium"] = process.argv.slice(2);
if (!base || !["chromium", "firefox"].includes(tcpBrowser)) {
  console.error("usage: node tcp-only.mjs <base url> [chromium|firefox]");
  process.exit(2);
}

// Runs in the page before any of its scripts.
function dropUdpCandidatesOfTheGateway() {
  const isUdp = (line) => (line.replace(/^a=/, "").split(" ")[2] || "").toLowerCase() === "udp";
  const strip = (sdp) =>
    sdp
      .split("\r\n")
      .filter((l) => !(l.startsWith("a=candidate:") && isUdp(l)))
      .join("\r\n");
  const srd = RTCPeerConnection.prototype.setRemoteDescription;
  RTCPeerConnection.prototype.setRemoteDescription = function (d, ...rest) {
    if (d && d.sdp) d = { type: d.type, sdp: strip(d.sdp) };
    return srd.call(this, d, ...rest);
  };
  const aic = RTCPeerConnection.prototype.addIceCandidate;
  RTCPeerConnection.prototype.addIceCandidate = function (c, ...rest) {
    if (c && c.candidate && isUdp(c.candidate)) return Promise.resolve();
    return aic.call(this, c, ...rest);
  };
}

async function media(page) {
  const s = await page.evaluate(() => window.demo.inbound());
  const v = s.filter((x) => x.kind === "video");
  const a = s.filter((x) => x.kind === "audio");
  return {
    frames: v.reduce((n, x) => n + x.framesDecoded, 0),
    audioPackets: a.reduce((n, x) => n + x.packetsReceived, 0),
  };
}

// The protocols of the page's selected candidate pair (Firefox marks it `selected` instead of
// naming it in a transport stat).
const selectedPair = (page) =>
  page.evaluate(async () => {
    const pc = window.demo.pc();
    if (!pc) return null;
    const stats = await pc.getStats();
    let pairId = null;
    stats.forEach((s) => {
      if (s.type === "transport" && s.selectedCandidatePairId) pairId = s.selectedCandidatePairId;
    });
    stats.forEach((s) => {
      if (!pairId && s.type === "candidate-pair" && s.selected) pairId = s.id;
    });
    const pair = pairId && stats.get(pairId);
    if (!pair) return null;
    const local = stats.get(pair.localCandidateId);
    const remote = stats.get(pair.remoteCandidateId);
    return { local: local.protocol, tcpType: local.tcpType || null, remote: remote.protocol, remotePort: remote.port };
  });

const browser = await launchChromium();
const ctx = browser.ctx;
const firefox =
  tcpBrowser === "firefox"
    ? await puppeteer.launch({
        browser: "firefox",
        executablePath: process.env.FIREFOX || "/usr/bin/firefox-esr",
        headless: true,
        extraPrefsFirefox: {
          "media.navigator.streams.fake": true,
          "media.navigator.permission.disabled": true,
          "media.peerconnection.ice.loopback": true,
          "media.peerconnection.ice.tcp": true,
          "media.peerconnection.ice.obfuscate_host_addresses": false,
          "permissions.default.camera": 1,
          "permissions.default.microphone": 1,
          "media.autoplay.default": 0,
        },
      })
    : null;
let code = 0;
try {
  let tcp;
  if (firefox) {
    tcp = await firefox.newPage();
    await tcp.evaluateOnNewDocument(dropUdpCandidatesOfTheGateway);
  } else {
    tcp = await ctx.newPage();
    await tcp.addInitScript(dropUdpCandidatesOfTheGateway);
  }
  const udp = await ctx.newPage();
  for (const [name, p] of [["tcp", tcp], ["udp", udp]]) {
    p.on("console", (m) => {
      if (m.type() === "error") console.error(`[${name}] ${m.text()}`);
    });
    await p.goto(`${base}/?room=ice-tcp&name=${name}`);
  }
  for (const [name, p] of [["tcp", tcp], ["udp", udp]]) {
    await until(`${name} decodes video and receives audio`, 40000, async () => {
      const m = await media(p);
      return (m.frames > 10 && m.audioPackets > 10) || JSON.stringify(m);
    });
  }
  const tp = await selectedPair(tcp);
  if (!tp || tp.local !== "tcp" || tp.remote !== "tcp") throw new Error(`tcp page's pair is not TCP: ${JSON.stringify(tp)}`);
  const up = await selectedPair(udp);
  if (!up || up.local !== "udp") throw new Error(`udp page's pair is not UDP: ${JSON.stringify(up)}`);

  // Media keeps flowing over TCP.
  const before = (await media(udp)).frames;
  await until("udp page keeps decoding the tcp page's video", 10000, async () => (await media(udp)).frames > before + 10 || "stalled");

  await until("tcp page's chat channel is open", 10000, () => tcp.evaluate(() => window.demo.sendChat("hello over tcp")));
  await until("udp page gets the chat", 10000, () =>
    udp.evaluate(() => window.demo.chatLog.some((m) => m.from === "tcp" && m.text === "hello over tcp")),
  );
  await until("udp page's chat channel is open", 10000, () => udp.evaluate(() => window.demo.sendChat("hello over udp")));
  await until("tcp page gets the chat", 10000, () =>
    tcp.evaluate(() => window.demo.chatLog.some((m) => m.from === "udp" && m.text === "hello over udp")),
  );
  console.log(`ok: tcp page pair ${JSON.stringify(tp)}, udp page pair ${JSON.stringify(up)}`);
} catch (e) {
  console.error(String(e && e.stack ? e.stack : e));
  code = 1;
} finally {
  if (firefox) await firefox.close().catch(() => {});
  await browser.close();
}
process.exit(code);
