"""Training methods: one small module each, one row in METHODS.

A row holds every per-method rule, so no other package tests a method's name: how to prepare the loaded model,
whether the run saves a peft adapter, whether it can be merged into plain weights, whether sequences may be
packed, how the base is loaded when not as it is (4-bit), what it trains (the parameter-count formula `advise.cost`
plans with), what its FLOPs and memory formulas depend on (weight gradients, logits at every position, virtual
tokens, a 4-bit base), and which config keys a report shows for it.
"""

from __future__ import annotations

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
    packing: bool = True  # prompt tuning prepends virtual tokens per row: one example per row
    load: Callable | None = None  # (cfg, device) -> Base, where the base is not loaded as it is (4-bit)
    weight_gradients: bool = False  # every weight gets a gradient (full): backward costs 2x forward, Adam on all
    generic_loss: bool = False  # logits at every position through the model's own forward (virtual tokens)
    virtual_tokens: Callable = lambda cfg: 0  # positions the method prepends to every row
    quantized_base: bool = False  # linear layers stored in 4 bits
    report_keys: tuple[str, ...] = ()  # the config keys of this method a report lists


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
METHODS: dict[str, Method] = {
    "lora": Method(lora.prepare, adapter=True, mergeable=True, trainable=adapter_parameters,
                   report_keys=LORA_KEYS + ("use_dora", "use_rslora")),
    "full": Method(full.prepare, adapter=False, mergeable=True, trainable=lambda shape, cfg: shape.params,
                   weight_gradients=True),
    "qlora": Method(qlora.prepare, adapter=True, mergeable=True, trainable=adapter_parameters, load=qlora.load,
                    quantized_base=True, report_keys=LORA_KEYS + ("bnb_4bit_quant_type",)),
    "prompt-tuning": Method(prompt_tuning.prepare, adapter=True, mergeable=False, packing=False,
                            trainable=lambda shape, cfg: cfg.num_virtual_tokens * shape.hidden, generic_loss=True,
                            virtual_tokens=lambda cfg: cfg.num_virtual_tokens,
                            report_keys=("num_virtual_tokens", "prompt_tuning_init_text")),
}


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
        return "lora", (f"method auto → lora: base weights {gb(size)} fit easily in {gb(free)} free {where}; "
                        f"full fine-tuning would need ~{gb(size * 4)} (weights, grads, Adam) and risks forgetting")
    if size / 6 * 2.5 < free:
        return "qlora", (f"method auto → qlora: base weights {gb(size)} too large for {gb(free)} free {where} "
                         f"in full precision; 4-bit base needs ~{gb(size / 6)}")
    raise ConfigError(f"method auto: base weights {gb(size)} do not fit in {gb(free)} free {where} even in 4-bit")
