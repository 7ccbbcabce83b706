// The fokha console: reads the hub's JSON API with a bearer token kept in this
// tab's sessionStorage (never a cookie), and follows signals live as a client of
// WebSocket protocol v1 (resume with `since` after a reconnect, duplicates
// dropped by seq, gaps shown and recovered).
"use strict";

const state = {
  token: sessionStorage.getItem("fokha.token") || "",
  session: null,
  positions: new Map(), // channel -> {epoch, seq} last shown
  seen: new Set(),      // envelope ids shown (belt and braces across recoveries)
  ws: null,
  attempt: 0,
  timer: null,
  nextId: 1,
  stopped: false,
};

const $ = (id) => document.getElementById(id);

function text(el, value) { el.textContent = value; return el; }

function make(tag, attrs, content) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) el.setAttribute(k, v);
  if (content !== undefined) el.textContent = content;
  return el;
}

async function api(path, options) {
  const opts = Object.assign({ headers: {} }, options || {});
  opts.headers = Object.assign({ Authorization: "Bearer " + state.token }, opts.headers);
  const response = await fetch(path, opts);
  if (response.status === 401) { logout("token refused"); throw new Error("unauthorised"); }
  if (!response.ok) throw new Error(path + ": " + response.status);
  return response.json();
}

function logout(reason) {
  state.stopped = true;
  sessionStorage.removeItem("fokha.token");
  state.token = "";
  if (state.ws) state.ws.close(1000);
  clearInterval(state.timer);
  $("app").hidden = true;
  $("logout").hidden = true;
  $("login").hidden = false;
  const err = $("login-error");
  err.hidden = !reason;
  text(err, reason || "");
}

async function login(token) {
  state.token = token.trim();
  try {
    state.session = await api("/console/api/session");
    $("send-test").hidden = !state.session.api;
  } catch (e) {
    logout("token refused");
    return;
  }
  sessionStorage.setItem("fokha.token", state.token);
  state.stopped = false;
  $("login").hidden = true;
  $("app").hidden = false;
  $("logout").hidden = false;
  await refresh();
  state.timer = setInterval(refresh, 1000);
  connectFeed();
}

// -- overview -----------------------------------------------------------------

function kv(dl, pairs) {
  dl.replaceChildren();
  for (const [k, v] of pairs) { dl.append(make("dt", {}, k), make("dd", {}, String(v))); }
}

function sparkline(canvas, values) {
  const ctx = canvas.getContext("2d");
  ctx.clearRect(0, 0, canvas.width, canvas.height);
  if (values.length < 2) return;
  const max = Math.max(1, ...values);
  ctx.beginPath();
  values.forEach((v, i) => {
    const x = (i / (values.length - 1)) * (canvas.width - 2) + 1;
    const y = canvas.height - 2 - (v / max) * (canvas.height - 4);
    if (i === 0) ctx.moveTo(x, y); else ctx.lineTo(x, y);
  });
  ctx.strokeStyle = "#1d4ed8";
  ctx.stroke();
}

async function refresh() {
  let view;
  try { view = await api("/console/api/overview"); } catch (e) { return; }
  const overall = $("overall");
  overall.dataset.status = view.status;
  text(overall, view.status);
  const tiles = $("tiles");
  tiles.replaceChildren();
  for (const [key, check] of Object.entries(view.checks)) {
    const tile = make("div", { class: "tile", id: "tile-" + key.replace(/[^A-Za-z0-9_-]/g, "_"), "data-status": check.status });
    tile.append(make("b", {}, key), make("small", {}, check.status + (check.output ? " — " + check.output : "")));
    tiles.append(tile);
  }
  if (view.ea) {
    kv($("ea"), [["alive", view.ea.alive ? "yes" : "no"], ["heartbeat age", view.ea.heartbeat_age === null ? "never" : view.ea.heartbeat_age + " s"], ["restarts", view.ea.restarts], ["instance", view.ea.instance || "—"]]);
  }
  kv($("ws"), Object.entries(view.websocket));
  const body = $("sinks").tBodies[0];
  body.replaceChildren();
  for (const [name, m] of Object.entries(view.sinks)) {
    const row = make("tr", { "data-sink": name });
    for (const v of [name, m.delivered, m.pending, m.oldest_pending_age + " s", m.lag + " s", m.dead_lettered, m.breaker]) row.append(make("td", {}, String(v)));
    body.append(row);
  }
  sparkline($("chart-messages"), view.samples.map((s) => s.messages_per_s));
  sparkline($("chart-delivered"), view.samples.map((s) => s.delivered_per_s));
  sparkline($("chart-pending"), view.samples.map((s) => s.pending));
  await refreshDead();
  if (view.sync) await refreshSync(view.sync);
}

async function refreshSync(sync) {
  $("sync-panel").hidden = false;
  const lag = Object.entries(sync.lag).map(([client, n]) => client + ": " + n).join(", ") || "no clients yet";
  kv($("sync"), [["records", sync.records], ["tombstones", sync.tombstones], ["unresolved conflicts", sync.unresolved_conflicts], ["lag per client", lag]]);
  const conflicts = await api("/console/api/conflicts");
  const body = $("conflicts").tBodies[0];
  body.replaceChildren();
  for (const c of conflicts) {
    const row = make("tr", { "data-conflict": String(c.conflict_id) });
    row.append(make("td", {}, c.collection), make("td", {}, c.id), make("td", {}, c.policy), make("td", {}, c.client_id));
    const cell = make("td");
    for (const choice of ["server", "client"]) {
      const button = make("button", { type: "button", class: "resolve-" + choice }, "Keep " + choice);
      button.addEventListener("click", async () => {
        button.disabled = true;
        await api("/console/api/conflicts/" + c.conflict_id + "/resolve", {
          method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify({ choice: choice }),
        });
        await refresh();
      });
      cell.append(button);
    }
    row.append(cell);
    body.append(row);
  }
}

function newKey() {
  const bytes = new Uint8Array(16);
  crypto.getRandomValues(bytes);
  return Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
}

async function refreshDead() {
  const letters = await api("/console/api/dead-letters");
  const body = $("dead").tBodies[0];
  body.replaceChildren();
  for (const d of letters) {
    const row = make("tr", { "data-ref": d.ref });
    const payload = d.envelope.payload || {};
    const history = d.attempts.map((a) => "#" + a.attempt + " " + a.error).join("; ");
    row.append(make("td", {}, d.sink), make("td", {}, (payload.symbol || "") + " " + (payload.direction || "") + " " + d.envelope.id),
      make("td", {}, d.reason + (d.detail ? ": " + d.detail : "")), make("td", { title: history }, String(d.attempts.length)));
    const cell = make("td");
    const button = make("button", { type: "button", class: "replay" }, "Replay");
    button.addEventListener("click", async () => {
      button.disabled = true;
      await api("/console/api/dead-letters/replay", {
        method: "POST", headers: { "Content-Type": "application/json" },
        body: JSON.stringify({ sink: d.sink, refs: [d.ref] }),
      });
      await refreshDead();
    });
    cell.append(button);
    row.append(cell);
    body.append(row);
  }
}

// -- live feed: a protocol v1 client --------------------------------------------

function feedState(status, label) {
  const el = $("feed-state");
  el.dataset.status = status;
  text(el, "feed: " + label);
}

function note(message) { text($("feed-notes"), message); }

function send(frame) {
  if (state.ws && state.ws.readyState === WebSocket.OPEN) state.ws.send(JSON.stringify(frame));
}

function subscribe(channels) {
  send({ op: "subscribe", id: state.nextId++, channels: channels.map((channel) => {
    const entry = { channel: channel, mode: "all" };
    const since = state.positions.get(channel);
    if (since) entry.since = since;
    return entry;
  }) });
}

function show(channel, msg) {
  const env = msg.data || {};
  if (env.id && state.seen.has(env.id)) return;
  if (env.id) state.seen.add(env.id);
  const p = env.payload || {};
  const li = make("li", { "data-id": env.id || "", "data-seq": String(msg.seq) },
    channel + " #" + msg.seq + " " + (p.symbol || "") + " " + (p.direction || "") + " " + (p.volume || "") + " " + (env.id || ""));
  const feed = $("feed");
  feed.prepend(li);
  while (feed.children.length > 200) feed.lastChild.remove();
}

function onMessage(msg) {
  const channel = msg.channel;
  const last = state.positions.get(channel);
  if (msg.kind === "gap") {
    const li = make("li", { class: "gap" }, channel + ": missed " + msg.from + "…" + msg.seq + ", recovering");
    $("feed").prepend(li);
    subscribe([channel]);
    return;
  }
  if (last && msg.epoch === last.epoch && msg.seq <= last.seq) return; // duplicate
  if (last && msg.kind === "update" && (msg.epoch !== last.epoch || msg.seq > last.seq + 1)) {
    subscribe([channel]); // recover what is missing instead of skipping it
    return;
  }
  state.positions.set(channel, { epoch: msg.epoch, seq: msg.seq });
  if (msg.kind === "snapshot" && msg.recovered === false) note(channel + ": history did not reach back; showing the latest");
  if (msg.data !== null && msg.data !== undefined) show(channel, msg);
}

function connectFeed() {
  if (state.stopped || !state.session) return;
  feedState("warn", "connecting");
  // The host this page came from (a hub on 0.0.0.0 or behind a TLS proxy), the hub's WS port.
  const scheme = location.protocol === "https:" ? "wss" : "ws";
  const ws = new WebSocket(scheme + "://" + location.hostname + ":" + state.session.ws_port + "/");
  state.ws = ws;
  ws.onopen = () => send({ op: "hello", id: state.nextId++, token: state.token, protocol: 1, client: { name: "fokha-console", version: "1" } });
  ws.onmessage = (event) => {
    let frame;
    try { frame = JSON.parse(event.data); } catch (e) { return; }
    if (frame.type === "welcome") {
      state.attempt = 0;
      feedState("pass", "live");
      subscribe(state.session.channels);
    } else if (frame.type === "message") {
      onMessage(frame);
    } else if (frame.type === "error") {
      note("server: " + frame.code + " " + (frame.message || ""));
    }
  };
  ws.onclose = (event) => {
    if (state.stopped) return;
    if (event.code >= 4500 && event.code <= 4999) { feedState("fail", "refused (" + event.code + ")"); return; }
    const delay = Math.random() * Math.min(20000, 500 * Math.pow(2, state.attempt++));
    feedState("warn", "reconnecting");
    setTimeout(connectFeed, delay);
  };
}

// -- wiring -----------------------------------------------------------------

document.addEventListener("DOMContentLoaded", () => {
  $("login-form").addEventListener("submit", (event) => { event.preventDefault(); login($("token").value); });
  $("logout").addEventListener("click", () => logout(""));
  $("send-test").addEventListener("click", () => {
    const directions = ["BUY", "SELL"];
    // Through the REST API like any app: one Idempotency-Key per click.
    api("/v1/signals", {
      method: "POST", headers: { "Content-Type": "application/json", "Idempotency-Key": newKey() },
      body: JSON.stringify({ symbol: "EURUSD", direction: directions[Math.floor(Math.random() * 2)], volume: 0.01, strategy: "console-test" }),
    });
  });
  if (state.token) login(state.token);
});
