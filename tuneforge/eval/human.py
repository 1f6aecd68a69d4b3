"""Blind A/B human evaluation of tuned vs baseline answers from an eval.json: a sheet out, ratings back in.

`export_sheet(eval.json, DIR)` writes the CSV + an offline HTML form for raters; `import_ratings(csv, key)` unblinds.
"""

from __future__ import annotations

import csv
import hashlib
import html
import json
import math
import random
from pathlib import Path

from tuneforge.errors import TuneforgeError
from tuneforge.eval.metrics import bootstrap_ci

COLUMNS = ["id", "prompt", "reference", "response_1", "response_2", "rating"]
RATINGS = {"1": "response_1", "2": "response_2", "tie": "tie"}
Z95 = 1.959963984540054


class RatingError(TuneforgeError, ValueError):
    """A ratings CSV that cannot be read back: names the CSV line and the offending value."""


def _load_pairs(eval_json_path: str | Path) -> dict:
    p = Path(eval_json_path)
    if not p.is_file():
        raise TuneforgeError(f"{p}: no such eval.json (run `tuneforge eval RUN --baseline base` first)")
    result = json.loads(p.read_text())
    models = result.get("models", {})
    examples = result.get("examples", [])
    missing = [r for r in ("baseline", "tuned") if r not in models]
    if missing or any(f"{r}_prediction" not in e for e in examples for r in ("baseline", "tuned")):
        raise TuneforgeError(f"{p}: a blind A/B sheet needs both baseline and tuned predictions "
                             f"(missing: {', '.join(missing) or 'some predictions'}); "
                             "re-run `tuneforge eval RUN --baseline base`")
    if not examples:
        raise TuneforgeError(f"{p}: no examples to rate")
    return result


def export_sheet(eval_json_path: str | Path, out_dir: str | Path, seed: int = 0) -> dict[str, Path]:
    """Write human_eval.csv, human_eval.html (rater form) and human_eval_key.json (keep it from the raters).

    Which response is the tuned one is drawn per row from `seed`, so raters cannot learn a position bias
    and the same seed reproduces the same sheet.
    """
    result = _load_pairs(eval_json_path)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)
    rows, tuned_is = [], {}
    width = len(str(len(result["examples"])))
    for i, ex in enumerate(result["examples"], 1):
        rid = f"{i:0{width}d}"
        tuned_first = rng.random() < 0.5
        a, b = ex["tuned_prediction"], ex["baseline_prediction"]
        r1, r2 = (a, b) if tuned_first else (b, a)
        tuned_is[rid] = "response_1" if tuned_first else "response_2"
        rows.append({"id": rid, "prompt": ex.get("prompt") or "", "reference": ex.get("reference") or "",
                     "response_1": r1 or "", "response_2": r2 or "", "rating": ""})
    paths = {"csv": out / "human_eval.csv", "html": out / "human_eval.html", "key": out / "human_eval_key.json"}
    with open(paths["csv"], "w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, fieldnames=COLUMNS)
        w.writeheader()
        w.writerows(rows)
    paths["html"].write_text(form_html(rows), encoding="utf-8")
    key = {"schema": 1, "eval_json": str(eval_json_path), "seed": seed,
           "models": {r: result["models"][r].get("name") for r in ("baseline", "tuned")}, "tuned": tuned_is}
    paths["key"].write_text(json.dumps(key, indent=1))
    return paths


def _json_for_script(obj) -> str:
    """JSON safe inside <script>: no '</script>' or '<!--' can end or confuse the element."""
    return json.dumps(obj).replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


FORM_JS = """
const rows = JSON.parse(document.getElementById('rows').textContent);
const store = 'tuneforge-human-eval:' + document.getElementById('rows').dataset.sheet;
const saved = JSON.parse(localStorage.getItem(store) || '{}');
function rating(id) { const c = document.querySelector('input[name="r-' + id + '"]:checked'); return c ? c.value : ''; }
function update() {
  const done = rows.filter(r => rating(r.id) !== '').length;
  document.getElementById('progress').textContent = done + ' of ' + rows.length + ' rated';
  const now = {}; rows.forEach(r => { now[r.id] = rating(r.id); });
  localStorage.setItem(store, JSON.stringify(now));
}
rows.forEach(r => { const v = saved[r.id]; if (v) { const el = document.querySelector(
  'input[name="r-' + r.id + '"][value="' + v + '"]'); if (el) el.checked = true; } });
document.querySelectorAll('input[type=radio]').forEach(el => el.addEventListener('change', update));
function field(s) { s = String(s); return /[",\\r\\n]/.test(s) ? '"' + s.replace(/"/g, '""') + '"' : s; }
function toCsv() {
  const cols = ['id', 'prompt', 'reference', 'response_1', 'response_2', 'rating'];
  const lines = [cols.join(',')];
  rows.forEach(r => { lines.push(cols.map(c => field(c === 'rating' ? rating(r.id) : r[c])).join(',')); });
  return lines.join('\\r\\n') + '\\r\\n';
}
document.getElementById('download').addEventListener('click', () => {
  const a = document.createElement('a');
  a.href = URL.createObjectURL(new Blob([toCsv()], {type: 'text/csv;charset=utf-8'}));
  a.download = 'human_eval.csv';
  document.body.appendChild(a); a.click(); a.remove();
});
update();
"""

FORM_CSS = """
body{font-family:system-ui,sans-serif;max-width:1200px;margin:20px auto;padding:0 16px;color:#222}
table{border-collapse:collapse;width:100%}td,th{border:1px solid #ddd;padding:6px;vertical-align:top;text-align:left}
th{background:#f6f6f6}td.text{white-space:pre-wrap;word-break:break-word}
.bar{position:sticky;top:0;background:#fff;padding:8px 0;border-bottom:1px solid #ddd}
button{font-size:15px;padding:6px 14px}label{display:block;white-space:nowrap}
"""


def form_html(rows: list[dict]) -> str:
    """A self-contained rating form: radio buttons per row, a button that downloads the filled CSV (no server)."""
    e = html.escape
    sheet = hashlib.sha256(json.dumps(rows, sort_keys=True).encode()).hexdigest()[:16]  # localStorage key
    body = []
    for r in rows:
        radios = "".join(f'<label><input type="radio" name="r-{e(r["id"])}" value="{v}"> {label}</label>'
                         for v, label in (("1", "1 is better"), ("2", "2 is better"), ("tie", "tie")))
        body.append(f'<tr><td>{e(r["id"])}</td>' + "".join(f'<td class="text">{e(str(r[c]))}</td>' for c in
                                                           ("prompt", "reference", "response_1", "response_2"))
                    + f"<td>{radios}</td></tr>")
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>tuneforge human evaluation</title><style>{FORM_CSS}</style>
</head><body>
<h1>Which response is better?</h1>
<p>For each prompt, compare response 1 and response 2 (the reference is one good answer, not the only one) and
pick the better one, or <i>tie</i>. The order of the two models is random per row. When done, download the CSV
and send it back. Ratings are kept in this browser if you close the page.</p>
<div class="bar"><button id="download">Download filled CSV</button> <span id="progress"></span></div>
<table><tr><th>id</th><th>prompt</th><th>reference</th><th>response 1</th><th>response 2</th><th>rating</th></tr>
{chr(10).join(body)}
</table>
<script type="application/json" id="rows" data-sheet="{sheet}">{_json_for_script(rows)}</script>
<script>{FORM_JS}</script>
</body></html>
"""


def wilson_interval(k: int, n: int, z: float = Z95) -> dict | None:
    """Wilson score interval for k successes in n trials: unlike the normal approximation it stays inside
    [0, 1] and behaves at small n or rates near 0/1, which is where human-eval samples live."""
    if n <= 0:
        return None
    p = k / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return {"rate": p, "low": max(0.0, centre - half), "high": min(1.0, centre + half), "n": n}


def read_ratings(csv_path: str | Path) -> list[tuple[int, str, str]]:
    """(CSV line where the row starts, id, normalised rating or '') per row; bad values raise RatingError."""
    out, seen = [], set()
    with open(csv_path, newline="", encoding="utf-8-sig") as f:
        reader = csv.reader(f)
        header = next(reader, None)
        if header is None or "id" not in header or "rating" not in header:
            raise RatingError(f"{csv_path}:1: header must have 'id' and 'rating' columns, got {header}")
        i_id, i_rating = header.index("id"), header.index("rating")
        line = reader.line_num + 1
        for rec in reader:
            start, line = line, reader.line_num + 1  # records may span lines (multi-line prompts)
            if not any(x.strip() for x in rec):
                continue
            rid = rec[i_id].strip() if i_id < len(rec) else ""
            raw = rec[i_rating] if i_rating < len(rec) else ""
            value = raw.strip().lower()
            if value not in RATINGS and value != "":
                raise RatingError(f"{csv_path}:{start}: rating {raw!r} for id {rid!r} is not 1, 2 or tie")
            if rid in seen:
                raise RatingError(f"{csv_path}:{start}: id {rid!r} appears twice")
            seen.add(rid)
            out.append((start, rid, value))
    return out


def import_ratings(csv_path: str | Path, key_path: str | Path) -> dict:
    """Unblind the ratings: tuned-vs-baseline win/tie/loss counts and rates with 95% intervals.

    `win_rate_excluding_ties` is a Wilson interval (ties say nothing about which model is better);
    `net_win` = (wins - losses) / rated with a bootstrap CI, the one number that counts ties as neutral.
    """
    key = json.loads(Path(key_path).read_text())
    tuned_is = key["tuned"]
    wins = ties = losses = 0
    each, rated = [], set()
    for line, rid, value in read_ratings(csv_path):
        if rid not in tuned_is:
            raise RatingError(f"{csv_path}:{line}: id {rid!r} is not in the key {key_path}")
        if not value:
            continue
        rated.add(rid)
        if RATINGS[value] == "tie":
            ties += 1
            each.append(0.0)
        elif RATINGS[value] == tuned_is[rid]:
            wins += 1
            each.append(1.0)
        else:
            losses += 1
            each.append(-1.0)
    n = wins + ties + losses
    rate = (lambda k: k / n) if n else (lambda k: None)
    return {"models": key.get("models", {}), "n_rows": len(tuned_is), "n_rated": n,
            "wins": wins, "ties": ties, "losses": losses,
            "win_rate": rate(wins), "tie_rate": rate(ties), "loss_rate": rate(losses),
            "win_rate_excluding_ties": wilson_interval(wins, wins + losses),
            "net_win": bootstrap_ci(each, n=2000, seed=0) if each else None,
            "unrated": [rid for rid in tuned_is if rid not in rated]}


def format_ratings(r: dict) -> str:
    """A few lines for the terminal."""
    if not r["n_rated"]:
        return f"no ratings yet ({r['n_rows']} rows unrated)"
    lines = [f"tuned vs baseline over {r['n_rated']} rated rows: {r['wins']} wins, {r['ties']} ties, "
             f"{r['losses']} losses (win {r['win_rate']:.1%}, tie {r['tie_rate']:.1%}, loss {r['loss_rate']:.1%})"]
    w = r["win_rate_excluding_ties"]
    if w:
        lines.append(f"win rate excluding ties: {w['rate']:.1%} (95% Wilson CI {w['low']:.1%}-{w['high']:.1%}, "
                     f"n={w['n']})")
    nw = r["net_win"]
    lines.append(f"net win (wins-losses)/n: {nw['mean']:+.3f} (95% bootstrap CI {nw['low']:+.3f} to "
                 f"{nw['high']:+.3f})")
    if r["unrated"]:
        lines.append(f"unrated: {len(r['unrated'])} rows ({', '.join(r['unrated'][:10])}"
                     f"{', ...' if len(r['unrated']) > 10 else ''})")
    return "\n".join(lines)
