"""The learning-rate schedule: a factor of the peak rate per optimizer step.

linear / cosine decay to zero at the planned last step (cosine is what `auto` picks when validation decides the
length, see train/auto.py); constant keeps the peak. plateau (DPO's and GRPO's) is warm-up, then the peak times
`LoopState.lr_scale`, which early_stop.after_evaluation halves at each evaluation without progress: the rate
falls when learning stalls, not at a step count the run may never reach. Its warm-up counts against the first
WARMUP_HORIZON_EPOCHS passes rather than the whole cap, so a generous cap does not mean a long warm-up. Every
schedule is multiplied by early_stop.anneal_factor: 1 until validation starts a decay to zero (patience used up
at a high rate), then that decay.

Measured on the defaults bench (bench/RESULTS.md, "Defaults, issue 23"): see the README's defaults section.
"""

from __future__ import annotations

import math
from typing import Callable

import torch

from tuneforge.config import TrainConfig

WARMUP_HORIZON_EPOCHS = 3  # plateau: warmup_ratio of (at most) this many passes' steps


def warmup_steps(cfg: TrainConfig, total: int, steps_per_epoch: int | None = None) -> int:
    """Warm-up length: warmup_steps if set, else warmup_ratio of the total (plateau: of the first
    WARMUP_HORIZON_EPOCHS passes, when steps_per_epoch is known)."""
    if cfg.warmup_steps:
        return cfg.warmup_steps
    horizon = total
    if cfg.lr_scheduler_type == "plateau" and steps_per_epoch:
        horizon = min(total, WARMUP_HORIZON_EPOCHS * steps_per_epoch)
    return math.ceil(cfg.warmup_ratio * horizon)


def lr_factor(kind: str, step: int, warm: int, total: int, scale: float = 1.0) -> float:
    """The multiplier of the peak rate for the optimizer step after `step` steps have been taken."""
    if step < warm:
        return (step + 1) / (warm + 1) * (scale if kind == "plateau" else 1.0)
    if kind == "constant":
        return 1.0
    if kind == "plateau":
        return scale
    frac = (step - warm) / max(1, total - warm)
    return max(0.0, 1 - frac) if kind == "linear" else 0.5 * (1 + math.cos(math.pi * frac))


def make_scheduler(opt, cfg: TrainConfig, total: int, steps_per_epoch: int | None = None,
                   scale: Callable[[], float] = lambda: 1.0, anneal: Callable[[int], float] = lambda step: 1.0):
    """A LambdaLR over `lr_factor` times `anneal(step)`; `scale()` and `anneal` are read at every step (the loop's
    LoopState.lr_scale and its decay on stop, early_stop.anneal_factor), so a resumed run, whose LoopState comes
    from the checkpoint, continues at the rate it had reached."""
    kind = cfg.lr_scheduler_type if cfg.lr_scheduler_type != "auto" else "linear"
    warm = warmup_steps(cfg, total, steps_per_epoch)
    return torch.optim.lr_scheduler.LambdaLR(
        opt, lambda step: lr_factor(kind, step, warm, total, scale()) * anneal(step))


def refresh(sched) -> None:
    """Apply a changed scale now (the next optimizer step), not one step later at the next `sched.step()`."""
    lrs = [base * fn(sched.last_epoch) for base, fn in zip(sched.base_lrs, sched.lr_lambdas)]
    for group, lr in zip(sched.optimizer.param_groups, lrs):
        group["lr"] = lr
    sched._last_lr = lrs
