// A short Switchboard backend in Node.js: create a Room, start a Session, watch the events.
// usage: node example.mjs [GATEWAY_ADDR]   (default 127.0.0.1:50051)
// Set SWITCHBOARD_API_KEY when the gateway requires a key.
import { connect, grpc } from "./api.mjs";

const addr = process.argv[2] || "127.0.0.1:50051";
const { rooms, sessions, events, md, call } = connect(addr);

const seen = [];
let ready;
const subscribed = new Promise((r) => (ready = r));
const closed = new Promise((resolve) => {
  const stream = events.WatchEvents({ room_id: "node-example" }, md);
  // The response headers arrive once the gateway has subscribed this stream.
  stream.on("metadata", () => ready());
  stream.on("data", (ev) => {
    seen.push(ev.kind);
    console.log(`event #${ev.sequence}: ${ev.kind} session=${ev.session_id || "-"}`);
    if (ev.kind === "room_closed") {
      stream.cancel();
      resolve();
    }
  });
  stream.on("error", (e) => {
    if (e.code !== grpc.status.CANCELLED) console.error(e.message);
    resolve();
  });
});

// The gateway streams only events after the subscription: wait for it before acting.
await Promise.race([subscribed, new Promise((r) => setTimeout(r, 5000))]);
const { room } = await call(rooms, "CreateRoom", { room_id: "node-example", options: { max_sessions: 4 } });
console.log(`room ${room.room_id}: max ${room.options.max_sessions} sessions`);
const { session } = await call(sessions, "CreateSession", { room_id: room.room_id, participant_id: "node" });
console.log(`session ${session.session_id} (${session.state})`);
// A backend mistake is refused with a status naming it: here INVALID_ARGUMENT for the session_id.
let refused;
try {
  await call(sessions, "GetSession", { session_id: "not-an-id" });
} catch (e) {
  refused = e;
}
if (refused?.code !== grpc.status.INVALID_ARGUMENT) {
  console.error(`a malformed id got ${refused ? grpc.status[refused.code] : "no error"}, wanted INVALID_ARGUMENT`);
  process.exit(1);
}
console.log(`a malformed id is refused: ${grpc.status[refused.code]}: ${refused.details}`);
await call(rooms, "DeleteRoom", { room_id: room.room_id });
await Promise.race([closed, new Promise((r) => setTimeout(r, 10000))]);
const want = ["room_created", "participant_joined", "session_closed", "participant_left", "room_closed"];
if (JSON.stringify(seen) !== JSON.stringify(want)) {
  console.error(`unexpected events ${JSON.stringify(seen)}, wanted ${JSON.stringify(want)}`);
  process.exit(1);
}
console.log("OK");
process.exit(0);
