// The loki dashboard. Plain JavaScript, no dependencies, nothing fetched
// from elsewhere. Everything an agent wrote is put into the page with
// textContent (never innerHTML): a transcript holding <script> or an
// onerror= attribute stays text.
"use strict";

const TOKEN_KEY = "loki-token";
let token = "";
let snapshot = null;
let selected = null;
let detailVersion = null;
let usageTimer = null;

function readToken() {
  const m = /(?:^#|&)token=([0-9a-f]+)/.exec(location.hash);
  if (m) {
    sessionStorage.setItem(TOKEN_KEY, m[1]);
    // Out of the address bar (and of screenshots of it).
    history.replaceState(null, "", location.pathname + location.search);
  }
  token = sessionStorage.getItem(TOKEN_KEY) || "";
}

function headers(json) {
  const h = { "x-loki-token": token };
  if (json) h["content-type"] = "application/json";
  return h;
}

function el(tag, attrs, text) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k === "class") e.className = v;
    else e.setAttribute(k, v);
  }
  if (text !== undefined && text !== null) e.textContent = String(text);
  return e;
}

function svg(tag, attrs, text) {
  const e = document.createElementNS("http://www.w3.org/2000/svg", tag);
  for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, String(v));
  if (text !== undefined) e.textContent = String(text);
  return e;
}

function $(id) { return document.getElementById(id); }

function fmtDuration(secs) {
  if (secs === null || secs === undefined) return "-";
  secs = Math.round(secs);
  const h = Math.floor(secs / 3600), m = Math.floor((secs % 3600) / 60), s = secs % 60;
  if (h) return h + "h" + String(m).padStart(2, "0") + "m";
  if (m) return m + "m" + String(s).padStart(2, "0") + "s";
  return s + "s";
}

function usd(v) { return "$" + (v || 0).toFixed(2); }

function say(text, error) {
  const m = $("message");
  m.hidden = !text;
  m.textContent = text || "";
  m.classList.toggle("error", !!error);
}

// ----- live updates: server-sent events over fetch (the token goes in a
// header, which EventSource cannot send); no polling.

async function connect() {
  let delay = 500;
  for (;;) {
    try {
      const res = await fetch("/api/events", { headers: headers(false), cache: "no-store" });
      if (!res.ok) {
        const body = await res.json().catch(() => ({}));
        setLive(false, body.error || ("HTTP " + res.status));
        if (res.status === 401 || res.status === 403) return;
      } else {
        setLive(true);
        delay = 500;
        await readEvents(res.body.getReader());
        setLive(false, "disconnected; reconnecting");
      }
    } catch (e) {
      setLive(false, "disconnected; reconnecting");
    }
    await new Promise(r => setTimeout(r, delay));
    delay = Math.min(delay * 2, 10000);
  }
}

async function readEvents(reader) {
  const dec = new TextDecoder();
  let buf = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buf += dec.decode(value, { stream: true });
    let cut;
    while ((cut = buf.indexOf("\n\n")) >= 0) {
      const frame = buf.slice(0, cut);
      buf = buf.slice(cut + 2);
      const data = frame.split("\n").filter(l => l.startsWith("data:"))
        .map(l => l.slice(5).replace(/^ /, "")).join("\n");
      if (!data) continue;
      try { onState(JSON.parse(data)); } catch (e) { /* a bad frame is skipped */ }
    }
  }
}

function setLive(on, why) {
  const b = $("live");
  b.textContent = on ? "live" : (why || "offline");
  b.className = "badge " + (on ? "ok" : "off");
}

// ----- rendering

function onState(s) {
  if (s.error) { say("cannot read the swarm: " + s.error, true); return; }
  snapshot = s;
  $("target").textContent = "into " + s.target;
  const sup = $("supervisor");
  if (s.supervisor) {
    sup.textContent = "supervisor running (pid " + s.supervisor.pid + ")";
    sup.className = "badge ok";
  } else {
    sup.textContent = "no supervisor running: the last recorded state";
    sup.className = "badge off";
  }
  $("swarm-pause").disabled = !!s.swarm.paused;
  $("swarm-resume").disabled = !s.swarm.paused;
  renderTotals(s);
  renderUsage(s);
  renderGraph(s);
  renderTable(s);
  renderFeed(s);
  if (selected) {
    const st = s.streams.find(x => x.id === selected);
    if (st) {
      renderFacts(st);
      if (st.version !== detailVersion) loadDetail(selected);
    }
  }
  document.body.dataset.updated = String(Date.now());
}

function renderTotals(s) {
  const t = s.totals, box = $("totals");
  box.replaceChildren();
  const budget = s.swarm.max_budget_usd;
  const items = [
    ["streams", t.streams], ["merged", t.merged], ["running", t.running],
    ["waiting for a person", t.waiting], ["failed", t.failed],
    ["words", t.words.toLocaleString()],
    ["cost", usd(s.swarm.total_cost_usd) + (budget ? " of " + usd(budget) : "")],
  ];
  if (s.swarm.paused) items.push(["swarm", "paused"]);
  for (const [k, v] of items) {
    const d = el("div", { "data-total": k });
    d.append(el("b", {}, v), el("span", {}, k));
    box.append(d);
  }
}

function renderUsage(s) {
  const u = $("usage");
  if (usageTimer) { clearInterval(usageTimer); usageTimer = null; }
  if (!s.swarm.usage_resets_at) { u.hidden = true; return; }
  const until = Date.parse(s.swarm.usage_resets_at);
  const tick = () => {
    const left = Math.max(0, (until - Date.now()) / 1000);
    u.textContent = "waiting for the " + (s.swarm.usage_limit || "usage") +
      " limit to reset: " + fmtDuration(left) + " left";
  };
  u.hidden = false;
  tick();
  usageTimer = setInterval(tick, 1000);
}

function depths(streams) {
  const byId = new Map(streams.map(s => [s.id, s]));
  const memo = new Map();
  const depth = (id, seen) => {
    if (memo.has(id)) return memo.get(id);
    if (seen.has(id)) return 0;
    seen.add(id);
    const s = byId.get(id);
    let d = 0;
    for (const dep of (s ? s.depends_on : [])) {
      if (byId.has(dep)) d = Math.max(d, depth(dep, seen) + 1);
    }
    memo.set(id, d);
    return d;
  };
  for (const s of streams) depth(s.id, new Set());
  return memo;
}

let graphKey = "";

function renderGraph(s) {
  const g = $("graph");
  const key = JSON.stringify([selected, s.streams.map(x => [x.id, x.status, x.depends_on, x.template])]);
  if (key === graphKey) return;
  graphKey = key;
  g.replaceChildren();
  const W = 118, H = 26, GX = 44, GY = 10, PAD = 18;
  const d = depths(s.streams);
  const cols = new Map();
  for (const st of s.streams) {
    const c = d.get(st.id) || 0;
    if (!cols.has(c)) cols.set(c, []);
    cols.get(c).push(st);
  }
  const pos = new Map();
  let maxRows = 0;
  for (const [c, list] of cols) {
    // Instances of one template stay together.
    list.sort((a, b) => (a.template || "").localeCompare(b.template || "") || a.id.localeCompare(b.id));
    list.forEach((st, r) => pos.set(st.id, { x: PAD + c * (W + GX), y: PAD + r * (H + GY) }));
    maxRows = Math.max(maxRows, list.length);
  }
  const width = PAD * 2 + Math.max(1, cols.size) * (W + GX);
  const height = PAD * 2 + Math.max(1, maxRows) * (H + GY);
  g.setAttribute("width", width);
  g.setAttribute("height", height);
  g.setAttribute("viewBox", "0 0 " + width + " " + height);
  for (const st of s.streams) {
    const to = pos.get(st.id);
    for (const dep of st.depends_on) {
      const from = pos.get(dep);
      if (!from) continue;
      const x1 = from.x + W, y1 = from.y + H / 2, x2 = to.x, y2 = to.y + H / 2;
      g.append(svg("path", { class: "edge", d: `M${x1},${y1} C${x1 + GX / 2},${y1} ${x2 - GX / 2},${y2} ${x2},${y2}` }));
    }
  }
  const groups = new Map();
  for (const st of s.streams) {
    if (!st.template) continue;
    if (!groups.has(st.template)) groups.set(st.template, []);
    groups.get(st.template).push(st);
  }
  for (const [t, list] of groups) {
    const ps = list.map(x => pos.get(x.id));
    const x0 = Math.min(...ps.map(p => p.x)) - 5, y0 = Math.min(...ps.map(p => p.y)) - 5;
    const x1 = Math.max(...ps.map(p => p.x)) + W + 5, y1 = Math.max(...ps.map(p => p.y)) + H + 5;
    const merged = list.filter(x => x.status === "merged").length;
    g.append(svg("rect", { class: "group", x: x0, y: y0, width: x1 - x0, height: y1 - y0, rx: 8 }));
    g.append(svg("text", { class: "group-label", x: x0 + 2, y: y0 - 3 }, t + " " + merged + "/" + list.length + " merged"));
  }
  for (const st of s.streams) {
    const p = pos.get(st.id);
    const node = svg("g", {
      class: "node" + (st.id === selected ? " selected" : ""),
      "data-id": st.id, "data-status": st.status, transform: `translate(${p.x},${p.y})`,
    });
    node.append(svg("rect", { width: W, height: H, class: "fill-" + colourOf(st.status) }));
    const label = st.id.length > 17 ? st.id.slice(0, 16) + "…" : st.id;
    node.append(svg("text", { x: 7, y: 17 }, label));
    node.append(svg("title", {}, st.id + ": " + st.status));
    node.addEventListener("click", () => select(st.id));
    g.append(node);
  }
}

function colourOf(status) {
  return ({
    pending: "pending", ready: "pending", preparing: "running", running: "running",
    retrying: "running", checking: "checking", validating: "validating",
    awaiting_approval: "approval", merging: "merging", merged: "merged",
    failed: "failed", conflicted: "failed", blocked: "blocked",
    cancelled: "cancelled", interrupted: "interrupted",
  })[status] || "pending";
}

// Rows are kept and updated in place (keyed by id), so a row a person is
// about to click is not replaced under the pointer.
function renderTable(s) {
  const body = $("streams").tBodies[0];
  const rows = new Map([...body.rows].map(r => [r.dataset.id, r]));
  const seen = new Set();
  let prev = null;
  for (const st of s.streams) {
    seen.add(st.id);
    let tr = rows.get(st.id);
    if (!tr) {
      tr = el("tr", { "data-id": st.id });
      for (let i = 0; i < 7; i++) tr.append(el("td"));
      tr.cells[6].className = "latest";
      tr.addEventListener("click", () => select(st.id));
    }
    tr.dataset.status = st.status;
    tr.dataset.version = String(st.version);
    tr.classList.toggle("selected", st.id === selected);
    const c = tr.cells;
    c[0].textContent = st.id;
    const badge = el("span", { class: "status s-" + st.status }, st.status.replace("_", " "));
    c[1].replaceChildren(badge);
    if (st.paused) c[1].append(el("span", {}, " (paused)"));
    c[2].textContent = st.attempt ? st.attempt : "-";
    c[3].textContent = fmtDuration(st.duration_secs);
    c[4].textContent = st.words === null ? "-" : st.words;
    c[5].textContent = usd(st.cost_usd);
    c[6].textContent = st.reason || st.last_message || "";
    const want = prev ? prev.nextSibling : body.firstChild;
    if (want !== tr) body.insertBefore(tr, want);
    prev = tr;
  }
  for (const [id, tr] of rows) if (!seen.has(id)) tr.remove();
}

function renderFeed(s) {
  const ol = $("feed");
  ol.replaceChildren();
  for (const e of s.events.slice().reverse()) {
    const li = el("li", { "data-kind": e.kind || "" });
    li.append(el("time", {}, (e.ts || "").replace("T", " ").slice(0, 19)));
    let text = (e.stream ? e.stream + ": " : "") + (e.kind || "");
    if (e.from || e.to) text += " " + (e.from || "") + " → " + (e.to || "");
    if (e.message) text += " — " + e.message;
    li.append(document.createTextNode(text));
    ol.append(li);
  }
}

// ----- one stream

function select(id) {
  selected = id;
  detailVersion = null;
  $("detail").hidden = false;
  $("detail-title").textContent = id;
  say("");
  if (snapshot) onState(snapshot);
}

function renderFacts(st) {
  const dl = $("detail-facts");
  dl.replaceChildren();
  const facts = [
    ["status", st.status + (st.paused ? " (paused)" : "")], ["attempt", st.attempt + " of " + st.attempts + " made"],
    ["duration", fmtDuration(st.duration_secs)], ["words", st.words === null ? "-" : st.words],
    ["cost", usd(st.cost_usd)], ["validation", st.validation || "-"],
    ["reason", st.reason || "-"], ["approved by", st.approved_by || "-"], ["version", st.version],
  ];
  for (const [k, v] of facts) dl.append(el("dt", {}, k), el("dd", { "data-fact": k }, v));
  const can = {
    approve: st.status === "awaiting_approval",
    reject: st.status === "awaiting_approval",
    retry: ["failed", "blocked", "cancelled", "interrupted", "conflicted", "validating"].includes(st.status),
    cancel: !["merged", "cancelled", "merging"].includes(st.status),
    pause: !st.paused && !["merged", "cancelled"].includes(st.status),
    resume: !!st.paused,
  };
  for (const [k, ok] of Object.entries(can)) $(k).disabled = !ok;
}

async function loadDetail(id) {
  const st = snapshot && snapshot.streams.find(x => x.id === id);
  detailVersion = st ? st.version : null;
  let d;
  try {
    const res = await fetch("/api/streams/" + encodeURIComponent(id), { headers: headers(false), cache: "no-store" });
    d = await res.json();
    if (!res.ok) { say(d.error || ("HTTP " + res.status), true); return; }
  } catch (e) { say("cannot load " + id + ": " + e, true); return; }
  if (selected !== id) return;
  $("transcript").textContent = d.transcript.length ? d.transcript.join("\n") : "(no transcript yet)";
  $("checks").textContent = checksText(d.checks);
  $("validation").textContent = validationText(d.validation);
  $("history").textContent = historyText(d);
  $("diff").textContent = d.diff || "(no branch: nothing to compare)";
  const t = $("transcript");
  t.scrollTop = t.scrollHeight;
}

function checksText(r) {
  if (!r) return "(no check report yet)";
  const lines = [r.summary];
  for (const e of r.entries || []) {
    lines.push(e.status + "  " + e.check + (e.target ? " " + e.target : "") + ": " + e.details);
  }
  return lines.join("\n");
}

function validationText(r) {
  if (!r) return "(no validator has judged it)";
  const lines = [r.summary + " (" + r.decision + ", " + r.execution_time_seconds.toFixed(1) + "s, " + usd(r.cost_usd) + ")"];
  for (const v of r.validators || []) {
    lines.push(v.status.toUpperCase() + "  " + v.name + (v.blocking ? "" : " (non-blocking)") +
      " " + v.duration_seconds.toFixed(1) + "s" + (v.error ? ": " + v.error : ""));
    for (const i of v.issues || []) lines.push("    " + i.severity + ": " + i.message + (i.where ? " (at " + i.where + ")" : ""));
  }
  return lines.join("\n");
}

function historyText(d) {
  const lines = [];
  for (const a of (d.state && d.state.attempts) || []) {
    lines.push("attempt " + a.n + "  " + (a.outcome || "running") + (a.checks ? "  checks " + a.checks : "") +
      (a.validation ? "  validators " + a.validation : "") + "  " + usd(a.cost_usd) +
      (a.commit ? "  " + a.commit.slice(0, 8) : "") + (a.reason ? "\n    " + a.reason : ""));
  }
  if (d.history) {
    lines.push("", "merged into the target as " + d.history.merge_commit.slice(0, 8) + " (" + d.history.merged_at + ")");
    for (const a of d.history.attempts || []) {
      lines.push("  git: attempt " + a.n + "  " + a.verdict + (a.validation ? "  validators " + a.validation : "") + "  " + a.commit.slice(0, 8));
    }
  }
  return lines.length ? lines.join("\n") : "(no attempt yet)";
}

// ----- acting: the same path as `loki approve` and the other commands

async function act(path, body) {
  say("");
  try {
    const res = await fetch(path, { method: "POST", headers: headers(true), body: JSON.stringify(body || {}) });
    const d = await res.json().catch(() => ({}));
    if (!res.ok) { say(d.error || ("HTTP " + res.status), true); return; }
    say(d.message || "done");
  } catch (e) {
    say("the request failed: " + e, true);
  }
}

function streamAct(action, extra) {
  if (!selected || !snapshot) return;
  const st = snapshot.streams.find(x => x.id === selected);
  if (!st) return;
  act("/api/streams/" + encodeURIComponent(selected) + "/" + action,
    Object.assign({ expected_version: st.version, seen_status: st.status }, extra || {}));
}

function wire() {
  $("approve").addEventListener("click", () => streamAct("approve", { by: $("approver").value }));
  $("reject").addEventListener("click", () => {
    const note = $("note").value.trim();
    if (!note) { say("say what the next attempt must change", true); return; }
    streamAct("reject", { note, count: $("count").checked });
  });
  for (const a of ["retry", "cancel", "pause", "resume"]) $(a).addEventListener("click", () => streamAct(a));
  $("swarm-pause").addEventListener("click", () => act("/api/swarm/pause"));
  $("swarm-resume").addEventListener("click", () => act("/api/swarm/resume"));
  const name = localStorage.getItem("loki-approver");
  if (name) $("approver").value = name;
  $("approver").addEventListener("change", () => localStorage.setItem("loki-approver", $("approver").value));
}

readToken();
wire();
connect();
