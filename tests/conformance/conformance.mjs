// Conformance of a WebSocketServer to docs/protocols/websocket.md, from outside Python.
//
// Written from the spec alone with the `ws` package. Usage:
//   node conformance.mjs '<json config>'
// The config (built by tests/conformance/test_node_conformance.py) names three
// running servers and the tokens to use:
//   auth:  authenticator on, client publish allowed, history 5, max_channels 3,
//          max_frame_bytes 1024, heartbeat 0.5 s, a generous inbound rate
//   open:  no authenticator, publish off, rate 2/s burst 3, heartbeat 0.3 s
//   drain: no authenticator; the harness drains it when this script prints
//          "DRAIN-NOW" and answers on stdin
// tokens: valid (no channel limits), restricted (prices.* only), expired, forged.
// Each case opens fresh connections. The last line is "N passed, N failed".

import WebSocket from "ws";

const config = JSON.parse(process.argv[2]);
const SCALE = Number(config.scale || 1);
const WAIT = 5000 * SCALE;

class Peer {
  constructor(url) {
    this.ws = new WebSocket(url);
    this.frames = [];
    this.waiters = [];
    this.closeCode = null;
    this.closeReason = null;
    this.closed = new Promise((resolve) => {
      this.ws.on("close", (code, reason) => {
        this.closeCode = code;
        this.closeReason = reason.toString();
        resolve(code);
        this.wake();
      });
    });
    this.ws.on("message", (data, isBinary) => {
      if (isBinary) throw new Error("server sent a binary frame");
      this.frames.push(JSON.parse(data.toString()));
      this.wake();
    });
    this.ws.on("error", () => {});
  }

  wake() {
    const waiters = this.waiters;
    this.waiters = [];
    for (const w of waiters) w();
  }

  open() {
    return new Promise((resolve, reject) => {
      this.ws.once("open", resolve);
      this.ws.once("error", reject);
    });
  }

  send(obj) {
    this.ws.send(typeof obj === "string" ? obj : JSON.stringify(obj));
  }

  // The next frame matching pred (frames before it that do not match are dropped).
  async next(pred = () => true, wait = WAIT) {
    const deadline = Date.now() + wait;
    for (;;) {
      const i = this.frames.findIndex(pred);
      if (i >= 0) return this.frames.splice(0, i + 1)[i];
      if (this.closeCode !== null) throw new Error(`closed (${this.closeCode}) while waiting`);
      const left = deadline - Date.now();
      if (left <= 0) throw new Error("timed out waiting for a frame");
      await new Promise((resolve) => {
        const t = setTimeout(resolve, left);
        this.waiters.push(() => {
          clearTimeout(t);
          resolve();
        });
      });
    }
  }

  async request(obj) {
    this.send(obj);
    return this.next((f) => f.id === obj.id && f.type !== "message");
  }

  async closeCodeWithin(wait = WAIT) {
    const timer = new Promise((_, reject) =>
      setTimeout(() => reject(new Error("server did not close")), wait),
    );
    return Promise.race([this.closed, timer]);
  }

  close() {
    this.ws.close();
  }
}

async function connect(url) {
  const peer = new Peer(url);
  await peer.open();
  return peer;
}

async function hello(url, token) {
  const peer = await connect(url);
  const frame = { op: "hello", id: "h", protocol: 1, client: { name: "node-conformance", version: "1" } };
  if (token !== undefined) frame.token = token;
  const welcome = await peer.request(frame);
  check(welcome.type === "welcome", `expected welcome, got ${JSON.stringify(welcome)}`);
  return peer;
}

function check(cond, message) {
  if (!cond) throw new Error(message);
}

function checkError(frame, code, id) {
  check(frame.type === "error", `expected an error frame, got ${JSON.stringify(frame)}`);
  check(frame.code === code, `expected code ${code}, got ${frame.code}`);
  check(frame.id === id, `expected id ${JSON.stringify(id)}, got ${JSON.stringify(frame.id)}`);
  check(typeof frame.message === "string", "error.message must be a string");
  check(frame.temporary === ["rate_limited", "unavailable", "internal"].includes(code), "temporary flag");
  check(("retry_after" in frame) === (code === "rate_limited"), "retry_after only on rate_limited");
}

function checkPosition(p) {
  check(p !== null && typeof p === "object", `position must be an object, got ${JSON.stringify(p)}`);
  check(typeof p.epoch === "string" && Number.isInteger(p.seq), "position {epoch, seq}");
}

const cases = [];
const test = (name, fn) => cases.push({ name, fn });
const { auth, open, drain, tokens } = config;

// -- hello and authentication

test("hello with a valid token gets welcome with the documented fields", async () => {
  const p = await connect(auth);
  const w = await p.request({ op: "hello", id: 1, token: tokens.valid });
  check(w.type === "welcome" && w.id === 1 && w.protocol === 1, JSON.stringify(w));
  check(typeof w.session === "string" && typeof w.server === "string" && typeof w.user === "string", "welcome strings");
  check(typeof w.heartbeat === "number" && w.heartbeat > 0, "heartbeat interval");
  for (const k of ["max_frame_bytes", "max_channels", "rate", "burst"]) check(typeof w.limits[k] === "number", k);
  p.close();
});

test("hello without auth on an open server, token absent", async () => {
  const p = await hello(open);
  p.close();
});

test("commands work without hello when the server has no authenticator", async () => {
  const p = await connect(open);
  const ack = await p.request({ op: "subscribe", id: 1, channels: ["signals.nohello"] });
  check(ack.type === "ack" && ack.op === "subscribe", JSON.stringify(ack));
  p.close();
});

test("missing token: auth_missing then close 4500", async () => {
  const p = await connect(auth);
  checkError(await p.request({ op: "hello", id: 1 }), "auth_missing", 1);
  check((await p.closeCodeWithin()) === 4500, `close ${p.closeCode}`);
  check(p.closeReason === "auth_failed", `reason ${p.closeReason}`);
});

test("forged token: auth_invalid then close 4500", async () => {
  const p = await connect(auth);
  checkError(await p.request({ op: "hello", id: 1, token: tokens.forged }), "auth_invalid", 1);
  check((await p.closeCodeWithin()) === 4500, `close ${p.closeCode}`);
});

test("expired token: auth_expired then close 4501", async () => {
  const p = await connect(auth);
  checkError(await p.request({ op: "hello", id: 1, token: tokens.expired }), "auth_expired", 1);
  check((await p.closeCodeWithin()) === 4501, `close ${p.closeCode}`);
});

test("unsupported protocol version: close 4503", async () => {
  const p = await connect(auth);
  checkError(await p.request({ op: "hello", id: 1, token: tokens.valid, protocol: 2 }), "unsupported_version", 1);
  check((await p.closeCodeWithin()) === 4503, `close ${p.closeCode}`);
});

test("malformed hello (numeric token): bad_field then close 4502", async () => {
  const p = await connect(auth);
  checkError(await p.request({ op: "hello", id: 1, token: 42 }), "bad_field", 1);
  check((await p.closeCodeWithin()) === 4502, `close ${p.closeCode}`);
});

test("command before hello: not_authenticated", async () => {
  const p = await connect(auth);
  checkError(await p.request({ op: "subscribe", id: 1, channels: ["a.b"] }), "not_authenticated", 1);
  p.close();
});

test("second hello: already_authenticated", async () => {
  const p = await hello(auth, tokens.valid);
  checkError(await p.request({ op: "hello", id: 2, token: tokens.valid }), "already_authenticated", 2);
  p.close();
});

test("restricted token: forbidden channel names the channel", async () => {
  const p = await hello(auth, tokens.restricted);
  const e = await p.request({ op: "subscribe", id: 2, channels: ["prices.EURUSD", "signals.admin"] });
  checkError(e, "forbidden", 2);
  check(e.channel === "signals.admin", `channel ${e.channel}`);
  p.close();
});

// -- bad input

test("bad input of every kind gets its typed error", async () => {
  const p = await hello(auth, tokens.valid);
  p.send("{not json");
  checkError(await p.next((f) => f.type === "error"), "bad_json", null);
  p.send("[1,2]");
  checkError(await p.next((f) => f.type === "error"), "bad_frame", null);
  checkError(await p.request({ op: "teleport", id: 3 }), "unknown_op", 3);
  checkError(await p.request({ op: "subscribe", id: 4, channels: [7] }), "bad_field", 4);
  checkError(await p.request({ op: "subscribe", id: 5, channels: ["a..b"] }), "bad_channel", 5);
  checkError(await p.request({ op: "subscribe", id: 6, channels: [{ channel: "a.b", mode: "some" }] }), "bad_field", 6);
  checkError(await p.request({ op: "subscribe", id: 7, channels: ["a.1", "a.2", "a.3", "a.4"] }), "too_many_channels", 7);
  checkError(await p.request({ op: "subscribe", id: 8, channels: ["a.1", "a.1"] }), "bad_field", 8);
  checkError(await p.request({ op: "unsubscribe", id: 9, channels: [1] }), "bad_field", 9);
  p.ws.send(Buffer.from([0, 255]), { binary: true });
  checkError(await p.next((f) => f.type === "error"), "binary_not_supported", null);
  for (const bad of [-1, "", 2 ** 53, 1.5, true]) {
    p.send({ op: "subscribe", id: bad, channels: ["a.b"] });
    checkError(await p.next((f) => f.type === "error"), "bad_field", null);
  }
  p.close();
});

test("publish is refused where the server does not allow it", async () => {
  const p = await connect(open);
  checkError(await p.request({ op: "publish", id: 1, channel: "a.b", data: 1 }), "publish_not_allowed", 1);
  p.close();
});

test("oversized frame: close 1009", async () => {
  const p = await hello(auth, tokens.valid);
  p.send({ op: "ping", id: 1, pad: "x".repeat(4096) });
  check((await p.closeCodeWithin()) === 1009, `close ${p.closeCode}`);
});

test("flood: rate_limited errors with retry_after, then close 4002", async () => {
  const p = await connect(open);
  for (let i = 1; i <= 12; i++) p.send({ op: "ping", id: i });
  check((await p.closeCodeWithin()) === 4002, `close ${p.closeCode}`);
  check(p.closeReason === "rate_limited", `reason ${p.closeReason}`);
  const errors = p.frames.filter((f) => f.type === "error");
  check(errors.length > 0, "no rate_limited error before 4002");
  for (const e of errors) {
    check(e.code === "rate_limited" && typeof e.retry_after === "number", JSON.stringify(e));
  }
});

// -- subscribe and resume

async function publishN(peer, channel, n, base) {
  let last = null;
  for (let i = 0; i < n; i++) {
    const ack = await peer.request({ op: "publish", id: `p${base + i}`, channel, data: { i: base + i } });
    check(ack.type === "ack" && ack.op === "publish", JSON.stringify(ack));
    checkPosition(ack.position);
    last = ack.position;
  }
  return last;
}

test("subscribe acks then live messages in order", async () => {
  const ch = "signals.live";
  const sub = await hello(auth, tokens.valid);
  const ack = await sub.request({ op: "subscribe", id: 1, channels: [{ channel: ch, mode: "all" }] });
  check(ack.channels.length === 1 && ack.channels[0].channel === ch && ack.channels[0].recovered === null, JSON.stringify(ack));
  const pub = await hello(auth, tokens.valid);
  await publishN(pub, ch, 3, 0);
  const got = [];
  while (got.length < 3) got.push(await sub.next((f) => f.type === "message"));
  check(got.map((m) => m.seq).join() === "1,2,3", got.map((m) => m.seq).join());
  check(got.every((m) => m.kind === "update" && typeof m.ts === "number" && typeof m.sent === "number"), "fields");
  sub.close();
  pub.close();
});

test("resume with since inside history: recovered true and exactly the missed ones", async () => {
  const ch = "signals.exact";
  const pub = await hello(auth, tokens.valid);
  const first = await publishN(pub, ch, 2, 0);
  await publishN(pub, ch, 3, 2);
  const sub = await hello(auth, tokens.valid);
  const ack = await sub.request({ op: "subscribe", id: 1, channels: [{ channel: ch, since: first }] });
  check(ack.channels[0].recovered === true, JSON.stringify(ack));
  const got = [];
  while (got.length < 3) got.push(await sub.next((f) => f.type === "message"));
  check(got.map((m) => m.seq).join() === "3,4,5", got.map((m) => m.seq).join());
  check(got.every((m) => m.kind === "update"), "replayed as update");
  sub.close();
  pub.close();
});

test("resume beyond history: recovered false and a snapshot", async () => {
  const ch = "signals.beyond";
  const pub = await hello(auth, tokens.valid);
  const first = await publishN(pub, ch, 1, 0);
  const last = await publishN(pub, ch, 8, 1);
  const sub = await hello(auth, tokens.valid);
  const ack = await sub.request({ op: "subscribe", id: 1, channels: [{ channel: ch, since: first }] });
  check(ack.channels[0].recovered === false, JSON.stringify(ack));
  const snap = await sub.next((f) => f.type === "message");
  check(snap.kind === "snapshot" && snap.recovered === false && snap.seq === last.seq, JSON.stringify(snap));
  sub.close();
  pub.close();
});

test("resume from another epoch: recovered false and a snapshot", async () => {
  const ch = "signals.epoch";
  const pub = await hello(auth, tokens.valid);
  const last = await publishN(pub, ch, 2, 0);
  const sub = await hello(auth, tokens.valid);
  const since = { epoch: "not-this-epoch", seq: 1 };
  const ack = await sub.request({ op: "subscribe", id: 1, channels: [{ channel: ch, since }] });
  check(ack.channels[0].recovered === false && ack.channels[0].position.epoch === last.epoch, JSON.stringify(ack));
  const snap = await sub.next((f) => f.type === "message");
  check(snap.kind === "snapshot" && snap.recovered === false, JSON.stringify(snap));
  sub.close();
  pub.close();
});

// -- heartbeat and drain

test("heartbeat for quiet channels: positions only, never null", async () => {
  const p = await connect(open);
  await p.request({ op: "subscribe", id: 1, channels: ["signals.quiet-never"] });
  const hb = await p.next((f) => f.type === "heartbeat");
  check(typeof hb.time === "number", "heartbeat.time");
  check(hb.channels !== null && typeof hb.channels === "object", "heartbeat.channels object");
  for (const [name, pos] of Object.entries(hb.channels)) {
    check(name !== "signals.quiet-never", "a channel without messages is listed");
    checkPosition(pos);
  }
  p.close();
});

test("ping gets pong with the id (and null without one)", async () => {
  const p = await connect(open);
  const pong = await p.request({ op: "ping", id: "x" });
  check(pong.type === "pong" && pong.id === "x", JSON.stringify(pong));
  p.send({ op: "ping" });
  const bare = await p.next((f) => f.type === "pong");
  check(bare.id === null, JSON.stringify(bare));
  p.close();
});

test("drain: a drain notice with retry_after, then close 4000", async () => {
  const p = await connect(drain);
  await p.request({ op: "ping", id: 1 });
  process.stdout.write("DRAIN-NOW\n");
  const notice = await p.next((f) => f.type === "drain");
  check(typeof notice.retry_after === "number" && notice.retry_after >= 0, JSON.stringify(notice));
  check(typeof notice.reason === "string", "drain.reason");
  check((await p.closeCodeWithin()) === 4000, `close ${p.closeCode}`);
});

let passed = 0;
let failed = 0;
for (const c of cases) {
  try {
    await c.fn();
    passed++;
    console.log(`ok - ${c.name}`);
  } catch (err) {
    failed++;
    console.log(`not ok - ${c.name}: ${err.message}`);
  }
}
console.log(`${passed} passed, ${failed} failed`);
process.exit(failed === 0 ? 0 : 1);
