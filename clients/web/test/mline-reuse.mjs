// M-lines freed by removed Tracks are reused. A viewer receives a publisher's audio and video;
// the publisher leaves, so the gateway's next offer stops those two m-lines (port 0). The viewer
// then shares its screen: Chromium's offer recycles a stopped m-line slot for the new video
// (RFC 8829 §5.2.2) instead of appending one, the gateway accepts the recycled slot, and a third
// page receives the viewer's camera, microphone and screen.
//
// usage: node mline-reuse.mjs <demo base URL>
// Exit 0 on success; on failure prints the reason and exits 1. Every wait is bounded.
import { runWithChromium, until } from "./lib.mjs";

const [base] = process.argv.slice(2);
if (!base) {
  console.error("usage: node mline-reuse.mjs <base url>");
  process.exit(2);
}

// The m-lines of a page's current local description: [mid, port] in order.
const mlines = (p) =>
  p.evaluate(() => {
    const sdp = window.demo.pc()?.localDescription?.sdp || "";
    const out = [];
    for (const section of sdp.split(/\r\nm=/).slice(1)) {
      const port = Number(section.split(" ")[1]);
      const mid = (section.match(/\r\na=mid:(\S+)/) || [])[1] || "";
      out.push([mid, port]);
    }
    return out;
  });
const inbound = async (p) => (await p.evaluate(() => window.demo.inbound())).filter((x) => x.packetsReceived > 0);

await runWithChromium(async (ctx) => {
  const viewer = await ctx.newPage();
  await viewer.goto(`${base}/?room=reuse&name=viewer`);
  const pub = await ctx.newPage();
  await pub.goto(`${base}/?room=reuse&name=publisher`);
  await until("the viewer receives the publisher's audio and video", 40000, async () => {
    const s = await inbound(viewer);
    return (s.some((x) => x.kind === "video" && x.framesDecoded > 0) && s.some((x) => x.kind === "audio")) || JSON.stringify(s);
  });
  const withPublisher = await mlines(viewer);

  // The publisher leaves: its two m-lines at the viewer are stopped by the gateway's next offer.
  await pub.evaluate(() => window.demo.leave());
  await pub.close();
  let stopped = [];
  await until("the gateway stops the two m-lines at the viewer", 20000, async () => {
    const m = await mlines(viewer);
    stopped = m.filter(([, port]) => port === 0).map(([mid]) => mid);
    return stopped.length === 2 || JSON.stringify(m);
  });

  // The viewer's own offer adds a video m-line: Chromium puts it in a stopped slot.
  if ((await viewer.evaluate(() => window.demo.shareScreen())) !== true) throw new Error("shareScreen failed");
  let after = [];
  await until("the viewer's screen share is negotiated in a recycled slot", 20000, async () => {
    after = await mlines(viewer);
    const live = after.filter(([, port]) => port !== 0).length;
    const state = await viewer.evaluate(() => window.demo.pc().signalingState);
    return (state === "stable" && live > withPublisher.length - 2) || JSON.stringify({ state, after });
  });
  if (after.length !== withPublisher.length) {
    throw new Error(`m-lines grew from ${withPublisher.length} to ${after.length}: ${JSON.stringify(after)}`);
  }
  const recycled = after.filter(([mid, port]) => port !== 0 && !withPublisher.some(([m]) => m === mid));
  if (recycled.length !== 1) throw new Error(`expected one recycled slot with a new mid: ${JSON.stringify({ withPublisher, after })}`);

  // The gateway took the recycled slot as a new Track: a newcomer receives all three.
  const third = await ctx.newPage();
  await third.goto(`${base}/?room=reuse&name=third`);
  await until("the newcomer decodes the viewer's camera and screen and gets its audio", 40000, async () => {
    const s = await inbound(third);
    const v = s.filter((x) => x.kind === "video" && x.framesDecoded > 0);
    return (v.length >= 2 && s.some((x) => x.kind === "audio")) || JSON.stringify(s);
  });
  console.log(JSON.stringify({ ok: true, withPublisher, stopped, after, recycled }));
});
