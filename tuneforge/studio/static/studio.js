// tuneforge studio: a client of the server's public HTTP API only (OpenAI's files, jobs, models, chat
// completions, plus /v1/tuneforge/...). No framework, no build step.
"use strict";
const $ = (id) => document.getElementById(id);
const T = "/v1/tuneforge";
let key = sessionStorage.getItem("tuneforge-key") || "";
const state = { fileId: null, files: [], runs: [], models: [], schema: null, defaults: null, job: null,
                jobTimer: null, offline: false };

// --- HTTP -----------------------------------------------------------------------------------------------------
class ApiError extends Error {
  constructor(message, status, param, code) { super(message); this.status = status; this.param = param; this.code = code; }
}

function setOffline(down, why) {
  const b = $("conn");
  if (down) {
    state.offline = true;
    b.className = "banner"; b.hidden = false;
    b.textContent = "Server unreachable (" + why + "); retrying — nothing is lost: jobs keep their checkpoints.";
  } else if (state.offline) {
    state.offline = false;
    b.className = "banner recovered"; b.textContent = "Reconnected to the server.";
    setTimeout(() => { if (!state.offline) b.hidden = true; }, 4000);
  }
}

async function api(method, path, body, opts = {}) {
  const headers = {};
  if (key) headers.Authorization = "Bearer " + key;
  let payload = body;
  if (body !== undefined && !(body instanceof FormData)) { headers["Content-Type"] = "application/json"; payload = JSON.stringify(body); }
  let r;
  try {
    r = await fetch(path, { method, headers, body: payload, signal: opts.signal });
  } catch (e) {
    if (e.name === "AbortError") throw e;
    setOffline(true, "network error");
    throw new ApiError("The server cannot be reached; retrying when it is back.", 0, null, "network");
  }
  setOffline(false);
  if (opts.raw) {
    if (!r.ok) throw await errorOf(r);
    return r;
  }
  if (!r.ok) throw await errorOf(r);
  return r.json();
}

async function errorOf(r) {
  let msg = r.status + " " + r.statusText, param = null, code = null;
  try {
    const e = (await r.json()).error || {};
    msg = e.message || msg; param = e.param || null; code = e.code || null;
  } catch (_) { /* not JSON */ }
  if (r.status === 401) {
    $("key-err").textContent = "Wrong or missing API key: " + msg;
    $("key").setAttribute("aria-invalid", "true");
    $("key").focus();
  } else if (r.status === 502 || r.status === 503) {
    setOffline(true, r.status + "");
  }
  return new ApiError(msg, r.status, param, code);
}

// Shows an error next to the control that caused it; returns the error for chaining.
function showErr(id, e) { const el = $(id); if (el) el.textContent = e ? (e.message || String(e)) : ""; return e; }

// Progress on anything that may take more than a second: a spinner with the seconds elapsed.
async function withProgress(progressId, label, button, fn) {
  const el = $(progressId), t0 = Date.now();
  if (button) button.disabled = true;
  const tick = () => { if (el) el.textContent = label + " " + Math.round((Date.now() - t0) / 1000) + " s"; };
  const timer = setInterval(tick, 500); tick();
  try { return await fn(); } finally {
    clearInterval(timer); if (el) el.textContent = ""; if (button) button.disabled = false;
  }
}

const esc = (s) => String(s ?? "").replace(/[&<>"']/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" }[c]));
const num = (v, d = 4) => (typeof v === "number" ? (Number.isInteger(v) ? String(v) : v.toPrecision(d)) : esc(v));
const when = (t) => (t ? new Date(t * 1000).toLocaleString() : "");
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

// Polls a task until it finishes; survives the server going away (keeps retrying).
async function pollTask(id, progressId, label) {
  const t0 = Date.now();
  for (;;) {
    try {
      const t = await api("GET", `${T}/tasks/${id}`);
      if (t.status === "succeeded") return t.result;
      if (t.status === "failed") throw new ApiError(t.error.message, 400, null, t.error.code);
      $(progressId).textContent = `${label} (${t.status}) ${Math.round((Date.now() - t0) / 1000)} s`;
    } catch (e) { if (e.code !== "network") throw e; }
    await sleep(1000);
  }
}

// --- navigation and key ---------------------------------------------------------------------------------------
const loaders = {};
function show(page) {
  document.querySelectorAll("nav button").forEach((b) => b.setAttribute("aria-current", b.dataset.page === page ? "page" : "false"));
  document.querySelectorAll(".page").forEach((s) => { s.hidden = s.id !== "page-" + page; });
  location.hash = page;
  if (loaders[page]) loaders[page]().catch(() => {});
}
document.querySelectorAll("nav button").forEach((b) => b.addEventListener("click", () => show(b.dataset.page)));
$("keyform").addEventListener("submit", (ev) => {
  ev.preventDefault();
  key = $("key").value.trim(); sessionStorage.setItem("tuneforge-key", key);
  $("key-err").textContent = ""; $("key").removeAttribute("aria-invalid");
  show((location.hash || "#data").slice(1));
});

// --- shared lists -----------------------------------------------------------------------------------------------
async function loadFiles() {
  const r = await api("GET", "/v1/files?purpose=fine-tune");
  state.files = r.data;
  const opts = r.data.map((f) => `<option value="${esc(f.id)}">${esc(f.filename)} (${esc(f.id)})</option>`).join("");
  for (const id of ["data-files", "t-file", "e-file"]) {
    const sel = $(id), cur = state.fileId || sel.value;  // the file last uploaded or checked
    sel.innerHTML = opts; if (cur) sel.value = cur;
  }
  $("t-vfile").innerHTML = '<option value="">(hold out val_split of the training file)</option>' + opts;
}
async function loadModels() {
  state.models = (await api("GET", "/v1/models")).data;
}
async function loadRuns() {
  state.runs = (await api("GET", `${T}/runs`)).data;
  const opts = state.runs.map((r) => `<option value="${esc(r.id)}">${esc(r.id)}</option>`).join("");
  for (const id of ["cmp-a", "cmp-b", "e-run", "x-run"]) {
    const sel = $(id), cur = sel.value; sel.innerHTML = opts; if (cur) sel.value = cur;
  }
  if (state.runs.length > 1 && !$("cmp-b").dataset.touched) $("cmp-b").selectedIndex = 1;
}

// --- 1. Data ----------------------------------------------------------------------------------------------------
const drop = $("drop");
drop.addEventListener("click", () => $("file").click());
drop.addEventListener("keydown", (ev) => { if (ev.key === "Enter" || ev.key === " ") { ev.preventDefault(); $("file").click(); } });
drop.addEventListener("dragover", (ev) => { ev.preventDefault(); drop.classList.add("over"); });
drop.addEventListener("dragleave", () => drop.classList.remove("over"));
drop.addEventListener("drop", (ev) => { ev.preventDefault(); drop.classList.remove("over"); if (ev.dataTransfer.files[0]) uploadAndCheck(ev.dataTransfer.files[0]); });
$("file").addEventListener("change", () => { const f = $("file").files[0]; if (f) uploadAndCheck(f); $("file").value = ""; });
$("data-recheck").addEventListener("click", () => { state.fileId = $("data-files").value; check(); });

async function uploadAndCheck(file) {
  showErr("data-err", null);
  try {
    const fd = new FormData(); fd.append("purpose", "fine-tune"); fd.append("file", file, file.name);
    const f = await withProgress("data-progress", "Uploading " + file.name, null, () => api("POST", "/v1/files", fd));
    state.fileId = f.id;
    await loadFiles();
    $("data-files").value = f.id;
    await check();
  } catch (e) { showErr("data-err", e); }
}

function histogramSvg(h, maxLen) {
  const W = 600, H = 160, P = 30, n = h.counts.length, top = Math.max(1, ...h.counts), bw = (W - 2 * P) / n;
  let s = `<svg viewBox="0 0 ${W} ${H + 30}" role="img" aria-label="token-length histogram">`;
  h.counts.forEach((c, i) => {
    const bh = (c / top) * H, over = h.edges[i] >= maxLen;
    s += `<rect x="${P + i * bw + 1}" y="${H - bh + 5}" width="${bw - 2}" height="${bh}" fill="${over ? "#d62728" : "#1f77b4"}"><title>${h.edges[i]}–${h.edges[i + 1]} tokens: ${c}</title></rect>`;
  });
  const x = P + (maxLen / h.edges[n]) * (W - 2 * P);
  if (maxLen <= h.edges[n]) s += `<line x1="${x}" x2="${x}" y1="0" y2="${H + 5}" stroke="#d62728" stroke-dasharray="4"/><text x="${x + 3}" y="12" font-size="11" fill="#d62728">max_seq_len ${maxLen}</text>`;
  else s += `<text x="${W - P}" y="12" font-size="11" text-anchor="end" fill="#1b7f3b">all under max_seq_len ${maxLen}</text>`;
  s += `<text x="${P}" y="${H + 22}" font-size="11">0</text><text x="${W - P}" y="${H + 22}" font-size="11" text-anchor="end">${h.edges[n]} tokens</text></svg>`;
  return s;
}

async function check() {
  if (!state.fileId) return;
  showErr("data-err", null);
  const box = $("check");
  try {
    const maxLen = parseInt($("data-maxlen").value, 10) || 1024;
    const rep = await withProgress("data-progress", "Checking", $("data-recheck"),
      () => api("POST", `${T}/data/check`, { file_id: state.fileId, max_seq_len: maxLen }));
    let h = `<h3>${esc(rep.filename)} <span class="pill ${rep.ok ? "pass" : "FAIL"}">${rep.ok ? "passes the checks" : rep.errors.length + " error(s)"}</span></h3>`;
    h += `<p>${rep.n_examples} examples (${rep.n_valid} valid), format: ${esc(rep.format || "unknown")}</p>`;
    if (rep.errors.length) {
      h += `<table id="check-errors"><thead><tr><th>line</th><th>field</th><th>code</th><th>problem</th></tr></thead><tbody>`;
      h += rep.errors.slice(0, 50).map((e) => `<tr><td>line ${e.line ?? "-"}</td><td>${esc(e.field ?? "")}</td><td>${esc(e.code)}</td><td>${esc(e.where)}: ${esc(e.message)}</td></tr>`).join("");
      h += `</tbody></table>`;
    }
    if (rep.tokens) {
      const t = rep.tokens;
      h += `<p>tokens per example: min ${t.min}, p50 ${t.p50}, mean ${t.mean}, p95 ${t.p95}, max ${t.max}; supervised tokens: ${rep.supervised_tokens}</p>`;
      h += histogramSvg(t.histogram, rep.max_seq_len);
      h += `<p>truncated at max_seq_len ${rep.max_seq_len}: <strong>${rep.n_truncated}</strong> example(s)` + (rep.n_unsupervised ? `, ${rep.n_unsupervised} lose their whole answer` : "") + `</p>`;
    }
    const d = rep.duplicates || {};
    h += `<p>duplicates: ${(d.exact || []).length} exact group(s), ${(d.near || []).length} near group(s)` +
         ((d.exact || []).length ? ` (lines ${esc(d.exact.slice(0, 5).map((g) => g.join("=")).join(", "))})` : "") + `</p>`;
    if (rep.label_balance) h += `<p>label balance: ${esc(Object.entries(rep.label_balance.counts || rep.label_balance).map(([k, v]) => k + " " + (typeof v === "object" ? JSON.stringify(v) : v)).join(", "))}</p>`;
    if (rep.warnings.length) h += `<ul>${rep.warnings.map((w) => `<li class="warn">${esc(w)}</li>`).join("")}</ul>`;
    box.innerHTML = h; box.hidden = false;
    for (const b of ["advise-btn", "cost-btn", "to-train"]) $(b).disabled = false;
    if (rep.ok) advise();
  } catch (e) { showErr("data-err", e); box.hidden = true; }
}

async function advise() {
  showErr("advise-err", null);
  try {
    const a = await withProgress("data-progress", "Advising", $("advise-btn"),
      () => api("POST", `${T}/data/advise`, { file_id: state.fileId, sample: $("advise-zero").checked ? 20 : 0 }));
    let h = `<h3>Advisor: <span class="pill ${esc(a.verdict)}" id="verdict">${esc(a.verdict)}</span></h3><ul>`;
    h += a.reasons.map((r) => `<li><span class="pill ${esc(r.signal)}">${esc(r.signal)}</span> ${esc(r.message)}</li>`).join("") + "</ul>";
    h += `<p>method: <strong>${esc(a.method.value)}</strong> — ${esc(a.method.reason)}</p>`;
    $("advice").innerHTML = h; $("advice").hidden = false;
  } catch (e) { showErr("advise-err", e); }
}
$("advise-btn").addEventListener("click", advise);

$("cost-btn").addEventListener("click", async () => {
  showErr("cost-err", null);
  try {
    const c = await withProgress("data-progress", "Estimating (a short benchmark on this machine)", $("cost-btn"), async () => {
      const t = await api("POST", `${T}/data/cost`, { file_id: state.fileId, hardware: $("cost-hw").value, background: true });
      return pollTask(t.id, "data-progress", "Estimating (a short benchmark on this machine)");
    });
    const money = c.money || {};
    let h = `<h3>Cost on ${esc(c.hardware || $("cost-hw").value)}</h3><table id="cost-table"><tbody>`;
    for (const [k, v] of Object.entries(c)) {
      if (["object", "file_id", "key", "data"].includes(k) || v === null || typeof v === "object") continue;
      h += `<tr><th>${esc(k)}</th><td>${k.endsWith("_seconds") ? Math.round(v) + " s" : num(v)}</td></tr>`;
    }
    for (const [k, v] of Object.entries(money)) if (typeof v !== "object") h += `<tr><th>${esc(k)}</th><td>${typeof v === "number" ? v.toFixed(4) : esc(v)}</td></tr>`;
    h += `</tbody></table>`;
    $("cost").innerHTML = h; $("cost").hidden = false;
  } catch (e) { showErr("cost-err", e); }
});
$("to-train").addEventListener("click", () => { $("t-file").value = state.fileId; show("train"); });
loaders.data = async () => { await loadFiles(); };

// --- 2. Train ---------------------------------------------------------------------------------------------------
const MAIN = [
  ["method", "method", "tuneforge"], ["learning_rate", "learning rate", "lr"], ["n_epochs", "epochs", "hp"],
  ["batch_size", "batch size", "hp"], ["suffix", "model name suffix", "job"], ["seed", "seed", "job"],
];
function fieldId(name) { return "f-" + name; }
function inputFor(k, value) {
  const id = fieldId(k.name), v = value ?? k.default;
  if (k.choices.length && !k.types.includes("array")) {
    const ch = k.choices.filter((c) => c !== "auto" || k.name !== "method");
    const none = k.types.includes("null") ? `<option value="" ${v == null ? "selected" : ""}>(none)</option>` : "";
    return `<select id="${id}" data-key="${k.name}">${none}${ch.map((c) => `<option ${c === v ? "selected" : ""}>${esc(c)}</option>`).join("")}</select>`;
  }
  if (k.types.includes("boolean")) return `<input id="${id}" data-key="${k.name}" type="checkbox" ${v ? "checked" : ""}>`;
  const shown = Array.isArray(v) ? v.join(",") : v ?? "";
  return `<input id="${id}" data-key="${k.name}" value="${esc(shown)}" ${k.types.includes("array") ? 'placeholder="comma list"' : ""}>`;
}
function typed(k, el) {
  if (el.type === "checkbox") return el.checked;
  const s = el.value.trim();
  if (k.types.includes("array")) return s;
  if (s === "" && k.types.includes("null")) return null;
  if ((k.types.includes("number") || k.types.includes("integer")) && s !== "" && s !== "auto" && !isNaN(Number(s))) return Number(s);
  return s;
}

async function loadTrain() {
  const [, , schema] = await Promise.all([loadFiles(), loadModels(), state.schema ? state.schema : api("GET", `${T}/train/schema`)]);
  state.schema = schema;
  const bases = state.models.filter((m) => !m.parent);
  const cur = $("t-model").value;
  $("t-model").innerHTML = bases.map((m) => `<option>${esc(m.id)}</option>`).join("");
  if (cur) $("t-model").value = cur;
  if (state.fileId) $("t-file").value = state.fileId;
  await prefill();
}
loaders.train = loadTrain;
$("t-file").addEventListener("change", prefill);
$("t-model").addEventListener("change", prefill);

async function prefill() {
  showErr("train-err", null);
  const fid = $("t-file").value;
  if (!fid) { showErr("train-err", new Error("Upload a training file on the Data page first.")); return; }
  try {
    const d = await withProgress("train-progress", "Working out the defaults", null,
      () => api("POST", `${T}/train/defaults`, { file_id: fid, model: $("t-model").value }));
    state.defaults = d;
    const v = d.values;
    const main = $("train-main");
    let h = "";
    h += `<label for="f-method">method</label><select id="f-method" data-key="method">${state.schema.servable_methods.map((m) => `<option ${m === v.method.value ? "selected" : ""}>${m}</option>`).join("")}</select><span class="why">${esc(v.method.reason)}</span><span class="err" id="err-method"></span>`;
    h += `<label for="f-learning_rate">learning rate</label><input id="f-learning_rate" value="${v.learning_rate.value}" inputmode="decimal"><span class="why">${esc(v.learning_rate.reason)}</span><span class="err" id="err-learning_rate"></span>`;
    h += `<label for="f-n_epochs">epochs</label><input id="f-n_epochs" value="${v.n_epochs.value}" inputmode="numeric"><span class="why">${esc(v.n_epochs.reason)}. ${esc(v.train_num_train_epochs.reason)}</span><span class="err" id="err-n_epochs"></span>`;
    h += `<label for="f-batch_size">batch size</label><input id="f-batch_size" value="${v.batch_size.value}" inputmode="numeric"><span class="why">${esc(v.batch_size.reason)}</span><span class="err" id="err-batch_size"></span>`;
    h += `<label for="f-suffix">model name suffix</label><input id="f-suffix" placeholder="optional: ft:BASE:SUFFIX:ID"><span class="why">1 to 64 letters, digits, - or _</span><span class="err" id="err-suffix"></span>`;
    h += `<label for="f-seed">seed</label><input id="f-seed" placeholder="random" inputmode="numeric"><span class="why">same seed + data = same run</span><span class="err" id="err-seed"></span>`;
    main.innerHTML = h;
    const rows = state.schema.keys.filter((k) => !k.set_by_job && k.name !== "method");
    $("train-keys").innerHTML = rows.map((k) => `<label for="${fieldId(k.name)}">${esc(k.name)}</label>${inputFor(k, d.config[k.name])}<span class="why">${esc(k.description)}</span><span class="err" id="err-${k.name}"></span>`).join("");
    document.querySelectorAll("#train-main input, #train-main select, #train-keys input, #train-keys select").forEach((el) => {
      el.addEventListener("input", scheduleValidate); el.addEventListener("change", scheduleValidate);
    });
  } catch (e) { showErr(e.param === "model" ? "err-model" : "train-err", e); }
}

// The job request the form describes: hyperparameters, plus only the tuneforge keys that differ from the defaults.
function jobRequest() {
  const d = state.defaults, v = d.values, hp = {}, opts = {}, errs = [];
  const lr = Number($("f-learning_rate").value);
  if (!(lr > 0)) errs.push({ param: "learning_rate", message: "learning rate: a positive number" });
  else hp.learning_rate_multiplier = Number((lr / v.learning_rate.value).toPrecision(6));
  for (const k of ["n_epochs", "batch_size"]) {
    const s = $("f-" + k).value.trim();
    hp[k] = s === "" || s === "auto" ? "auto" : Number.isNaN(Number(s)) ? s : Number(s);
  }
  opts.method = $("f-method").value;
  for (const k of state.schema.keys) {
    const el = $(fieldId(k.name));
    if (!el || k.name === "method" || k.set_by_job) continue;
    const val = typed(k, el), def = d.config[k.name];
    const same = Array.isArray(def) ? def.join(",") === String(val) : def === val || String(def) === String(val);
    if (!same) opts[k.name] = val;
  }
  const body = { model: $("t-model").value, training_file: $("t-file").value, hyperparameters: hp, tuneforge: opts };
  if ($("t-vfile").value) body.validation_file = $("t-vfile").value;
  const suffix = $("f-suffix").value.trim(), seed = $("f-seed").value.trim();
  if (suffix) body.suffix = suffix;
  if (seed) body.seed = Number.isNaN(Number(seed)) ? seed : Number(seed);
  return { body, errs };
}

function errTargetOf(param) {
  if (!param) return null;
  const name = param.replace(/^(tuneforge|hyperparameters|method\.supervised\.hyperparameters)\./, "");
  return name === "learning_rate_multiplier" ? "learning_rate" : name;
}
function markErrors(errors) {
  document.querySelectorAll("#page-train .err[id^='err-']").forEach((e) => { e.textContent = ""; });
  document.querySelectorAll("#page-train [aria-invalid]").forEach((e) => e.removeAttribute("aria-invalid"));
  for (const e of errors) {
    const name = errTargetOf(e.param), slot = name && $("err-" + name);
    if (slot) { slot.textContent = e.message; const f = $(fieldId(name)) || $("t-" + name); if (f) f.setAttribute("aria-invalid", "true"); }
    else showErr("launch-err", e);
  }
}
let validateTimer = null;
function scheduleValidate() { clearTimeout(validateTimer); validateTimer = setTimeout(validate, 250); }
async function validate() {
  if (!state.defaults) return [];
  const { body, errs } = jobRequest();
  try {
    const r = await api("POST", `${T}/train/validate`, { hyperparameters: body.hyperparameters, tuneforge: body.tuneforge });
    const all = errs.concat(r.errors);
    markErrors(all);
    return all;
  } catch (e) { showErr("launch-err", e); return [e]; }
}
$("launch").addEventListener("click", async () => {
  showErr("launch-err", null);
  const errors = await validate();
  if (errors.length) { showErr("launch-err", new Error("Fix the fields marked in red first.")); return; }
  try {
    const job = await withProgress("train-progress", "Creating the job", $("launch"), () => api("POST", "/v1/fine_tuning/jobs", jobRequest().body));
    state.job = job.id;
    show("runs");
  } catch (e) {
    const name = errTargetOf(e.param);
    if (name && $("err-" + name)) markErrors([{ param: e.param, message: e.message }]);
    showErr("launch-err", e);
  }
});

// --- 3. Runs and jobs -------------------------------------------------------------------------------------------
const TERMINAL = ["succeeded", "failed", "cancelled"];
async function loadJobs() {
  showErr("jobs-err", null);
  try {
    const r = await api("GET", "/v1/fine_tuning/jobs?limit=50");
    $("jobs").tBodies[0].innerHTML = r.data.map((j) => `<tr class="pick" tabindex="0" data-job="${esc(j.id)}"><td>${esc(j.id)}</td><td><span class="pill ${esc(j.status)}">${esc(j.status)}</span></td><td>${esc(j.model)}</td><td>${esc(j.fine_tuned_model || "")}</td><td>${when(j.created_at)}</td></tr>`).join("");
    $("jobs").querySelectorAll("tr.pick").forEach((tr) => {
      const open = () => { state.job = tr.dataset.job; watchJob(); };
      tr.addEventListener("click", open); tr.addEventListener("keydown", (ev) => { if (ev.key === "Enter") open(); });
    });
    if (!state.job && r.data.length) state.job = r.data[0].id;
  } catch (e) { showErr("jobs-err", e); }
}
loaders.runs = async () => { await loadJobs(); loadRuns().catch(() => {}); if (state.job) watchJob(); };
$("jobs-refresh").addEventListener("click", loaders.runs);

function lossSvg(events) {
  const pts = events.filter((e) => e.type === "metrics" && e.data && e.data.step !== undefined).sort((a, b) => a.data.step - b.data.step);
  const train = pts.filter((e) => e.data.train_loss != null).map((e) => [e.data.step, e.data.train_loss]);
  const val = pts.filter((e) => e.data.valid_loss != null).map((e) => [e.data.step, e.data.valid_loss]);
  const all = train.concat(val);
  const svg = $("loss");
  if (!all.length) { svg.innerHTML = `<text x="20" y="120" font-size="14" fill="#666">no metrics yet</text>`; return 0; }
  const W = 640, H = 240, P = 40, total = (pts[pts.length - 1].data.total_steps) || Math.max(...all.map((p) => p[0]));
  const lo = Math.min(...all.map((p) => p[1])), hi = Math.max(...all.map((p) => p[1])), span = hi - lo || 1;
  const X = (s) => P + (s / Math.max(1, total)) * (W - 2 * P), Y = (v) => H - P + 10 - ((v - lo) / span) * (H - 2 * P);
  const line = (ps, c, id) => ps.length ? `<polyline id="${id}" fill="none" stroke="${c}" stroke-width="2.5" points="${ps.map((p) => X(p[0]).toFixed(1) + "," + Y(p[1]).toFixed(1)).join(" ")}"/>` + ps.map((p) => `<circle cx="${X(p[0]).toFixed(1)}" cy="${Y(p[1]).toFixed(1)}" r="3" fill="${c}"><title>step ${p[0]}: ${p[1].toFixed(4)}</title></circle>`).join("") : "";
  svg.innerHTML = `<line x1="${P}" y1="${H - P + 10}" x2="${W - P}" y2="${H - P + 10}" stroke="#999"/><line x1="${P}" y1="10" x2="${P}" y2="${H - P + 10}" stroke="#999"/>` +
    `<text x="${P}" y="${H - 8}" font-size="11">step 0</text><text x="${W - P}" y="${H - 8}" font-size="11" text-anchor="end">step ${total}</text>` +
    `<text x="4" y="16" font-size="11">${hi.toFixed(3)}</text><text x="4" y="${H - P + 10}" font-size="11">${lo.toFixed(3)}</text>` +
    line(train, "#1f77b4", "train-line") + line(val, "#ff7f0e", "val-line");
  return train.length;
}

// A job's events, newest first: the newest page on every poll, older pages (100 each) once, merged by id.
const eventCache = {};
async function jobEvents(id) {
  const cache = eventCache[id] || (eventCache[id] = { byId: new Map(), complete: false });
  let page = await api("GET", `/v1/fine_tuning/jobs/${id}/events?limit=100`);
  page.data.forEach((e) => cache.byId.set(e.id, e));
  let n = 0;
  while (!cache.complete && page.has_more && n++ < 100) {
    page = await api("GET", `/v1/fine_tuning/jobs/${id}/events?limit=100&after=${encodeURIComponent(page.data[page.data.length - 1].id)}`);
    page.data.forEach((e) => cache.byId.set(e.id, e));
  }
  cache.complete = true;
  return { data: [...cache.byId.values()].sort((a, b) => b.created_at - a.created_at || (b.data && a.data ? (b.data.step || 0) - (a.data.step || 0) : 0)) };
}

async function renderJob(id) {
  const [j, ev, ck] = await Promise.all([api("GET", `/v1/fine_tuning/jobs/${id}`),
    jobEvents(id), api("GET", `/v1/fine_tuning/jobs/${id}/checkpoints?limit=100`)]);
  if (state.job !== id) return j;
  $("job").hidden = false;
  $("job-title").textContent = j.id + (j.fine_tuned_model ? " → " + j.fine_tuned_model : "");
  const st = $("job-status"); st.textContent = j.status; st.className = "pill " + j.status; st.dataset.status = j.status;
  const metric = ev.data.find((e) => e.type === "metrics");
  $("job-progress").textContent = metric ? `step ${metric.data.step}/${metric.data.total_steps}` : "";
  $("job-error").textContent = j.error && j.error.message ? `${j.error.code || "error"}: ${j.error.message}` : "";
  $("job-pause").disabled = j.status !== "running";
  $("job-resume").disabled = j.status !== "paused";
  $("job-cancel").disabled = TERMINAL.includes(j.status);
  lossSvg(ev.data);
  $("job-ckpts").innerHTML = ck.data.map((c) => `<li>step ${c.step_number}: <code>${esc(c.fine_tuned_model_checkpoint)}</code> ${c.metrics ? "train loss " + num(c.metrics.train_loss) + (c.metrics.valid_loss != null ? ", val loss " + num(c.metrics.valid_loss) : "") : ""}</li>`).join("") || "<li>none yet</li>";
  $("job-events").innerHTML = ev.data.slice(0, 200).map((e) => `<li class="${e.level === "error" ? "bad" : e.level === "warn" ? "warn" : ""}">${when(e.created_at)} ${esc(e.message)}</li>`).join("");
  if (j.status === "succeeded") {
    try {
      const r = await api("GET", `${T}/runs/${j.id}`);
      const par = r.parent ? `parent: <code>${esc(r.parent)}</code>; lineage: ${r.lineage.map((p) => `<code>${esc(p)}</code>`).join(" ← ") || "-"}` : "lineage: no parent (trained from the base)";
      $("job-run").innerHTML = `<p>run <code>${esc(r.id)}</code> (${esc(r.status)}), ${esc(r.config.method)} on <code>${esc(r.config.base)}</code>, learning rate ${num(r.config.learning_rate)}, best val loss ${num((r.metrics || {}).best_val_loss)}; ${par}</p>`;
    } catch (e) { $("job-run").textContent = e.message; }
  } else $("job-run").textContent = j.tuneforge && j.tuneforge.run_dir ? "training into " + j.tuneforge.run_dir : "";
  return j;
}

// Live view: polls the job, its events and checkpoints until it ends; keeps polling through a lost server.
async function watchJob() {
  const id = state.job;
  if (!id) return;
  clearTimeout(state.jobTimer);
  try {
    const j = await renderJob(id);
    if (TERMINAL.includes(j.status)) { loadJobs(); loadRuns().catch(() => {}); return; }
  } catch (e) { if (e.code !== "network") showErr($("job").hidden ? "jobs-err" : "job-ctl-err", e); }
  if (state.job === id) state.jobTimer = setTimeout(watchJob, 1000);
}
for (const act of ["pause", "resume", "cancel"]) {
  $("job-" + act).addEventListener("click", async () => {
    showErr("job-ctl-err", null);
    try { await api("POST", `/v1/fine_tuning/jobs/${state.job}/${act}`); watchJob(); } catch (e) { showErr("job-ctl-err", e); }
  });
}
$("cmp-b").addEventListener("change", () => { $("cmp-b").dataset.touched = "1"; });
$("cmp-btn").addEventListener("click", async () => {
  showErr("cmp-err", null);
  try {
    const d = await api("GET", `${T}/runs/${encodeURIComponent($("cmp-a").value)}/compare/${encodeURIComponent($("cmp-b").value)}`);
    const rows = (obj) => Object.entries(obj || {}).map(([k, v]) => `<tr><th>${esc(k)}</th><td>${esc(JSON.stringify(Array.isArray(v) ? v[0] : v.a ?? v[0] ?? v))}</td><td>${esc(JSON.stringify(Array.isArray(v) ? v[1] : v.b ?? v[1] ?? ""))}</td></tr>`).join("");
    let h = `<table><thead><tr><th></th><th>${esc(d.a)}</th><th>${esc(d.b)}</th></tr></thead><tbody>`;
    for (const [section, val] of Object.entries(d)) if (val && typeof val === "object" && !Array.isArray(val)) h += `<tr><th colspan="3">${esc(section)}</th></tr>` + rows(val);
    $("cmp").innerHTML = h + "</tbody></table>"; $("cmp").hidden = false;
  } catch (e) { showErr("cmp-err", e); }
});

// --- 4. Evaluate ------------------------------------------------------------------------------------------------
loaders.eval = async () => { await Promise.all([loadRuns(), loadFiles()]); await showEval($("e-run").value, true); };
$("e-run").addEventListener("change", () => showEval($("e-run").value, true));
function renderEval(r) {
  const models = r.models || {}, roles = Object.keys(models);
  const names = [...new Set(roles.flatMap((ro) => Object.keys(models[ro].metrics || {})))];
  let h = `<h3>${esc(r.task)} on ${r.n_examples} examples (${esc(r.mode)})</h3><div class="scroll"><table id="e-table"><thead><tr><th>metric</th>${roles.map((ro) => `<th>${esc(ro)}<br><small>${esc(models[ro].name)}</small></th>`).join("")}<th>tuned − base (95% CI)</th></tr></thead><tbody>`;
  for (const m of names) {
    const d = (r.delta || {})[m];
    const ci = d ? `${num(d.delta, 3)} [${num(d.low, 3)}, ${num(d.high, 3)}] ${d.low > 0 ? '<span class="ok">better</span>' : d.high < 0 ? '<span class="bad">worse</span>' : "(no clear difference)"}` : "";
    h += `<tr><th>${esc(m)}</th>${roles.map((ro) => `<td>${num((models[ro].metrics || {})[m])}</td>`).join("")}<td>${ci}</td></tr>`;
  }
  h += `</tbody></table></div><h4>Worst examples</h4><div class="scroll"><table><thead><tr><th>where</th><th>prompt</th><th>reference</th><th>tuned</th><th>base</th></tr></thead><tbody>`;
  h += (r.worst || []).map((w) => `<tr><td>${esc(w.where)}</td><td>${esc(w.prompt)}</td><td>${esc(w.reference)}</td><td>${esc(w.tuned_prediction)}</td><td>${esc(w.baseline_prediction ?? "")}</td></tr>`).join("");
  h += `</tbody></table></div><p><button type="button" class="secondary" id="e-human">Download the blind A/B sheet (CSV, HTML form, key)</button> <span class="err" id="e-human-err"></span></p>`;
  $("e-result").innerHTML = h; $("e-result").hidden = false;
  $("e-human").addEventListener("click", () => download(`${T}/runs/${encodeURIComponent($("e-run").value)}/human-eval`, "e-human-err"));
}
async function showEval(run, quiet) {
  if (!run) return;
  try { renderEval(await api("GET", `${T}/runs/${encodeURIComponent(run)}/eval`)); showErr("e-err", null); }
  catch (e) { $("e-result").hidden = true; if (!quiet) showErr("e-err", e); }
}
$("e-btn").addEventListener("click", async () => {
  showErr("e-err", null);
  try {
    const res = await withProgress("e-progress", "Evaluating", $("e-btn"), async () => {
      const t = await api("POST", `${T}/runs/${encodeURIComponent($("e-run").value)}/evals`, { file_id: $("e-file").value, limit: Number($("e-limit").value), max_new_tokens: Number($("e-tokens").value) });
      return pollTask(t.id, "e-progress", "Evaluating");
    });
    renderEval(res);
  } catch (e) { showErr("e-err", e); }
});

// --- 5. Playground ----------------------------------------------------------------------------------------------
loaders.play = async () => {
  await loadModels();
  const box = $("p-models"), was = new Set([...box.querySelectorAll("input:checked")].map((i) => i.value));
  box.innerHTML = state.models.map((m, i) => `<label><input type="checkbox" value="${esc(m.id)}" ${was.size ? (was.has(m.id) ? "checked" : "") : (i < 3 ? "checked" : "")}> ${esc(m.id)}${m.parent ? " <small>(adapter on " + esc(m.parent) + ")</small>" : " <small>(base)</small>"}</label>`).join("");
};
let streams = [];
async function streamInto(model, messages, pre, signal) {
  const body = { model, messages, stream: true, temperature: Number($("p-temp").value), top_p: Number($("p-topp").value), max_tokens: Number($("p-max").value) };
  const fmt = responseFormat();
  if (fmt) body.response_format = fmt;
  const r = await api("POST", "/v1/chat/completions", body, { raw: true, signal });
  const reader = r.body.getReader(), dec = new TextDecoder();
  let buf = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    buf += dec.decode(value, { stream: true });
    let i;
    while ((i = buf.indexOf("\n\n")) >= 0) {
      const line = buf.slice(0, i).trim(); buf = buf.slice(i + 2);
      if (!line.startsWith("data:")) continue;
      const data = line.slice(5).trim();
      if (data === "[DONE]") return;
      const chunk = JSON.parse(data);
      if (chunk.error) throw new ApiError(chunk.error.message, 500);
      const delta = chunk.choices && chunk.choices[0] && chunk.choices[0].delta;
      if (delta && delta.content) pre.textContent += delta.content;
    }
  }
}
// Structured output: off / JSON object / JSON schema (the schema is validated as JSON as you type; send waits for it).
let streaming = false;
function responseFormat() {
  const mode = $("p-format").value;
  if (mode === "json_object") return { type: "json_object" };
  if (mode !== "json_schema") return null;
  return { type: "json_schema", json_schema: { name: "playground", schema: JSON.parse($("p-schema").value), strict: true } };
}
function checkSchema() {
  const mode = $("p-format").value, box = $("p-schema");
  $("p-schema-box").hidden = mode !== "json_schema";
  let msg = "";
  if (mode === "json_schema") {
    try {
      const s = JSON.parse(box.value);
      if (s === null || typeof s !== "object" || Array.isArray(s)) msg = "The schema must be a JSON object, e.g. {\"type\": \"object\"}.";
    } catch (e) { msg = "Not valid JSON: " + e.message; }
  }
  box.setAttribute("aria-invalid", msg ? "true" : "false");
  $("p-schema-err").textContent = msg;
  $("p-send").disabled = streaming || !!msg;
  return !msg;
}
// A 400 about response_format (a malformed or unsupported schema) belongs next to the schema box.
function isFormatError(e) {
  return e && e.status === 400 && (e.code === "unsupported_schema" || String(e.param || "").startsWith("response_format"));
}
$("p-format").addEventListener("change", checkSchema);
$("p-schema").addEventListener("input", checkSchema);
checkSchema();
async function send() {
  showErr("p-err", null);
  if (!checkSchema()) { $("p-schema").focus(); return; }
  const models = [...$("p-models").querySelectorAll("input:checked")].map((i) => i.value);
  const text = $("p-prompt").value.trim();
  if (!models.length) { showErr("p-err", new Error("Pick at least one model.")); return; }
  if (!text) { showErr("p-err", new Error("Type a message first.")); $("p-prompt").focus(); return; }
  const messages = [];
  if ($("p-system").value.trim()) messages.push({ role: "system", content: $("p-system").value.trim() });
  messages.push({ role: "user", content: text });
  $("p-out").innerHTML = models.map((m, i) => `<div class="card"><strong>${esc(m)}</strong><pre id="p-ans-${i}" aria-live="polite"></pre><span class="err" id="p-err-${i}"></span></div>`).join("");
  const ctl = new AbortController(); streams.push(ctl);
  streaming = true; $("p-send").disabled = true; $("p-stop").disabled = false;
  await Promise.all(models.map((m, i) => streamInto(m, messages, $("p-ans-" + i), ctl.signal).catch((e) => {
    if (e.name === "AbortError") return;
    showErr("p-err-" + i, e);
    if (isFormatError(e)) showErr("p-schema-err", e);
  })));
  streaming = false; $("p-stop").disabled = true;
  const formatErr = $("p-schema-err").textContent;
  checkSchema();
  if (formatErr && !$("p-schema-err").textContent) { $("p-schema-err").textContent = formatErr; $("p-schema").setAttribute("aria-invalid", "true"); }
}
$("p-send").addEventListener("click", send);
$("p-prompt").addEventListener("keydown", (ev) => { if (ev.key === "Enter" && (ev.ctrlKey || ev.metaKey)) send(); });
$("p-stop").addEventListener("click", () => { streams.forEach((c) => c.abort()); streams = []; });

// --- 6. Export --------------------------------------------------------------------------------------------------
function verifyTable(x) {
  const v = x.verify;
  if (!v) return "<p>not verified</p>";
  return `<table class="verify"><thead><tr><th>check</th><th>value</th><th>bound</th><th>result</th></tr></thead><tbody>${v.checks.map((c) => `<tr><td>${esc(c.name)}</td><td>${esc(c.value)}</td><td>${esc(c.bound)}</td><td><span class="pill ${c.passed === false ? "FAIL" : c.passed ? "pass" : ""}">${c.passed === false ? "FAIL" : c.passed ? "pass" : "-"}</span></td></tr>`).join("")}</tbody></table>`;
}
async function loadExports() {
  const run = $("x-run").value;
  if (!run) { $("x-list").innerHTML = ""; return; }
  const r = await api("GET", `${T}/runs/${encodeURIComponent(run)}/exports`);
  $("x-list").innerHTML = r.data.map((x, i) => `<div class="card export" data-format="${esc(x.format)}"><h3>${esc(x.format)} <span class="pill ${x.passed ? "pass" : "FAIL"} verify-result">verify ${x.passed ? "passed" : x.passed === false ? "FAILED" : "not run"}</span></h3><p><code>${esc(x.path)}</code></p>${verifyTable(x)}<button type="button" class="secondary dl" data-url="${esc(x.download_url)}" id="dl-${i}">Download</button><span class="err" id="dl-err-${i}"></span></div>`).join("") || "<p>No exports of this run yet.</p>";
  $("x-list").querySelectorAll("button.dl").forEach((b) => b.addEventListener("click", () => download(b.dataset.url, "dl-err-" + b.id.slice(3))));
}
// A download behind the API key: fetched with the header, saved from a blob URL.
async function download(path, errId) {
  showErr(errId, null);
  try {
    const resp = await api("GET", path, undefined, { raw: true });
    const name = (/filename="?([^";]+)"?/.exec(resp.headers.get("content-disposition") || "") || [])[1] || "download";
    const url = URL.createObjectURL(await resp.blob());
    const a = document.createElement("a"); a.href = url; a.download = name; document.body.appendChild(a); a.click(); a.remove();
    setTimeout(() => URL.revokeObjectURL(url), 10000);
  } catch (e) { showErr(errId, e); }
}
loaders.export = async () => { await loadRuns(); await loadExports(); };
$("x-run").addEventListener("change", () => loadExports().catch((e) => showErr("x-err", e)));
$("x-btn").addEventListener("click", async () => {
  showErr("x-err", null);
  try {
    await withProgress("x-progress", "Exporting and verifying", $("x-btn"), async () => {
      const t = await api("POST", `${T}/runs/${encodeURIComponent($("x-run").value)}/exports`, { format: $("x-fmt").value });
      return pollTask(t.id, "x-progress", "Exporting and verifying");
    });
    await loadExports();
  } catch (e) { showErr("x-err", e); }
});

// --- start ------------------------------------------------------------------------------------------------------
$("key").value = key;
show((location.hash || "#data").slice(1) in loaders ? (location.hash || "#data").slice(1) : "data");
