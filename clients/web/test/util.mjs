// Dependency-free helpers shared by the end-to-end scripts (browser scripts here and the Node
// Peers in clients/node): bounded waiting and reading the m-sections of an SDP.

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

/** The m-sections of an SDP: kind, port (0 = stopped), mid and the msid's stream id. */
export const sections = (sdp) =>
  (sdp || "")
    .split(/\r\nm=/)
    .slice(1)
    .map((s) => ({
      kind: s.split(" ")[0],
      port: Number(s.split(" ")[1]),
      mid: (s.match(/\r\na=mid:(\S+)/) || [])[1] || "",
      stream: (s.match(/\r\na=msid:(\S+)/) || [])[1] || "",
    }));
