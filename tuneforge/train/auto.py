"""Size-aware defaults: the values `train` picks for settings left at "auto", each with the reason it prints.

- `num_train_epochs` from the dataset size: BASE_EPOCHS passes, raised on small sets so the run gets at least
  MIN_STEPS optimizer steps (at most MAX_EPOCHS passes), lowered on large sets so it sees about MAX_EXAMPLES
  examples (never under one pass). OpenAI's "auto" epochs rule is the anchor (3 epochs, more for tiny sets, fewer
  when n x 3 exceeds 25,000); ours counts steps rather than examples at the small end, because optimizer steps
  are what a small set runs short of, and starts from fewer passes because its learning rate is higher.
- `learning_rate` from the method and the base model's size (LORA_LR, FULL_LR, PROMPT_TUNING_LR), times
  `learning_rate_multiplier` (1 unless a jobs-API request sets it).
- `method` from the base's size and free memory: `methods.choose` (lora, else qlora).

Evidence for the numbers: `python bench/defaults.py` (tasks, sweep and table in bench/RESULTS.md, "Defaults").
Explicit values always win: only fields still "auto" are resolved, and config.yaml records the resolved values,
so a resumed run repeats exactly what ran.
"""

from __future__ import annotations

import math

from tuneforge.config import AUTO, TrainConfig

BASE_EPOCHS = 1.5  # at a learning rate of 1e-3 the bench's tasks had learnt what they could by then
MIN_STEPS = 30  # optimizer steps a small set gets at least
MAX_EPOCHS = 10  # ... but never more passes than this (early stopping guards the rest)
MAX_EXAMPLES = 25_000  # large sets: stop after about this many examples (OpenAI's anchor), at least one pass
# LoRA/QLoRA peak learning rate by base size (parameters below the bound → rate). Measured on SmolLM2-135M
# (bench/defaults.py); the larger rows follow common practice (QLoRA paper: 2e-4 for 7-13B, 1e-4 for 33-65B).
LORA_LR = ((0.5e9, 1e-3), (3e9, 5e-4), (20e9, 2e-4), (math.inf, 1e-4))
FULL_LR = ((0.5e9, 5e-5), (3e9, 2e-5), (math.inf, 1e-5))  # full fine-tuning: the guide's 1e-5..5e-5
PROMPT_TUNING_LR = 3e-2  # soft prompts start far from any useful point and need large steps


def _params(n: int) -> str:
    if n >= 1e9:
        return f"{n / 1e9:.1f}B"
    return f"{n / 1e6:.0f}M" if n >= 1e6 else f"{n / 1e3:.0f}K"


def learning_rate(method: str, n_params: int) -> tuple[float, str]:
    """(peak learning rate, reason) for a method on a base of n_params parameters."""
    if method == "prompt-tuning":
        return PROMPT_TUNING_LR, f"learning_rate {PROMPT_TUNING_LR:g} (auto): prompt tuning trains only a soft prompt"
    table = FULL_LR if method == "full" else LORA_LR
    lr = next(rate for bound, rate in table if n_params < bound)
    what = "full fine-tuning" if method == "full" else method
    return lr, (f"learning_rate {lr:g} (auto): {what} on a {_params(n_params)}-parameter base "
                f"({'smaller bases take larger steps' if method != 'full' else 'every weight moves'}); "
                "--learning_rate to override")


def steps_per_epoch(n_train: int, batch: int, accum: int, world: int = 1) -> int:
    """Optimizer steps in one pass; the same arithmetic as `recipe.schedule` (world = training processes)."""
    return max(1, math.ceil(n_train / batch) // (accum * world))


def epochs(n_train: int, batch: int, accum: int, world: int = 1) -> tuple[float, str]:
    """(epochs, reason) for a training set of n_train examples at batch x accum x world examples per step."""
    spe = steps_per_epoch(n_train, batch, accum, world)
    how = f"{n_train} training examples = {spe} steps/epoch at {batch * accum * world} examples/step"
    if BASE_EPOCHS * spe < MIN_STEPS:
        want = math.ceil(MIN_STEPS / spe * 100) / 100  # hundredths of an epoch: at least MIN_STEPS steps
        ep = min(MAX_EPOCHS, want)
        why = (f"small set: at least {MIN_STEPS} optimizer steps" if want <= MAX_EPOCHS else
               f"small set: at most {MAX_EPOCHS} epochs (fewer than {MIN_STEPS} steps; add data if it underfits)")
    elif n_train * BASE_EPOCHS > MAX_EXAMPLES:
        ep = max(1.0, math.floor(MAX_EXAMPLES / n_train * 100) / 100)
        why = f"large set: about {MAX_EXAMPLES:,} examples seen" if ep > 1 else "large set: one pass"
    else:
        ep, why = BASE_EPOCHS, f"{BASE_EPOCHS:g} epochs for a set of this size"
    ep = int(ep) if float(ep).is_integer() else ep
    return ep, (f"num_train_epochs {ep:g} (auto) = {math.ceil(ep * spe)} steps: {how}; {why}; "
                "--num_train_epochs or --max_steps to override")


def resolve(cfg: TrainConfig, *, n_train: int, n_params: int, world: int = 1) -> dict[str, str]:
    """Replace cfg's "auto" learning rate and epochs in place (cfg.method must be resolved already);
    returns {field: reason} for each value it chose."""
    why = {}
    if cfg.learning_rate == AUTO:
        lr, reason = learning_rate(cfg.method, n_params)
        if cfg.learning_rate_multiplier != 1:
            lr *= cfg.learning_rate_multiplier
            reason = reason.replace(" (auto)", f" (auto x{cfg.learning_rate_multiplier:g} learning_rate_multiplier)")
        cfg.learning_rate, why["learning_rate"] = lr, reason
    if cfg.num_train_epochs == AUTO:
        if cfg.max_steps > 0:  # max_steps decides the length; record the epochs it amounts to
            cfg.num_train_epochs = round(cfg.max_steps / steps_per_epoch(
                n_train, cfg.per_device_train_batch_size, cfg.gradient_accumulation_steps, world), 4) or 1
        else:
            cfg.num_train_epochs, why["num_train_epochs"] = epochs(
                n_train, cfg.per_device_train_batch_size, cfg.gradient_accumulation_steps, world)
    return why
