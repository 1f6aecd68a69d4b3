"""Weight-only int8 / int4 quantization of a run's merged model with torchao, saved as a transformers directory.

`tuneforge export quantize RUN --bits 8|4` → RUN/exports/int8|int4/ (config.json carries transformers'
`TorchAoConfig`, so plain `AutoModelForCausalLM.from_pretrained(dir)` reloads it; generate/eval/serve load it
through `models.load.load_base` like any model directory).

What runs on a CPU with torchao 0.18 (measured, transformers 5.24):
- 8 bits: `Int8WeightOnlyConfig` (per-channel int8, one byte per weight) for every linear layer.
- 4 bits: `IntxWeightOnlyConfig(int4, groups of 32)`: int4 values with a scale per 32 weights. torchao's
  packed int4 CPU layouts either need CUDA/bf16 (`tile_packed_to_4d`), an extra kernel library (`preshuffled`:
  mslk) or cannot be serialised (the prototype `Int4OpaqueTensor`), so the int4 values are stored one per
  byte: the file is no smaller than int8 (≈ +7% for the group scales); what 4 bits buys here is the accuracy
  trade-off of a 4-bit deployment, checked before a GPU kernel is chosen. bitsandbytes NF4 packs two weights
  a byte, but its CPU inference produced garbage on SmolLM2 (tried), so it is not offered.
The embedding and (tied) output layer stay in full precision: torchao's default, and most of the error of
quantized small models comes from the output layer.
"""

from __future__ import annotations

from pathlib import Path

from tuneforge.errors import ConfigError

INT4_GROUP = 32  # weights per int4 scale: 32 is torchao's finest group; coarser groups lose more accuracy


def torchao_config(bits: int):
    """The transformers `TorchAoConfig` for weight-only int8 or int4 on the CPU."""
    import torch
    from torchao.quantization import Int8WeightOnlyConfig, IntxWeightOnlyConfig
    from torchao.quantization.granularity import PerGroup
    from transformers import TorchAoConfig

    if bits == 8:
        return TorchAoConfig(Int8WeightOnlyConfig())
    if bits == 4:
        return TorchAoConfig(IntxWeightOnlyConfig(weight_dtype=torch.int4, granularity=PerGroup(INT4_GROUP)))
    raise ConfigError(f"--bits {bits}: weight-only quantization supports 8 or 4 bits")


def quantize_dir(model_dir: str | Path, out: Path, bits: int) -> None:
    """Load the merged model from `model_dir` quantizing on the way (transformers applies torchao per layer)
    and save it with its tokenizer into `out`."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(str(model_dir), dtype=torch.float32, device_map="cpu",
                                                 quantization_config=torchao_config(bits))
    model.save_pretrained(out)
    AutoTokenizer.from_pretrained(str(model_dir)).save_pretrained(out)


def settings(bits: int) -> dict:
    return {"bits": bits, "library": "torchao", "scheme": "int8 per-channel weight-only" if bits == 8 else
            f"int4 weight-only, groups of {INT4_GROUP}, stored unpacked (one value per byte)"}
