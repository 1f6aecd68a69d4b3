"""Typed training config: the schema is the code. YAML file + `--key value` overrides; unknown key = error.

Field descriptions are the CLI help (`tuneforge train --help-config`) and say the trade-off of each knob.
"""

from __future__ import annotations

import difflib
from pathlib import Path
from typing import Annotated, Any, Literal, Union

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from tuneforge.errors import ConfigError

DEFAULT_BASE = "smollm2-135m-instruct"
AUTO = "auto"  # a value `train` derives from the data and model size (train/auto.py) and saves resolved
PositiveFloat = Annotated[float, Field(gt=0)]


class TrainConfig(BaseModel):
    """Every hyperparameter of a run; saved resolved as `config.yaml` in the run directory."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    # what to train
    base: str = Field(DEFAULT_BASE, description="Base model: alias, local transformers dir, hub id or .gguf file.")
    method: Literal["lora", "full", "qlora", "prompt-tuning", "auto"] = Field(
        "auto", description="lora: small adapter, fast, low memory (the guide's default). full: all weights; "
        "best quality on large data, most memory, risk of catastrophic forgetting. qlora: LoRA on a 4-bit "
        "base; ~3x less base memory, slower steps. prompt-tuning: a soft prompt only (<0.1% params); weakest. "
        "auto (default): lora when the base fits in memory with room to spare, else qlora; printed with the "
        "reason and saved resolved in config.yaml.")
    objective: str = Field("sft", description="What the run learns from its data (train.objectives): sft = "
                           "supervised fine-tuning, cross-entropy on the answers of examples. dpo = preference "
                           "training on pairs (prompt, preferred answer, non-preferred answer; see loss_type): "
                           "needs no reward model, and teaches what to avoid as well as what to say, but each "
                           "step runs two answers (plus a reference pass for DPO/IPO). An unknown name is "
                           "an error listing the registered ones.")
    # preference objectives (objective: dpo)
    loss_type: Literal["sigmoid", "ipo", "simpo", "orpo"] = Field(
        "sigmoid", description="objective dpo: sigmoid = DPO (the default; beta 0.1). ipo: squared loss on "
        "per-token averages; does not drive margins to infinity on easy/separable pairs, so it overfits less "
        "(beta 0.1). simpo: reference-free and length-normalised (beta 2.0, margin simpo_gamma): no reference "
        "pass, so faster and lighter, but nothing anchors the model to where it started. orpo: reference-free, "
        "NLL on the preferred answer plus an odds-ratio term weighted by beta (0.1): learns the answers and the "
        "preference in one run, no SFT first.")
    beta: float | None = Field(None, gt=0, description="Strength of the objective's regulariser; unset = the "
                               "objective's default. dpo: how far from the reference the model may move (DPO/IPO "
                               "0.1; higher = stays closer to the reference, safer but learns the preference "
                               "less; OpenAI's range (0, 2]); the reward scale for simpo (2.0) and the odds-ratio "
                               "weight for orpo (0.1). grpo: weight of the KL to the reference (default 0: no "
                               "reference pass, a third cheaper per step, TRL's default; 0.04 holds the model "
                               "closer to where it started, DeepSeekMath's value).")
    simpo_gamma: float = Field(0.5, ge=0, description="loss_type simpo: target reward margin between the "
                               "preferred and non-preferred answer; higher separates them more, at some fluency.")
    data: str | None = Field(None, description="Training examples (.jsonl/.json/.csv/.parquet).")
    val_data: str | None = Field(None, description="Validation examples; if absent, `val_split` of data is held out.")
    val_split: float = Field(0.1, ge=0, lt=1, description="Fraction of data held out for validation when no val_data.")
    output: str | None = Field(None, description="Run directory to create.")
    from_run: str | None = Field(None, description="Continue from this finished run (`--from-run RUN`): its adapter "
                                 "(or full weights) is loaded before the first step, and base, method and adapter "
                                 "shape are taken from it. Recorded as the new run's parent.")
    # the guide's TrainingArguments
    num_train_epochs: Union[PositiveFloat, Literal["auto"]] = Field(
        AUTO, description="Passes over the data. auto (default): 6; a cap that validation stops within (early "
        "stopping keeps the best weights); small sets get more, to reach at least 60 optimizer steps (at most 10 "
        "epochs); large sets fewer, to see about 50,000 examples (at least 1); without a validation set, 3. "
        "objective grpo: one pass over the prompts (each visit samples a fresh group; at least 60 steps). Printed "
        "with the reason.")
    max_steps: int = Field(-1, description="Stop after this many optimizer steps (overrides epochs when > 0).")
    per_device_train_batch_size: int = Field(8, ge=1, description="Examples per micro-batch (packed into one row). "
                                             "Objective grpo: sampled answers per micro-batch, as in TRL (a "
                                             "multiple of num_generations: 8 = one prompt x 8 answers).")
    gradient_accumulation_steps: int = Field(1, ge=1, description="Micro-batches per optimizer step; loss is "
                                             "normalised by supervised tokens, so 2x4 equals 1x8 exactly.")
    learning_rate: Union[PositiveFloat, Literal["auto"]] = Field(
        AUTO, description="Peak LR. auto (default): by method and base size: LoRA/QLoRA 2e-3 under 0.5B "
        "parameters, 5e-4 under 3B, 2e-4 under 20B, else 1e-4; full 5e-5 under 0.5B, 2e-5 under 3B, else 1e-5; "
        "prompt tuning 0.03; objective dpo 1/40 of that, grpo 1/10. Printed with the reason. Too low: a small "
        "set barely moves; too high: loss spikes.")
    learning_rate_multiplier: float = Field(
        1.0, gt=0, description="Scales the auto learning rate (the OpenAI jobs API's learning_rate_multiplier); "
        "only with learning_rate auto: an explicit --learning_rate is used as given.")
    warmup_steps: int = Field(0, ge=0, description="Linear warm-up steps; 0 means use warmup_ratio.")
    warmup_ratio: float = Field(0.1, ge=0, le=1, description="Warm-up as a fraction of total steps (guide: 10%).")
    lr_scheduler_type: Literal["linear", "cosine", "constant", "plateau", "auto"] = Field(
        AUTO, description="Decay after warm-up. linear/cosine: to zero at the last planned step. constant: none. "
        "plateau: constant, halved at each evaluation where neither validation loss nor exact match improved "
        "(an option for runs that validation stops early). auto (default): cosine when the epochs are auto "
        "(a cap; validation decides the length and keeps the best weights), else linear.")
    weight_decay: float = Field(0.01, ge=0, description="AdamW decay (not on biases/norms); mild regularisation.")
    max_grad_norm: float = Field(1.0, ge=0, description="Gradient clipping; 0 disables.")
    logging_steps: int = Field(10, ge=1, description="Log train loss every N optimizer steps.")
    eval_steps: int = Field(0, ge=0, description="Validate every N optimizer steps; 0 = 4 times per epoch, "
                            "at most every 5 steps.")
    save_steps: int = Field(0, ge=0, description="Checkpoint every N steps; 0 = at each evaluation.")
    save_total_limit: int = Field(2, ge=1, description="Checkpoints kept on disk (oldest are removed).")
    early_stopping_patience: int = Field(3, ge=0, description="Stop after N evaluations in a row where "
                                         "neither the validation loss nor the validation exact match improved (0 = "
                                         "off); if the rate is still above a fifth of its peak (not plateau), it "
                                         "first decays to zero over N more evaluations' steps. The best weights "
                                         "are what the run keeps.")
    seed: int = Field(42, description="Seeds data order, init and dropout; same seed + data = same run.")
    max_seq_len: int = Field(1024, ge=8, description="Longer examples are truncated (see `data check`).")
    packing: bool = Field(True, description="Pack each micro-batch into one row with per-example attention: "
                          "no padding compute; maths identical to a padded batch.")
    train_on_prompt: bool = Field(False, description="Also put loss on prompt tokens (usually worse).")
    report_to: list[Literal["tensorboard", "mlflow"]] = Field(
        [], description="Also log metrics to TensorBoard (RUN/tensorboard) and/or MLflow (RUN/mlruns, or "
        "MLFLOW_TRACKING_URI). Off by default; metrics.jsonl is always written.")
    # sharded training (train/shard.py): several processes, each holding 1/N of the weights
    fsdp: Literal["full_shard", "shard_grad_op", "hybrid_shard"] | None = Field(
        None, description="Shard weights, gradients and optimizer state over the processes of a launch (--nproc "
        "N, torchrun, accelerate launch) with PyTorch FSDP2 through accelerate: for models whose full fine-tune "
        "or base does not fit one device. full_shard: least memory per process (parameters gathered per layer, "
        "freed after use). shard_grad_op: parameters stay gathered from forward to backward (more memory, less "
        "communication). hybrid_shard: shard within a node, replicate across nodes (CUDA only). Unset "
        "(default): DDP, every process holds the whole model. See docs/scale-out.md.")
    fsdp_cpu_offload: bool = Field(False, description="fsdp: keep parameter/gradient/optimizer shards in CPU "
                                   "memory between uses (GPU memory for models that need it; slower).")
    fsdp_activation_checkpointing: bool = Field(False, description="fsdp: recompute each decoder layer's "
                                                "activations in backward (less memory, ~30% more compute).")
    # LoRA (peft LoraConfig)
    lora_r: int = Field(16, ge=1, description="LoRA rank: capacity vs adapter size (guide: 16).")
    lora_alpha: float = Field(32, gt=0, description="LoRA scale numerator; update scaled by alpha/r.")
    lora_dropout: float = Field(0.05, ge=0, lt=1, description="Dropout on the LoRA path (regularisation).")
    target_modules: list[str] = Field(["all-linear"], description="Modules to adapt (comma list), or all-linear "
                                      "(every linear layer but the output head: the default, see bench/RESULTS.md "
                                      "'Defaults'); q_proj,v_proj is the guide's lighter choice. More modules = more "
                                      "capacity and compute. Each must match the model.")
    lora_bias: Literal["none", "all", "lora_only"] = Field("none", description="Train biases too (peft `bias`).")
    use_dora: bool = Field(False, description="DoRA: learns magnitude and direction separately; often a bit "
                           "better at low rank, ~1.3-2x slower per step, merges like LoRA.")
    use_rslora: bool = Field(False, description="rsLoRA: scale alpha/sqrt(r) instead of alpha/r, so high ranks "
                             "keep learning; matters for r >= 64.")
    modules_to_save: list[str] = Field([], description="Extra modules trained in full and saved with the adapter "
                                       "(e.g. lm_head for new tokens); costs their full size in the adapter.")
    # QLoRA
    quant_backend: Literal["auto", "bitsandbytes", "torchao"] = Field(
        "auto", description="QLoRA 4-bit backend: auto = bitsandbytes when it imports, else torchao's NF4 "
        "(always double-quantized, NF4 only); both give the same peft adapter.")
    bnb_4bit_quant_type: Literal["nf4", "fp4"] = Field("nf4", description="QLoRA base quantization; NF4 suits "
                                                       "normally distributed weights.")
    bnb_4bit_use_double_quant: bool = Field(True, description="Quantize the quantization constants too (~0.4 "
                                            "bit/param saved), slightly slower.")
    # prompt tuning
    num_virtual_tokens: int = Field(20, ge=1, description="Prompt tuning: soft-prompt length; more = more "
                                    "capacity and longer sequences.")
    prompt_tuning_init_text: str | None = Field(None, description="Prompt tuning: initialise the soft prompt "
                                                "from this text (usually trains faster than random).")
    # reinforcement (objective: grpo); its KL strength is the shared `beta` key (grpo default 0.0)
    grader: str | None = Field(None, description="objective grpo: the grader JSON file (OpenAI's shapes: "
                               "string_check, text_similarity, python, score_model, multi) that scores each sampled "
                               "answer against its row; `tuneforge grader run` tries it on answers first.")
    num_generations: int = Field(8, ge=2, description="objective grpo: answers sampled per prompt (the group whose "
                                 "mean is the baseline). More = a better baseline and fewer all-same groups (no "
                                 "signal), at proportionally more sampling and training compute per prompt.")
    max_completion_length: int = Field(128, ge=1, description="objective grpo: token budget of each sampled "
                                       "answer. Too short cuts answers before they can be right (reward 0); "
                                       "longer costs decode time on every step.")
    temperature: Union[PositiveFloat, Literal["auto"]] = Field(
        AUTO, description="objective grpo: sampling temperature of the answers. auto (default): 0.5 for bases "
        "under 0.5B parameters, else 1.0 (TRL's default). Higher explores more, but a small base sampled hot is "
        "mostly off-topic, so whole groups score 0 alike (no signal); lower stays near what the model already does "
        "(groups may all score the same: no gradient). bench/rl_signal.py measures both on your data.")
    epsilon: float = Field(0.2, gt=0, lt=1, description="objective grpo: PPO clip range; the ratio of new to "
                           "sampling-time probability is clipped to [1-epsilon, 1+epsilon]. Smaller = more "
                           "conservative updates (stabler, slower); larger = faster but can overshoot.")

    @field_validator("target_modules", "modules_to_save", "report_to", mode="before")
    @classmethod
    def _split_list(cls, v: Any) -> Any:
        if isinstance(v, str):
            return [s.strip() for s in v.split(",") if s.strip() and s.strip() != "none"]
        return v


def _unknown_key(key: str, source: str) -> ConfigError:
    if key == "deepspeed":  # TrainingArguments' flag: say what to use instead (README "Sharded training")
        return ConfigError(f"{source}: deepspeed is not supported (no DeepSpeed path runs on CPU, where tuneforge "
                           "is tested); use --fsdp full_shard (PyTorch FSDP2: ZeRO-3-style sharding of weights, "
                           "gradients and optimizer state)")
    close = difflib.get_close_matches(key, TrainConfig.model_fields, n=1)
    hint = f" (did you mean '{close[0]}'?)" if close else ""
    return ConfigError(f"{source}: unknown config key '{key}'{hint}")


def parse_overrides(args: list[str]) -> dict[str, Any]:
    """`--key value`, `--key=value` and bare `--flag` (true) → dict; dashes in keys become underscores."""
    out: dict[str, Any] = {}
    i = 0
    while i < len(args):
        a = args[i]
        if not a.startswith("--"):
            raise ConfigError(f"command line: unexpected argument '{a}' (expected --key value)")
        key, eq, val = a[2:].partition("=")
        if not eq:
            if i + 1 < len(args) and not args[i + 1].startswith("--"):
                val, i = args[i + 1], i + 1
            else:
                val = "true"
        out[key.replace("-", "_")] = val
        i += 1
    return out


def load_config(path: str | Path | None = None, overrides: dict[str, Any] | None = None) -> TrainConfig:
    """Merge a YAML file and overrides (overrides win) into a validated TrainConfig."""
    raw: dict[str, Any] = {}
    src = "command line"
    if path is not None:
        p = Path(path)
        if not p.is_file():
            raise ConfigError(f"{p}: config file not found")
        try:
            raw = yaml.safe_load(p.read_text()) or {}
        except yaml.YAMLError as e:
            mark = getattr(e, "problem_mark", None)
            line = f":{mark.line + 1}" if mark else ""
            raise ConfigError(f"{p}{line}: invalid YAML: {getattr(e, 'problem', e)}") from None
        if not isinstance(raw, dict):
            raise ConfigError(f"{p}: expected a mapping of key: value")
        src = str(p)
        for k in raw:
            if k not in TrainConfig.model_fields:
                raise _unknown_key(k, src)
    for k in overrides or {}:
        if k not in TrainConfig.model_fields:
            raise _unknown_key(k, "command line")
    merged = {**raw, **(overrides or {})}
    try:
        return TrainConfig(**merged)
    except ValidationError as e:
        err = e.errors()[0]
        key = str(err["loc"][0]) if err["loc"] else "config"
        where = "command line" if key in (overrides or {}) else src
        raise ConfigError(f"{where}: bad value for '{key}': {err['msg']} (got {err.get('input')!r})") from None


def save_config(cfg: TrainConfig, path: Path) -> None:
    path.write_text(yaml.safe_dump(cfg.model_dump(), sort_keys=False))


def plan_key(cfg: TrainConfig) -> str:
    """Names a training plan: the data files' content and every setting but the output directory. The recipe
    records it in data.json; `tuneforge cost` remembers its estimate under it, so the finished run finds the
    estimate made for exactly this plan (`finish.finish_run`)."""
    import hashlib
    import json

    from tuneforge.run import file_sha256

    files = [file_sha256(f) if f and Path(f).is_file() else None for f in (cfg.data, cfg.val_data)]
    settings = {k: v for k, v in cfg.model_dump().items() if k not in ("output", "data", "val_data", "report_to")}
    blob = json.dumps({"files": files, "settings": settings}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:20]


def config_help() -> str:
    """One line per field: name, default, description (the same text the schema carries)."""
    rows = []
    for name, f in TrainConfig.model_fields.items():
        rows.append(f"  --{name} (default {f.default!r}): {f.description}")
    return "\n".join(rows)
