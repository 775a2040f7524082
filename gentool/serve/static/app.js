// gentool serve's page: runs, sampling, chat and the plugins' tools, over the server's own API.
// Plain JavaScript, no framework, no build step, nothing from the network but this server.
// The API key (gentool serve --api-key) is asked for on the first 401 and kept in localStorage;
// opening the page as /?key=KEY stores it too (and drops it from the address bar).
"use strict";

const $ = (sel, root = document) => root.querySelector(sel);
const el = (tag, attrs = {}, ...kids) => {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === "class") e.className = v; else if (k.startsWith("on")) e.addEventListener(k.slice(2), v);
    else if (v !== undefined && v !== null) e.setAttribute(k, v);
  }
  for (const k of kids.flat()) e.append(k instanceof Node ? k : document.createTextNode(String(k)));
  return e;
};
const KEY = "gentool-api-key";

(function keyFromUrl() {
  const url = new URL(location.href);
  if (url.searchParams.has("key")) {
    localStorage.setItem(KEY, url.searchParams.get("key"));
    url.searchParams.delete("key");
    history.replaceState(null, "", url.pathname + url.search + url.hash);
  }
})();

// fetch with the key; on 401 ask for the key once and retry
async function api(path, opts = {}, retried = false) {
  const headers = Object.assign({}, opts.headers || {});
  const key = localStorage.getItem(KEY);
  if (key) headers["Authorization"] = "Bearer " + key;
  const res = await fetch(path, Object.assign({}, opts, { headers }));
  if (res.status === 401 && !retried) {
    const k = prompt("This server needs its API key (gentool serve --api-key):");
    if (k) { localStorage.setItem(KEY, k); return api(path, opts, true); }
  }
  return res;
}
async function json(path, opts) {
  const res = await api(path, opts);
  const doc = await res.json().catch(() => ({}));
  if (!res.ok) throw new Error((doc.error && doc.error.message) || res.statusText);
  return doc;
}
async function blobUrl(path) {  // images behind the key: fetched, then shown from memory
  const res = await api(path);
  if (!res.ok) throw new Error("cannot load " + path);
  return URL.createObjectURL(await res.blob());
}
const status = (text) => { $("#status").textContent = text || ""; };

// -- tabs -------------------------------------------------------------------------------------
function showTab(name) {
  for (const b of document.querySelectorAll("#tabs button")) b.classList.toggle("active", b.dataset.tab === name);
  for (const s of document.querySelectorAll("main > section")) s.classList.toggle("active", s.id === name);
}
$("#tabs").addEventListener("click", (ev) => { if (ev.target.dataset.tab) showTab(ev.target.dataset.tab); });

// -- runs -------------------------------------------------------------------------------------
let RUNS = [];
const opened = [];  // ids shown, at most two

async function loadRuns() {
  try {
    RUNS = (await json("/api/runs")).runs;
  } catch (e) { status(e.message); return; }
  const list = $("#run-list");
  list.replaceChildren(...RUNS.map((r) => {
    const box = el("input", { type: "checkbox", title: "compare", onclick: (ev) => { ev.stopPropagation(); toggle(r.id, ev.target.checked); } });
    box.checked = opened.includes(r.id);
    return el("li", { class: "run-item" + (opened.includes(r.id) ? " open" : ""), "data-id": r.id, onclick: () => openOnly(r.id) },
      box, el("span", {}, r.id), el("span", { class: "tag" }, (r.modality || "?") + (r.grids.length ? " · " + r.grids.length + " ep" : "")));
  }));
  if (!RUNS.length) list.append(el("li", { class: "muted" }, "no runs in this folder yet"));
  fillSampleRuns();
}
$("#runs-reload").addEventListener("click", () => { loadRuns(); renderPanels(); });

function openOnly(id) { opened.splice(0, opened.length, id); loadRuns(); renderPanels(); }
function toggle(id, on) {
  const i = opened.indexOf(id);
  if (on && i < 0) { opened.push(id); if (opened.length > 2) opened.shift(); }
  if (!on && i >= 0) opened.splice(i, 1);
  loadRuns(); renderPanels();
}

async function renderPanels() {
  const box = $("#run-panels");
  if (!opened.length) { box.replaceChildren(el("p", { class: "muted" }, "No run opened.")); return; }
  const panels = await Promise.all(opened.map(runPanel));
  box.replaceChildren(...panels);
}

async function runPanel(id) {
  const [model, run] = id.split("/");
  const panel = el("div", { class: "panel", "data-id": id }, el("h2", {}, id));
  let d;
  try { d = await json(`/api/runs/${encodeURIComponent(model)}/${encodeURIComponent(run)}`); }
  catch (e) { panel.append(el("p", { class: "error" }, e.message)); return panel; }
  panel.append(el("p", { class: "muted small" }, "checkpoints: " + (d.checkpoints.join(", ") || "none yet")));
  if (d.grids.length) panel.append(gridSlider(model, run, d.grids));
  panel.append(lossChart(d.metrics));
  panel.append(epochTable(d.metrics));
  if (d.eval) panel.append(el("details", {}, el("summary", {}, "evaluation"), el("pre", { class: "small" }, JSON.stringify(d.eval.metrics, null, 1))));
  panel.append(el("details", {}, el("summary", {}, "config"), el("pre", { class: "small" }, JSON.stringify(d.config, null, 1))));
  return panel;
}

function gridSlider(model, run, grids) {
  const img = el("img", { class: "grid-img", alt: "samples" });
  const label = el("span", { class: "small" });
  const range = el("input", { type: "range", min: 0, max: grids.length - 1, value: grids.length - 1 });
  const show = async () => {
    const name = grids[+range.value];
    label.textContent = "epoch " + parseInt(name.match(/\d+/)[0], 10);
    try { img.src = await blobUrl(`/api/runs/${model}/${run}/grids/${name}`); } catch (e) { label.textContent = e.message; }
  };
  range.addEventListener("input", show);
  show();
  return el("div", {}, el("div", { class: "slider" }, range, label), img);
}

const COLORS = ["#2b6cb0", "#c53030", "#2f855a", "#b7791f", "#6b46c1", "#319795", "#d53f8c", "#4a5568"];

function lossChart(records) {
  // step records' losses, one line per key, in an SVG drawn here (no chart library)
  const steps = records.filter((r) => r.type === "step" && r.losses);
  const keys = [...new Set(steps.flatMap((r) => Object.keys(r.losses)))];
  if (!steps.length) return el("p", { class: "muted small" }, "no loss records");
  const W = 560, H = 220, L = 48, B = 22, T = 8, R = 8;
  const xs = steps.map((r) => r.step), ys = steps.flatMap((r) => Object.values(r.losses).filter(Number.isFinite));
  const x0 = Math.min(...xs), x1 = Math.max(...xs) || 1, y0 = Math.min(...ys), y1 = Math.max(...ys);
  const sx = (x) => L + (x1 > x0 ? (x - x0) / (x1 - x0) : 0.5) * (W - L - R);
  const sy = (y) => T + (y1 > y0 ? 1 - (y - y0) / (y1 - y0) : 0.5) * (H - T - B);
  const NS = "http://www.w3.org/2000/svg";
  const svg = document.createElementNS(NS, "svg");
  svg.setAttribute("viewBox", `0 0 ${W} ${H}`);
  svg.setAttribute("class", "chart");
  const add = (tag, attrs, text) => {
    const e = document.createElementNS(NS, tag);
    for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, v);
    if (text !== undefined) e.textContent = text;
    svg.append(e);
  };
  add("line", { x1: L, y1: H - B, x2: W - R, y2: H - B, stroke: "#a0aec0" });
  add("line", { x1: L, y1: T, x2: L, y2: H - B, stroke: "#a0aec0" });
  for (const y of [y0, (y0 + y1) / 2, y1]) add("text", { x: L - 4, y: sy(y) + 4, "text-anchor": "end", "font-size": 10 }, y.toPrecision(3));
  add("text", { x: sx(x0), y: H - 6, "text-anchor": "start", "font-size": 10 }, "step " + x0);
  add("text", { x: sx(x1), y: H - 6, "text-anchor": "end", "font-size": 10 }, "step " + x1);
  const legend = el("div", { class: "legend" });
  keys.forEach((k, i) => {
    const pts = steps.filter((r) => Number.isFinite(r.losses[k])).map((r) => `${sx(r.step).toFixed(1)},${sy(r.losses[k]).toFixed(1)}`);
    add("polyline", { points: pts.join(" "), fill: "none", stroke: COLORS[i % COLORS.length], "stroke-width": 1.5 });
    legend.append(el("span", { style: `color:${COLORS[i % COLORS.length]}` }, "— " + k));
  });
  return el("div", {}, svg, legend);
}

function epochTable(records) {
  const epochs = records.filter((r) => r.type === "epoch");
  if (!epochs.length) return el("p", { class: "muted small" }, "no epoch records");
  const keys = [...new Set(epochs.flatMap((r) => Object.keys(r).filter((k) => typeof r[k] === "number" && k !== "epoch")))];
  const fmt = (v) => typeof v === "number" ? (Number.isInteger(v) ? v : v.toPrecision(4)) : "";
  return el("div", { class: "scroll" }, el("table", { class: "metrics" },
    el("tr", {}, el("th", {}, "epoch"), keys.map((k) => el("th", {}, k))),
    epochs.map((r) => el("tr", {}, el("td", {}, r.epoch), keys.map((k) => el("td", {}, fmt(r[k])))))));
}

// -- sample -----------------------------------------------------------------------------------
let MODELS = {};
let lastSamples = [];

async function loadModels() {
  try { for (const m of (await json("/api/models")).models) MODELS[m.name] = m; } catch (e) { status(e.message); }
  fillSampleRuns();
}

function fillSampleRuns() {
  const sel = $("#sample-run"), before = sel.value;
  const runs = RUNS.filter((r) => r.modality === "image" && r.checkpoints.length);
  sel.replaceChildren(...runs.map((r) => el("option", { value: r.id }, r.id)));
  if (runs.some((r) => r.id === before)) sel.value = before;
  sampleRunChanged();
}

function sampleRunChanged() {
  const r = RUNS.find((x) => x.id === $("#sample-run").value);
  $("#sample-ckpt").replaceChildren(...(r ? r.checkpoints : []).map((c) => el("option", { value: c }, c)));
  const spec = r && MODELS[r.model];
  $("#sample-options").replaceChildren(...optionInputs(spec ? spec.sample_options : [], "sample-opt"));
}
$("#sample-run").addEventListener("change", sampleRunChanged);

function optionInputs(fields, prefix) {
  // one input per option of a dataclass (name, type, default, help): bool as a checkbox
  return fields.map((f) => {
    const id = `${prefix}-${f.name}`;
    const input = f.type === "bool"
      ? el("input", { id, type: "checkbox", "data-name": f.name, "data-type": "bool" })
      : el("input", { id, "data-name": f.name, "data-type": f.type, placeholder: f.default === null ? "none" : String(f.default) });
    if (f.type === "bool" && f.default) input.checked = true;
    return el("label", { title: f.help }, f.name, input);
  });
}
function typedValue(text, type) {
  // the API takes JSON's own types: a number field gets a number, "none" of an optional field null
  // (text that is no number stays text, and the server's 400 names the field)
  const optional = type.endsWith(" or none"), base = type.replace(/ or none$/, "");
  if (optional && text.toLowerCase() === "none") return null;
  if (base.endsWith(",...")) return text.split(",").map((t) => t.trim()).filter((t) => t !== "").map((t) => typedValue(t, base.slice(0, -4)));
  if ((base === "int" || base === "float") && text !== "" && Number.isFinite(Number(text))) return Number(text);
  return text;
}
function optionValues(root) {
  const out = {};
  for (const input of root.querySelectorAll("input[data-name]")) {
    if (input.dataset.type === "bool") out[input.dataset.name] = input.checked;
    else if (input.value.trim() !== "") out[input.dataset.name] = typedValue(input.value.trim(), input.dataset.type);
  }
  return out;
}

$("#sample-form").addEventListener("submit", async (ev) => {
  ev.preventDefault();
  const body = { model: $("#sample-run").value, n: +$("#sample-n").value, seed: +$("#sample-seed").value,
                 checkpoint: $("#sample-ckpt").value || null, options: optionValues($("#sample-options")) };
  $("#sample-note").textContent = "sampling…";
  try {
    const doc = await json("/v1/images/generations", { method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body) });
    lastSamples = doc.data.map((d) => d.b64_json);
    const g = doc.gentool || {};
    const names = g.class_names, labels = g.labels;
    $("#sample-grid").replaceChildren(...lastSamples.map((b, i) => el("img", {
      src: "data:image/png;base64," + b,
      title: labels ? "label " + (names ? names[labels[i]] : labels[i]) : "#" + i })));
    $("#sample-note").textContent = `${lastSamples.length} images, shape ${JSON.stringify(g.shape)}, ${g.checkpoint}, seed ${g.seed}` +
      (g.warnings && g.warnings.length ? " — " + g.warnings.join("; ") : "");
    $("#sample-zip").disabled = false;
  } catch (e) { $("#sample-note").textContent = e.message; }
});

// a zip of the PNGs, made here (stored, not compressed: PNGs are compressed already)
const CRC = (() => { const t = new Uint32Array(256); for (let n = 0; n < 256; n++) { let c = n; for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1; t[n] = c >>> 0; } return t; })();
function crc32(bytes) { let c = 0xffffffff; for (const b of bytes) c = CRC[(c ^ b) & 255] ^ (c >>> 8); return (c ^ 0xffffffff) >>> 0; }
function makeZip(files) {
  const parts = [], central = [];
  let offset = 0;
  const enc = new TextEncoder();
  for (const [name, data] of files) {
    const n = enc.encode(name), crc = crc32(data);
    const head = new DataView(new ArrayBuffer(30));
    [[0, 0x04034b50, 4], [4, 20, 2], [8, 0, 2], [14, crc, 4], [18, data.length, 4], [22, data.length, 4], [26, n.length, 2]]
      .forEach(([o, v, s]) => s === 4 ? head.setUint32(o, v, true) : head.setUint16(o, v, true));
    const cen = new DataView(new ArrayBuffer(46));
    [[0, 0x02014b50, 4], [4, 20, 2], [6, 20, 2], [16, crc, 4], [20, data.length, 4], [24, data.length, 4], [28, n.length, 2], [42, offset, 4]]
      .forEach(([o, v, s]) => s === 4 ? cen.setUint32(o, v, true) : cen.setUint16(o, v, true));
    parts.push(head, n, data);
    central.push(cen, n);
    offset += 30 + n.length + data.length;
  }
  const size = central.reduce((s, p) => s + (p.byteLength || p.length), 0);
  const end = new DataView(new ArrayBuffer(22));
  [[0, 0x06054b50, 4], [8, files.length, 2], [10, files.length, 2], [12, size, 4], [16, offset, 4]]
    .forEach(([o, v, s]) => s === 4 ? end.setUint32(o, v, true) : end.setUint16(o, v, true));
  return new Blob([...parts, ...central, end], { type: "application/zip" });
}
$("#sample-zip").addEventListener("click", () => {
  const files = lastSamples.map((b, i) => [String(i).padStart(6, "0") + ".png", Uint8Array.from(atob(b), (c) => c.charCodeAt(0))]);
  const a = el("a", { href: URL.createObjectURL(makeZip(files)), download: ($("#sample-run").value || "samples").replace("/", "-") + ".zip" });
  document.body.append(a); a.click(); a.remove();
});

// -- chat -------------------------------------------------------------------------------------
const history_ = [];

async function loadChatModels() {
  try {
    const models = (await json("/v1/models")).data.filter((m) => !m.gentool || m.gentool.kind === "chat");
    const sel = $("#chat-model"), before = sel.value;
    sel.replaceChildren(...models.map((m) => el("option", { value: m.id }, m.id)));
    if (models.some((m) => m.id === before)) sel.value = before;
  } catch (e) { status(e.message); }
}

function addMsg(role, text) {
  const m = el("div", { class: "msg " + role }, text);
  $("#chat-log").append(m);
  $("#chat-log").scrollTop = 1e9;
  return m;
}

async function send(text) {
  history_.push({ role: "user", content: text });
  addMsg("user", text);
  const out = addMsg("assistant", "");
  const messages = [...($("#chat-system").value.trim() ? [{ role: "system", content: $("#chat-system").value.trim() }] : []), ...history_];
  const body = { model: $("#chat-model").value, messages, stream: true, stream_options: { include_usage: true },
                 temperature: +$("#chat-temp").value, max_tokens: +$("#chat-max").value };
  if ($("#chat-seed").value !== "") body.seed = +$("#chat-seed").value;
  $("#chat-send").disabled = true;
  let answer = "", finish = "", usage = null;
  try {
    const res = await api("/v1/chat/completions", { method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body) });
    if (!res.ok) { const d = await res.json().catch(() => ({})); throw new Error((d.error && d.error.message) || res.statusText); }
    const reader = res.body.getReader(), dec = new TextDecoder();
    let buf = "";
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buf += dec.decode(value, { stream: true });
      let i;
      while ((i = buf.indexOf("\n\n")) >= 0) {  // one server-sent event
        const line = buf.slice(0, i).trim(); buf = buf.slice(i + 2);
        if (!line.startsWith("data:")) continue;
        const data = line.slice(5).trim();
        if (data === "[DONE]") continue;
        const doc = JSON.parse(data);
        if (doc.error) throw new Error(doc.error.message);
        if (doc.usage) usage = doc.usage;
        const ch = doc.choices && doc.choices[0];
        if (ch && ch.delta && ch.delta.content) { answer += ch.delta.content; out.textContent = answer; $("#chat-log").scrollTop = 1e9; }
        if (ch && ch.finish_reason) finish = ch.finish_reason;
      }
    }
    history_.push({ role: "assistant", content: answer });
    out.append(el("span", { class: "meta" }, `${finish}` + (usage ? ` · ${usage.prompt_tokens} prompt + ${usage.completion_tokens} answer tokens` : "")));
  } catch (e) {
    history_.pop();
    out.classList.add("error");
    out.textContent = e.message;
  } finally { $("#chat-send").disabled = false; }
}

$("#chat-form").addEventListener("submit", (ev) => {
  ev.preventDefault();
  const text = $("#chat-input").value.trim();
  if (!text) return;
  $("#chat-input").value = "";
  send(text);
});
$("#chat-input").addEventListener("keydown", (ev) => {
  if (ev.key === "Enter" && !ev.shiftKey) { ev.preventDefault(); $("#chat-form").requestSubmit(); }
});
$("#chat-clear").addEventListener("click", () => { history_.length = 0; $("#chat-log").replaceChildren(); });

// -- tools (one tab per tool a plugin registers) ------------------------------------------------
async function loadTools() {
  let tools = [];
  try { tools = (await json("/api/tools")).tools; } catch (e) { status(e.message); return; }
  for (const t of tools) {
    $("#tabs").append(el("button", { "data-tab": "tool-" + t.name }, t.name[0].toUpperCase() + t.name.slice(1)));
    const files = el("input", { type: "file", multiple: "", accept: "image/*", class: "tool-files" });
    const opts = el("span", {}, ...optionInputs(t.options, "tool-" + t.name));
    const results = el("div", { class: "results" });
    const run = el("button", { type: "submit" }, "Run");
    const form = el("form", { class: "controls" }, el("label", {}, "files", files), opts, run);
    form.addEventListener("submit", async (ev) => {
      ev.preventDefault();
      if (!files.files.length) { results.replaceChildren(el("p", { class: "error" }, "choose files first")); return; }
      const fd = new FormData();
      for (const f of files.files) fd.append("files", f, f.name);
      fd.append("options", JSON.stringify(optionValues(opts)));
      results.replaceChildren(el("p", { class: "muted" }, "running…"));
      try {
        const doc = await json("/v1/tools/" + t.name, { method: "POST", body: fd });
        const keys = [...new Set(doc.results.flatMap((r) => Object.keys(r).filter((k) => !["file", "png_b64", "error"].includes(k))))];
        const thumbs = Object.fromEntries([...files.files].map((f) => [f.name, URL.createObjectURL(f)]));
        results.replaceChildren(el("table", {},
          el("tr", {}, el("th", {}, "file"), el("th", {}, "image"), keys.map((k) => el("th", {}, k)), el("th", {}, "output")),
          doc.results.map((r) => el("tr", {}, el("td", {}, r.file), el("td", {}, thumbs[r.file] ? el("img", { src: thumbs[r.file] }) : ""),
            r.error ? el("td", { class: "error", colspan: keys.length + 1 }, r.error)
                    : [keys.map((k) => el("td", {}, typeof r[k] === "object" ? JSON.stringify(r[k]) : String(r[k] ?? ""))),
                       el("td", {}, r.png_b64 ? el("img", { src: "data:image/png;base64," + r.png_b64 }) : "")]))));
      } catch (e) { results.replaceChildren(el("p", { class: "error" }, e.message)); }
    });
    $("main").append(el("section", { id: "tool-" + t.name, class: "tab" }, el("p", { class: "muted" }, t.summary + " (plugin " + t.plugin + ")"), form, results));
  }
}

// -- start ------------------------------------------------------------------------------------
(async () => {
  await loadRuns();
  await loadModels();
  await loadChatModels();
  await loadTools();
  const first = RUNS.find((r) => r.grids.length) || RUNS[0];
  if (first && !opened.length) openOnly(first.id);
})();
