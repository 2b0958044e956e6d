// Firefox ESR (its own ICE and DTLS) and Chromium in one room through the demo: video and audio
// both ways, chat both ways.
//
// usage: node firefox-chromium.mjs <demo base URL>
// Exit 0 on success; on failure prints the reason and exits 1. Every wait is bounded.
import puppeteer from "puppeteer-core";
import { launchChromium, until } from "./lib.mjs";

const [base] = process.argv.slice(2);
if (!base) {
  console.error("usage: node firefox-chromium.mjs <base url>");
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

const chromeBrowser = await launchChromium();
const chrome = chromeBrowser.ctx;
const firefox = await puppeteer.launch({
  browser: "firefox",
  executablePath: process.env.FIREFOX || "/usr/bin/firefox-esr",
  headless: true,
  extraPrefsFirefox: {
    "media.navigator.streams.fake": true,
    "media.navigator.permission.disabled": true,
    "media.peerconnection.ice.loopback": true,
    "media.peerconnection.ice.obfuscate_host_addresses": false,
    "permissions.default.camera": 1,
    "permissions.default.microphone": 1,
    "media.autoplay.default": 0,
  },
});
let code = 0;
try {
  const c = await chrome.newPage();
  c.on("console", (m) => m.type() === "error" && !m.text().includes("404") && console.error(`[chromium] ${m.text()}`));
  await c.goto(`${base}/?room=mix&name=chromium`);
  const f = await firefox.newPage();
  f.on("console", (m) => m.type() === "error" && console.error(`[firefox] ${m.text()}`));
  await f.goto(`${base}/?room=mix&name=firefox`);
  const pages = { chromium: c, firefox: f };
  for (const [name, p] of Object.entries(pages)) {
    await until(`${name} decodes video and receives audio`, 40000, async () => {
      const m = await media(p);
      return (m.frames > 10 && m.audioPackets > 10) || JSON.stringify(m);
    });
  }
  for (const [name, p] of Object.entries(pages)) {
    const a = (await media(p)).frames;
    await new Promise((r) => setTimeout(r, 1500));
    const b = (await media(p)).frames;
    if (!(b > a)) throw new Error(`${name}: frames not rising (${a} -> ${b})`);
  }
  await until("chromium's chat channel is open", 10000, () => c.evaluate(() => window.demo.sendChat("hi firefox")));
  await until("firefox's chat channel is open", 10000, () => f.evaluate(() => window.demo.sendChat("hi chromium")));
  await until("firefox gets chromium's chat", 10000, () =>
    f.evaluate(() => window.demo.chatLog.some((m) => m.from === "chromium" && m.text === "hi firefox")),
  );
  await until("chromium gets firefox's chat", 10000, () =>
    c.evaluate(() => window.demo.chatLog.some((m) => m.from === "firefox" && m.text === "hi chromium")),
  );
  console.log(JSON.stringify({ ok: true, chromium: await media(c), firefox: await media(f) }));
} catch (e) {
  console.error(`FAIL: ${e.message}`);
  code = 1;
} finally {
  await firefox.close().catch(() => {});
  await chromeBrowser.close();
}
process.exit(code);
