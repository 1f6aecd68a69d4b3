"""What a fine-tuning job trains: OpenAI's job fields → a tuneforge `TrainConfig`, the file checks that gate a
job, and the names of what it produces.

Hyperparameters are OpenAI's, each a number or "auto":
- `n_epochs` "auto" follows OpenAI's rule: 3 epochs, adjusted so that examples × epochs stays within
  100–25,000: n < 34 examples → ceil(100 / n) epochs (at most 25); n > 8,333 → floor(25,000 / n) (at least 1).
- `batch_size` "auto" is tuneforge's default micro-batch (`per_device_train_batch_size`, 8). Reinforcement jobs
  count prompts (OpenAI's meaning; "auto" = 1), and the run's per_device_train_batch_size is that times
  num_generations (TRL's meaning: sampled answers).
- `learning_rate_multiplier` multiplies the learning rate `tuneforge train` picks by itself (train/auto.py:
  by method and base size, 2e-3 for LoRA on a base under 0.5B parameters); "auto" is 1.

tuneforge's own choices come in a `tuneforge` object in the request body (openai SDK:
`extra_body={"tuneforge": {"method": "qlora", "lora_r": 8}}`): any `tuneforge train` config key (`tuneforge
train --help-config`) except those the job itself sets (JOB_KEYS). `method` is `lora` (default) or `qlora`, the
methods whose result, a LoRA adapter, the server can add to the base it is already serving; `full` and
`prompt-tuning` are for `tuneforge train`. One default differs from `tuneforge train`: logging_steps=1, a metrics
event per step as OpenAI reports them. Without a validation_file the recipe holds out `val_split` (10%) of the
training file for validation and keeps the best weights, as `tuneforge train` does (`"val_split": 0` turns it off).

Preference jobs (OpenAI's `method={"type": "dpo", "dpo": {"hyperparameters": {"beta": ...}}}`) train
`--objective dpo` on a preference file (`input`/`preferred_output`/`non_preferred_output` rows); `beta` is a
number in (0, 2] or "auto" (0.1), beside the three hyperparameters above. The method is stored in the job's
options as `objective: dpo`, and the job object reports it back as `method.type`.
"""

from __future__ import annotations

import math
from pathlib import Path

from tuneforge import methods
from tuneforge.config import TrainConfig
from tuneforge.errors import ConfigError
from tuneforge.jobs.reinforcement import (AUTO_BATCH_PROMPTS, REAL_VALUED, RL_LIMITS, check_rows, is_reinforcement,
                                          training_keys)

TARGET_EPOCHS, MIN_TARGET_EXAMPLES, MAX_TARGET_EXAMPLES = 3, 100, 25_000
MIN_AUTO_EPOCHS, MAX_AUTO_EPOCHS = 1, 25
MIN_EXAMPLES = 10  # OpenAI refuses smaller training files (code invalid_n_examples); so do we
JOB_KEYS = ("base", "data", "val_data", "output", "num_train_epochs", "per_device_train_batch_size",
            "learning_rate", "learning_rate_multiplier", "seed")
# the methods whose result, a LoRA adapter, the server adds beside the base it already serves
SERVABLE_METHODS = tuple(name for name, row in methods.METHODS.items() if row.lora_shaped)
JOB_DEFAULTS = {"logging_steps": 1, "method": methods.DEFAULT}
LIMITS = {"n_epochs": (1, 50), "batch_size": (1, 256), "learning_rate_multiplier": (0.0, 10.0)}
# per OpenAI method.type: the hyperparameters it takes (dpo adds beta, OpenAI's range (0, 2])
METHOD_LIMITS = {"supervised": LIMITS, "dpo": {**LIMITS, "beta": (0.0, 2.0)}}
OBJECTIVE_OF = {"supervised": "sft", "dpo": "dpo"}  # method.type → the TrainConfig objective it trains
METHOD_LIMITS["reinforcement"] = {**LIMITS, **RL_LIMITS}  # grpo with a grader: jobs/reinforcement.py
OBJECTIVE_OF["reinforcement"] = "grpo"


class SpecError(Exception):
    """A bad job request: the API answers 400 naming `param`."""

    def __init__(self, message: str, param: str):
        super().__init__(message)
        self.message, self.param = message, param


def auto_epochs(n_examples: int) -> int:
    """OpenAI's "auto": 3 epochs, unless examples × 3 falls outside 100–25,000 (see the module docstring)."""
    n = max(1, n_examples)
    if n * TARGET_EPOCHS < MIN_TARGET_EXAMPLES:
        return min(MAX_AUTO_EPOCHS, math.ceil(MIN_TARGET_EXAMPLES / n))
    if n * TARGET_EPOCHS > MAX_TARGET_EXAMPLES:
        return max(MIN_AUTO_EPOCHS, MAX_TARGET_EXAMPLES // n)
    return TARGET_EPOCHS


def hyperparameters_from(body: dict) -> tuple[dict, bool]:
    """The request's hyperparameters (top level or `method.supervised`), checked; "auto" where not given.
    Returns (hyperparameters, whether they came through `method`)."""
    method = body.get("method")
    top = body.get("hyperparameters")
    if top is not None and not isinstance(top, dict):
        raise SpecError("hyperparameters: expected an object", "hyperparameters")
    given_in_method = method is not None
    kind = "supervised"
    if given_in_method:
        kind = method.get("type") if isinstance(method, dict) else method
        if not isinstance(method, dict) or kind not in METHOD_LIMITS:
            raise SpecError(f"method.type: {kind!r} is not supported here (have: "
                            f"{', '.join(METHOD_LIMITS)})", "method.type")
        sup = method.get(kind) or {}
        inner = sup.get("hyperparameters") if isinstance(sup, dict) else None
        if inner is not None and not isinstance(inner, dict):
            raise SpecError(f"method.{kind}.hyperparameters: expected an object",
                            f"method.{kind}.hyperparameters")
        if top and inner and top != inner:
            raise SpecError(f"give hyperparameters either at the top level or in method.{kind}, not both",
                            "hyperparameters")
        top = inner or top
    where = f"method.{kind}.hyperparameters" if given_in_method else "hyperparameters"
    hp = dict(top or {})
    limits = METHOD_LIMITS[kind]
    unknown = sorted(set(hp) - set(limits))
    if unknown:
        raise SpecError(f"{where}.{unknown[0]}: unknown hyperparameter (expected {', '.join(limits)})",
                        f"{where}.{unknown[0]}")
    return {k: _checked(k, hp.get(k), where, limits) for k in limits}, given_in_method


def method_type(body: dict) -> str:
    """OpenAI's `method.type` of a job request ("supervised" when absent)."""
    m = body.get("method")
    return m.get("type", "supervised") if isinstance(m, dict) else "supervised"


def _checked(key: str, v, where: str, limits: dict = LIMITS):
    """"auto" (or absent), or a number in limits[key]: epochs and batch size whole, the multiplier (and DPO's
    beta) above 0."""
    if v is None or v == "auto":
        return "auto"
    lo, hi = limits[key]
    integral = key not in ("learning_rate_multiplier", "beta", *REAL_VALUED)
    number = isinstance(v, (int, float)) and not isinstance(v, bool)
    if integral and number and float(v).is_integer() and lo <= v <= hi:
        return int(v)
    if not integral and number and lo < v <= hi:
        return float(v)
    want = f"an integer in [{lo}, {hi}]" if integral else f"a number in ({lo}, {hi}]"
    raise SpecError(f"{where}.{key}: expected \"auto\" or {want}, got {v!r}", f"{where}.{key}")


def options_from(body: dict) -> dict:
    """The `tuneforge` object: TrainConfig keys the job does not set itself, checked by building a config."""
    opts = body.get("tuneforge")
    if opts is None:
        return {}
    if not isinstance(opts, dict):
        raise SpecError("tuneforge: expected an object of `tuneforge train` config keys", "tuneforge")
    for k in opts:
        if k in JOB_KEYS:
            raise SpecError(f"tuneforge.{k}: set by the job itself (model, training_file, validation_file, "
                            "hyperparameters, seed), not here", f"tuneforge.{k}")
    method = opts.get("method", JOB_DEFAULTS["method"])
    if method not in SERVABLE_METHODS:
        raise SpecError(f"tuneforge.method: '{method}' is not available through the jobs API (lora or qlora: "
                        "their adapter is served next to the base; run `tuneforge train --method "
                        f"{method}` and serve the run instead)", "tuneforge.method")
    try:
        TrainConfig(**{**JOB_DEFAULTS, **opts})
    except (ConfigError, ValueError) as e:  # pydantic's ValidationError is a ValueError
        errs = getattr(e, "errors", None)
        first = errs()[0] if callable(errs) else {}
        key = ".".join(str(x) for x in first.get("loc", ())) or "tuneforge"
        msg = first.get("msg", str(e))
        if first.get("type") == "extra_forbidden":
            msg = "unknown config key (see `tuneforge train --help-config`)"
        raise SpecError(f"tuneforge.{key}: {msg}", f"tuneforge.{key}") from None
    return dict(opts)


def resolve_hyperparameters(hp: dict, n_examples: int) -> dict:
    """"auto" → the number this job will use (see the module docstring)."""
    default_bs = AUTO_BATCH_PROMPTS if is_reinforcement(hp) else \
        TrainConfig.model_fields["per_device_train_batch_size"].default
    out = {"n_epochs": auto_epochs(n_examples) if hp["n_epochs"] == "auto" else hp["n_epochs"],
           "batch_size": default_bs if hp["batch_size"] == "auto" else hp["batch_size"],
           "learning_rate_multiplier": 1.0 if hp["learning_rate_multiplier"] == "auto"
           else hp["learning_rate_multiplier"]}
    if "beta" in hp:  # a dpo job: "auto" is the DPO default
        from tuneforge.train.objectives.dpo import default_beta
        out["beta"] = default_beta("sigmoid") if hp["beta"] == "auto" else hp["beta"]
    out.update({k: hp[k] for k in RL_LIMITS if k in hp})  # a reinforcement job ("auto" = the grpo defaults)
    return out


def train_config(*, base: str, data: Path, val_data: Path | None, output: Path, seed: int,
                 hyperparameters: dict, options: dict) -> TrainConfig:
    """The run a job trains: resolved hyperparameters mapped onto TrainConfig, plus the `tuneforge` options."""
    cfg = {**JOB_DEFAULTS, **options}
    gens = cfg.get("num_generations", TrainConfig.model_fields["num_generations"].default)
    keys = {"per_device_train_batch_size": hyperparameters["batch_size"], **training_keys(hyperparameters, gens)}
    return TrainConfig(**cfg, base=base, data=str(data), val_data=str(val_data) if val_data else None,
                       output=str(output), seed=seed, num_train_epochs=hyperparameters["n_epochs"],
                       learning_rate_multiplier=hyperparameters["learning_rate_multiplier"],
                       **({"beta": hyperparameters["beta"]} if "beta" in hyperparameters else {}), **keys)


def check_training_file(path: Path, param: str, min_examples: int = MIN_EXAMPLES,
                        objective: str = "sft") -> tuple[int, dict | None]:
    """tuneforge's data checks on an uploaded file: (valid examples, None) or (n, OpenAI job error) where the
    error's code is the first problem's data-check code and its message names the line and field. A dpo job
    needs preference rows."""
    from tuneforge.data.validate import check_file as check

    rep = check(path)
    if objective == "dpo" and not rep.errors and rep.format != "preference":
        return rep.n_valid, {"code": "invalid_file_format", "param": param,
                             "message": f"{param}: a dpo job needs preference rows ({{\"input\": {{\"messages\"}}, "
                                        f"\"preferred_output\", \"non_preferred_output\"}}), got {rep.format} rows"}
    rl_err = check_rows(rep, param) if objective == "grpo" else None
    if rl_err is not None:
        return rep.n_valid, rl_err
    if rep.errors:
        e = rep.errors[0]
        line = f"line {e['line']}" if e["line"] is not None else "the file"
        field = f" [{e['field']}]" if e["field"] else ""
        more = f" ({len(rep.errors) - 1} more error(s))" if len(rep.errors) > 1 else ""
        return rep.n_valid, {"code": e["code"], "param": param,
                             "message": f"{param} {line}{field}: {e['message']}{more}"}
    if rep.n_valid < min_examples:
        return rep.n_valid, {"code": "invalid_n_examples", "param": param,
                             "message": f"{param} has {rep.n_valid} example(s), but must have at least "
                                        f"{min_examples} examples"}
    return rep.n_valid, None


def model_label(model: str) -> str:
    """The base's name inside `ft:BASE:...`: a path's last part (`/models/x` → `x`), other names as they are."""
    return Path(model).name if model.startswith(("/", ".", "~")) else model


def fine_tuned_model_name(model: str, suffix: str | None, job_id: str) -> str:
    """`ft:BASE:SUFFIX:ID` (OpenAI's form, with an empty SUFFIX when none was given); ID is the job id's
    random part, so names are unique."""
    return f"ft:{model_label(model)}:{suffix or ''}:{job_id.split('-', 1)[-1]}"


def checkpoint_model_name(fine_tuned_model: str, step: int) -> str:
    return f"{fine_tuned_model}:ckpt-step-{step}"
