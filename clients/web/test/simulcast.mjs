// Simulcast, screen share and ICE restart with Chromium. One page publishes its camera as
// simulcast layers; the other
// page's received resolution drops when it lowers its preferred layer over the API (through the
// demo backend's SetTrackPreference) and rises again when it asks for the best layer. Then the
// publisher shares its screen (a second video for the viewer), and both restart ICE while the
// video keeps flowing.
//
// usage: node simulcast.mjs <demo base URL>
import { runWithChromium, until } from "./lib.mjs";

const [base] = process.argv.slice(2);
if (!base) {
  console.error("usage: node simulcast.mjs <base url>");
  process.exit(2);
}

const width = async (p) => {
  const s = await p.evaluate(() => window.demo.inbound());
  const v = s.find((x) => x.kind === "video");
  return v ? v.frameWidth : 0;
};

await runWithChromium(async (ctx) => {
  const pub = await ctx.newPage();
  // A 640x480 capture: Chromium then sends two layers (160 and 320 wide), which a 2-core machine
  // encodes without CPU adaptation getting in the way (720p's three layers do not reliably).
  await pub.goto(`${base}/?room=sim&name=publisher&simulcast=1`);
  const sub = await ctx.newPage();
  await sub.goto(`${base}/?room=sim&name=viewer`);
  // The viewer gets the best layer that arrives: 320 wide.
  let top = 0;
  await until("the viewer receives the upper layer", 45000, async () => {
    const w = await width(sub);
    top = w;
    return w >= 300 || `width ${w}`;
  });
  const publisher = (await sub.evaluate(() => window.demo.remoteSessions()))[0];
  await sub.evaluate((s) => window.demo.setQuality(s, 0), publisher);
  await until("the width drops to the lowest layer", 20000, async () => {
    const w = await width(sub);
    return (w > 0 && w <= 200) || `width ${w}`;
  });
  await sub.evaluate((s) => window.demo.setQuality(s, null), publisher);
  await until("the width rises again", 20000, async () => {
    const w = await width(sub);
    return w >= top || `width ${w}, was ${top}`;
  });

  // Screen share: a second video track from the publisher reaches the viewer.
  const videos = async () => (await sub.evaluate(() => window.demo.inbound())).filter((x) => x.kind === "video");
  if ((await pub.evaluate(() => window.demo.shareScreen())) !== true) throw new Error("shareScreen failed");
  await until("the viewer decodes the shared screen", 20000, async () => {
    const v = await videos();
    return (v.length >= 2 && v.every((x) => x.framesDecoded > 0)) || JSON.stringify(v);
  });

  // ICE restart from both browsers (as after a network change): new ICE credentials are
  // negotiated through the backend, and the call goes on.
  const ufrag = (p) =>
    p.evaluate(async () => {
      let u = "";
      (await window.demo.pc().getStats()).forEach((s) => {
        if (s.type === "transport" && s.iceLocalUsernameFragment) u = s.iceLocalUsernameFragment;
      });
      return u;
    });
  const ufragsBefore = [await ufrag(pub), await ufrag(sub)];
  await pub.evaluate(() => window.demo.restartIce());
  await sub.evaluate(() => window.demo.restartIce());
  await until("both browsers use new ICE credentials", 20000, async () => {
    const now = [await ufrag(pub), await ufrag(sub)];
    return (now[0] && now[1] && now[0] !== ufragsBefore[0] && now[1] !== ufragsBefore[1]) || JSON.stringify({ ufragsBefore, now });
  });
  const frames = async () => (await videos()).reduce((n, x) => n + x.framesDecoded, 0);
  const before = await frames();
  await until("video keeps flowing after the ICE restarts", 20000, async () => {
    const n = await frames();
    return n > before + 30 || `frames ${before} -> ${n}`;
  });
  console.log(JSON.stringify({ ok: true, top }));
});
