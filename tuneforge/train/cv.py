"""K-fold cross-validation: the same recipe once per fold, then mean ± std of the validation metrics.

CLI: `tuneforge train --data F --output RUN --cv 5` writes RUN/fold-1..K (full runs) and RUN/cv.json.
"""

from __future__ import annotations

import json
import statistics
import sys
from pathlib import Path

from tuneforge.config import TrainConfig
from tuneforge.data.load import load_samples
from tuneforge.data.split import kfold_indices
from tuneforge.data.formats import near_key
from tuneforge.errors import ConfigError, TuneforgeError
from tuneforge.run import write_atomic_text
from tuneforge.train.recipe import prepare, train


def cross_validate(cfg: TrainConfig, k: int, *, progress: bool = True) -> dict:
    if k < 2:
        raise ConfigError(f"--cv {k}: need at least 2 folds")
    if cfg.val_data:
        raise ConfigError("--cv splits --data into folds itself; drop val_data")
    out = Path(cfg.output or "")
    if not cfg.output:
        raise ConfigError("config: 'output' is required (--output RUN_DIR)")
    if out.exists() and any(out.iterdir()):
        raise TuneforgeError(f"{out}: output directory exists and is not empty")
    samples = load_samples(cfg.data)
    labels = [s.label for s in samples]
    strat = labels if all(x is not None for x in labels) else None
    try:
        folds = kfold_indices([near_key(s) for s in samples], k, seed=cfg.seed, stratify=strat)
    except ValueError as e:
        raise ConfigError(f"--cv {k}: {e}") from None
    results = []
    for n, (tr, va) in enumerate(folds, 1):
        fold_cfg = cfg.model_copy(update={"output": str(out / f"fold-{n}")})
        print(f"tuneforge: fold {n}/{k}: {len(tr)} train / {len(va)} val", file=sys.stderr)
        p = prepare(fold_cfg, split=([samples[i] for i in tr], [samples[i] for i in va]))
        run = train(fold_cfg, progress=progress, prepared=p)
        info = json.loads((run / "run.json").read_text())
        results.append({"fold": n, "run": str(run), **info["results"]})
    vals = [r["best_val_loss"] for r in results if r.get("best_val_loss") is not None]
    summary = {"k": k, "folds": results, "val_loss_mean": statistics.fmean(vals),
               "val_loss_std": statistics.stdev(vals) if len(vals) > 1 else 0.0}
    write_atomic_text(out / "cv.json", json.dumps(summary, indent=1))
    return summary
