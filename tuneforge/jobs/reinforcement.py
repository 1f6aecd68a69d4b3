"""Reinforcement fine-tuning jobs (OpenAI's `method={"type": "reinforcement", "reinforcement": {"grader": {...},
"hyperparameters": {...}}}`) → `--objective grpo`, and the graders API (`/v1/fine_tuning/alpha/graders/run` and
`/validate`).

Hyperparameters: OpenAI's n_epochs, batch_size (prompts per step; "auto" = 1, and the run's
per_device_train_batch_size = batch_size x num_generations answers) and learning_rate_multiplier as for supervised
jobs, plus compute_multiplier (sampling compute: num_generations = round(8 x multiplier), at least 2) and
eval_interval (eval_steps). The grader is validated when the job is created (a 400 naming
`method.reinforcement.grader.<field>`), stored as JSON under the server's home (graders/<sha256>.json) and given to
the run as its `grader` file; the job object reports it back. The training file must be RL rows.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from tuneforge.graders import GraderError, validate

RL_LIMITS = {"compute_multiplier": (0.0, 10.0), "eval_interval": (1, 100_000)}
REAL_VALUED = ("compute_multiplier",)
BASE_GENERATIONS = 8
METRICS = ("reward", "reward_std", "kl", "completion_length", "zero_std_groups", "grader_errors")


class RLSpecError(ValueError):
    def __init__(self, message: str, param: str):
        super().__init__(message)
        self.message, self.param = message, param


def grader_from(body: dict) -> dict:
    """The validated grader of a reinforcement request, or RLSpecError naming its field."""
    rl = (body.get("method") or {}).get("reinforcement")
    if not isinstance(rl, dict) or "grader" not in rl:
        raise RLSpecError("method.reinforcement.grader: missing required parameter", "method.reinforcement.grader")
    try:
        return validate(rl["grader"])
    except GraderError as e:
        param = "method.reinforcement.grader" + (f".{e.field}" if e.field else "")
        raise RLSpecError(f"{param}: {e.detail}", param) from None


def save_grader(root: Path, spec: dict) -> Path:
    """Content-addressed, written atomically: the same grader is one file however many jobs use it."""
    text = json.dumps(spec, sort_keys=True, indent=1)
    d = Path(root) / "graders"
    d.mkdir(parents=True, exist_ok=True)
    path = d / f"{hashlib.sha256(text.encode()).hexdigest()[:32]}.json"
    if not path.exists():
        tmp = path.with_suffix(".part")
        tmp.write_text(text)
        tmp.replace(path)
    return path


AUTO_BATCH_PROMPTS = 1  # batch_size "auto" of a reinforcement job: one prompt (x num_generations answers, as TRL)


def is_reinforcement(hp: dict) -> bool:
    """A reinforcement job's hyperparameters carry its own keys (compute_multiplier, eval_interval)."""
    return any(k in hp for k in RL_LIMITS)


def training_keys(hp: dict, num_generations: int) -> dict:
    """Resolved RL hyperparameters → TrainConfig keys ({} for another job). OpenAI's batch_size counts prompts;
    the run's per_device_train_batch_size counts sampled answers (TRL's meaning): prompts x num_generations
    (`num_generations`: the run's value when compute_multiplier does not set it)."""
    if not is_reinforcement(hp):
        return {}
    out = {}
    cm = hp.get("compute_multiplier", "auto")
    if cm != "auto":
        out["num_generations"] = max(2, round(BASE_GENERATIONS * float(cm)))
    ei = hp.get("eval_interval", "auto")
    if ei != "auto":
        out["eval_steps"] = int(ei)
    out["per_device_train_batch_size"] = hp["batch_size"] * out.get("num_generations", num_generations)
    return out


def method_object(options: dict, hp: dict) -> dict:
    grader = None
    try:
        grader = json.loads(Path(options["grader"]).read_text())
    except (KeyError, OSError, ValueError):
        pass
    return {"type": "reinforcement", "reinforcement": {"grader": grader, "hyperparameters": hp}}


def check_rows(rep, param: str) -> dict | None:
    """A reinforcement job needs RL rows (messages = the prompt, plus the keys its grader reads)."""
    if not rep.errors and rep.format != "reinforcement":
        return {"code": "invalid_file_format", "param": param,
                "message": f"{param}: a reinforcement job needs RL rows ({{\"messages\": [...the prompt...], "
                           f"...keys the grader reads}}, no assistant answer), got {rep.format} rows"}
    return None


# ---- the graders API ---------------------------------------------------------------------------------------

def run_grader(body: dict) -> dict:
    """POST /v1/fine_tuning/alpha/graders/run: {grader, model_sample, item?} → OpenAI's run response."""
    from tuneforge.graders import build, run_response, sample_from_text

    if not isinstance(body, dict):
        raise RLSpecError("expected a JSON object", "body")
    try:
        spec = validate(body.get("grader"))
    except GraderError as e:
        raise RLSpecError(f"grader{'.' + e.field if e.field else ''}: {e.detail}",
                          "grader" + (f".{e.field}" if e.field else "")) from None
    sample = body.get("model_sample")
    if not isinstance(sample, str):
        raise RLSpecError("model_sample: missing required parameter (a string)", "model_sample")
    item = body.get("item", {})
    if item is None:
        item = {}
    if not isinstance(item, dict):
        raise RLSpecError("item: expected an object", "item")
    try:
        grader = build(spec)
    except GraderError as e:
        raise RLSpecError(f"grader{'.' + e.field if e.field else ''}: {e.detail}", "grader") from None
    with grader:
        return run_response(grader, sample_from_text(sample), item, sample)


def validate_grader(body: dict) -> dict:
    """POST /v1/fine_tuning/alpha/graders/validate: {grader} → {grader} (as understood), or a 400."""
    if not isinstance(body, dict) or "grader" not in body:
        raise RLSpecError("grader: missing required parameter", "grader")
    try:
        return {"grader": validate(body["grader"])}
    except GraderError as e:
        raise RLSpecError(f"grader{'.' + e.field if e.field else ''}: {e.detail}",
                          "grader" + (f".{e.field}" if e.field else "")) from None
