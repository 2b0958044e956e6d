// Three headless Chromium pages join one room through the demo: each decodes both remote videos
// and receives both remote audio tracks, a chat message reaches the other two, one leaves and the
// others keep their call. Writes a screenshot of a page with live tiles.
//
// usage: node three-pages.mjs <demo base URL> <screenshot.png>
// Exit 0 on success; on failure prints the reason and exits 1. Every wait is bounded.
import { runWithChromium, until } from "./lib.mjs";

const [base, shot] = process.argv.slice(2);
if (!base || !shot) {
  console.error("usage: node three-pages.mjs <base url> <screenshot.png>");
  process.exit(2);
}

const inbound = (p) => p.evaluate(() => window.demo.inbound());
const sum = (xs, k) => xs.reduce((a, x) => a + x[k], 0);

async function media(p, peers) {
  const s = await inbound(p);
  const videos = s.filter((x) => x.kind === "video" && x.framesDecoded > 0);
  const audios = s.filter((x) => x.kind === "audio" && x.packetsReceived > 0);
  return { videos: videos.length, audios: audios.length, frames: sum(s.filter((x) => x.kind === "video"), "framesDecoded"), ok: videos.length >= peers && audios.length >= peers };
}

await runWithChromium(async (ctx) => {
  const pages = [];
  for (let i = 0; i < 3; i++) {
    const p = await ctx.newPage();
    p.on("console", (m) => {
      if (m.type() === "error" || m.type() === "warning") console.error(`[p${i}] ${m.text()}`);
    });
    await p.goto(`${base}/?room=e2e&name=p${i}`);
    pages.push(p);
  }
  for (const [i, p] of pages.entries()) {
    await until(`p${i} decodes two videos and receives two audios`, 30000, async () => {
      const m = await media(p, 2);
      return m.ok || JSON.stringify(m);
    });
  }
  const before = await Promise.all(pages.map(async (p) => (await media(p, 2)).frames));
  await new Promise((r) => setTimeout(r, 1500));
  const after = await Promise.all(pages.map(async (p) => (await media(p, 2)).frames));
  for (let i = 0; i < 3; i++) {
    if (!(after[i] > before[i])) throw new Error(`p${i} frames not rising: ${before[i]} -> ${after[i]}`);
  }
  // Names on the tiles.
  const names = await pages[0].evaluate(() => window.demo.names());
  for (const n of ["p1", "p2"]) if (!names.includes(n)) throw new Error(`p0 tiles ${JSON.stringify(names)} lack ${n}`);

  await until("p0's chat channel is open", 10000, () => pages[0].evaluate(() => window.demo.sendChat("hello from p0")));
  for (const i of [1, 2]) {
    await until(`p${i} gets the chat`, 10000, () =>
      pages[i].evaluate(() => window.demo.chatLog.some((m) => m.from === "p0" && m.text === "hello from p0")),
    );
  }
  const own = await pages[0].evaluate(() => window.demo.chatLog.length);
  if (own !== 0) throw new Error("p0 received its own chat message");

  // Chromium's fake microphone beeps: the gateway names active speakers and the page
  // highlights the speaker's tile.
  await until("p0 was told of an active speaker", 15000, () =>
    pages[0].evaluate(() => window.demo.speakers.some((s) => s)),
  );

  await pages[0].screenshot({ path: shot });

  // p2 leaves; the others see it and keep their call.
  await pages[2].evaluate(() => window.demo.leave());
  for (const i of [0, 1]) {
    await until(`p${i} sees p2 leave`, 10000, () =>
      pages[i].evaluate(() => window.demo.remoteSessions().length === 1),
    );
  }
  // Per m-line: p2's m-lines disappear from the stats when the gateway's offer removes them, so
  // a sum over all of them can shrink; the remaining peer's video must keep decoding.
  const perMid = async (p) =>
    Object.fromEntries((await inbound(p)).filter((x) => x.kind === "video").map((x) => [x.mid, x.framesDecoded]));
  for (const i of [0, 1]) {
    await until(`p${i}'s call goes on after p2 left`, 10000, async () => {
      const before = await perMid(pages[i]);
      await new Promise((r) => setTimeout(r, 1000));
      const after = await perMid(pages[i]);
      const rising = Object.keys(after).some((mid) => mid in before && after[mid] > before[mid]);
      return rising || JSON.stringify({ before, after });
    });
  }
  console.log(JSON.stringify({ ok: true, frames: after, names }));
}, { width: 1280, height: 720 });
