"""Validation bookkeeping for the training loop: the typed loop state, early stopping, the overfitting signal.

Pure functions over `LoopState` and the metrics rows already in memory; the loop (recipe.py) does the I/O.

What counts (issue 23): an evaluation makes *progress* when the validation loss beats its best by IMPROVEMENT or
the objective's validation metric (SFT: the exact match of train/validation.py; None when not measured) beats its
best; patience counts evaluations in a row without progress, and the "plateau" schedule halves the rate at each
of them. The weights kept are the *best* by the metric first, then validation loss: on short-answer tasks the loss
often bottoms out (the model grows confident on its mistakes) while exact match still climbs, and exact match is
what `eval` reports. Without a metric it is the loss alone, as before. An exact tie (same loss, same metric) keeps
the later weights: continuous losses practically never tie, but GRPO's validation loss is minus a mean grader
score over a few prompts, which often repeats while the training reward climbs; on the pick task the step-45
weights of a run whose validation stayed at 0.167 scored 0.250 held out against 0.235 for step 15's.

Annealing on stop (issue 23): when the patience is used up while the learning rate is still high (a cosine or
linear schedule stopped long before its planned end; never on the plateau schedule, which has already halved it
at each of those evaluations), the run does not end at once: the rate decays linearly to zero over `anneal` more
steps (the patience window) from the weights it has, then one last evaluation competes with the best kept so far
— the decay's end is kept unless an earlier evaluation beat it (a higher metric, or the same metric and a loss
lower by more than IMPROVEMENT) — and the run ends. Weights taken at a high rate were never annealed; a short
decay is what warm-up/stable/decay schedules do where a run ends, and it is cheap (about three quarters of a
pass). On routing (4 labels, 20 validation rows saturated at accuracy 1.0 by step 18), stopping at the cosine's
peak kept step 30 and scored 0.870 held out; with the decay it keeps step 66 and scores 0.920 (the fixed 3-epoch
linear run, whose rate was already low mid-run, 1.000: bench/RESULTS.md).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields

IMPROVEMENT = 1e-4  # a val loss must beat the best by this much to count as better (noise in the 4th decimal)


@dataclass
class LoopState:
    """Everything the loop carries between steps that a checkpoint must restore for an exact resume."""

    step: int = 0
    best_val: float | None = None
    best_step: int | None = None
    bad_evals: int = 0  # evaluations in a row without improvement
    elapsed: float = 0.0  # seconds spent in optimizer steps (not evaluation or checkpointing)
    tokens: int = 0  # input tokens seen
    warned_overfitting: bool = False
    warned_health: bool = False  # the objective's own warning (Objective.health) was given
    stopped_early: bool = False
    best_metric: float | None = None  # validation exact match at best_step (the highest seen)
    best_step_val: float | None = None  # validation loss at best_step (best_val is the lowest seen)
    lr_scale: float = 1.0  # the "plateau" schedule's factor: halved at each evaluation without progress
    stop_reason: str | None = None  # why the loop ended (run.json, model card), set when it does
    anneal_from: int | None = None  # the step after which the rate decays to zero (patience used up at a high rate)
    anneal_steps: int = 0  # ... over this many steps; the run ends at anneal_from + anneal_steps

    def to_json(self) -> dict:
        return asdict(self)

    @classmethod
    def from_json(cls, d: dict) -> "LoopState":
        """Checkpoints of older versions carry other keys (e.g. "warned"); unknown keys are ignored."""
        known = {f.name for f in fields(cls)}
        state = cls(**{k: v for k, v in d.items() if k in known})
        state.warned_overfitting = state.warned_overfitting or bool(d.get("warned"))
        return state


@dataclass
class Evaluation:
    """What one validation pass decided: the row to log, and what the loop should do next."""

    val_loss: float
    improved: bool  # save these weights as the best so far
    stop: bool  # patience used up
    warning: str | None  # an overfitting warning, given once per run
    progress: bool = True  # the loss or the metric beat its best (patience starts again)
    lr_changed: bool = False  # the plateau schedule lowered the rate
    annealing: bool = False  # the patience was used up: the rate now decays to zero over `anneal` steps


def after_evaluation(state: LoopState, val_loss: float, *, patience: int, history: list[dict],
                     metric: float | None = None, decay: float | None = None, anneal: int = 0) -> Evaluation:
    """Update `state` with a new validation loss (and exact match, when measured). `history` holds the metrics
    rows logged so far, this evaluation included (for the overfitting signal). `decay`: the plateau schedule's
    factor, applied to state.lr_scale at each evaluation without progress (None: another schedule). `anneal`:
    steps to decay the rate over when the patience is used up (0: stop at once; see the module docstring); once
    annealing, the patience no longer stops the run, the end of the decay does (`anneal_done`)."""
    first = state.best_step is None
    loss_better = state.best_val is None or val_loss < state.best_val - IMPROVEMENT
    metric_better = metric is not None and (state.best_metric is None or metric > state.best_metric)
    ref = state.best_step_val if state.best_step_val is not None else state.best_val
    tie = not first and val_loss == ref and (metric is None or metric == state.best_metric)
    if first:
        improved = True
    elif anneal_done(state):  # the decay's end is where the run meant to finish: earlier weights must beat it
        improved = metric_better or ((metric is None or metric == state.best_metric)
                                     and val_loss <= ref + IMPROVEMENT)
    elif metric is None:
        improved = loss_better or tie
    else:
        improved = metric_better or (metric == state.best_metric and val_loss < ref - IMPROVEMENT) or tie
    progress = first or loss_better or metric_better
    if loss_better:
        state.best_val = val_loss
    if improved:
        state.best_step, state.best_step_val = state.step, val_loss
        if metric is not None:
            state.best_metric = metric
    lr_changed = False
    if progress:
        state.bad_evals = 0
    else:
        state.bad_evals += 1
        if decay is not None:
            state.lr_scale *= decay
            lr_changed = True
    warning = None
    if not state.warned_overfitting:
        warning = overfitting_signal(history, early_stopping=bool(patience))
        state.warned_overfitting = warning is not None
    used_up = bool(patience) and state.bad_evals >= patience
    annealing = False
    if used_up and state.anneal_from is None and anneal > 0:
        state.anneal_from, state.anneal_steps, annealing = state.step, anneal, True
    state.stopped_early = used_up and state.anneal_from is None
    return Evaluation(val_loss, improved, state.stopped_early, warning, progress, lr_changed, annealing)


def anneal_factor(state: LoopState, step: int) -> float:
    """The decay's multiplier of the rate for the optimizer step after `step` steps: 1 until annealing starts,
    then linearly down to 1/anneal_steps at its last step."""
    if state.anneal_from is None or step < state.anneal_from:
        return 1.0
    return max(0.0, 1 - (step - state.anneal_from) / max(1, state.anneal_steps))


def anneal_done(state: LoopState) -> bool:
    """The decay has reached its end: the loop stops here (after this step's evaluation)."""
    return state.anneal_from is not None and state.step >= state.anneal_from + state.anneal_steps


def stop_reason(state: LoopState, *, total: int, patience: int, metric_name: str | None = None,
                planned: str = "") -> str:
    """One line on why the loop ended, e.g. "validation loss and exact match flat for 3 evaluations; best at
    step 140 of 300 planned". `planned` names what fixed the plan (e.g. "6 epochs")."""
    what = "validation loss" + (f" and {metric_name}" if metric_name else "")
    best = f"best at step {state.best_step}" if state.best_step is not None else "no validation"
    plan = f"{total} planned" + (f" ({planned})" if planned else "")
    if state.anneal_from is not None and state.stopped_early:
        return (f"{what} flat for {patience} evaluations at step {state.anneal_from}, then the learning rate "
                f"decayed to zero over {state.anneal_steps} steps; {best} of {plan}")
    if state.stopped_early:
        return f"{what} flat for {patience} evaluations; {best} of {plan}"
    if state.step >= total:
        return f"reached the planned {total} steps" + (f" ({planned})" if planned else "") + \
            (f"; {best}" if state.best_step is not None else "")
    return f"stopped at step {state.step}; {best} of {plan}"


def overfitting_signal(metrics_rows: list[dict], min_rising: int = 2, *, early_stopping: bool = False) -> str | None:
    """A warning when val loss rose at each of the last `min_rising` (>= 2) evaluations while train loss fell.

    One rise is often noise; consecutive rises with a still-falling train loss are the classic memorisation
    pattern, and the fix (stop earlier, regularise, add data) is cheap. Returns None when there is no signal.
    With `early_stopping` (the run has it on) the advice does not tell the user to enable what is already on.
    """
    min_rising = max(2, min_rising)
    evals = sorted((r for r in metrics_rows if r.get("val_loss") is not None), key=lambda r: r["step"])
    train = sorted((r for r in metrics_rows if r.get("loss") is not None), key=lambda r: r["step"])
    rising = 0
    for prev, cur in zip(evals[-2::-1], evals[::-1]):  # walk back from the last evaluation
        if cur["val_loss"] > prev["val_loss"]:
            rising += 1
        else:
            break
    if rising < min_rising:
        return None
    start = evals[-1 - rising]  # the last evaluation before the rise
    before = [r for r in train if r["step"] <= start["step"]]
    window = ([before[-1]] if before else []) + [r for r in train if r["step"] > start["step"]]
    if len(window) < 2 or not window[-1]["loss"] < window[0]["loss"]:
        return None
    best = min(evals, key=lambda r: r["val_loss"])
    epochs = f" (about {best['epoch']:g} epochs)" if best.get("epoch") is not None else ""
    return (f"Possible overfitting: validation loss rose over the last {rising} evaluations "
            f"({start['val_loss']:.4f} at step {start['step']} -> {evals[-1]['val_loss']:.4f} at step "
            f"{evals[-1]['step']}) while training loss kept falling ({window[0]['loss']:.4f} -> "
            f"{window[-1]['loss']:.4f}). Best validation loss {best['val_loss']:.4f} at step {best['step']}"
            f"{epochs}. " + ("Early stopping is on: the run stops when validation stops improving and keeps the "
                             "best weights; to overfit less, add more data, or regularise with more dropout "
                             "(lora_dropout) or weight_decay." if early_stopping else
                             "Recommendation: enable early stopping (early_stopping_patience) or train fewer "
                             "epochs; add more data, or regularise with more dropout (lora_dropout) or "
                             "weight_decay."))
