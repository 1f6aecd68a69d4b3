"""QLoRA: the frozen base loaded in 4-bit (NF4, optional double quantization), LoRA trained on top.

bitsandbytes >= 0.48 runs 4-bit on x86 CPUs as well as CUDA; compute stays fp32 on CPU, bf16 on CUDA.
The saved adapter is ordinary peft LoRA and merges onto the full-precision base.
"""

from __future__ import annotations

import torch

from tuneforge.errors import ConfigError
from tuneforge.methods import lora


def quantization_config(cfg, device: str):
    try:
        import bitsandbytes  # noqa: F401
        from transformers import BitsAndBytesConfig
    except ImportError:
        raise ConfigError("method qlora needs bitsandbytes (pip install bitsandbytes)") from None
    compute = torch.bfloat16 if device.startswith("cuda") and torch.cuda.is_bf16_supported() else torch.float32
    return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type=cfg.bnb_4bit_quant_type,
                              bnb_4bit_use_double_quant=cfg.bnb_4bit_use_double_quant,
                              bnb_4bit_compute_dtype=compute)


def prepare(model, cfg):
    from peft import get_peft_model, prepare_model_for_kbit_training

    lora.check_targets(model, cfg.target_modules)
    # no gradient checkpointing by default: at this model size recompute costs more than the memory it saves
    model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=False)
    return get_peft_model(model, lora.lora_config(cfg))
