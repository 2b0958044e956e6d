// Shared by the browser end-to-end scripts: bounded waiting and a headless Chromium set up for
// WebRTC on loopback (see shared notes: the loopback flag and a media permission are required).
import { chromium } from "playwright-core";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { until } from "./util.mjs";

export { until };

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

/**
 * Runs `body(ctx)` with a fresh Chromium context, then exits the process: 0 when it resolved,
 * 1 with `FAIL: reason` when it threw. The browser is closed either way.
 */
export async function runWithChromium(body, viewport) {
  const browser = await launchChromium(viewport);
  let code = 0;
  try {
    await body(browser.ctx);
  } catch (e) {
    console.error(`FAIL: ${e.message}`);
    code = 1;
  } finally {
    await browser.close();
  }
  process.exit(code);
}
