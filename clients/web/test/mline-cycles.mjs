// A viewer's m-lines stay bounded through 50 join/leave cycles of a publisher (issue #15.4).
// One Chromium viewer page stays in a Room. Each cycle a publisher page (fake camera and mic)
// joins; the viewer must receive its audio and video (inbound RTP packets growing on the two
// m-lines carrying the publisher's stream); then the publisher page closes and the viewer's next
// renegotiation settles (the gateway's offer stops those two m-lines, the viewer answers). After
// every cycle the m-line counts of the viewer's current remote and local descriptions are recorded.
//
// The gateway's offers put a new Track into a stopped slot (new mid, new msid), so the viewer holds
// its own m-lines (audio, video, data channel) plus 2 for the one publisher present at a time,
// whatever the cycle number. Without recycling every cycle would append 2 m-lines.
//
// usage: node mline-cycles.mjs <demo base URL> [cycles=50]
// Exit 0 on success; on failure prints the reason and exits 1. Every wait is bounded.
import { runWithChromium } from "./lib.mjs";
import { sections, until } from "./util.mjs";

const [base, cyclesArg] = process.argv.slice(2);
if (!base) {
  console.error("usage: node mline-cycles.mjs <base url> [cycles]");
  process.exit(2);
}
const CYCLES = Number(cyclesArg || 50);
const ROOM = "mline-cycles";

// The viewer's signaling state and the m-sections of its current remote and local descriptions
// (the msid's stream id is the sending Session's id: the gateway's choice).
const describe = async (p) => {
  const d = await p.evaluate(() => {
    const pc = window.demo.pc();
    return { state: pc?.signalingState, remote: pc?.remoteDescription?.sdp, local: pc?.localDescription?.sdp };
  });
  return { state: d.state, remote: sections(d.remote), local: sections(d.local) };
};
// Inbound RTP packets received per mid.
const packets = async (p) =>
  Object.fromEntries((await p.evaluate(() => window.demo.inbound())).map((x) => [x.mid, x.packetsReceived]));

await runWithChromium(async (ctx) => {
  const viewer = await ctx.newPage();
  viewer.on("console", (m) => {
    if (m.type() === "error" || m.type() === "warning") console.error(`[viewer] ${m.text()}`);
  });
  await viewer.goto(`${base}/?room=${ROOM}&name=viewer`);
  // The viewer's own m-lines (data channel, microphone, camera), answered. Its first offer may
  // hold only the data channel (negotiation starts before getUserMedia resolves): wait for all.
  let own = [];
  await until("the viewer's own offer with audio and video is answered", 20000, async () => {
    const d = await describe(viewer);
    own = d.local.map((m) => m.mid);
    const kinds = d.local.map((m) => m.kind).sort().join(",");
    return (d.state === "stable" && kinds === "application,audio,video" && own.length === d.remote.length) || JSON.stringify(d);
  });

  const seen = new Set(); // publisher stream ids received so far: each cycle's must be new
  const cycles = [];
  for (let i = 0; i < CYCLES; i++) {
    const pub = await ctx.newPage();
    await pub.goto(`${base}/?room=${ROOM}&name=pub${i}`);

    // The viewer gets an audio and a video m-line carrying one new stream, and RTP on both.
    let got = null;
    await until(`cycle ${i}: the viewer receives the publisher's audio and video`, 20000, async () => {
      const d = await describe(viewer);
      const theirs = d.remote.filter((m) => m.port !== 0 && !own.includes(m.mid) && !seen.has(m.stream));
      const audio = theirs.find((m) => m.kind === "audio");
      const video = theirs.find((m) => m.kind === "video" && m.stream === audio?.stream);
      if (d.state !== "stable" || !audio || !video) return JSON.stringify(d);
      const n = await packets(viewer);
      got = { stream: audio.stream, mids: [audio.mid, video.mid], packets: [n[audio.mid] || 0, n[video.mid] || 0] };
      return (got.packets[0] > 0 && got.packets[1] > 0) || JSON.stringify(got);
    });
    await until(`cycle ${i}: the publisher's RTP keeps arriving on both m-lines`, 5000, async () => {
      const n = await packets(viewer);
      const now = got.mids.map((mid) => n[mid] || 0);
      return (now[0] > got.packets[0] && now[1] > got.packets[1]) || JSON.stringify({ was: got.packets, now });
    });
    seen.add(got.stream);
    const withPublisher = await describe(viewer);

    // The publisher's page closes: the gateway's next offer stops its two m-lines at the viewer.
    await pub.close();
    let settled = null;
    await until(`cycle ${i}: the viewer's renegotiation after the publisher left settles`, 20000, async () => {
      settled = await describe(viewer);
      const stopped = settled.remote.filter((m) => got.mids.includes(m.mid) && m.port === 0);
      return (settled.state === "stable" && stopped.length === 2) || JSON.stringify(settled);
    });
    cycles.push({
      mids: got.mids,
      slots: got.mids.map((mid) => withPublisher.remote.findIndex((m) => m.mid === mid)),
      withPublisher: [withPublisher.remote.length, withPublisher.local.length],
      afterLeave: [settled.remote.length, settled.local.length],
    });
  }

  // Bounded by the concurrent Tracks: the viewer's own m-lines + 2 for one publisher, in the remote
  // and the local description, with the publisher present and after it left (its slots stopped).
  const bound = own.length + 2;
  const over = cycles
    .map((c, i) => ({ i, ...c }))
    .filter((c) => [...c.withPublisher, ...c.afterLeave].some((n) => n !== bound));
  if (over.length > 0) {
    throw new Error(`m-line counts differ from ${bound} (own ${own.length} + 2): ${JSON.stringify(over.slice(0, 5))}`);
  }
  // No count grows with the cycle number (the check above already pins every count; this names growth).
  const first = cycles[0];
  const last = cycles[cycles.length - 1];
  if (JSON.stringify(first.afterLeave) !== JSON.stringify(last.afterLeave)) {
    throw new Error(`m-lines grew from ${first.afterLeave} to ${last.afterLeave} over ${CYCLES} cycles`);
  }
  console.log(
    JSON.stringify({
      ok: true,
      cycles: CYCLES,
      own: own.length,
      bound,
      counts: cycles.map((c) => [...c.withPublisher, ...c.afterLeave].join("/")),
      publisherMids: cycles.map((c) => c.mids.join(",")),
      slots: [...new Set(cycles.map((c) => c.slots.join(",")))],
    }),
  );
});
