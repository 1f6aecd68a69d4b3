"""Training objectives: what a run learns from, plugged into the one loop of `train.recipe`.

The loop (`recipe._loop`) owns everything an objective should not have to redo: the optimizer and schedule,
gradient accumulation, normalisation over micro-batches and processes, clipping, logging, validation
bookkeeping (best weights, early stopping, the overfitting warning), atomic checkpoints and exact resume,
`on_step` (jobs), and finishing the run. An objective owns only what differs between ways of learning:

- **rows → items** (`load`, `holdout`, `encode`, `data_info`, `labels`): SFT reads examples as `Sample`s and
  encodes them with a loss mask; DPO reads preference pairs (prompt, chosen, rejected) that are not `Sample`s
  and encodes each into one item; GRPO reads prompts (plus what its graders need). `Prepared.train`/`val`
  hold the encoded items; the batch plan (`recipe.schedule`, `epoch_order`, `batch_indices`) deals them out by
  index, so epochs, accumulation and several processes work the same for every objective.
- **a micro-batch** (`batch(p, items, model)`): SFT collates (packed or padded); an on-policy objective (GRPO)
  generates it with the current model — sampling a group of completions per prompt with
  `tuneforge.models.decode`, then grading them. All micro-batches of an optimizer step are built before its
  first forward pass, so they all come from the same weights.
- **the loss** (`count(batch)`, `loss(model, batch)`): `loss` returns the loss SUMMED over the micro-batch's
  units and a dict of metric sums; `count` says how many units the batch holds (SFT: supervised tokens; DPO:
  pairs; GRPO: whatever its loss averages over). The loop divides every micro-batch's sum by the total count
  of the step over all micro-batches and processes, so accumulation equals one larger batch exactly and the
  normaliser is the objective's own (tokens for SFT, pairs for DPO). `loss` runs inside the module the loop
  wraps for several processes (DDP), so a reference pass belongs there too (LoRA: `model.disable_adapter()`).
  The logged train row carries `count_key` (SFT: `supervised_tokens`) and each metric as sum / count over the
  logging window (DPO: reward margin, accuracy, chosen/rejected log-probs).
- **before the first step** (`setup(p, out, ranks, resume)`): called on every process after the run directory
  exists and before a checkpoint is restored, so the model still has its starting weights. DPO with a full
  fine-tune computes the reference log-probs once here and caches them in the run directory (reused on resume).
- **validation** (`val_batches(p)`, `validate(model, forward, batches)`): returns `{"val_loss": ..., **extras}`;
  val_loss drives best weights and early stopping, the extras (DPO: preference accuracy, reward margin) are
  logged in the same metrics.jsonl row.
- **state a resume needs** (`state_dict`, `load_state_dict`): saved in every checkpoint, one per process (each
  rank's own), and restored before the next step — e.g. the generator GRPO samples with. The torch, numpy and
  Python global RNGs are checkpointed by the loop already.

A new objective is one module here with an `Objective` subclass, plus one line in `OBJECTIVES`; the config's
`objective` key accepts exactly the names registered here (`get` gives the did-you-mean error).
"""

from __future__ import annotations

import difflib
import importlib
from pathlib import Path
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

from tuneforge.errors import ConfigError

if TYPE_CHECKING:  # annotations only
    import torch

    from tuneforge.config import TrainConfig
    from tuneforge.train.distributed import Ranks


# (lr_scheduler, reason) for objectives whose no-flag figures (issue 22, bench/RESULTS.md) were measured on the
# plateau schedule, before supervised runs moved to a cosine to the cap; kept until the cosine is measured on them
MEASURED_ON_PLATEAU = ("plateau", "the schedule this objective's no-flag results were measured on: warm-up, then a "
                                  "constant rate halved at each evaluation without progress")


class Objective:
    """One way of learning from data. Instances are made per run (`create(cfg)`) and may keep state."""

    name: ClassVar[str]
    count_key: ClassVar[str] = "supervised_tokens"  # what a step's loss is averaged over, as logged
    packing: ClassVar[bool] = True  # may micro-batches be packed into one row (else cfg.packing is turned off)
    # a higher-is-better key of `validate`'s dict that early stopping watches beside val_loss, and that picks the
    # best weights first (train/early_stop.py); None: val_loss alone. Absent from a row = not measured this run.
    val_metric: ClassVar[str | None] = None
    # `learning_rate auto` (train.auto) is the method's supervised rate times this; the reason is printed with it
    learning_rate_scale: ClassVar[float] = 1.0
    learning_rate_scale_reason: ClassVar[str] = ""
    # `num_train_epochs auto`'s cap (train.auto.CAP_EPOCHS when None), with the reason it prints
    cap_epochs: ClassVar[float | None] = None
    cap_epochs_reason: ClassVar[str] = ""
    # `lr_scheduler_type auto` when validation decides the length (train.auto.lr_scheduler: "cosine" when None),
    # with the reason it prints: an objective keeps the schedule its no-flag figures were measured on
    lr_scheduler: ClassVar[str | None] = None
    lr_scheduler_reason: ClassVar[str] = ""
    # `temperature auto`, for objectives that sample while training (GRPO): ((params below, value, why), ...) by
    # base size, the reason printed; None: the objective does not sample (auto resolves to 1.0, unprinted)
    temperatures: ClassVar[tuple[tuple[float, float, str], ...] | None] = None

    def __init__(self, cfg: "TrainConfig"):
        self.cfg = cfg

    # --- rows → items -------------------------------------------------------------------------------
    def load(self, path: str) -> list:
        """The rows of one data file (errors name file, line and field)."""
        raise NotImplementedError

    def holdout(self, rows: list, frac: float, seed: int) -> tuple[list, list]:
        """(train, val) rows when no val_data is given: seeded, without leakage between the two."""
        raise NotImplementedError

    def encode(self, rows: list, tokenizer, what: str) -> tuple[list, int]:
        """(items, n truncated): what the batch plan deals out. `what` ("training"/"validation") names the set
        in errors. Rows that cannot train (nothing left after truncation) are dropped; none left is a DataError."""
        raise NotImplementedError

    def data_info(self, items: list) -> dict:
        """Objective-specific keys of data.json (token counts); `max_answer_tokens` sets the decoding budget
        a full fine-tune's saved model gets."""
        return {}

    def labels(self, rows: list) -> list[str] | None:
        """Classification data: the sorted label set (rows then carry `.label`), else None."""
        return None

    def notes(self, rows: list) -> list[str]:
        """Lines the run prints about how this objective reads these rows (e.g. what it ignores in them)."""
        return []

    # --- the run ------------------------------------------------------------------------------------
    def setup(self, p: "Prepared", out: Path, ranks: "Ranks", resume: bool) -> None:
        """Before the first step, on every process, with the model's starting weights."""

    def batch(self, p: "Prepared", items: list, model) -> dict:
        """One micro-batch from its items; `model` is the model being trained (on-policy objectives)."""
        raise NotImplementedError

    @classmethod
    def items_per_micro_batch(cls, cfg: "TrainConfig") -> int:
        """Items the batch plan deals into one micro-batch (recipe.batch_indices/schedule, auto epochs)."""
        return cfg.per_device_train_batch_size

    def count(self, batch: dict) -> int:
        """Units the loss of `batch` is summed over (the step's normaliser)."""
        raise NotImplementedError

    def tokens(self, batch: dict) -> int:
        """Input tokens of `batch` (throughput, `tokens` in run.json)."""
        raise NotImplementedError

    def loss(self, model, batch: dict) -> tuple["torch.Tensor", dict[str, float]]:
        """(loss summed over the batch's `count` units, {metric: sum over the same units})."""
        raise NotImplementedError

    def val_batches(self, p: "Prepared") -> list:
        """The validation micro-batches, built once per run."""
        raise NotImplementedError

    def validate(self, model, forward, batches: list) -> dict[str, float]:
        """{"val_loss": ..., **extra metrics}. `forward(batch)` runs `loss` through the wrapped module."""
        raise NotImplementedError

    def health(self, history: list[dict]) -> str | None:
        """A warning when the metrics so far (validation rows included) show training going wrong in a way the
        validation loss cannot see; printed once per run. None: nothing to say."""
        return None

    # --- resume -------------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """What this process's objective needs back on resume (saved in each checkpoint)."""
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        pass


# name → "module:class"; imported on first use, so `import tuneforge.train.objectives` stays light
OBJECTIVES: dict[str, str] = {
    "sft": "tuneforge.train.objectives.sft:SFT",
    "dpo": "tuneforge.train.objectives.dpo:DPO",
    "grpo": "tuneforge.train.objectives.grpo:GRPO",
}


def get(name: str) -> type[Objective]:
    """The objective class registered as `name`; an unknown name is a ConfigError with a did-you-mean."""
    if name not in OBJECTIVES:
        close = difflib.get_close_matches(name, OBJECTIVES, n=1)
        hint = f" (did you mean '{close[0]}'?)" if close else ""
        raise ConfigError(f"config: unknown objective '{name}'{hint}; have: {', '.join(OBJECTIVES)}")
    module, cls = OBJECTIVES[name].split(":")
    return getattr(importlib.import_module(module), cls)


def create(cfg: "TrainConfig") -> Objective:
    """The objective instance for a run of `cfg`."""
    return get(cfg.objective)(cfg)


@dataclass
class Prepared:
    """What `train.recipe.prepare` hands the loop and the objective: the resolved config, the loaded base and
    trainable model, the objective's encoded items. It lives here, beside `Objective`, because it is the contract
    between the two (the recipe imports it; nothing here imports the recipe)."""

    cfg: "TrainConfig"  # resolved: no "auto" left; what config.yaml records
    base: object  # models.load.Base (tokenizer, path); its model is None when prepared without weights
    model: object  # the trainable model (methods.prepare), None without weights
    train: list  # the objective's encoded items (SFT: `Encoded` examples), dealt out by the batch plan
    val: list
    data_info: dict
    labels: list[str] | None = None  # classification data: the label set (run.json, model card, eval)
    auto: dict[str, str] = field(default_factory=dict)  # {field: why} for each value chosen for the user
    objective: Objective | None = None  # default: the one cfg.objective names

    def __post_init__(self):
        if self.objective is None:
            self.objective = create(self.cfg)
