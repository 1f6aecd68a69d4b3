"""The runs registry: list, show and diff run directories (config, data hashes, git commit, metrics, artifacts).

Reads only what runs wrote (config.yaml, data.json, metrics.jsonl, run.json, eval.json); `tuneforge runs list|show|diff`.
`runs show` names a run's parent and lineage (runs made with `train --from`).
"""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path

from tuneforge.errors import TuneforgeError
from tuneforge.run import read_config, read_json, read_metrics, record_git_commit, run_status, scalar_metrics

HASH_PREFIX = 12
ARTIFACTS = ("adapter/", "model/", "checkpoints/", "eval.json", "report.html", "README.md")
# keys that always differ between runs and say nothing about how they were trained
DIFF_IGNORE = {"output"}
# the headline eval metric per task, shown in the `ls` table
HEADLINE = ("accuracy", "exact_match_normalized", "exact_match", "rougeL")


def _created(run: Path, info: dict) -> str:
    if info.get("created"):
        return str(info["created"])
    times = [f.stat().st_mtime for f in (run / "config.yaml", run / "data.json", run / "run.json") if f.is_file()]
    ts = min(times) if times else run.stat().st_mtime
    return datetime.fromtimestamp(ts, timezone.utc).astimezone().isoformat(timespec="seconds")


def metrics_summary(rows: list[dict], info: dict | None = None) -> dict:
    """What the loop logged, boiled down: final/min train loss, best val loss and its step, throughput."""
    info = info or {}
    train = [r for r in rows if r.get("loss") is not None]
    evals = [r for r in rows if r.get("val_loss") is not None]
    best = min(evals, key=lambda r: r["val_loss"]) if evals else None
    tps = [r["tokens_per_s"] for r in train if r.get("tokens_per_s")]
    out = {"logged_steps": len(train), "evaluations": len(evals),
           "last_step": max((r["step"] for r in rows), default=None),
           "final_train_loss": train[-1]["loss"] if train else None,
           "min_train_loss": min(r["loss"] for r in train) if train else None,
           "best_val_loss": info.get("results", {}).get("best_val_loss", best["val_loss"] if best else None),
           "best_val_step": info.get("best_step", best["step"] if best else None),
           "final_val_loss": evals[-1]["val_loss"] if evals else None,
           "mean_tokens_per_s": sum(tps) / len(tps) if tps else None,
           "train_seconds": info.get("train_seconds")}
    return out


def _eval_metrics(run: Path) -> dict[str, dict[str, float]]:
    """{role: scalar metrics} from eval.json (confusion matrices and per-label tables left out)."""
    result = read_json(run / "eval.json")
    return {role: scalar_metrics(m.get("metrics", {})) for role, m in result.get("models", {}).items()}


def _data_hashes(data: dict) -> list[dict]:
    return [{"path": f.get("path"), "sha256": f.get("sha256"), "examples": f.get("examples")}
            for f in data.get("files", [])]


def _git(run: Path, info: dict, cache: dict | None = None) -> tuple[str | None, bool]:
    """(commit, recorded): the commit stored at creation if any, else today's HEAD of the enclosing tree."""
    if info.get("git_commit"):
        return info["git_commit"], True
    parent = run.resolve().parent
    if cache is not None and parent in cache:
        return cache[parent], False
    commit = record_git_commit(run)
    if cache is not None:
        cache[parent] = commit
    return commit, False


def _row(run: Path, git_cache: dict) -> dict:
    info, cfg = read_json(run / "run.json"), read_config(run)
    data = read_json(run / "data.json")
    commit, recorded = _git(run, info, git_cache)
    summary = metrics_summary(read_metrics(run), info)
    return {"id": run.name, "path": str(run), "created": _created(run, info),
            "status": run_status(run),
            "base": cfg.get("base", info.get("base")), "method": cfg.get("method", info.get("method")),
            "data": [str(f["sha256"])[:HASH_PREFIX] for f in _data_hashes(data) if f.get("sha256")],
            "git_commit": commit, "git_commit_recorded": recorded,
            "best_val_loss": summary["best_val_loss"], "eval": _eval_metrics(run).get("tuned", {})}


def list_runs(root: str | Path = "runs") -> list[dict]:
    """One row per run directory under root (oldest first); a missing root is an empty registry."""
    r = Path(root)
    if not r.is_dir():
        return []
    cache: dict = {}
    rows = [_row(d, cache) for d in sorted(r.iterdir()) if d.is_dir() and run_status(d)]
    return sorted(rows, key=lambda x: (x["created"], x["id"]))


def estimate_vs_actual(run: Path, info: dict) -> dict | None:
    """The estimate `tuneforge cost` made for this plan (RUN/estimate.json, recorded by `train`) beside what
    the run took: {figure: {estimate, actual, ratio = actual / estimate}}; None without an estimate."""
    est = read_json(run / "estimate.json")
    if not est:
        return None
    pairs = {"train_seconds": (est.get("train_seconds"), info.get("train_seconds")),
             "steps": (est.get("steps"), info.get("steps")),
             "train_tokens": ((est.get("tokens") or {}).get("train_tokens"), info.get("train_tokens"))}
    out: dict = {"hardware": est.get("hardware"), "made": est.get("made"), "time_source": est.get("time_source")}
    for k, (e, a) in pairs.items():
        out[k] = {"estimate": e, "actual": a,
                  "ratio": round(a / e, 3) if _comparable(e) and _comparable(a) and e else None}
    if info.get("stopped_early"):
        out["note"] = "the run stopped early; the estimate assumed every planned step"
    return out


def show_run(path: str | Path) -> dict:
    """Everything the registry knows about one run."""
    run = Path(path)
    if not run_status(run):
        raise TuneforgeError(f"{run}: not a tuneforge run directory (no run.json or config.yaml)")
    info, data = read_json(run / "run.json"), read_json(run / "data.json")
    commit, recorded = _git(run, info)
    return {"id": run.name, "path": str(run), "created": _created(run, info),
            "status": run_status(run),
            "config": read_config(run), "info": info, "data": _data_hashes(data),
            "data_counts": {k: v for k, v in data.items() if k != "files"},
            "git_commit": commit, "git_commit_recorded": recorded,
            "parent": (info.get("parent") or {}).get("path"), "lineage": lineage(run),
            "metrics": metrics_summary(read_metrics(run), info), "eval": _eval_metrics(run),
            "estimate": estimate_vs_actual(run, info),
            "artifacts": {a: (run / a.rstrip("/")).is_dir() if a.endswith("/") else (run / a).is_file()
                          for a in ARTIFACTS}}


def lineage(run: str | Path) -> list[str]:
    """The runs this one continued from (`train --from`), parent first, as recorded in each run.json."""
    chain, seen = [], {Path(run).resolve()}
    parent = (read_json(Path(run) / "run.json").get("parent") or {}).get("path")
    while parent and Path(parent).resolve() not in seen:
        chain.append(parent)
        seen.add(Path(parent).resolve())
        parent = (read_json(Path(parent) / "run.json").get("parent") or {}).get("path")
    return chain


def _comparable(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def diff_runs(a: str | Path, b: str | Path) -> dict:
    """What differs between two runs: hyperparameters {key: (a, b)}, metrics {key: {a, b, delta}}, data."""
    ra, rb = show_run(a), show_run(b)
    ca, cb = ra["config"], rb["config"]
    hp = {k: (ca.get(k), cb.get(k)) for k in sorted(set(ca) | set(cb))
          if k not in DIFF_IGNORE and ca.get(k) != cb.get(k)}
    flat = lambda r: {**{k: v for k, v in r["metrics"].items() if _comparable(v)},  # noqa: E731
                      **{f"eval.{role}.{k}": v for role, m in r["eval"].items() for k, v in m.items()}}
    ma, mb = flat(ra), flat(rb)
    metrics = {}
    for k in sorted(set(ma) | set(mb)):
        va, vb = ma.get(k), mb.get(k)
        if va != vb:
            metrics[k] = {"a": va, "b": vb, "delta": vb - va if _comparable(va) and _comparable(vb) else None}
    ha, hb = [f["sha256"] for f in ra["data"]], [f["sha256"] for f in rb["data"]]
    return {"a": ra["id"], "b": rb["id"], "hyperparameters": hp, "metrics": metrics,
            "data_equal": ha == hb, "data": {"a": [h[:HASH_PREFIX] for h in ha if h],
                                            "b": [h[:HASH_PREFIX] for h in hb if h]},
            "git_commit": {"a": ra["git_commit"], "b": rb["git_commit"]}}


def _num(v, digits: int = 4) -> str:
    if v is None:
        return "-"
    return f"{v:.{digits}g}" if isinstance(v, float) else str(v)


def _headline(ev: dict) -> str:
    for k in HEADLINE:
        if k in ev:
            return f"{k}={ev[k]:.3g}"
    return "-"


def format_table(rows: list[dict]) -> str:
    """Plain fixed-width table (reads the same in a terminal, a log file or a pasted issue)."""
    if not rows:
        return "no runs found"
    cols = ["id", "created", "status", "method", "base", "best_val", "eval", "data", "commit"]
    body = [[r["id"], str(r["created"])[:19].replace("T", " "), r["status"], str(r["method"] or "-"),
             str(r["base"] or "-"), _num(r["best_val_loss"]), _headline(r["eval"]), ",".join(r["data"]) or "-",
             (r["git_commit"] or "-")[:10] + ("" if r["git_commit_recorded"] or not r["git_commit"] else "*")]
            for r in rows]
    widths = [max(len(c), *(len(b[i]) for b in body)) for i, c in enumerate(cols)]
    line = lambda vals: "  ".join(v.ljust(w) for v, w in zip(vals, widths)).rstrip()  # noqa: E731
    out = [line(cols), line(["-" * w for w in widths])] + [line(b) for b in body]
    if any(r["git_commit"] and not r["git_commit_recorded"] for r in rows):
        out.append("* commit is today's HEAD of the enclosing repository (not recorded when the run was made)")
    return "\n".join(out)


def format_diff(d: dict) -> str:
    out = [f"a: {d['a']}", f"b: {d['b']}", ""]
    out.append("hyperparameters:" if d["hyperparameters"] else "hyperparameters: identical")
    out += [f"  {k}: {_num(va)} -> {_num(vb)}" for k, (va, vb) in d["hyperparameters"].items()]
    out.append("metrics:" if d["metrics"] else "metrics: identical")
    for k, m in d["metrics"].items():
        delta = f" ({m['delta']:+.4g})" if m["delta"] is not None else ""
        out.append(f"  {k}: {_num(m['a'])} -> {_num(m['b'])}{delta}")
    out.append("data: same files" if d["data_equal"] else
               f"data: DIFFERENT ({','.join(d['data']['a']) or '-'} vs {','.join(d['data']['b']) or '-'})")
    ga, gb = d["git_commit"]["a"], d["git_commit"]["b"]
    if ga != gb:
        out.append(f"git commit: {(ga or '-')[:10]} -> {(gb or '-')[:10]}")
    return "\n".join(out)
