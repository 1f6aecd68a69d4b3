"""QLoRA: the frozen base held in 4-bit (NF4, double-quantized scales), LoRA trained on top.

Two backends, same adapter: bitsandbytes (>= 0.48 runs 4-bit on x86 CPUs as well as CUDA) and, where
bitsandbytes is missing or cannot load, torchao's NF4 tensor (the one torchtune's QLoRA uses). Compute stays
fp32 on CPU, bf16 on CUDA. The saved adapter is ordinary peft LoRA and merges onto the full-precision base.
"""

from __future__ import annotations

import importlib

from tuneforge.errors import ConfigError
from tuneforge.methods import lora

BACKENDS = ("bitsandbytes", "torchao")
NF4_BLOCK = 64  # weights per absmax scale, as in bitsandbytes and the QLoRA paper
SCALER_BLOCK = 256  # scales per double-quantization block (the largest divisor <= this is used)


def _importable(name: str) -> bool:
    try:
        importlib.import_module(name)
        return True
    except Exception:  # noqa: BLE001 - a broken install (missing CPU kernels, wrong torch) counts as absent
        return False


def resolve_backend(cfg) -> str:
    """`quant_backend: auto` → bitsandbytes when it imports, else torchao."""
    if cfg.quant_backend == "auto":
        for name in BACKENDS:
            if _importable(name):
                return name
        raise ConfigError("method qlora needs bitsandbytes or torchao: pip install bitsandbytes "
                          "(or torchao where bitsandbytes has no build)")
    if not _importable(cfg.quant_backend):
        raise ConfigError(f"quant_backend {cfg.quant_backend}: cannot import it (pip install {cfg.quant_backend})")
    if cfg.quant_backend == "torchao" and cfg.bnb_4bit_quant_type != "nf4":
        raise ConfigError(f"bnb_4bit_quant_type {cfg.bnb_4bit_quant_type}: torchao has NF4 only "
                          "(use quant_backend bitsandbytes for fp4)")
    return cfg.quant_backend


def load(cfg, device: str):
    """The base with every linear layer but the output head in 4-bit; records the backend used in cfg."""
    from transformers import BitsAndBytesConfig

    from tuneforge.models.load import default_dtype, load_base

    cfg.quant_backend = resolve_backend(cfg)  # saved in config.yaml: what actually ran
    compute = default_dtype(device)
    if cfg.quant_backend == "bitsandbytes":
        bnb = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type=cfg.bnb_4bit_quant_type,
                                 bnb_4bit_use_double_quant=cfg.bnb_4bit_use_double_quant,
                                 bnb_4bit_compute_dtype=compute)
        base = load_base(cfg.base, device=device, quantization_config=bnb)
    else:
        base = load_base(cfg.base, device=device, dtype=compute)
        quantize_nf4(base.model)
    if device == "cpu":
        _compact(base.model)
    return base


def _compact(model) -> None:
    """Give back what loading in full precision left behind (QLoRA's training peak fell below LoRA's with it).

    The full-precision params left (embeddings, norms) are views of the checkpoint's memory map, which keeps
    every page of it resident; copying them lets the map close. glibc keeps the freed fp32 weights in its heap
    until asked to trim."""
    from tuneforge.memory import release_freed

    for p in model.parameters():
        if p.dtype.is_floating_point and not hasattr(p, "__tensor_flatten__"):
            p.data = p.data.clone()
    release_freed()


def _scaler_block(n_blocks: int) -> int:
    return next(d for d in range(min(SCALER_BLOCK, n_blocks), 0, -1) if n_blocks % d == 0)


def quantize_nf4(model) -> int:
    """Replace linear weights by torchao NF4 tensors in place; returns how many layers were quantized.

    The output head stays full precision (it is usually tied to the input embeddings), as bitsandbytes does.
    A layer whose size is not a multiple of the 64-weight block is left as it is."""
    import torch

    try:
        from torchao.quantization import to_nf4
    except ImportError:  # torchao < 0.15 kept it under dtypes
        from torchao.dtypes import to_nf4

    head = model.get_output_embeddings()
    n = 0
    for module in model.modules():
        if not isinstance(module, torch.nn.Linear) or module is head or module.weight.numel() % NF4_BLOCK:
            continue
        w = module.weight.detach().contiguous()
        q = to_nf4(w, block_size=NF4_BLOCK, scaler_block_size=_scaler_block(w.numel() // NF4_BLOCK))
        module.weight = torch.nn.Parameter(q, requires_grad=False)
        n += 1
    if n == 0:
        raise ConfigError("quant_backend torchao: no linear layer of this model can be held in NF4")
    return n


def prepare(model, cfg):
    from peft import get_peft_model, prepare_model_for_kbit_training

    lora.check_targets(model, cfg.target_modules)
    if cfg.quant_backend == "bitsandbytes":
        # no gradient checkpointing by default: at this model size recompute costs more than the memory it saves
        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=False)
    # (torchao: peft's k-bit preparation would cast the NF4 weights back to full precision; peft freezes them)
    return get_peft_model(model, lora.lora_config(cfg))
