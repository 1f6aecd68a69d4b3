"""Training methods: one small module each, one row in METHODS.

A row holds every per-method rule, so no other package tests a method's name: how to prepare the loaded model,
whether the run saves a peft adapter, whether it can be merged into plain weights, whether sequences may be
packed, how the base is loaded when not as it is (4-bit), what it trains (the parameter-count formula `advise.cost`
plans with), what its FLOPs and memory formulas depend on (weight gradients, logits at every position, virtual
tokens, a 4-bit base), whether its result is a LoRA adapter (LoRA knobs, served beside the base, DPO's reference
is the base under it), its `learning_rate auto` table, and which config keys a report shows for it. DEFAULT,
LOW_MEMORY and ALL_WEIGHTS name the rows other packages pick by role (`choose`, advise, the jobs API, distill).

`TrainConfig.method` (config is a layer below) lists the same names plus "auto"; tests/test_methods.py holds the
two equal, and `get` is the check every user of a config goes through.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from tuneforge.errors import ConfigError
from tuneforge.methods import full, lora, prompt_tuning, qlora


@dataclass(frozen=True)
class Method:
    prepare: Callable
    adapter: bool  # saves adapter/ (peft) rather than model/
    mergeable: bool  # export merge → plain transformers weights
    trainable: Callable  # (shape, cfg) -> trainable parameters, from the base's shape (`advise.cost.Shape`)
    # `learning_rate auto` (train.auto): (base parameters below this bound, peak rate) rows, smallest bound first,
    # the last bound math.inf; and the reason printed after "learning_rate X (auto): " ({method}, {params} filled in)
    learning_rates: tuple[tuple[float, float], ...]
    learning_rate_reason: str
    packing: bool = True  # prompt tuning prepends virtual tokens per row: one example per row
    load: Callable | None = None  # (cfg, device) -> Base, where the base is not loaded as it is (4-bit)
    weight_gradients: bool = False  # every weight gets a gradient (full): backward costs 2x forward, Adam on all
    generic_loss: bool = False  # logits at every position through the model's own forward (virtual tokens)
    virtual_tokens: Callable = lambda cfg: 0  # positions the method prepends to every row
    quantized_base: bool = False  # linear layers stored in 4 bits
    report_keys: tuple[str, ...] = ()  # the config keys of this method a report lists
    lora_shaped: bool = False  # the result is a peft LoRA adapter: LoRA knobs apply, `serve` adds it beside the
    # base it serves (the jobs API), and the base under it (adapter disabled) is DPO's reference


def _matches(name: str, targets: list[str]) -> bool:
    return targets == ["all-linear"] or any(name == t or name.endswith("." + t) for t in targets)


def adapter_parameters(shape, cfg) -> int:
    """LoRA/QLoRA: r·(in+out) per adapted linear layer, + DoRA's magnitudes and modules_to_save."""
    n = 0
    for name, (i, o) in shape.linear.items():
        if _matches(name, cfg.target_modules):
            n += cfg.lora_r * (i + o) + (o if cfg.use_dora else 0)
        if cfg.modules_to_save and _matches(name, cfg.modules_to_save):
            n += i * o
    if "lm_head" in cfg.modules_to_save:
        n += shape.head
    return n


LORA_KEYS = ("lora_r", "lora_alpha", "lora_dropout", "target_modules")
# LoRA/QLoRA peak learning rate by base size. Measured on SmolLM2-135M (bench/defaults.py, issue 23) with the auto
# schedule (cosine to the epoch cap, validation stopping it, a decay before the stop; train/auto.py): 2e-3 beat
# 4e-3 on routing on each of 3 seeds (mean accuracy 0.973 vs 0.900; 1e-3 0.933, 8e-3 0.820), on clock (exact
# match 0.833 vs 0.733), sentiment (3 seeds: 0.987 vs 0.922) and numwords (0.967 vs 0.917). On the plateau
# schedule, earlier, 4e-3 had won clock (2e-3 stopped too early there): the cosine keeps 2e-3 near its peak.
# The larger rows follow common practice (QLoRA paper: 2e-4 for 7-13B, 1e-4 for 33-65B).
LORA_LR = ((0.5e9, 2e-3), (3e9, 5e-4), (20e9, 2e-4), (math.inf, 1e-4))
LORA_LR_REASON = "{method} on a {params}-parameter base (smaller bases take larger steps); --learning_rate to override"
FULL_LR = ((0.5e9, 5e-5), (3e9, 2e-5), (math.inf, 1e-5))  # full fine-tuning: the guide's 1e-5..5e-5
PROMPT_TUNING_LR = ((math.inf, 3e-2),)  # soft prompts start far from any useful point and need large steps
METHODS: dict[str, Method] = {
    "lora": Method(lora.prepare, adapter=True, mergeable=True, trainable=adapter_parameters,
                   report_keys=LORA_KEYS + ("use_dora", "use_rslora"), lora_shaped=True,
                   learning_rates=LORA_LR, learning_rate_reason=LORA_LR_REASON),
    "full": Method(full.prepare, adapter=False, mergeable=True, trainable=lambda shape, cfg: shape.params,
                   weight_gradients=True, learning_rates=FULL_LR,
                   learning_rate_reason="full fine-tuning on a {params}-parameter base (every weight moves); "
                   "--learning_rate to override"),
    "qlora": Method(qlora.prepare, adapter=True, mergeable=True, trainable=adapter_parameters, load=qlora.load,
                    quantized_base=True, report_keys=LORA_KEYS + ("bnb_4bit_quant_type",), lora_shaped=True,
                    learning_rates=LORA_LR, learning_rate_reason=LORA_LR_REASON),
    "prompt-tuning": Method(prompt_tuning.prepare, adapter=True, mergeable=False, packing=False,
                            trainable=lambda shape, cfg: cfg.num_virtual_tokens * shape.hidden, generic_loss=True,
                            virtual_tokens=lambda cfg: cfg.num_virtual_tokens,
                            report_keys=("num_virtual_tokens", "prompt_tuning_init_text"),
                            learning_rates=PROMPT_TUNING_LR,
                            learning_rate_reason="prompt tuning trains only a soft prompt"),
}
DEFAULT = "lora"  # the guide's parameter-efficient default: `choose` when the base fits, the jobs API's method
LOW_MEMORY = "qlora"  # the smallest footprint: `choose` when the base fits only in 4 bits
ALL_WEIGHTS = "full"  # every weight trains: advise's upgrade on large data, a distilled student's method


def get(name: str) -> Method:
    if name not in METHODS:
        raise ConfigError(f"method '{name}' is not available (have: {', '.join(METHODS)}, auto)")
    return METHODS[name]


def prepare(model, cfg):
    return get(cfg.method).prepare(model, cfg)


def saves_adapter(method: str) -> bool:
    return get(method).adapter


def count_parameters(model) -> tuple[int, int]:
    """(trainable, total) parameter counts; 4-bit packed weights count as their logical size."""
    import torch

    trainable, total = 0, 0
    for p in model.parameters():
        n = p.numel() * (2 if p.dtype == torch.uint8 else 1)  # bitsandbytes packs two 4-bit weights a byte
        total += n
        trainable += n if p.requires_grad else 0
    return trainable, total


def stored_bytes(t) -> int:
    """Bytes a tensor really holds: a tensor subclass (torchao NF4) is counted by its inner tensors."""
    if hasattr(t, "__tensor_flatten__"):
        names, _ = t.__tensor_flatten__()
        return sum(stored_bytes(getattr(t, n)) for n in names)
    return t.numel() * t.element_size()


def weight_bytes(model_dir: str | Path) -> int:
    return sum(f.stat().st_size for f in Path(model_dir).glob("*.safetensors"))


def choose(model_dir: str | Path, device: str) -> tuple[str, str]:
    """`--method auto`: (method, one-line reason) from the base's size and the memory available."""
    import psutil
    import torch

    size = weight_bytes(model_dir)  # fp32/bf16 weights on disk ≈ their size in memory
    if device.startswith("cuda"):
        free = torch.cuda.mem_get_info()[0]
        where = "GPU"
    else:
        free = psutil.virtual_memory().available
        where = "RAM"
    gb = lambda b: f"{b / 2**30:.1f} GB"  # noqa: E731
    # LoRA needs the weights plus activations (~1.5x weights is a safe margin at these sequence lengths)
    if size * 2.5 < free:
        return DEFAULT, (f"method auto → {DEFAULT}: base weights {gb(size)} fit easily in {gb(free)} free {where}; "
                         f"full fine-tuning would need ~{gb(size * 4)} (weights, grads, Adam) and risks forgetting")
    if size / 6 * 2.5 < free:
        return LOW_MEMORY, (f"method auto → {LOW_MEMORY}: base weights {gb(size)} too large for {gb(free)} free "
                            f"{where} in full precision; 4-bit base needs ~{gb(size / 6)}")
    raise ConfigError(f"method auto: base weights {gb(size)} do not fit in {gb(free)} free {where} even in 4-bit")
