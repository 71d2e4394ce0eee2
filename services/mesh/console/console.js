// The lexmesh dashboard: reads /api/state once per connection, then applies what
// /api/events pushes (job events, metrics reports, alerts, health events). No library, no
// build step: the page draws its tables and SVG curves itself.
"use strict";

const FINAL = new Set(["completed", "failed", "cancelled"]);
// Three missed pings (the server sends one every 5 s when idle) and the connection is lost.
const SILENCE_MS = 15000;
const MAX_LATENCIES = 5000;

const state = {
  actions: false,
  jobs: new Map(),       // job_id -> row
  instances: new Map(),  // instance -> { metrics, health, budget, replacements, history }
  alerts: [],            // newest first
  selected: null,        // job id
  events: [],            // the selected job's events, in order
  eventKeys: new Set(),
  loadingEvents: null,   // events of the selected job that came while its history loaded
};
// Event published -> drawn, in ms, for the page-latency benchmark.
window.lexmeshLatencies = [];
const pendingLatencies = [];

const $ = (selector) => document.querySelector(selector);
function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k === "class") node.className = v; else if (k === "text") node.textContent = v;
    else node.setAttribute(k, v === true ? "" : String(v));
  }
  for (const child of children) if (child !== null && child !== undefined) {
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}
const svgEl = (tag, attrs) => {
  const node = document.createElementNS("http://www.w3.org/2000/svg", tag);
  for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, String(v));
  return node;
};
const fmt = (x, digits = 3) => (x === null || x === undefined || Number.isNaN(x)) ? "" : Number(x).toFixed(digits);
function duration(seconds) {
  if (seconds === null || seconds === undefined || !Number.isFinite(seconds)) return "";
  const s = Math.max(0, Math.round(seconds));
  if (s < 60) return `${s}s`;
  if (s < 3600) return `${Math.floor(s / 60)}m${String(s % 60).padStart(2, "0")}s`;
  return `${Math.floor(s / 3600)}h${String(Math.floor(s % 3600 / 60)).padStart(2, "0")}m`;
}
function bytes(n) {
  if (!n) return "";
  const units = ["B", "KiB", "MiB", "GiB"];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) { n /= 1024; i++; }
  return `${n.toFixed(i ? 0 : 0)} ${units[i]}`;
}
const clock = (ms) => new Date(ms).toLocaleTimeString();

// ---- jobs ------------------------------------------------------------------------------

function jobRow(id) {
  let job = state.jobs.get(id);
  if (!job) {
    job = { job_id: id, kind: "train", status: "queued", attempt: 0, owner: "", epoch: null,
      total: null, percent: null, eta: null, speed: null, model_id: "", created: Infinity,
      updated: 0, line: "" };
    state.jobs.set(id, job);
  }
  return job;
}

function applyRecord(record) {
  const job = jobRow(record.job_id);
  const newer = record.updated_ms >= job.updated;
  job.created = Math.min(job.created, record.created_ms);
  job.kind = record.kind;
  job.model_id = record.model_id || job.model_id;
  if (newer) {
    job.status = record.status;
    job.attempt = record.attempts;
    job.owner = record.owner || job.owner;
    job.updated = record.updated_ms;
    if (record.epochs_completed !== undefined && record.epochs_completed !== null) {
      job.epoch = Math.max(job.epoch || 0, record.epochs_completed);
    }
    if (record.total_epochs) job.total = record.total_epochs;
    if (record.status === "completed") job.percent = 100;
    if (record.error) job.line = `${record.error.code}: ${record.error.reason}`;
  }
}

function applyJobEvent(e) {
  const job = jobRow(e.job_id);
  // Every job event is drawn in the next frame (its row, and the curve when selected).
  if (typeof e.timestamp_ms === "number") pendingLatencies.push(e.timestamp_ms);
  if (e.kind) job.kind = e.kind;
  if (e.instance) job.owner = e.instance;
  if (e.attempt) job.attempt = Math.max(job.attempt, e.attempt);
  job.updated = Math.max(job.updated, e.timestamp_ms);
  job.created = Math.min(job.created, e.timestamp_ms);
  switch (e.event) {
    case "accepted": if (!FINAL.has(job.status)) job.status = "running"; break;
    case "progress":
      if (!FINAL.has(job.status)) job.status = "running";
      job.model_id = e.model_id;
      job.epoch = e.phase === "epoch" ? e.epoch : Math.max(0, e.epoch - 1);
      job.total = e.total_epochs;
      job.percent = e.completion_percentage;
      job.eta = e.estimated_time_remaining_s;
      job.speed = e.examples_per_sec;
      break;
    case "completed": job.status = "completed"; job.percent = 100; job.eta = 0; job.line = ""; break;
    case "failed":
      job.status = e.retrying ? "retrying" : "failed";
      job.line = `${e.code}: ${e.reason}`;
      break;
    case "cancelled": job.status = "cancelled"; job.eta = null; break;
    case "trial_completed": case "trial_stopped": case "trial_failed":
      job.epoch = (job.epoch || 0) + 1;
      if (job.total) job.percent = 100 * job.epoch / job.total;
      break;
    default: break;
  }
  if (e.job_id === state.selected) addSelectedEvent(e);
}

// Updates a table body in place, row by row (keyed), cell by cell (only those whose signature
// changed): a row under the pointer is never replaced, so clicks, hovers and text selection
// survive the many updates a second that training brings.
function syncRows(tbody, items, keyOf, rowAttrs, cellsOf) {
  const existing = new Map([...tbody.children].map((tr) => [tr.dataset.key, tr]));
  const keep = new Set();
  let cursor = tbody.firstElementChild;
  for (const item of items) {
    const key = keyOf(item);
    keep.add(key);
    let tr = existing.get(key);
    if (!tr) { tr = document.createElement("tr"); tr.dataset.key = key; }
    for (const [name, value] of Object.entries(rowAttrs(item))) {
      if (tr.getAttribute(name) !== value) tr.setAttribute(name, value);
    }
    const cells = cellsOf(item);
    while (tr.children.length < cells.length) tr.append(document.createElement("td"));
    cells.forEach((cell, i) => {
      const td = tr.children[i];
      const sig = JSON.stringify(cell.sig);
      if (td.dataset.sig === sig) return;
      td.dataset.sig = sig;
      if (cell.class) td.className = cell.class;
      if (cell.dir) td.dir = cell.dir;
      cell.fill(td);
    });
    if (tr === cursor) cursor = cursor.nextElementSibling; else tbody.insertBefore(tr, cursor);
  }
  for (const [key, tr] of existing) if (!keep.has(key)) tr.remove();
}
const textCell = (value, extra) => ({ sig: value, fill: (td) => { td.textContent = value === null || value === undefined ? "" : String(value); }, ...extra });
const statusCell = (status) => ({ sig: status, fill: (td) => td.replaceChildren(el("span", { class: `status ${status}` }, status)) });

function renderJobs() {
  // Newest first by when the job was first seen: an order that does not move while jobs run.
  const jobs = [...state.jobs.values()].sort((a, b) => b.created - a.created || a.job_id.localeCompare(b.job_id));
  $("#no-jobs").hidden = jobs.length > 0;
  syncRows($("#jobs tbody"), jobs, (job) => job.job_id,
    (job) => ({ "data-job": job.job_id, class: job.job_id === state.selected ? "selected" : "" }),
    (job) => {
      const percent = job.percent === null ? null : Math.max(0, Math.min(100, job.percent));
      return [
        textCell(job.job_id, { dir: "auto" }),
        textCell(job.kind),
        statusCell(job.status),
        textCell(job.attempt || "", { class: "num" }),
        textCell(job.owner, { dir: "auto" }),
        textCell(job.total ? `${job.epoch ?? 0}/${job.total}` : "", { class: "num" }),
        { sig: percent, fill: (td) => {
          let bar = td.firstElementChild;
          if (!bar) { bar = el("div", { class: "bar" }, el("div", {})); td.append(bar); }
          bar.dataset.percent = percent === null ? "" : percent.toFixed(1);
          bar.firstElementChild.style.width = `${percent || 0}%`;
        } },
        textCell(FINAL.has(job.status) ? "" : duration(job.eta), { class: "num" }),
        textCell(job.speed ? Math.round(job.speed) : "", { class: "num" }),
      ];
    });
}

$("#jobs tbody").addEventListener("click", (ev) => {
  const row = ev.target.closest("tr[data-job]");
  if (row) select(row.dataset.job);
});

// ---- the selected job ----------------------------------------------------------------

function eventKey(e) {
  return [e.event, e.attempt, e.phase, e.epoch, e.batch, e.trial_id, e.version, e.timestamp_ms].join("|");
}

function addSelectedEvent(e) {
  if (state.loadingEvents) { state.loadingEvents.push(e); return; }
  const key = eventKey(e);
  if (state.eventKeys.has(key)) return;
  state.eventKeys.add(key);
  state.events.push(e);
  scheduleDraw();
}

async function select(id) {
  state.selected = id;
  state.events = [];
  state.eventKeys = new Set();
  state.loadingEvents = [];
  $("#detail").hidden = false;
  $("#action-result").textContent = "";
  scheduleDraw();
  let stored = [];
  try {
    const answer = await fetch(`api/jobs/${encodeURIComponent(id)}/events`);
    if (answer.ok) stored = await answer.json();
  } catch (_) { /* shown as an empty curve; live events still come */ }
  if (state.selected !== id) return;
  const live = state.loadingEvents;
  state.loadingEvents = null;
  for (const e of stored.concat(live)) addSelectedEvent(e);
  scheduleDraw();
}

// Curve points of the selected job. x is in epochs: batch b of epoch e is e - 1 + b / batches.
// A resumed attempt continues the line from its checkpoint: the points the lost attempt drew
// after that checkpoint are dropped, and a dashed line marks where the new attempt started.
function curves(events) {
  const train = [], val = [], attempts = [];
  let attempt = null;
  for (const e of events) {
    if (e.event !== "progress") continue;
    if (e.attempt !== attempt) {
      const from = e.resumed_from_epoch !== undefined && e.resumed_from_epoch !== null
        ? e.resumed_from_epoch + (e.resumed_from_batch && e.total_batches ? e.resumed_from_batch / e.total_batches : 0)
        : (attempt === null ? 0 : null);
      if (attempt !== null) {
        const cut = from === null ? 0 : from;
        while (train.length && train[train.length - 1].x > cut + 1e-9) train.pop();
        while (val.length && val[val.length - 1].x > cut + 1e-9) val.pop();
        attempts.push({ x: cut, attempt: e.attempt, resumed: from !== null && from > 0 });
      }
      attempt = e.attempt;
    }
    if (e.phase === "started") continue;
    const x = e.phase === "epoch" ? e.epoch : e.epoch - 1 + (e.total_batches ? e.batch / e.total_batches : 0);
    train.push({ x, loss: e.loss, acc: e.accuracy });
    if (e.phase === "epoch" && e.validation_loss !== undefined && e.validation_loss !== null) {
      val.push({ x, loss: e.validation_loss, acc: e.validation_accuracy });
    }
  }
  return { train, val, attempts };
}

function drawChart(svg, series, field, total) {
  const W = 480, H = 220, L = 38, R = 8, T = 8, B = 20;
  const points = series.train.concat(series.val).filter((p) => Number.isFinite(p[field]));
  svg.replaceChildren();
  svg.dataset.points = String(points.length);
  svg.dataset.train = String(series.train.length);
  svg.dataset.validation = String(series.val.length);
  svg.dataset.firstX = series.train.length ? String(series.train[0].x) : "";
  // The x axis grows with the curve (up to the planned epochs), so that a long job's first
  // epochs are not squeezed into its left edge.
  const seen = Math.max(0, ...points.map((p) => p.x));
  const maxX = Math.max(1, total ? Math.min(total, Math.ceil(seen * 1.25 + 1)) : Math.ceil(seen));
  let lo = Math.min(...points.map((p) => p[field])), hi = Math.max(...points.map((p) => p[field]));
  if (field === "acc") { lo = Math.min(lo, 1); hi = 1; lo = Math.max(0, Math.min(lo, hi - 0.05)); }
  if (!points.length) { lo = 0; hi = 1; }
  if (hi - lo < 1e-9) { hi = lo + 1; }
  const px = (x) => L + (W - L - R) * x / maxX;
  const py = (y) => T + (H - T - B) * (1 - (y - lo) / (hi - lo));
  for (let i = 0; i <= 4; i++) {
    const y = lo + (hi - lo) * i / 4;
    svg.append(svgEl("line", { class: "grid", x1: L, x2: W - R, y1: py(y), y2: py(y) }));
    const label = svgEl("text", { x: 2, y: py(y) + 3 }); label.textContent = y.toFixed(field === "acc" ? 2 : 3);
    svg.append(label);
  }
  const step = Math.max(1, Math.ceil(maxX / 10));
  for (let x = 0; x <= maxX; x += step) {
    const label = svgEl("text", { x: px(x) - 3, y: H - 5 }); label.textContent = String(x);
    svg.append(label);
  }
  for (const a of series.attempts) {
    svg.append(svgEl("line", { class: "attempt", x1: px(a.x), x2: px(a.x), y1: T, y2: H - B }));
    const label = svgEl("text", { x: px(a.x) + 3, y: T + 10 });
    label.textContent = a.resumed ? `attempt ${a.attempt} (resumed)` : `attempt ${a.attempt}`;
    svg.append(label);
  }
  const line = (pts, cls) => {
    const good = pts.filter((p) => Number.isFinite(p[field]));
    if (!good.length) return;
    svg.append(svgEl("polyline", { class: cls, points: good.map((p) => `${px(p.x).toFixed(1)},${py(p[field]).toFixed(1)}`).join(" ") }));
  };
  line(series.train, "train");
  line(series.val, "val");
  for (const p of series.val) if (Number.isFinite(p[field])) svg.append(svgEl("circle", { class: "val-dot", cx: px(p.x), cy: py(p[field]), r: 2.5 }));
}

function evaluationOf(result) {
  if (!result) return null;
  if (result.train) return { title: `validation of ${result.train.model_id} (best epoch ${result.train.best_epoch}, ${result.train.stop_reason})`, e: result.train.validation };
  if (result.evaluate) return { title: `evaluation of ${result.evaluate.model_id}`, e: result.evaluate.evaluation };
  return null;
}

function drawReport(events) {
  const report = $("#report");
  const done = events.filter((e) => e.event === "completed").pop();
  const evaluation = done ? evaluationOf(done.result) : null;
  if (!evaluation) {
    const optimize = done && done.result && done.result.optimize;
    report.replaceChildren(optimize ? el("p", {}, `best trial ${optimize.best_trial.trial_id}: macro-F1 ${fmt(optimize.best_trial.score.macro_f1)}; model ${optimize.model_id}`) : "");
    return;
  }
  const e = evaluation.e;
  const perClass = el("table", { id: "per-class" },
    el("thead", {}, el("tr", {}, el("th", {}, "class"), el("th", {}, "precision"), el("th", {}, "recall"), el("th", {}, "F1"), el("th", {}, "support"))),
    el("tbody", {}, ...e.per_class.map((c) => el("tr", {},
      el("td", { dir: "auto" }, c.label), el("td", { class: "num" }, fmt(c.precision)),
      el("td", { class: "num" }, fmt(c.recall)), el("td", { class: "num" }, fmt(c.f1)),
      el("td", { class: "num" }, c.support)))));
  const matrix = el("table", { class: "matrix", id: "confusion" },
    el("thead", {}, el("tr", {}, el("th", {}, "true \\ predicted"), ...e.labels.map((l) => el("th", { dir: "auto" }, l)))),
    el("tbody", {}, ...e.confusion_matrix.map((row, i) => el("tr", {},
      el("th", { dir: "auto" }, e.labels[i]), ...row.map((n, j) => el("td", { style: n && i === j ? "font-weight:600" : "" }, n))))));
  report.replaceChildren(
    el("h3", {}, evaluation.title),
    el("p", { class: "muted" }, `accuracy ${fmt(e.accuracy)}, macro-F1 ${fmt(e.macro_f1)} on ${e.count} examples`),
    el("div", { class: "scroll" }, perClass), el("div", { class: "scroll" }, matrix));
}

function drawLeaderboard(events) {
  const board = events.filter((e) => e.event === "leaderboard").pop();
  const node = $("#leaderboard");
  if (!board) { node.replaceChildren(); return; }
  node.replaceChildren(el("h3", {}, "leaderboard"), el("div", { class: "scroll" }, el("table", { id: "trials" },
    el("thead", {}, el("tr", {}, ...["rank", "trial", "status", "epochs", "macro-F1", "validation loss"].map((h) => el("th", {}, h)))),
    el("tbody", {}, ...board.entries.map((t) => el("tr", { "data-trial": t.trial_id },
      el("td", { class: "num" }, t.rank), el("td", {}, t.trial_id), el("td", {}, el("span", { class: `status ${t.status}` }, t.status)),
      el("td", { class: "num" }, t.epochs_run), el("td", { class: "num" }, t.best ? fmt(t.best.macro_f1) : ""),
      el("td", { class: "num" }, t.best ? fmt(t.best.validation_loss) : "")))))));
}

let detailDrawn = "";
function renderDetail() {
  const id = state.selected;
  if (!id) return;
  const job = jobRow(id);
  // Drawn again only when something it shows changed (not on every metrics report).
  const sig = JSON.stringify([id, state.events.length, job.status, job.attempt, job.owner, job.model_id, job.line, state.actions]);
  if (sig === detailDrawn) return;
  detailDrawn = sig;
  $("#detail-job").textContent = id;
  const status = $("#detail-status");
  status.textContent = job.status;
  status.className = `status ${job.status}`;
  const bits = [job.kind, job.model_id && `model ${job.model_id}`, job.attempt && `attempt ${job.attempt}`,
    job.owner && `on ${job.owner}`, job.line].filter(Boolean);
  $("#detail-line").textContent = bits.join(" · ");
  const cancel = $("#cancel");
  cancel.hidden = !state.actions || FINAL.has(job.status);
  const series = curves(state.events);
  drawChart($("#loss-chart"), series, "loss", job.kind === "train" ? job.total : 0);
  drawChart($("#accuracy-chart"), series, "acc", job.kind === "train" ? job.total : 0);
  drawReport(state.events);
  drawLeaderboard(state.events);
}

$("#cancel").addEventListener("click", async () => {
  const id = state.selected;
  const button = $("#cancel");
  button.disabled = true;
  try {
    const answer = await fetch(`api/jobs/${encodeURIComponent(id)}/cancel`, { method: "POST", headers: { "X-Lexmesh-Action": "cancel" } });
    const body = await answer.text();
    let message = body;
    try { message = JSON.parse(body).message; } catch (_) { /* plain text */ }
    $("#action-result").textContent = answer.ok ? message : `refused: ${message}`;
  } catch (e) {
    $("#action-result").textContent = `cancel failed: ${e}`;
  } finally {
    button.disabled = false;
  }
});

// ---- instances and alerts ------------------------------------------------------------

function instance(name) {
  let i = state.instances.get(name);
  if (!i) {
    i = { name, service: "", metrics: null, health: null, reason: "", budget: 0, replacements: 0, history: [], seen: [] };
    state.instances.set(name, i);
  }
  return i;
}

// An instance the health service's view did not hold yet (its memory budget unknown): the
// state is read again, at most every 5 s.
let lastStateLoad = 0;
function refreshStateSoon() {
  const now = Date.now();
  if (now - lastStateLoad < 5000) return;
  lastStateLoad = now;
  setTimeout(() => loadState().catch(() => {}), 1000);
}

function applyReport(m) {
  const i = instance(m.instance);
  if (!i.budget) refreshStateSoon();
  i.service = m.service;
  i.metrics = m;
  i.history.push({ cpu: m.cpu_percent, rss: m.rss_bytes });
  if (i.history.length > 120) i.history.shift();
  if (!i.health) i.health = "healthy";
}

function applyHealth(h) {
  const i = instance(h.instance);
  i.service = h.service || i.service;
  i.health = h.state;
  i.reason = h.reason;
  // The states this page saw it pass through, newest last (an unresponsive instance is
  // often replaced within a second; the row keeps both in its tooltip).
  i.seen.push(h.state);
  if (i.seen.length > 8) i.seen.shift();
  if (h.state === "replaced") i.replacements += 1;
}

function spark(history) {
  const svg = svgEl("svg", { class: "spark", viewBox: "0 0 60 18", preserveAspectRatio: "none" });
  if (history.length < 2) return svg;
  const maxRss = Math.max(...history.map((h) => h.rss), 1);
  const maxCpu = Math.max(100, ...history.map((h) => h.cpu));
  const path = (f, max) => history.map((h, k) => `${(60 * k / (history.length - 1)).toFixed(1)},${(17 - 16 * f(h) / max).toFixed(1)}`).join(" ");
  svg.append(svgEl("polyline", { class: "cpu", points: path((h) => h.cpu, maxCpu) }));
  svg.append(svgEl("polyline", { class: "mem", points: path((h) => h.rss, maxRss) }));
  return svg;
}

function renderInstances() {
  const list = [...state.instances.values()].sort((a, b) => (a.service + a.name).localeCompare(b.service + b.name));
  syncRows($("#instances tbody"), list, (i) => i.name,
    (i) => ({
      "data-instance": i.name, "data-health": i.health || "unknown", "data-seen": i.seen.join(" "),
      title: [i.reason, i.seen.length ? `seen: ${i.seen.join(" → ")}` : "", i.replacements ? `replaced ${i.replacements}×` : ""].filter(Boolean).join("; "),
    }),
    (i) => {
      const m = i.metrics;
      const memory = m ? (i.budget ? `${bytes(m.rss_bytes)} / ${bytes(i.budget)}` : bytes(m.rss_bytes)) : "";
      const latency = (l) => (m ? `${fmt(l.mean_ms, 1)} / ${fmt(l.max_ms, 1)} ms` : "");
      const last = i.history.length ? i.history[i.history.length - 1] : null;
      return [
        textCell(i.name, { dir: "auto" }),
        textCell(i.service),
        statusCell(i.health || "unknown"),
        textCell(m ? `${fmt(m.cpu_percent, 0)} %` : "", { class: "num" }),
        textCell(memory, { class: "num" }),
        textCell(m ? m.running.map((r) => r.job_id).join(", ") : "", { dir: "auto" }),
        textCell(m ? latency(m.tick_lateness) : "", { class: "num" }),
        textCell(m ? latency(m.message_latency) : "", { class: "num" }),
        { sig: [i.history.length, last && last.cpu, last && last.rss], fill: (td) => td.replaceChildren(spark(i.history)) },
      ];
    });
}

function applyAlert(a) {
  state.alerts.unshift(a);
  if (state.alerts.length > 100) state.alerts.pop();
}

function renderAlerts() {
  $("#no-alerts").hidden = state.alerts.length > 0;
  $("#alerts").replaceChildren(...state.alerts.map((a) => el("li", { class: a.state, "data-kind": a.kind },
    `${clock(a.timestamp_ms)} ${a.state} ${a.kind} on ${a.instance}: ${a.message}`)));
}

// ---- drawing, at most once a frame ---------------------------------------------------

let drawScheduled = false;
function scheduleDraw() {
  if (drawScheduled) return;
  drawScheduled = true;
  requestAnimationFrame(() => {
    drawScheduled = false;
    renderJobs();
    renderDetail();
    renderInstances();
    renderAlerts();
    const now = Date.now();
    for (const published of pendingLatencies.splice(0)) {
      window.lexmeshLatencies.push(now - published);
    }
    if (window.lexmeshLatencies.length > MAX_LATENCIES) window.lexmeshLatencies.splice(0, window.lexmeshLatencies.length - MAX_LATENCIES);
  });
}

// ---- the connection --------------------------------------------------------------------

function setConnection(kind, text) {
  const node = $("#connection");
  node.dataset.state = kind;
  node.textContent = text;
}

async function loadState() {
  lastStateLoad = Date.now();
  const answer = await fetch("api/state");
  if (!answer.ok) throw new Error(`state: HTTP ${answer.status}`);
  const s = await answer.json();
  state.actions = s.actions;
  $("#source").textContent = `served by ${s.source}`;
  for (const record of s.jobs) applyRecord(record);
  for (const t of s.metrics.training) {
    const job = jobRow(t.job_id);
    if (t.updated_ms >= job.updated) {
      job.percent = t.completion_percentage; job.eta = t.eta_s; job.epoch = t.epoch; job.total = t.total_epochs;
    }
  }
  for (const m of s.metrics.instances) {
    const i = instance(m.instance);
    i.service = m.service; i.metrics = m;
    const history = s.history[m.instance] || [];
    i.history = history.map((h) => ({ cpu: h.cpu_percent, rss: h.rss_bytes }));
  }
  if (s.health) {
    for (const h of s.health.instances) {
      const i = instance(h.instance);
      i.service = h.service; i.health = h.state; i.reason = h.reason;
      i.budget = h.memory_budget_bytes; i.replacements = h.replacements;
    }
  }
  // The active alerts, added to those this page saw raised and cleared.
  const known = new Set(state.alerts.map((a) => `${a.kind}|${a.instance}|${a.timestamp_ms}`));
  for (const a of s.metrics.alerts) if (!known.has(`${a.kind}|${a.instance}|${a.timestamp_ms}`)) state.alerts.push(a);
  state.alerts.sort((a, b) => b.timestamp_ms - a.timestamp_ms);
  scheduleDraw();
}

let source = null;
let lastHeard = 0;
function connect() {
  if (source) source.close();
  setConnection("connecting", "connecting…");
  source = new EventSource("api/events");
  lastHeard = Date.now();
  const heard = () => { lastHeard = Date.now(); };
  source.addEventListener("hello", () => {
    heard();
    loadState().then(() => {
      setConnection("live", "live");
      // Events of the open job sent while the page was away: read its history again.
      if (state.selected) select(state.selected);
    }, (e) => setConnection("lost", `state unavailable (${e.message}); retrying`));
  });
  const on = (name, apply) => source.addEventListener(name, (m) => {
    heard();
    try { apply(JSON.parse(m.data)); } catch (e) { console.warn(`bad ${name} message`, e); }
    scheduleDraw();
  });
  on("job", applyJobEvent);
  on("metrics", applyReport);
  on("alert", applyAlert);
  on("health", applyHealth);
  source.addEventListener("resync", () => { heard(); loadState().catch(() => {}); });
  // The server sends a ping every 5 s when it has nothing else to say.
  source.addEventListener("ping", heard);
  source.onerror = () => setConnection("lost", "connection lost; retrying…");
  source.onopen = heard;
}

setInterval(() => {
  if (!source) return;
  if (source.readyState === EventSource.CLOSED || Date.now() - lastHeard > SILENCE_MS) {
    setConnection("lost", "connection lost; retrying…");
    connect();
  }
}, 1000);

connect();
