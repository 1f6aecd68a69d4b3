"""Size-aware defaults: the values `train` picks for settings left at "auto", each with the reason it prints.

- `num_train_epochs`: a generous cap, and validation decides when to stop. CAP_EPOCHS passes (the middle of the
  guide's 3-10), raised on small sets so the run can take at least MIN_STEPS optimizer steps (at most MAX_EPOCHS
  passes), lowered on large sets to about MAX_EXAMPLES examples (never under one pass). Early stopping
  (train/early_stop.py) ends the run when validation loss and the validation exact match have both stopped
  improving and keeps the best weights, so the cap only bounds the cost. Issue 23: the earlier 1.5-pass rule
  undertrained unseen tasks (0.70 exact match where 3 passes gave 0.83); with validation in charge the schedule
  can afford to be generous. Without a validation set nothing can stop the run, so it gets NO_VAL_EPOCHS (the
  guide's low end).
  An objective may set its own cap (`Objective.cap_epochs`: GRPO makes one pass over its prompts).
- `lr_scheduler_type`: "cosine" when validation decides the length (epochs auto): warm-up, then a cosine decay
  towards the epoch cap, while early stopping ends the run and keeps the best weights. Measured against "plateau"
  (a constant rate halved at each evaluation without progress) and "linear" on four tasks (bench/defaults.py,
  bench/RESULTS.md "Defaults, issue 23"): the cosine keeps the rate near its peak through the first passes, where
  the small tasks still learn, and anneals it later, where the plateau rule's halvings (triggered by 15-20 row
  validation sets that move in coarse steps) either came too early (clock 0.18 vs 0.73) or left the rate high
  (sentiment 0.94 vs 0.997). With explicit epochs or max_steps the length is known: "linear" (the guide's).
  An objective may keep its own (`Objective.lr_scheduler`: DPO and GRPO keep "plateau", on which their no-flag
  results were measured).
- `eval_steps` 0: EVALS_PER_EPOCH evaluations per pass, at least every MIN_EVAL_EVERY steps, so a stop after
  `early_stopping_patience` flat evaluations comes within about one pass of the best.
- `learning_rate` from the method and the base model's size (the method's row: `methods.METHODS[m].learning_rates`,
  e.g. LoRA/QLoRA 2e-3 under 0.5B parameters), times `learning_rate_multiplier` (1 unless a jobs-API request sets it).
- `temperature` (objectives that sample while training: GRPO) from the base's size: the objective's table
  (`Objective.temperatures`: 0.5 under 0.5B parameters, else 1.0; evidence in bench/rl_signal.py).
- `method` from the base's size and free memory: `methods.choose` (lora, else qlora).

Evidence for the numbers: `python bench/defaults.py` (tasks, sweep and table in bench/RESULTS.md, "Defaults").
Explicit values always win: only fields still "auto" are resolved, and config.yaml records the resolved values,
so a resumed run repeats exactly what ran.
"""

from __future__ import annotations

import math

from tuneforge import methods
from tuneforge.train import objectives
from tuneforge.config import AUTO, TrainConfig

CAP_EPOCHS = 6  # the cap validation stops within: 2x the guide's usual 3, inside its 3-10
MIN_STEPS = 60  # optimizer steps a small set may take at least (validation usually stops it sooner)
MAX_EPOCHS = 10  # ... but never more passes than this (the guide's upper end)
MAX_EXAMPLES = 50_000  # large sets: at most about this many examples (2x OpenAI's 25,000 anchor), at least one pass
NO_VAL_EPOCHS = 3  # no validation set: nothing stops the run early, so the guide's low end
EVALS_PER_EPOCH = 4  # eval_steps 0: validate this often per pass (patience 3 = stop within ~3/4 pass of flat)
MIN_EVAL_EVERY = 5  # ... but not more often than every this many optimizer steps (tiny sets: cost, noise)


def _params(n: int) -> str:
    if n >= 1e9:
        return f"{n / 1e9:.1f}B"
    return f"{n / 1e6:.0f}M" if n >= 1e6 else f"{n / 1e3:.0f}K"


def learning_rate(method: str, n_params: int) -> tuple[float, str]:
    """(peak learning rate, reason) for a method on a base of n_params parameters: the method row's table."""
    row = methods.get(method)
    lr = next(rate for bound, rate in row.learning_rates if n_params < bound)
    return lr, f"learning_rate {lr:g} (auto): " + row.learning_rate_reason.format(method=method,
                                                                                  params=_params(n_params))


def steps_per_epoch(n_train: int, batch: int, accum: int, world: int = 1) -> int:
    """Optimizer steps in one pass; the same arithmetic as `recipe.schedule` (world = training processes)."""
    return max(1, math.ceil(n_train / batch) // (accum * world))


def eval_interval(steps_per_epoch: int) -> int:
    """Optimizer steps between validations when eval_steps is 0 (see the module docstring)."""
    return max(1, min(steps_per_epoch, max(MIN_EVAL_EVERY, math.ceil(steps_per_epoch / EVALS_PER_EPOCH))))


def epochs(n_train: int, batch: int, accum: int, world: int = 1, *, validated: bool = True,
           cap: float | None = None, cap_why: str = "") -> tuple[float, str]:
    """(epochs, reason) for a training set of n_train examples at batch x accum x world examples per step.
    `validated`: a validation set with early stopping decides the length (the result is a cap), else a fixed
    NO_VAL_EPOCHS (never above the cap). `cap`/`cap_why`: an objective's own cap (Objective.cap_epochs); None =
    CAP_EPOCHS."""
    if cap is None:
        cap, cap_why = CAP_EPOCHS, f"a cap of {CAP_EPOCHS:g} epochs (the guide's 3-10)"
    spe = steps_per_epoch(n_train, batch, accum, world)
    how = f"{n_train} training examples = {spe} steps/epoch at {batch * accum * world} examples/step"
    if not validated:
        fixed = min(NO_VAL_EPOCHS, cap)
        return fixed, (f"num_train_epochs {fixed:g} (auto) = {math.ceil(fixed * spe)} steps: {how}; no "
                       "validation set (or early stopping off), so nothing can end the run early: "
                       + ("the guide's low end" if fixed == NO_VAL_EPOCHS else cap_why)
                       + "; --num_train_epochs or --max_steps to override")
    if cap * spe < MIN_STEPS:
        want = math.ceil(MIN_STEPS / spe * 100) / 100  # hundredths of an epoch: at least MIN_STEPS steps
        ep = min(MAX_EPOCHS, want)
        why = (f"small set: at least {MIN_STEPS} optimizer steps" if want <= MAX_EPOCHS else
               f"small set: at most {MAX_EPOCHS} epochs (fewer than {MIN_STEPS} steps; add data if it underfits)")
    elif n_train * cap > MAX_EXAMPLES:
        ep = max(1.0, math.floor(MAX_EXAMPLES / n_train * 100) / 100)
        why = f"large set: about {MAX_EXAMPLES:,} examples seen" if ep > 1 else "large set: one pass"
    else:
        ep, why = cap, cap_why
    ep = int(ep) if float(ep).is_integer() else ep
    return ep, (f"num_train_epochs {ep:g} (auto) = at most {math.ceil(ep * spe)} steps: {how}; {why}; validation "
                "decides when to stop (early stopping keeps the best weights); --num_train_epochs or --max_steps "
                "to override")


def lr_scheduler(epochs_auto: bool, validated: bool, objective: "objectives.Objective | None" = None
                 ) -> tuple[str, str]:
    """(lr_scheduler_type, reason): "cosine" to the cap when validation decides the length (or the objective's
    own `lr_scheduler`), else "linear" (see the module docstring)."""
    if epochs_auto and validated and objective is not None and objective.lr_scheduler:
        return objective.lr_scheduler, (f"lr_scheduler_type {objective.lr_scheduler} (auto): objective "
                                        f"{objective.name}: {objective.lr_scheduler_reason}; --lr_scheduler_type "
                                        "to override")
    if epochs_auto and validated:
        return "cosine", ("lr_scheduler_type cosine (auto): warm-up, then a cosine decay towards the epoch cap; "
                          "validation stops the run earlier when it stops improving and keeps the best weights; "
                          "--lr_scheduler_type to override")
    return "linear", ("lr_scheduler_type linear (auto): the run's length is fixed, so the rate decays linearly "
                      "to it after warm-up; --lr_scheduler_type to override")


def resolve(cfg: TrainConfig, *, n_train: int, n_params: int, world: int = 1, n_val: int | None = None
            ) -> dict[str, str]:
    """Replace cfg's "auto" learning rate, epochs and scheduler in place (cfg.method must be resolved already);
    returns {field: reason} for each value it chose. `n_val`: validation examples (None: unknown, assumed
    present); with none, or early stopping off, the epochs are not a cap and the schedule is linear."""
    why = {}
    validated = (n_val is None or n_val > 0) and cfg.early_stopping_patience > 0
    epochs_auto = cfg.num_train_epochs == AUTO and cfg.max_steps <= 0
    objective = objectives.get(cfg.objective)
    if cfg.learning_rate == AUTO:
        lr, reason = learning_rate(cfg.method, n_params)
        if objective.learning_rate_scale != 1:
            base, lr = lr, lr * objective.learning_rate_scale
            reason = reason.replace(f"learning_rate {base:g} (auto)", f"learning_rate {lr:g} (auto: {base:g} x "
                                    f"{objective.learning_rate_scale:g}, {objective.learning_rate_scale_reason})")
        if cfg.learning_rate_multiplier != 1:
            lr *= cfg.learning_rate_multiplier
            reason = reason.replace(" (auto)", f" (auto x{cfg.learning_rate_multiplier:g} learning_rate_multiplier)")
        cfg.learning_rate, why["learning_rate"] = lr, reason
    if cfg.num_train_epochs == AUTO:
        items = objective.items_per_micro_batch(cfg)  # GRPO: prompts, not answers
        if cfg.max_steps > 0:  # max_steps decides the length; record the epochs it amounts to
            cfg.num_train_epochs = round(cfg.max_steps / steps_per_epoch(
                n_train, items, cfg.gradient_accumulation_steps, world), 4) or 1
        else:
            cfg.num_train_epochs, why["num_train_epochs"] = epochs(
                n_train, items, cfg.gradient_accumulation_steps, world, validated=validated,
                cap=objective.cap_epochs, cap_why=objective.cap_epochs_reason)
    if cfg.lr_scheduler_type == AUTO:
        cfg.lr_scheduler_type, why["lr_scheduler_type"] = lr_scheduler(epochs_auto, validated, objective)
    if cfg.temperature == AUTO:
        if objective.temperatures is None:  # not used by this objective: a plain value, nothing to say
            cfg.temperature = 1.0
        else:
            _, cfg.temperature, because = next(row for row in objective.temperatures if n_params < row[0])
            why["temperature"] = (f"temperature {cfg.temperature:g} (auto): objective {objective.name} on a "
                                  f"{_params(n_params)}-parameter base: {because}; --temperature to override")
    return why
