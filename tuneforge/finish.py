"""Finishing a run: what every producer of runs calls once training is done.

`train.recipe.train` ends with the weights, run.json and the model card, but training may not import eval (the
report) and knows nothing of estimates; the CLI's `train`, the jobs worker, `optimize distill`/`prune` and each
`train --cv` fold all call `finish_run`, so every run directory has the same files whoever made it:
report.html, README.md (the model card, re-rendered from the final run.json: producers add keys after training,
e.g. `distilled_from`) and, when `tuneforge cost` estimated this exact plan on this machine, estimate.json.

Remembered estimates live here (not in advise, which is above this layer): `tuneforge cost` stores them under
`$TUNEFORGE_HOME/estimates/PLAN_KEY.json` with `remember`; the recipe records the plan key (`config.plan_key`)
in data.json, and `attach_estimate` copies the matching estimate into the run.
"""

from __future__ import annotations

from pathlib import Path

from tuneforge.run import model_card, read_json, read_run, write_atomic_text, write_json


def estimates_dir() -> Path:
    from tuneforge.paths import home

    return home() / "estimates"


def remember(est: dict) -> Path | None:
    """Keep an estimate made on this machine under $TUNEFORGE_HOME/estimates/PLAN_KEY.json."""
    if est.get("hardware") != "cpu":
        return None  # a GPU estimate cannot be checked against a run on this machine
    d = estimates_dir()
    d.mkdir(parents=True, exist_ok=True)
    return write_json(d / f"{est['plan_key']}.json", est)


def attach_estimate(run_dir: str | Path, key: str | None = None) -> Path | None:
    """Copy the remembered estimate for this run's plan (`key`, default the plan key in data.json) into
    RUN/estimate.json (`runs show` prints it beside the actual figures); None when `tuneforge cost` was not run
    for this exact plan."""
    run_dir = Path(run_dir)
    key = key or read_json(run_dir / "data.json").get("plan_key")
    f = estimates_dir() / f"{key}.json"
    if not key or not f.is_file() or not run_dir.is_dir():
        return None
    return write_json(run_dir / "estimate.json", read_json(f))


def finish_run(run_dir: str | Path) -> dict[str, Path]:
    """Write a finished run's estimate.json (when one was remembered), model card and report.html; returns
    {file: path} of what it wrote. Call it on the process that wrote the run (rank 0)."""
    from tuneforge.eval.report import write_report

    run = read_run(run_dir)  # a clear error when the run is not finished
    wrote = {}
    est = attach_estimate(run.path)
    if est is not None:
        wrote["estimate.json"] = est
    card = run.path / "README.md"
    write_atomic_text(card, model_card(run.config, run.info, read_json(run.path / "data.json")))
    wrote["README.md"] = card
    wrote["report.html"] = write_report(run.path)
    return wrote
