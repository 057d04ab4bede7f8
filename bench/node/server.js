// Reference server for the benchmark: the official Node.js socket.io v4 server doing only
// JWT check, rooms and emits, driven over the same REST call as ours.
//   node server.js --host 127.0.0.1 --port 9001   (env JWT_SECRET, PING_INTERVAL_MS)
"use strict";
const http = require("http");
const crypto = require("crypto");
const { Server } = require("socket.io");

function arg(name, fallback) {
  const i = process.argv.indexOf(name);
  return i >= 0 ? process.argv[i + 1] : fallback;
}
const host = arg("--host", "127.0.0.1");
const port = Number(arg("--port", "9001"));
const secret = process.env.JWT_SECRET || "";
const pingInterval = Number(process.env.PING_INTERVAL_MS || 25000);
const pingTimeout = Number(process.env.PING_TIMEOUT_MS || 20000);

function b64urlJson(part) {
  return JSON.parse(Buffer.from(part, "base64url").toString("utf8"));
}

// HS256 only; returns the claims or throws with the reason.
function verify(token) {
  if (typeof token !== "string") throw new Error("missing token");
  const parts = token.split(".");
  if (parts.length !== 3) throw new Error("invalid token");
  const header = b64urlJson(parts[0]);
  if (header.alg !== "HS256") throw new Error("invalid token: algorithm not allowed");
  const expected = crypto.createHmac("sha256", secret).update(parts[0] + "." + parts[1]).digest();
  const given = Buffer.from(parts[2], "base64url");
  if (given.length !== expected.length || !crypto.timingSafeEqual(given, expected)) {
    throw new Error("invalid token: signature verification failed");
  }
  const claims = b64urlJson(parts[1]);
  if (typeof claims.exp !== "number" || claims.exp * 1000 < Date.now()) throw new Error("token expired");
  if (!claims.sub) throw new Error("invalid token: missing sub");
  return claims;
}

let nextId = 1;
const startedAt = Date.now();

function publish(body) {
  const created = [];
  const base = { type: body.type, title: body.title, body: body.body || null, data: body.data || {} };
  if (body.topic !== undefined) {
    // A broadcast: one packet, encoded once, to everyone.
    const note = { id: nextId++, seq: 0, ...base, created_at: new Date().toISOString(), read_at: null };
    io.emit("notification", note);
    created.push(note);
    return created;
  }
  for (const uid of body.user_ids || []) {
    const note = { id: nextId++, seq: 0, ...base, created_at: new Date().toISOString(), read_at: null };
    io.to("user:" + uid).emit("notification", note);
    created.push(note);
  }
  return created;
}

function send(res, status, obj) {
  const text = JSON.stringify(obj);
  res.writeHead(status, { "Content-Type": "application/json", "Content-Length": Buffer.byteLength(text) });
  res.end(text);
}

const server = http.createServer((req, res) => {
  if (req.url === "/health/live") return send(res, 200, { status: "ok", uptime_ms: Date.now() - startedAt });
  if (req.method === "POST" && req.url === "/api/v1/notifications") {
    const chunks = [];
    req.on("data", (c) => chunks.push(c));
    req.on("end", () => {
      let body;
      try {
        body = JSON.parse(Buffer.concat(chunks).toString("utf8"));
      } catch (e) {
        return send(res, 400, { error: { code: "bad_json", message: String(e), details: null } });
      }
      send(res, 201, { notifications: publish(body) });
    });
    return;
  }
  send(res, 404, { error: { code: "not_found", message: "not found", details: null } });
});

const io = new Server(server, {
  transports: ["websocket", "polling"],
  pingInterval,
  pingTimeout,
  perMessageDeflate: process.env.PER_MESSAGE_DEFLATE === "1",
  cors: { origin: "*" },
});

io.use((socket, next) => {
  try {
    socket.data.sub = String(verify(socket.handshake.auth && socket.handshake.auth.token).sub);
    next();
  } catch (e) {
    next(new Error(e.message));
  }
});

io.on("connection", (socket) => {
  socket.join("user:" + socket.data.sub);
});

server.listen(port, host, () => {
  console.log(`ref-node listening on http://${host}:${port} (socket.io ${require("socket.io/package.json").version})`);
});
process.on("SIGTERM", () => process.exit(0));
process.on("SIGINT", () => process.exit(0));
