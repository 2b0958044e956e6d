// Shared by the browser end-to-end scripts: bounded waiting and a headless Chromium set up for
// WebRTC on loopback (see shared notes: the loopback flag and a media permission are required).
import { chromium } from "playwright-core";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";

export const CHROMIUM_ARGS = [
  "--no-sandbox",
  "--disable-gpu",
  "--disable-quic",
  "--no-first-run",
  "--disable-background-networking",
  "--disable-component-update",
  "--disable-sync",
  "--allow-loopback-in-peer-connection",
  "--use-fake-device-for-media-stream",
  "--use-fake-ui-for-media-stream",
  "--autoplay-policy=no-user-gesture-required",
];

/** Polls `f` until it returns true or `ms` pass; throws with the last thing it returned. */
export async function until(what, ms, f) {
  const end = Date.now() + ms;
  let last = "";
  while (Date.now() < end) {
    try {
      const r = await f();
      if (r === true) return;
      last = String(r);
    } catch (e) {
      last = String(e);
    }
    await new Promise((r) => setTimeout(r, 250));
  }
  throw new Error(`timed out after ${ms} ms: ${what} (${last})`);
}

/** A fresh headless Chromium context; `close()` also removes its profile. */
export async function launchChromium(viewport) {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "sb-chromium-"));
  const ctx = await chromium.launchPersistentContext(dir, {
    executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
    headless: true,
    // CHROMIUM_EXTRA_ARGS: more flags, space-separated (e.g. trusting a test certificate).
    args: [...CHROMIUM_ARGS, ...(process.env.CHROMIUM_EXTRA_ARGS || "").split(" ").filter(Boolean)],
    ...(viewport ? { viewport } : {}),
  });
  return {
    ctx,
    async close() {
      await ctx.close().catch(() => {});
      fs.rmSync(dir, { recursive: true, force: true });
    },
  };
}
