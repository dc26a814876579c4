// Pythia console: polls the JSON API and keeps a window of lag samples for
// the charts. No dependencies; everything shown is built with textContent.
"use strict";

const POLL_MS = 2000;
const WINDOW = 150; // samples kept per group (5 minutes at 2 s)
const state = { info: {}, samples: {}, group: null, letters: [] };

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k === "class") node.className = v;
    else if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
    else node.setAttribute(k, v);
  }
  for (const child of children.flat()) {
    if (child !== null && child !== undefined) node.append(child instanceof Node ? child : String(child));
  }
  return node;
}

async function api(path, options) {
  const response = await fetch(path, options);
  const body = await response.json().catch(() => ({}));
  if (!response.ok) throw new Error(body.error || `${path}: HTTP ${response.status}`);
  return body;
}

function partitionsText(assigned) {
  if (!assigned || assigned.length === 0) return "none";
  return assigned.map((a) => `${a.topic}[${(a.partitions || [a.partition]).join(",")}]`).join(" ");
}

// ---- Groups and instances.

async function refreshGroups() {
  const answer = await api("/api/groups");
  const groups = answer.groups;
  const source = document.getElementById("groups-source");
  source.textContent = answer.source === "broker" ? "as the broker describes them" : "from the instances' /status";
  source.title = answer.note || "";
  const list = document.getElementById("group-list");
  list.replaceChildren(...groups.map((g) => el("div", { class: "card", "data-group": g.group },
    el("h4", {}, g.group, " ", el("span", { class: "muted" }, `${g.state} · ${g.protocol || g.protocol_type || "-"}`)),
    el("table", { class: "members" },
      el("thead", {}, el("tr", {}, el("th", {}, "Client id"), el("th", {}, "Host"), el("th", {}, "Partitions"))),
      el("tbody", {}, g.members.length === 0
        ? el("tr", {}, el("td", { colspan: 3, class: "muted" }, "no members"))
        : g.members.map((m) => el("tr", { class: "member", "data-client-id": m.client_id },
          el("td", { title: m.member_id }, m.client_id), el("td", {}, m.host),
          el("td", { class: "assigned" }, partitionsText(m.assigned)))))))));
  if (groups.length === 0) list.replaceChildren(el("p", { class: "muted" }, "No consumer group on this cluster."));
  const select = document.getElementById("lag-group");
  const names = groups.map((g) => g.group);
  if (select.options.length !== names.length || names.some((n, i) => select.options[i].value !== n)) {
    select.replaceChildren(...names.map((n) => el("option", { value: n }, n)));
    if (state.group && names.includes(state.group)) select.value = state.group;
  }
  state.group = select.value || null;
}

async function refreshInstances() {
  const instances = await api("/api/instances");
  if (instances.length === 0) return;
  const rows = instances.map((i) => el("tr", { class: "instance", "data-client-id": i.client_id || "" },
    el("td", {}, i.address),
    el("td", {}, i.client_id || "–"),
    el("td", {}, i.phase || "–"),
    el("td", { class: "assigned" }, (i.assigned || []).map((a) => `${a.topic}/${a.partition}`).join(" ") || "none"),
    el("td", { class: i.live ? "ok live" : "bad live" }, i.live ? "live" : (i.live_reason || "not live")),
    el("td", { class: i.ready ? "ok ready" : "bad ready" }, i.ready ? (i.ready_reason || "ready") : `not ready: ${i.ready_reason || "unknown"}`)));
  document.querySelector("#instances tbody").replaceChildren(...rows);
}

// ---- Lag over time.

async function refreshLag() {
  if (!state.group) return;
  const group = state.group;
  const lag = await api(`/api/lag?group=${encodeURIComponent(group)}`);
  const samples = (state.samples[group] ||= []);
  const sum = (key) => lag.partitions.reduce((n, p) => n + (p[key] || 0), 0);
  samples.push({ t: Date.now() / 1000, lag: lag.lag, seconds: lag.lag_seconds, committed: sum("committed"), high: sum("high_watermark") });
  if (samples.length > WINDOW) samples.shift();
  const rates = samples.map((s, i) => {
    const before = samples[i - 1];
    if (!before || s.t <= before.t) return { consumed: 0, produced: 0 };
    return { consumed: Math.max(0, (s.committed - before.committed) / (s.t - before.t)), produced: Math.max(0, (s.high - before.high) / (s.t - before.t)) };
  });
  const last = rates[rates.length - 1];
  document.getElementById("lag-total").textContent = lag.lag;
  document.getElementById("lag-seconds").textContent = `${lag.lag_seconds.toFixed(1)} s`;
  document.getElementById("rate-consumed").textContent = `${last.consumed.toFixed(1)}/s`;
  document.getElementById("rate-produced").textContent = `${last.produced.toFixed(1)}/s`;
  chart("chart-lag", [{ values: samples.map((s) => s.lag) }]);
  chart("chart-seconds", [{ values: samples.map((s) => s.seconds) }]);
  chart("chart-rate", [{ values: rates.map((r) => r.consumed) }, { values: rates.map((r) => r.produced), class: "produced" }]);
  document.querySelector("#partitions tbody").replaceChildren(...lag.partitions.map((p) =>
    el("tr", { class: "partition", "data-topic": p.topic, "data-partition": p.partition },
      el("td", {}, p.topic), el("td", { class: "num" }, p.partition),
      el("td", { class: "num" }, p.committed ?? "–"), el("td", { class: "num" }, p.low_watermark),
      el("td", { class: "num" }, p.high_watermark), el("td", { class: "num lag" }, p.lag),
      el("td", { class: "num" }, p.lag_seconds === null ? "–" : p.lag_seconds.toFixed(1)))));
  document.getElementById("lag").dataset.total = lag.lag;
}

function chart(id, series) {
  const svg = document.getElementById(id);
  const [w, h, pad] = [400, 120, 14];
  const all = series.flatMap((s) => s.values);
  const max = Math.max(1, ...all);
  const ns = "http://www.w3.org/2000/svg";
  const nodes = series.map((s) => {
    const n = s.values.length;
    const points = s.values.map((v, i) => {
      const x = pad + (n <= 1 ? 0 : (i / (n - 1)) * (w - 2 * pad));
      const y = h - pad - (v / max) * (h - 2 * pad);
      return `${x.toFixed(1)},${y.toFixed(1)}`;
    });
    const line = document.createElementNS(ns, "polyline");
    line.setAttribute("class", `line ${s.class || ""}`);
    line.setAttribute("points", points.join(" "));
    return line;
  });
  const label = (text, y) => {
    const t = document.createElementNS(ns, "text");
    t.setAttribute("x", 2);
    t.setAttribute("y", y);
    t.textContent = text;
    return t;
  };
  svg.replaceChildren(label(max.toFixed(max < 10 ? 1 : 0), 10), label("0", h - 3), ...nodes);
}

// ---- Dead letters.

async function refreshTopics() {
  const topics = await api("/api/dlq/topics");
  const select = document.getElementById("dlq-topic");
  if (select.options.length !== topics.length || topics.some((t, i) => select.options[i].value !== t)) {
    const current = select.value;
    select.replaceChildren(...topics.map((t) => el("option", { value: t }, t)));
    if (topics.includes(current)) select.value = current;
    await refreshLetters();
  }
}

async function refreshLetters() {
  const topic = document.getElementById("dlq-topic").value;
  if (!topic) return;
  const body = await api(`/api/dlq?topic=${encodeURIComponent(topic)}&limit=100`);
  state.letters = body.messages;
  renderLetters();
}

function matches(letter, filter) {
  if (!filter) return true;
  const text = [letter.reason, letter.kind, origin(letter), letter.worker].join(" ").toLowerCase();
  return text.includes(filter.toLowerCase());
}

function origin(letter) {
  const o = letter.origin;
  return o.topic ? `${o.topic}/${o.partition}@${o.offset}` : "–";
}

function shownLetters() {
  const filter = document.getElementById("dlq-filter").value.trim();
  return state.letters.filter((l) => matches(l, filter));
}

function renderLetters() {
  const replay = state.info.replay;
  const rows = shownLetters().map((l) => el("tr", { class: "letter", "data-offset": l.offset, "data-partition": l.partition },
    el("td", {}, l.timestamp_ms ? new Date(l.timestamp_ms).toLocaleString() : "–"),
    el("td", {}, `${l.partition}@${l.offset}`),
    el("td", { class: "origin" }, origin(l)),
    el("td", { class: "reason" }, l.reason || "–"),
    el("td", {}, l.kind || "–"),
    el("td", { class: "num" }, l.attempts ?? "–"),
    el("td", {}, l.payload
      ? el("pre", { class: "preview", title: `${l.payload.size} bytes, ${l.payload.encoding}` }, l.payload.text + (l.payload.truncated ? " …" : ""))
      : el("span", { class: "muted" }, "empty")),
    el("td", {}, el("button", {
      class: "replay replay-one", type: "button", ...(replay ? {} : { disabled: "", title: "read-only: start the console with --allow-replay" }),
      onclick: () => askReplay([l]),
    }, "Replay"))));
  document.querySelector("#dlq tbody").replaceChildren(...(rows.length ? rows : [el("tr", {}, el("td", { colspan: 8, class: "muted" }, "No dead letters."))]));
  document.getElementById("replay-filtered").disabled = !replay || rows.length === 0;
}

let pending = null;

function askReplay(letters) {
  pending = letters;
  const topic = document.getElementById("dlq-topic").value;
  const targets = [...new Set(letters.map((l) => l.origin.topic || "?"))].join(", ");
  document.getElementById("confirm-text").textContent =
    `Replay ${letters.length} message${letters.length === 1 ? "" : "s"} from ${topic} to ${targets}? They are sent again to their original topic; the dead letters stay where they are.`;
  document.getElementById("confirm").hidden = false;
}

async function confirmReplay() {
  const letters = pending;
  pending = null;
  document.getElementById("confirm").hidden = true;
  const result = document.getElementById("replay-result");
  const headers = { "content-type": "application/json" };
  const token = document.getElementById("replay-token").value;
  if (token) headers["x-pythia-token"] = token;
  try {
    const body = await api("/api/dlq/replay", {
      method: "POST", headers,
      body: JSON.stringify({ topic: document.getElementById("dlq-topic").value, messages: letters.map((l) => ({ partition: l.partition, offset: l.offset })) }),
    });
    result.className = "ok";
    result.textContent = `Replayed ${body.replayed} (skipped ${body.skipped}); every send was confirmed.`;
  } catch (error) {
    result.className = "bad";
    result.textContent = `Replay failed: ${error.message}`;
  }
}

// ---- Wiring.

async function tick(work) {
  try {
    await work();
    document.getElementById("updated").textContent = `updated ${new Date().toLocaleTimeString()}`;
  } catch (error) {
    document.getElementById("updated").textContent = `error: ${error.message}`;
  }
}

async function start() {
  state.info = await api("/api/info");
  const mode = document.getElementById("mode");
  mode.textContent = state.info.replay ? "replay enabled" : "read-only";
  mode.classList.toggle("on", state.info.replay);
  document.getElementById("replay-token").hidden = !state.info.token_required;
  document.getElementById("lag-group").addEventListener("change", (e) => { state.group = e.target.value; tick(refreshLag); });
  document.getElementById("dlq-topic").addEventListener("change", () => tick(refreshLetters));
  document.getElementById("dlq-filter").addEventListener("input", renderLetters);
  document.getElementById("replay-filtered").addEventListener("click", () => askReplay(shownLetters()));
  document.getElementById("confirm-yes").addEventListener("click", confirmReplay);
  document.getElementById("confirm-no").addEventListener("click", () => { pending = null; document.getElementById("confirm").hidden = true; });
  const fast = async () => { await refreshGroups(); await Promise.all([refreshInstances(), refreshLag()]); };
  await tick(fast);
  await tick(refreshTopics);
  setInterval(() => tick(fast), POLL_MS);
  setInterval(() => tick(async () => { await refreshTopics(); await refreshLetters(); }), 5 * POLL_MS);
}

start();
