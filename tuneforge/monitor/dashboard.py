"""The monitoring dashboard: `/dashboard` on the server and `tuneforge monitor report --output FILE.html`.

Charts of latency percentiles and error rate over time, requests and tokens per model, feedback, and drift
checks. One page, one inline script that draws SVG (no CDN, no internet): the server's page fetches its data
from `/dashboard/data` (behind the API key like every route; the page itself holds no data, so it is open and
asks for the key when one is needed) and refreshes every 15 s; the report embeds the same data, so the file
opens anywhere on its own.

    tuneforge monitor report --db sqlite:///tuneforge.db --since 7d --output monitoring.html
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path

import numpy as np

from tuneforge.monitor import drift as drift_mod
from tuneforge.monitor import query

OPEN_PATHS = frozenset({"/dashboard"})  # the page shell only; /dashboard/data needs the key
NICE_BUCKETS = (1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 10800, 21600, 43200, 86400,
                7 * 86400)
MAX_BUCKETS = 60
RECENT_FEEDBACK = 12


def bucket_seconds(span_s: float, max_buckets: int = MAX_BUCKETS) -> int:
    """The smallest round interval that splits `span_s` into at most `max_buckets` buckets."""
    for b in NICE_BUCKETS:
        if span_s / b <= max_buckets:
            return b
    return NICE_BUCKETS[-1]


def _pct(values: list[float], q: float) -> float | None:
    return float(np.percentile(values, q)) if values else None


def _round(x, digits: int = 6):
    return None if x is None or (isinstance(x, float) and not math.isfinite(x)) else round(float(x), digits)


def dashboard_data(engine, *, since: float | None = None, until: float | None = None) -> dict:
    """Everything the page draws, as JSON-ready data (times are unix seconds)."""
    now = time.time()
    rows = query.requests(engine, since=since, until=until, columns=(
        "created", "model", "status", "latency_s", "ttft_s", "prompt_tokens", "completion_tokens"))
    fb = query.feedback(engine, since=since, until=until)
    checks = drift_mod.checks(engine, since=since, limit=100)
    times = [r["created"] for r in rows] + [f["created"] for f in fb]
    start = min(times) if times else (since or now)
    end = max(times) if times else now
    bucket = bucket_seconds(max(end - start, 1.0))
    origin = math.floor(start / bucket) * bucket

    slots: dict[int, list[dict]] = {}
    for r in rows:
        slots.setdefault(int((r["created"] - origin) // bucket), []).append(r)
    timeline = []
    for k in sorted(slots):
        rs = slots[k]
        ok = [r for r in rs if r["status"] == 200]
        lat = [r["latency_s"] for r in ok]
        ttft = [r["ttft_s"] for r in ok if r["ttft_s"] is not None]
        errors = sum(1 for r in rs if r["status"] != 200)
        server = sum(1 for r in rs if r["status"] >= 500)
        timeline.append({"t": origin + k * bucket, "requests": len(rs), "errors": errors,
                         "error_rate": errors / len(rs), "server_error_rate": server / len(rs),
                         "p50": _round(_pct(lat, 50)), "p90": _round(_pct(lat, 90)), "p99": _round(_pct(lat, 99)),
                         "ttft_p50": _round(_pct(ttft, 50))})

    per_model: dict[str, dict] = {}
    for r in rows:
        m = per_model.setdefault(r["model"] or "(unknown)", {"requests": 0, "errors": 0, "prompt_tokens": 0,
                                                             "completion_tokens": 0, "latency": []})
        m["requests"] += 1
        m["errors"] += r["status"] != 200
        m["prompt_tokens"] += r["prompt_tokens"] or 0
        m["completion_tokens"] += r["completion_tokens"] or 0
        if r["status"] == 200:
            m["latency"].append(r["latency_s"])
    models = [{"model": name, "requests": m["requests"], "errors": m["errors"], "prompt_tokens": m["prompt_tokens"],
               "completion_tokens": m["completion_tokens"], "p50": _round(_pct(m["latency"], 50))}
              for name, m in sorted(per_model.items(), key=lambda kv: -kv[1]["requests"])]

    fslots: dict[int, list[float]] = {}
    for f in fb:
        fslots.setdefault(int((f["created"] - origin) // bucket), []).append(f["score"])
    feedback = {
        "n": len(fb), "up": sum(1 for f in fb if f["thumbs"] == "up"),
        "down": sum(1 for f in fb if f["thumbs"] == "down"), "scored": sum(1 for f in fb if f["thumbs"] is None),
        "corrections": sum(1 for f in fb if f["correction"]),
        "mean": _round(float(np.mean([f["score"] for f in fb])) if fb else None, 4),
        "timeline": [{"t": origin + k * bucket, "n": len(v), "mean": _round(float(np.mean(v)), 4)}
                     for k, v in sorted(fslots.items())],
        "recent": [{"created": f["created"], "model": f["model"], "score": f["score"], "thumbs": f["thumbs"],
                    "comment": f["comment"], "correction": f["correction"], "request_id": f["request_id"]}
                   for f in fb[-RECENT_FEEDBACK:][::-1]]}

    ok_lat = [r["latency_s"] for r in rows if r["status"] == 200]
    totals = {"requests": len(rows), "errors": sum(1 for r in rows if r["status"] != 200),
              "prompt_tokens": sum(r["prompt_tokens"] or 0 for r in rows),
              "completion_tokens": sum(r["completion_tokens"] or 0 for r in rows),
              "p50": _round(_pct(ok_lat, 50)), "p99": _round(_pct(ok_lat, 99)), "models": len(models)}
    return {"generated": now, "since": since, "until": until, "start": start, "end": end, "bucket_s": bucket,
            "totals": totals, "timeline": timeline, "models": models, "feedback": feedback,
            "drift": {"checks": [{"created": c["created"], "model": c["model"], "run": c["run"],
                                  "n_requests": c["n_requests"], "drift": c["drift"],
                                  "signals": [{k: s.get(k) for k in ("name", "side", "statistic", "p_value",
                                                                     "threshold", "verdict", "note")}
                                              for s in c["signals"]]} for c in checks]}}


def render_html(data: dict | None, *, title: str = "tuneforge monitoring") -> str:
    """The page: with `data`, a self-contained report; with None, the live page that fetches /dashboard/data."""
    payload = "null" if data is None else json.dumps(data, separators=(",", ":"), default=str)
    payload = payload.replace("</", "<\\/").replace("<!--", "<\\!--")  # user text cannot close the script
    return (TEMPLATE.replace("__TITLE__", _escape(title)).replace("__DATA__", payload)
            .replace("__LIVE__", "false" if data is not None else "true"))


def _escape(s: str) -> str:
    return s.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;").replace('"', "&quot;")


def write_dashboard(engine, output: str | Path, *, since: float | None = None, until: float | None = None) -> Path:
    from tuneforge.run import write_atomic_text

    data = dashboard_data(engine, since=since, until=until)
    out = Path(output)
    out.parent.mkdir(parents=True, exist_ok=True)
    return write_atomic_text(out, render_html(data, title="tuneforge monitoring report"))


def dashboard_router(engine):
    """GET /dashboard (the page) and GET /dashboard/data?since=24h (its data, behind the API key)."""
    from fastapi import APIRouter
    from fastapi.responses import HTMLResponse
    from starlette.concurrency import run_in_threadpool

    from tuneforge.errors import TuneforgeError
    from tuneforge.serve import protocol as P

    router = APIRouter()
    page = render_html(None)

    @router.get("/dashboard")
    async def dashboard_page():
        return HTMLResponse(page, headers={"Cache-Control": "no-store"})

    @router.get("/dashboard/data")
    async def dashboard_json(since: str | None = "24h"):
        try:
            start = query.parse_since(since, flag="since")
        except TuneforgeError as e:
            raise P.bad_request(str(e), param="since") from None
        return await run_in_threadpool(dashboard_data, engine, since=start)

    return router


TEMPLATE = r"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>__TITLE__</title>
<style>
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:0;background:#f5f6f8;color:#1d2330}
header{background:#1d2330;color:#fff;padding:14px 24px;display:flex;align-items:center;gap:24px;flex-wrap:wrap}
header h1{font-size:18px;margin:0;font-weight:600} header .meta{font-size:13px;opacity:.8}
header select,header input,header button{font-size:13px;padding:3px 6px}
main{padding:16px 24px;max-width:1280px}
.cards{display:grid;grid-template-columns:repeat(auto-fit,minmax(150px,1fr));gap:12px;margin-bottom:16px}
.card{background:#fff;border-radius:8px;padding:10px 14px;box-shadow:0 1px 2px rgba(0,0,0,.08)}
.card .v{font-size:22px;font-weight:600} .card .k{font-size:12px;color:#5b6474}
.grid{display:grid;grid-template-columns:repeat(auto-fit,minmax(560px,1fr));gap:16px}
section{background:#fff;border-radius:8px;padding:12px 14px;box-shadow:0 1px 2px rgba(0,0,0,.08)}
section h2{font-size:15px;margin:0 0 8px 0}
svg text{font-size:11px;fill:#5b6474} .legend{font-size:12px;color:#5b6474;margin-top:4px}
.legend span{display:inline-block;margin-right:12px} .legend i{display:inline-block;width:10px;height:10px;margin-right:4px;border-radius:2px}
table{border-collapse:collapse;width:100%;font-size:12px} td,th{border-bottom:1px solid #e4e7ec;padding:4px 6px;text-align:left;vertical-align:top}
.drift{color:#b42318;font-weight:600} .ok{color:#067647} .na{color:#8a94a6} .empty{color:#8a94a6;font-size:13px;padding:20px 0}
#error{color:#b42318;padding:8px 0} .wide{grid-column:1/-1}
</style></head>
<body>
<header><h1>__TITLE__</h1><span class="meta" id="meta"></span>
<span id="controls"><label style="font-size:13px">window
<select id="since"><option value="1h">last hour</option><option value="24h" selected>last 24 h</option>
<option value="7d">last 7 days</option><option value="30d">last 30 days</option><option value="">all</option></select></label></span>
<span id="auth" hidden><input id="key" type="password" placeholder="API key"> <button id="keybtn">use key</button></span>
</header>
<main><div id="error"></div><div class="cards" id="cards"></div>
<div class="grid">
<section><h2>Latency percentiles</h2><div id="latency"></div></section>
<section><h2>Error rate</h2><div id="errors"></div></section>
<section><h2>Requests over time</h2><div id="requests"></div></section>
<section><h2>Requests per model</h2><div id="models"></div></section>
<section><h2>Tokens per model</h2><div id="tokens"></div></section>
<section><h2>Feedback score over time</h2><div id="feedback"></div></section>
<section><h2>Feedback</h2><div id="feedbackCounts"></div><div id="feedbackRecent"></div></section>
<section><h2>Drift checks</h2><div id="driftStrip"></div><div id="driftLatest"></div></section>
</div></main>
<script>
"use strict";
const EMBEDDED = __DATA__;
const LIVE = __LIVE__;
const NS = "http://www.w3.org/2000/svg";
const W = 560, H = 220, M = {l: 52, r: 24, t: 16, b: 28};
const COLORS = {p50: "#1f77b4", p90: "#ff7f0e", p99: "#d62728", ttft: "#9467bd", errors: "#e31a1c",
  server: "#6a3d9a", requests: "#2ca02c", models: "#17becf", prompt: "#8c564b", completion: "#e377c2",
  score: "#0b7a75", up: "#33a02c", down: "#fb9a99", scored: "#a6cee3", drift: "#d62728", ok: "#2ca02c", na: "#c7cdd6"};

function svgEl(tag, attrs, parent) {
  const e = document.createElementNS(NS, tag);
  for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, v);
  if (parent) parent.appendChild(e);
  return e;
}
function htmlEl(tag, attrs, parent, text) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, v);
  if (text !== undefined && text !== null) e.textContent = text;
  if (parent) parent.appendChild(e);
  return e;
}
function clear(id) { const b = document.getElementById(id); b.textContent = ""; return b; }
function empty(box, msg) { htmlEl("div", {class: "empty"}, box, msg); }
function fmtTime(t, span) {
  const d = new Date(t * 1000), p = n => String(n).padStart(2, "0");
  if (span > 2 * 86400) return (d.getMonth() + 1) + "/" + d.getDate() + " " + p(d.getHours()) + "h";
  if (span > 600) return p(d.getHours()) + ":" + p(d.getMinutes());
  return p(d.getHours()) + ":" + p(d.getMinutes()) + ":" + p(d.getSeconds());
}
function fmtSec(v) { return v == null ? "-" : v < 1 ? (v * 1000).toFixed(v < 0.01 ? 1 : 0) + " ms" : v.toFixed(2) + " s"; }
function fmtPct(v) { return v == null ? "-" : (100 * v).toFixed(v < 0.1 ? 1 : 0) + "%"; }
function fmtNum(v) { return v == null ? "-" : v >= 1e6 ? (v / 1e6).toFixed(1) + "M" : v >= 1e4 ? (v / 1e3).toFixed(1) + "k" : String(Math.round(v * 100) / 100); }
function niceMax(v) { if (!(v > 0)) return 1; const e = Math.pow(10, Math.floor(Math.log10(v))); for (const m of [1, 2, 2.5, 5, 10]) if (m * e >= v) return m * e; return 10 * e; }
function legend(box, items) {
  const l = htmlEl("div", {class: "legend"}, box);
  for (const [name, color] of items) { const s = htmlEl("span", {}, l); htmlEl("i", {style: "background:" + color}, s); s.appendChild(document.createTextNode(name)); }
}
function axes(svg, y0, y1, fmt, xs, xfmt) {
  for (let i = 0; i <= 4; i++) {
    const v = y0 + (y1 - y0) * i / 4, y = H - M.b - (H - M.t - M.b) * i / 4;
    svgEl("line", {x1: M.l, x2: W - M.r, y1: y, y2: y, stroke: "#e4e7ec"}, svg);
    svgEl("text", {x: M.l - 6, y: y + 4, "text-anchor": "end"}, svg).textContent = fmt(v);
  }
  for (const [x, label] of xs) svgEl("text", {x: x, y: H - 8, "text-anchor": "middle"}, svg).textContent = label;
}
// series: [{name, color, points: [[t, v], ...]}]
function lineChart(box, id, series, opt) {
  const pts = series.flatMap(s => s.points.filter(p => p[1] != null));
  if (!pts.length) return empty(box, opt.emptyText || "No data in this window.");
  let t0 = Math.min(...pts.map(p => p[0])), t1 = Math.max(...pts.map(p => p[0]));
  if (t1 === t0) { t0 -= 1; t1 += 1; }
  const ymax = opt.yMax || niceMax(Math.max(...pts.map(p => p[1])) * 1.05);
  const sx = t => M.l + (W - M.l - M.r) * (t - t0) / (t1 - t0), sy = v => H - M.b - (H - M.t - M.b) * v / ymax;
  const svg = svgEl("svg", {viewBox: `0 0 ${W} ${H}`, width: "100%", "data-chart": id, role: "img"}, box);
  const ticks = []; for (let i = 0; i <= 4; i++) { const t = t0 + (t1 - t0) * i / 4; ticks.push([sx(t), fmtTime(t, t1 - t0)]); }
  axes(svg, 0, ymax, opt.yFormat, ticks);
  for (const s of series) {
    const ps = s.points.filter(p => p[1] != null);
    if (!ps.length) continue;
    // a new segment after an idle gap (missing buckets): no line drawn across time without data
    const d = ps.map((p, i) => (i && !(opt.bucket && p[0] - ps[i - 1][0] > 1.5 * opt.bucket) ? "L" : "M") +
      sx(p[0]).toFixed(1) + " " + sy(p[1]).toFixed(1)).join(" ");
    svgEl("path", {d: d, fill: "none", stroke: s.color, "stroke-width": 2.5, "data-series": s.name, "data-points": ps.length}, svg);
    for (const p of ps) {
      const c = svgEl("circle", {cx: sx(p[0]), cy: sy(p[1]), r: 3, fill: s.color, "data-series": s.name, "data-value": p[1]}, svg);
      svgEl("title", {}, c).textContent = s.name + " " + fmtTime(p[0], 0) + ": " + opt.yFormat(p[1]);
    }
  }
  legend(box, series.map(s => [s.name, s.color]));
}
// bars over time: points [[t, v]]
function timeBars(box, id, points, color, opt) {
  if (!points.length) return empty(box, "No requests in this window.");
  const bucket = opt.bucket, t0 = points[0][0], t1 = points[points.length - 1][0] + bucket;
  const ymax = niceMax(Math.max(...points.map(p => p[1])));
  const sx = t => M.l + (W - M.l - M.r) * (t - t0) / (t1 - t0), sy = v => H - M.b - (H - M.t - M.b) * v / ymax;
  const svg = svgEl("svg", {viewBox: `0 0 ${W} ${H}`, width: "100%", "data-chart": id, role: "img"}, box);
  const ticks = []; for (let i = 0; i <= 4; i++) { const t = t0 + (t1 - t0) * i / 4; ticks.push([sx(t), fmtTime(t, t1 - t0)]); }
  axes(svg, 0, ymax, fmtNum, ticks);
  const bw = Math.max(1, sx(t0 + bucket) - sx(t0) - 1);
  for (const [t, v] of points) {
    const r = svgEl("rect", {x: sx(t), y: sy(v), width: bw, height: H - M.b - sy(v), fill: color, "data-value": v}, svg);
    svgEl("title", {}, r).textContent = fmtTime(t, 0) + ": " + v;
  }
}
// grouped vertical bars: categories [..], series [{name, color, values}]
function barChart(box, id, categories, series, opt) {
  if (!categories.length) return empty(box, "No requests in this window.");
  const ymax = niceMax(Math.max(1, ...series.flatMap(s => s.values)) * 1.08);  // room for the value labels
  const svg = svgEl("svg", {viewBox: `0 0 ${W} ${H}`, width: "100%", "data-chart": id, role: "img"}, box);
  const gw = (W - M.l - M.r) / categories.length, bw = Math.min(60, gw * 0.8 / series.length);
  const sy = v => H - M.b - (H - M.t - M.b) * v / ymax;
  axes(svg, 0, ymax, fmtNum, categories.map((c, i) => [M.l + gw * (i + 0.5), c.length > 24 ? c.slice(0, 22) + "…" : c]));
  categories.forEach((c, i) => series.forEach((s, j) => {
    const v = s.values[i], x = M.l + gw * (i + 0.5) - bw * series.length / 2 + bw * j;
    const r = svgEl("rect", {x: x, y: sy(v), width: bw - 2, height: H - M.b - sy(v), fill: s.color,
      "data-series": s.name, "data-category": c, "data-value": v}, svg);
    svgEl("title", {}, r).textContent = c + " " + s.name + ": " + v;
    svgEl("text", {x: x + (bw - 2) / 2, y: sy(v) - 3, "text-anchor": "middle"}, svg).textContent = fmtNum(v);
  }));
  if (series.length > 1 || opt.legend) legend(box, series.map(s => [s.name, s.color]));
}
function driftStrip(box, checks) {
  if (!checks.length) return empty(box, "No drift checks yet: run `tuneforge monitor drift --run RUN`, or serve with --drift-interval.");
  const names = [...new Set(checks.flatMap(c => c.signals.map(s => s.name)))];
  const cw = Math.max(4, Math.min(28, (W - 150) / checks.length)), rh = 18, h = names.length * rh + 24;
  const svg = svgEl("svg", {viewBox: `0 0 ${W} ${h}`, width: "100%", "data-chart": "drift", role: "img"}, box);
  names.forEach((n, i) => { svgEl("text", {x: 140, y: i * rh + 13, "text-anchor": "end"}, svg).textContent = n; });
  checks.forEach((c, j) => names.forEach((n, i) => {
    const s = c.signals.find(s => s.name === n), v = s ? s.verdict : "n/a";
    const color = v === "DRIFT" ? COLORS.drift : v === "ok" ? COLORS.ok : COLORS.na;
    const r = svgEl("rect", {x: 146 + j * cw, y: i * rh + 2, width: cw - 2, height: rh - 4, fill: color,
      "data-signal": n, "data-verdict": v}, svg);
    svgEl("title", {}, r).textContent = n + " at " + new Date(c.created * 1000).toISOString() + ": " + v;
  }));
  svgEl("text", {x: 146, y: h - 6}, svg).textContent = "oldest → newest check (" + checks.length + ")";
}
function table(box, head, rows, cls) {
  const t = htmlEl("table", {}, box), tr = htmlEl("tr", {}, t);
  head.forEach(h => htmlEl("th", {}, tr, h));
  rows.forEach((r, i) => { const row = htmlEl("tr", {}, t); r.forEach((v, j) => htmlEl("td", cls ? {class: cls(i, j) || ""} : {}, row, v)); });
  return t;
}
function render(d) {
  document.getElementById("error").textContent = "";
  const span = d.end - d.start;
  document.getElementById("meta").textContent = (LIVE ? "live, " : "report, ") + "generated " + new Date(d.generated * 1000).toLocaleString() +
    (d.since ? " · since " + new Date(d.since * 1000).toLocaleString() : " · all time") + " · " + d.bucket_s + " s buckets";
  const cards = clear("cards"), T = d.totals;
  const lastCheck = d.drift.checks.length ? d.drift.checks[d.drift.checks.length - 1] : null;
  [["requests", fmtNum(T.requests)], ["error rate", T.requests ? fmtPct(T.errors / T.requests) : "-"],
   ["latency p50", fmtSec(T.p50)], ["latency p99", fmtSec(T.p99)],
   ["tokens in / out", fmtNum(T.prompt_tokens) + " / " + fmtNum(T.completion_tokens)],
   ["feedback", d.feedback.n ? d.feedback.n + " (mean " + d.feedback.mean.toFixed(2) + ")" : "none"],
   ["drift", lastCheck ? (lastCheck.drift ? "DRIFT" : "ok") : "not checked"]].forEach(([k, v]) => {
    const c = htmlEl("div", {class: "card", "data-card": k}, cards); htmlEl("div", {class: "v" + (v === "DRIFT" ? " drift" : "")}, c, v); htmlEl("div", {class: "k"}, c, k);
  });
  const tl = d.timeline;
  lineChart(clear("latency"), "latency", [
    {name: "p50", color: COLORS.p50, points: tl.map(b => [b.t, b.p50])},
    {name: "p90", color: COLORS.p90, points: tl.map(b => [b.t, b.p90])},
    {name: "p99", color: COLORS.p99, points: tl.map(b => [b.t, b.p99])},
    {name: "time to first token p50", color: COLORS.ttft, points: tl.map(b => [b.t, b.ttft_p50])}],
    {yFormat: fmtSec, bucket: d.bucket_s});
  lineChart(clear("errors"), "errors", [
    {name: "all errors (non-200)", color: COLORS.errors, points: tl.map(b => [b.t, b.error_rate])},
    {name: "server errors (5xx)", color: COLORS.server, points: tl.map(b => [b.t, b.server_error_rate])}],
    {yFormat: fmtPct, yMax: Math.max(0.05, niceMax(Math.max(...tl.map(b => b.error_rate), 0))), bucket: d.bucket_s});
  timeBars(clear("requests"), "requests", tl.map(b => [b.t, b.requests]), COLORS.requests, {bucket: d.bucket_s});
  const ms = d.models.map(m => m.model);
  barChart(clear("models"), "models", ms, [{name: "requests", color: COLORS.models, values: d.models.map(m => m.requests)}], {});
  barChart(clear("tokens"), "tokens", ms, [
    {name: "prompt tokens", color: COLORS.prompt, values: d.models.map(m => m.prompt_tokens)},
    {name: "completion tokens", color: COLORS.completion, values: d.models.map(m => m.completion_tokens)}], {});
  const F = d.feedback;
  lineChart(clear("feedback"), "feedback", [{name: "mean score (0-1)", color: COLORS.score, points: F.timeline.map(b => [b.t, b.mean])}],
    {yFormat: v => v.toFixed(2), yMax: 1, bucket: d.bucket_s, emptyText: "No feedback yet (POST /v1/feedback)."});
  const fc = clear("feedbackCounts");
  if (F.n) barChart(fc, "feedbackCounts", ["thumbs up", "thumbs down", "scored", "with correction"],
    [{name: "feedback", color: COLORS.score, values: [F.up, F.down, F.scored, F.corrections]}], {});
  else empty(fc, "No feedback yet (POST /v1/feedback).");
  const fr = clear("feedbackRecent");
  if (F.recent.length) table(fr, ["when", "model", "score", "comment", "correction"], F.recent.map(f =>
    [new Date(f.created * 1000).toLocaleString(), f.model || "", f.thumbs ? "thumbs " + f.thumbs : f.score.toFixed(2), f.comment || "", f.correction || ""]));
  driftStrip(clear("driftStrip"), d.drift.checks);
  const dl = clear("driftLatest");
  if (lastCheck) {
    htmlEl("div", {class: "legend"}, dl, "latest: " + lastCheck.model + ", " + lastCheck.n_requests + " requests, " + new Date(lastCheck.created * 1000).toLocaleString());
    table(dl, ["signal", "side", "statistic", "p", "threshold", "verdict"], lastCheck.signals.map(s =>
      [s.name, s.side, s.statistic == null ? "-" : Number(s.statistic).toPrecision(3), s.p_value == null ? "-" : Number(s.p_value).toPrecision(2), s.threshold, s.verdict + (s.note ? " (" + s.note + ")" : "")]),
      (i, j) => j === 5 ? (lastCheck.signals[i].verdict === "DRIFT" ? "drift" : lastCheck.signals[i].verdict === "ok" ? "ok" : "na") : "");
  }
  document.body.setAttribute("data-rendered", String(d.totals.requests));
}
let key = sessionStorage.getItem("tuneforge-key") || "";
async function load() {
  const since = document.getElementById("since").value;
  const url = location.pathname.replace(/\/+$/, "") + "/data?since=" + encodeURIComponent(since);
  try {
    const r = await fetch(url, {headers: key ? {Authorization: "Bearer " + key} : {}});
    if (r.status === 401) { document.getElementById("auth").hidden = false; document.getElementById("error").textContent = "This server needs its API key."; return; }
    if (!r.ok) { document.getElementById("error").textContent = "Could not load data: HTTP " + r.status; return; }
    render(await r.json());
  } catch (e) { document.getElementById("error").textContent = "Could not load data: " + e; }
}
if (LIVE) {
  document.getElementById("since").addEventListener("change", load);
  document.getElementById("keybtn").addEventListener("click", () => { key = document.getElementById("key").value; sessionStorage.setItem("tuneforge-key", key); document.getElementById("auth").hidden = true; load(); });
  load(); setInterval(load, 15000);
} else {
  document.getElementById("controls").hidden = true;
  render(EMBEDDED);
}
</script></body></html>
"""
