"""`tuneforge eval RUN --data rl.jsonl` on RL rows: the grader's mean score of the run's answers vs the base's,
with bootstrap CIs and the paired delta (the same held-out prompts answered by both, greedy by default).

The grader is `--grader FILE`, else the run's own (`grader` in its config.yaml). Answers are generated with the
harness (the saved chat template), stripped, and graded exactly as in training (`graders.sample_from_text`).
"""

from __future__ import annotations

from pathlib import Path

from tuneforge.errors import ConfigError
from tuneforge.eval.metrics import bootstrap_ci, bootstrap_delta
from tuneforge.graders import build, load, sample_from_text, summarize


def grader_of(target: str, grader: str | None) -> str:
    if grader:
        return grader
    from tuneforge.run import is_run, read_config

    if is_run(target):
        g = read_config(target).get("grader")
        if g:
            return g
    raise ConfigError("eval on RL rows needs a grader: --grader grader.json (or a run trained with one)")


def evaluate_rl(target: str, data: str, *, grader: str | None = None, baseline: str | None = "base",
                max_new_tokens: int = 128, batch_size: int = 16, limit: int | None = None,
                temperature: float = 0.0, judge=None) -> dict:
    """{"task": "reinforcement", "grader", "n", "models": {name: {"mean", "low", "high", "errors"}},
    "delta": tuned - baseline with its CI, "examples": [...]}."""
    import torch

    from tuneforge.data.formats import REINFORCEMENT
    from tuneforge.data.load import load_samples
    from tuneforge.eval.harness import base_of, generate, load_for_inference

    rows = load_samples(data, REINFORCEMENT)[:limit]
    path = grader_of(target, grader)
    items = [s.extra.get("item", {}) for s in rows]
    models = {"tuned": target}
    if baseline:
        models = {"baseline": base_of(target) if baseline == "base" else baseline, **models}
    out: dict = {"task": "reinforcement", "grader": str(path), "data": str(data), "n": len(rows), "models": {},
                 "examples": []}
    scores: dict[str, list[float]] = {}
    answers: dict[str, list[str]] = {}
    with build(load(path), judge=judge) as g:
        for name, m in models.items():
            torch.manual_seed(0)
            loaded = load_for_inference(m)
            texts, _ = generate(loaded, [s.prompt_messages for s in rows], max_new_tokens=max_new_tokens,
                                batch_size=batch_size, do_sample=temperature > 0, temperature=temperature or 1.0)
            texts = [t.strip() for t in texts]
            res = g.grade([sample_from_text(t) for t in texts], items)
            scores[name], answers[name] = [r.score for r in res], texts
            out["models"][name] = {"model": str(m), **bootstrap_ci(scores[name]),
                                   "errors": summarize(res)["errors"]}
            del loaded
    if "baseline" in scores:
        out["delta"] = bootstrap_delta(scores["baseline"], scores["tuned"])
    for i, s in enumerate(rows[:20]):
        out["examples"].append({"where": s.where, "prompt": s.prompt_messages[-1]["content"],
                                **{f"{k}_answer": answers[k][i] for k in answers},
                                **{f"{k}_score": scores[k][i] for k in scores}})
    return out


def render(res: dict) -> str:
    lines = [f"{res['data']}: {res['n']} prompts, grader {res['grader']}"]
    for name, m in res["models"].items():
        err = ", ".join(f"{k} {v}" for k, v in m["errors"].items()) or "none"
        lines.append(f"  {name:8s} mean score {m['mean']:.4f}  95% CI [{m['low']:.4f}, {m['high']:.4f}]  "
                     f"({m['model']}; grader errors: {err})")
    if "delta" in res:
        d = res["delta"]
        lines.append(f"  tuned - baseline: {d['delta']:+.4f}  95% CI [{d['low']:+.4f}, {d['high']:+.4f}]")
    return "\n".join(lines)


def is_rl_file(data: str | Path) -> bool:
    from tuneforge.data.load import scan

    return scan(data).main_format == "reinforcement"
