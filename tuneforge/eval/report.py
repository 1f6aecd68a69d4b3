"""The run report: RUN/report.html with the run summary, loss and LR curves, eval metrics and worst examples.

`write_report(run_dir)` writes one self-contained file (figures inlined as base64 PNG) to open in any browser.
"""

from __future__ import annotations

import base64
import html
import io
import json
from pathlib import Path
from typing import TYPE_CHECKING

from tuneforge import methods
from tuneforge.run import read_metrics, read_run, run_name, scalar_metrics, write_atomic_text
from tuneforge.train.early_stop import overfitting_signal

if TYPE_CHECKING:  # matplotlib is imported by the functions that draw (import tuneforge.eval.report stays fast)
    from matplotlib.figure import Figure

# Distinctive colours: the screenshot test looks for TRAIN_LOSS_COLOR's pixels to prove the curve rendered.
TRAIN_LOSS_COLOR = "#e6007e"
VAL_LOSS_COLOR = "#1f5fbf"
ROLE_COLORS = {"baseline": "#9e9e9e", "tuned": "#2e8b57"}
HYPERPARAMETERS = ("learning_rate", "num_train_epochs", "max_steps", "per_device_train_batch_size",
                   "gradient_accumulation_steps", "lr_scheduler_type", "warmup_steps", "warmup_ratio",
                   "weight_decay", "max_seq_len", "packing", "early_stopping_patience", "seed")
ALREADY_PERCENT = {"bleu", "chrf"}  # sacrebleu reports 0-100; the other bounded metrics are fractions
WORST_N = 10


def _png(fig: Figure) -> str:
    """Render with Agg (no display, no global pyplot state) and return an <img> with the PNG inlined."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    FigureCanvasAgg(fig)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, bbox_inches="tight")
    data = base64.b64encode(buf.getvalue()).decode("ascii")
    return f'<img alt="figure" src="data:image/png;base64,{data}">'


def loss_figure(rows: list[dict]) -> Figure | None:
    train = [(r["step"], r["loss"]) for r in rows if r.get("loss") is not None]
    val = [(r["step"], r["val_loss"]) for r in rows if r.get("val_loss") is not None]
    if not train and not val:
        return None
    from matplotlib.figure import Figure

    fig = Figure(figsize=(7.5, 3.6))
    ax = fig.add_subplot()
    if train:
        ax.plot(*zip(*train), color=TRAIN_LOSS_COLOR, linewidth=2.5, label="train loss")
    if val:
        ax.plot(*zip(*val), color=VAL_LOSS_COLOR, linewidth=2, marker="o", label="validation loss")
        best = min(val, key=lambda p: p[1])
        ax.axvline(best[0], color=VAL_LOSS_COLOR, linestyle=":", linewidth=1, label=f"best val (step {best[0]})")
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.set_title("Loss")
    ax.grid(alpha=0.3)
    ax.legend()
    return fig


def lr_figure(rows: list[dict]) -> Figure | None:
    lr = [(r["step"], r["lr"]) for r in rows if r.get("lr") is not None]
    if not lr:
        return None
    from matplotlib.figure import Figure

    fig = Figure(figsize=(7.5, 2.6))
    ax = fig.add_subplot()
    ax.plot(*zip(*lr), color="#444444", linewidth=1.8)
    ax.set_xlabel("step")
    ax.set_ylabel("learning rate")
    ax.set_title("Learning rate")
    ax.ticklabel_format(axis="y", style="sci", scilimits=(-2, 2))
    ax.grid(alpha=0.3)
    return fig


def bar_values(models: dict) -> dict[str, dict[str, float]]:
    """{metric: {role: value on a 0-100 scale}} for metrics every role has on a bounded scale.

    Fractions are shown as percentages so BLEU/chrF (0-100) share the axis; unbounded ones (perplexity) are
    left to the table, where their scale does not squash the bars.
    """
    per_role = {role: scalar_metrics(m.get("metrics", {})) for role, m in models.items()}
    names = [k for k in next(iter(per_role.values()), {}) if all(k in v for v in per_role.values())]
    out = {}
    for k in names:
        vals = {role: v[k] for role, v in per_role.items()}
        if k in ALREADY_PERCENT and all(0 <= x <= 100 for x in vals.values()):
            out[k] = vals
        elif all(0 <= x <= 1 for x in vals.values()):
            out[k] = {role: 100 * x for role, x in vals.items()}
    return out


def metrics_figure(models: dict) -> Figure | None:
    vals = bar_values(models)
    if not vals:
        return None
    roles = [r for r in ("baseline", "tuned") if r in models] + [r for r in models if r not in ("baseline", "tuned")]
    from matplotlib.figure import Figure

    fig = Figure(figsize=(max(5.0, 1.1 * len(vals) + 2), 3.4))
    ax = fig.add_subplot()
    width = 0.8 / len(roles)
    for j, role in enumerate(roles):
        xs = [i + (j - (len(roles) - 1) / 2) * width for i in range(len(vals))]
        ys = [vals[k][role] for k in vals]
        bars = ax.bar(xs, ys, width, label=role, color=ROLE_COLORS.get(role))
        ax.bar_label(bars, fmt="%.1f", fontsize=7)
    ax.set_xticks(range(len(vals)), list(vals), rotation=20, ha="right")
    ax.set_ylabel("score (0-100)")
    ax.set_ylim(0, 105)
    ax.set_title("Metrics: baseline vs tuned" if "baseline" in models else "Metrics")
    ax.legend()
    return fig


def confusion_figure(models: dict) -> Figure | None:
    cms = [(role, m["metrics"]["confusion_matrix"]) for role, m in models.items()
           if isinstance(m.get("metrics", {}).get("confusion_matrix"), dict)]
    if not cms:
        return None
    from matplotlib.figure import Figure

    fig = Figure(figsize=(4.2 * len(cms), 3.9))
    for i, (role, cm) in enumerate(cms):
        ax = fig.add_subplot(1, len(cms), i + 1)
        labels, matrix = cm["labels"], cm["matrix"]
        ax.imshow(matrix, cmap="Blues")
        top = max((max(row) for row in matrix if row), default=0)
        for r, row in enumerate(matrix):
            for c, v in enumerate(row):
                ax.text(c, r, str(v), ha="center", va="center", color="white" if v > top / 2 else "black")
        ax.set_xticks(range(len(labels)), labels, rotation=30, ha="right")
        ax.set_yticks(range(len(labels)), labels)
        ax.set_xlabel("predicted")
        ax.set_ylabel("reference")
        ax.set_title(f"Confusion matrix ({role})")
    fig.tight_layout()
    return fig


def example_scores(result: dict, role: str = "tuned") -> list[float]:
    """Per-example score of `role`: 1/0 label match (classification) or ROUGE-L F1 with 1.0 for a
    normalised exact match (generation), so the ranking puts the most wrong answers first."""
    from tuneforge.eval.metrics import normalize_answer, rouge_each

    ex = result.get("examples", [])
    preds = [str(e.get(f"{role}_prediction", "")) for e in ex]
    refs = [str(e.get("reference", "")) for e in ex]
    if not ex:
        return []
    if result.get("task") == "classification":
        return [float(p.strip() == r.strip()) for p, r in zip(preds, refs)]
    rl = rouge_each(preds, refs)["rougeL"]
    return [1.0 if normalize_answer(p) == normalize_answer(r) else s for p, r, s in zip(preds, refs, rl)]


def worst_examples(result: dict, n: int = WORST_N) -> list[dict]:
    """The first n examples the tuned model got wrong, lowest score first (ties keep file order)."""
    scores = example_scores(result)
    wrong = [(s, i) for i, s in enumerate(scores) if s < 1.0]
    return [{**result["examples"][i], "score": s} for s, i in sorted(wrong)[:n]]


def _e(x) -> str:
    return html.escape("" if x is None else str(x))


def _fmt(v) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    if isinstance(v, list):
        return ", ".join(map(str, v))
    return str(v)


def _kv_table(title: str, items: list[tuple[str, object]]) -> str:
    rows = "".join(f"<tr><th>{_e(k)}</th><td>{_e(_fmt(v))}</td></tr>" for k, v in items if v is not None)
    return f'<div class="card"><h3>{_e(title)}</h3><table class="kv">{rows}</table></div>'


def _duration(seconds) -> str | None:
    if seconds is None:
        return None
    s = int(round(float(seconds)))
    return f"{s // 3600}h {s % 3600 // 60}m {s % 60}s" if s >= 3600 else f"{s // 60}m {s % 60}s"


def summary_html(cfg: dict, info: dict, data: dict) -> str:
    method = cfg.get("method") or info.get("method")
    run = [("base", cfg.get("base") or info.get("base")), ("method", method),
           ("steps", info.get("steps")), ("best step", info.get("best_step")),
           ("stopped early", info.get("stopped_early")), ("train time", _duration(info.get("train_seconds"))),
           ("train tokens", info.get("train_tokens")),
           ("trainable parameters", info.get("trainable_parameters")),
           ("total parameters", info.get("total_parameters")), ("labels", info.get("labels")),
           ("tuneforge", info.get("tuneforge_version"))]
    row = methods.METHODS.get(str(method))
    keys = HYPERPARAMETERS + (row.report_keys if row else ())
    hp = [(k, cfg.get(k)) for k in keys if k in cfg]
    counts = [("train examples", data.get("train_examples")), ("val examples", data.get("val_examples")),
              ("validation from", data.get("val_source")), ("split seed", data.get("split_seed")),
              ("truncated examples", data.get("truncated_examples")),
              ("dropped (no supervised tokens)", data.get("dropped_without_supervision")),
              ("train tokens (one epoch)", data.get("train_tokens")),
              ("supervised tokens (one epoch)", data.get("train_supervised_tokens"))]
    for f in data.get("files", []):
        counts.append((f"file {f.get('path')}", f"{f.get('examples')} examples, sha256 {str(f.get('sha256'))[:12]}"))
    return ('<div class="cards">' + _kv_table("Run", run) + _kv_table("Hyperparameters", hp)
            + _kv_table("Data", counts) + "</div>")


def eval_html(result: dict) -> str:
    models = result.get("models", {})
    roles = [r for r in ("baseline", "tuned") if r in models] + [r for r in models if r not in ("baseline", "tuned")]
    per_role = {r: scalar_metrics(models[r].get("metrics", {})) for r in roles}
    for r in roles:
        if models[r].get("mean_latency_s") is not None:
            per_role[r]["mean_latency_s"] = float(models[r]["mean_latency_s"])
    names = list(dict.fromkeys(k for r in roles for k in per_role[r]))
    delta = result.get("delta", {})
    head = "".join(f"<th>{_e(r)}<br><small>{_e(models[r].get('name'))}</small></th>" for r in roles)
    head += "<th>delta (95% CI)</th>" if delta else ""
    body = ""
    for k in names:
        cells = "".join(f"<td>{_e(_fmt(per_role[r].get(k, '')))}</td>" for r in roles)
        if delta:
            d = delta.get(k)
            cells += (f"<td>{d['delta']:+.4g} [{d['low']:+.4g}, {d['high']:+.4g}]</td>"
                      if isinstance(d, dict) and {"delta", "low", "high"} <= d.keys() else "<td></td>")
        body += f"<tr><th>{_e(k)}</th>{cells}</tr>"
    out = [f"<p>{_e(result.get('n_examples'))} examples from <code>{_e(result.get('data'))}</code> "
           f"(task: {_e(result.get('task'))}).</p>",
           f'<table class="grid"><tr><th>metric</th>{head}</tr>{body}</table>']
    pref = result.get("preference")
    if pref:  # a preference eval: DPO's implicit reward of the tuned model, the baseline as reference
        out.append(f"<p>Implicit reward (beta {_e(_fmt(pref.get('beta')))}, baseline as reference): preference "
                   f"accuracy {_e(_fmt(pref.get('reward_accuracy')))}, reward margin "
                   f"{_e(_fmt(pref.get('reward_margin')))}.</p>")
    for fig in (metrics_figure(models), confusion_figure(models)):
        if fig is not None:
            out.append(f'<div class="fig">{_png(fig)}</div>')
    if "tuned" in models:
        worst = worst_examples(result)
        out.append(f"<h3>Worst examples (tuned wrong; first {WORST_N}, lowest score first)</h3>")
        if not worst:
            out.append("<p>The tuned model got every example right.</p>")
        else:
            has_base = "baseline" in models
            cols = ["#", "where", "prompt", "reference"] + (["baseline"] if has_base else []) + ["tuned", "score"]
            rows = ""
            for i, w in enumerate(worst, 1):
                vals = [i, w.get("where"), w.get("prompt"), w.get("reference")]
                vals += ([w.get("baseline_prediction")] if has_base else []) + [w.get("tuned_prediction"),
                                                                                  f"{w['score']:.3f}"]
                rows += "<tr>" + "".join(f"<td>{_e(v)}</td>" for v in vals) + "</tr>"
            out.append('<table class="grid examples"><tr>' + "".join(f"<th>{c}</th>" for c in cols)
                       + f"</tr>{rows}</table>")
    return "\n".join(out)


CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:24px auto;max-width:1120px;
color:#222;padding:0 16px}
h1{margin-bottom:4px}h2{border-bottom:1px solid #ddd;padding-bottom:4px;margin-top:28px}
.sub{color:#666;margin-top:0}
.cards{display:flex;gap:16px;flex-wrap:wrap}.card{flex:1;min-width:300px}
.card h3{margin:8px 0}
table{border-collapse:collapse;font-size:13px}
table.kv th{text-align:left;font-weight:600;padding:2px 12px 2px 0;color:#555;vertical-align:top}
table.kv td{padding:2px 0;word-break:break-all}
table.grid{margin:8px 0}table.grid th,table.grid td{border:1px solid #ddd;padding:4px 8px;vertical-align:top}
table.grid th{background:#f6f6f6;text-align:left}
table.examples td{white-space:pre-wrap;max-width:320px;word-break:break-word}
.warn{background:#fff4e5;border:1px solid #f0a030;border-left:6px solid #f0a030;padding:10px 14px;
border-radius:4px;margin:16px 0}
.fig img{max-width:100%}
"""


def preference_figure(rows: list[dict]) -> Figure | None:
    """A preference run (objective dpo): reward margin and preference accuracy, train and validation."""
    series = {k: [(r["step"], r[k]) for r in rows if r.get(k) is not None]
              for k in ("reward_margin", "val_reward_margin", "accuracy", "val_accuracy")}
    if not series["reward_margin"] and not series["val_reward_margin"]:
        return None
    from matplotlib.figure import Figure

    fig = Figure(figsize=(7.5, 3.6))
    margin, acc = fig.add_subplot(1, 2, 1), fig.add_subplot(1, 2, 2)
    for ax, (tr, va), title in ((margin, ("reward_margin", "val_reward_margin"), "Reward margin"),
                                (acc, ("accuracy", "val_accuracy"), "Preference accuracy")):
        if series[tr]:
            ax.plot(*zip(*series[tr]), color=TRAIN_LOSS_COLOR, linewidth=2, label="train")
        if series[va]:
            ax.plot(*zip(*series[va]), color=VAL_LOSS_COLOR, linewidth=2, marker="o", label="validation")
        ax.set_xlabel("step")
        ax.set_title(title)
        ax.grid(alpha=0.3)
        ax.legend()
    acc.set_ylim(-0.02, 1.02)
    return fig


def render_report(run_dir: str | Path) -> str:
    """The report as an HTML string (write_report writes it)."""
    run = read_run(run_dir)
    p = run.path
    rows = read_metrics(p)
    data = json.loads((p / "data.json").read_text()) if (p / "data.json").is_file() else {}
    name = run_name(p)
    parts = [f"<h1>Run report: {_e(name)}</h1>",
             f'<p class="sub">{_e(run.config.get("method") or run.info.get("method"))} on '
             f'<code>{_e(run.config.get("base") or run.info.get("base"))}</code> &middot; <code>{_e(p)}</code></p>']
    warning = overfitting_signal(rows, early_stopping=bool(run.config.get("early_stopping_patience")))
    if warning:
        parts.append(f'<div class="warn" id="overfitting"><b>Warning.</b> {_e(warning)}</div>')
    parts += ["<h2>Summary</h2>", summary_html(run.config, run.info, data), "<h2>Training curves</h2>"]
    figs = [f for f in (loss_figure(rows), preference_figure(rows), lr_figure(rows)) if f is not None]
    parts += [f'<div class="fig">{_png(f)}</div>' for f in figs] or ["<p>No metrics logged (metrics.jsonl).</p>"]
    if (p / "eval.json").is_file():
        parts += ["<h2>Evaluation</h2>", eval_html(json.loads((p / "eval.json").read_text()))]
    else:
        parts += ["<h2>Evaluation</h2>", f"<p>No eval.json yet: run <code>tuneforge eval {_e(p)}</code>.</p>"]
    return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>{_e(name)} - tuneforge report'
            f'</title><style>{CSS}</style></head><body>\n' + "\n".join(parts) + "\n</body></html>\n")


def write_report(run_dir: str | Path) -> Path:
    """Write RUN/report.html (atomically, so a browser never shows half a file) and return its path."""
    out = Path(run_dir) / "report.html"
    write_atomic_text(out, render_report(run_dir))
    return out
