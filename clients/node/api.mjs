// The gRPC API for Node backends: the Room, Session and Event services of a gateway, loaded from
// proto/ at run time with @grpc/proto-loader, and `call`, a promise per unary call.
// SWITCHBOARD_API_KEY, when set, is sent as a bearer token.
import grpc from "@grpc/grpc-js";
import protoLoader from "@grpc/proto-loader";
import path from "node:path";
import { fileURLToPath } from "node:url";

const protoDir = path.join(path.dirname(fileURLToPath(import.meta.url)), "..", "..", "proto");

/** Clients of `addr` (host:port, plain HTTP/2). */
export function connect(addr) {
  const def = protoLoader.loadSync(
    ["switchboard/v1/room.proto", "switchboard/v1/session.proto", "switchboard/v1/event.proto"],
    { includeDirs: [protoDir], keepCase: true, longs: String, enums: String, defaults: true, oneofs: true },
  );
  const v1 = grpc.loadPackageDefinition(def).switchboard.v1;
  const creds = grpc.credentials.createInsecure();
  const md = new grpc.Metadata();
  if (process.env.SWITCHBOARD_API_KEY) md.set("authorization", `Bearer ${process.env.SWITCHBOARD_API_KEY}`);
  return {
    md,
    rooms: new v1.RoomService(addr, creds),
    sessions: new v1.SessionService(addr, creds),
    events: new v1.EventService(addr, creds),
    /** `client.method(req)` as a promise. */
    call: (client, method, req) =>
      new Promise((resolve, reject) => client[method](req, md, (err, res) => (err ? reject(err) : resolve(res)))),
  };
}

export { grpc };
