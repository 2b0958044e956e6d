// Two Chromium pages forced through a TURN relay (iceTransportPolicy "relay") into the gateway:
// video, audio and chat both ways, and the nominated pair on both pages is a relayed candidate
// over the asked transport. Then the TURN server's door: credentials minted with the shared
// secret work, a wrong password and an expired username are refused with 401.
//
// usage: node relay.mjs <demo base URL> <udp|tcp|tls> <shared secret> [room]
// Exit 0 on success; on failure prints the reason and exits 1. Every wait is bounded.
import { launchChromium, until } from "./lib.mjs";

const [base, transport, secret, room = `relay-${transport}`] = process.argv.slice(2);
if (!base || !["udp", "tcp", "tls"].includes(transport) || !secret) {
  console.error("usage: node relay.mjs <base url> <udp|tcp|tls> <secret> [room]");
  process.exit(2);
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

// Runs in the page: gathers candidates for a throwaway connection through one TURN server and
// reports the relayed candidates and the errors the TURN server answered with.
async function probe(page, server) {
  return page.evaluate(async (server) => {
    const pc = new RTCPeerConnection({ iceServers: [server], iceTransportPolicy: "relay" });
    const relay = [];
    const errors = [];
    pc.onicecandidate = (e) => e.candidate && e.candidate.type === "relay" && relay.push(e.candidate.candidate);
    pc.onicecandidateerror = (e) => errors.push(e.errorCode);
    pc.createDataChannel("probe");
    await pc.setLocalDescription(await pc.createOffer());
    await new Promise((done) => {
      if (pc.iceGatheringState === "complete") return done();
      pc.onicegatheringstatechange = () => pc.iceGatheringState === "complete" && done();
      setTimeout(done, 15000);
    });
    pc.close();
    return { relay, errors };
  }, server);
}

// Mints coturn-style (use-auth-secret) credentials in the page with WebCrypto.
async function mint(page, secret, expiry, identity) {
  return page.evaluate(
    async ({ secret, expiry, identity }) => {
      const username = `${expiry}:${identity}`;
      const enc = new TextEncoder();
      const key = await crypto.subtle.importKey("raw", enc.encode(secret), { name: "HMAC", hash: "SHA-1" }, false, ["sign"]);
      const mac = new Uint8Array(await crypto.subtle.sign("HMAC", key, enc.encode(username)));
      return { username, credential: btoa(String.fromCharCode(...mac)) };
    },
    { secret, expiry, identity },
  );
}

const browsers = [await launchChromium(), await launchChromium()];
let code = 0;
try {
  const pages = [];
  for (const [i, b] of browsers.entries()) {
    const p = await b.ctx.newPage();
    p.on("console", (m) => m.type() === "error" && !m.text().includes("404") && console.error(`[page ${i}] ${m.text()}`));
    await p.goto(`${base}/?room=${room}&name=p${i}&relay=${transport}`);
    pages.push(p);
  }
  for (const [i, p] of pages.entries()) {
    await until(`page ${i} decodes video and receives audio through the relay`, 60000, async () => {
      const m = await media(p);
      return (m.frames > 10 && m.audioPackets > 10) || JSON.stringify(m);
    });
  }
  for (const [i, p] of pages.entries()) {
    const a = (await media(p)).frames;
    await new Promise((r) => setTimeout(r, 1500));
    const b = (await media(p)).frames;
    if (!(b > a)) throw new Error(`page ${i}: frames not rising (${a} -> ${b})`);
    const pair = await p.evaluate(() => window.demo.selectedPair());
    if (!pair || pair.localType !== "relay" || pair.relayProtocol !== transport) {
      throw new Error(`page ${i}: nominated pair is not relayed over ${transport}: ${JSON.stringify(pair)}`);
    }
  }
  await until("page 0's chat is open", 10000, () => pages[0].evaluate(() => window.demo.sendChat("over the relay")));
  await until("page 1 gets the chat", 10000, () =>
    pages[1].evaluate(() => window.demo.chatLog.some((m) => m.from === "p0" && m.text === "over the relay")),
  );
  await until("page 1's chat is open", 10000, () => pages[1].evaluate(() => window.demo.sendChat("and back")));
  await until("page 0 gets the chat", 10000, () =>
    pages[0].evaluate(() => window.demo.chatLog.some((m) => m.from === "p1" && m.text === "and back")),
  );

  // The TURN server the pages used, as the backend handed it out.
  const servers = await pages[0].evaluate(() => window.demo.iceServers());
  const scheme = transport === "tls" ? "turns:" : "turn:";
  const given = servers.find((s) => [].concat(s.urls).some((u) => u.startsWith(scheme)));
  if (!given || !given.username || !given.credential) throw new Error(`no TURN server with credentials: ${JSON.stringify(servers)}`);
  const urls = [].concat(given.urls).filter((u) => u.startsWith(scheme));
  const now = Math.floor(Date.now() / 1000);
  const cases = [
    ["the credentials the backend got", { urls, username: given.username, credential: given.credential }, true],
    ["credentials minted here from the shared secret", { urls, ...(await mint(pages[0], secret, now + 600, "relay-test")) }, true],
    ["a wrong password", { urls, username: given.username, credential: `${given.credential}x` }, false],
    ["an expired username", { urls, ...(await mint(pages[0], secret, now - 60, "relay-test")) }, false],
    ["a secret that is not the server's", { urls, ...(await mint(pages[0], `${secret}-not`, now + 600, "relay-test")) }, false],
  ];
  const results = {};
  for (const [what, server, ok] of cases) {
    const r = await probe(pages[0], server);
    results[what] = r;
    if (ok && r.relay.length === 0) throw new Error(`${what}: no relayed candidate (${JSON.stringify(r)})`);
    if (!ok && (r.relay.length !== 0 || !r.errors.includes(401))) {
      throw new Error(`${what}: expected a 401 and no relayed candidate (${JSON.stringify(r)})`);
    }
  }
  console.log(JSON.stringify({ ok: true, transport, pages: await Promise.all(pages.map(media)), results }));
} catch (e) {
  console.error(`FAIL: ${e.message}`);
  code = 1;
} finally {
  for (const b of browsers) await b.close();
}
process.exit(code);
