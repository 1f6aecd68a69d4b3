"""Sharded training: PyTorch FSDP2 (`fully_shard`) through accelerate's FSDP plugin (fsdp_version=2).

Why this module exists beside `distributed` (DDP): under FSDP every rank holds 1/world of each parameter, gradient
and optimizer state, so anything that reads or writes whole weights (checkpoints, the best weights, the final
adapter/model) must become a collective. This module holds those collectives; the loop in recipe.py calls them
through `Ranks` and stays the same loop.

accelerate 1.16 applies its FSDP plugin only on accelerator devices: on CPU its `Accelerator` reports MULTI_CPU and
silently wraps the model in DDP instead. So on CPU we hand the same plugin to accelerate's own
`fsdp2_prepare_model` (the function `Accelerator.prepare` calls under FSDP2): same wrapping policy (each decoder
layer its own unit, the tied embedding/lm_head with the final norm), same `fully_shard` calls. On CUDA the plugin is
given to `Accelerator` and `prepare` does it.

Checkpoints are torch.distributed.checkpoint (DCP) directories written by every rank into the checkpoint's temp
directory, renamed by rank 0 once all ranks finished (atomic like the single-process ones). The final adapter/model
is gathered to rank 0 as a full state dict and saved as ordinary peft/transformers files.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

from tuneforge.errors import ConfigError

STRATEGIES = ("full_shard", "shard_grad_op", "hybrid_shard")


def check(cfg, device: str, world: int) -> None:
    """Refuse what cannot run, before any weights load: FSDP with one process, QLoRA on CPU, CPU offload on CPU
    (torch 2.13: `pin_memory` → "Cannot access accelerator device when none is available."), hybrid_shard on CPU
    (accelerate's ParallelismConfig, which builds the 2-D mesh, refuses MULTI_CPU)."""
    if not cfg.fsdp:
        return
    if cfg.objective != "sft":
        raise ConfigError(f"config: fsdp is implemented and tested for objective sft; objective {cfg.objective} "
                          "computes its loss outside the model's own forward (not sharded yet): drop --fsdp")
    if world <= 1:
        raise ConfigError("config: fsdp shards over processes; launch several (--nproc N, torchrun or accelerate "
                          "launch) or drop --fsdp")
    if cfg.method == "qlora" and device == "cpu":
        raise ConfigError("config: fsdp with method qlora needs CUDA GPUs: FSDP2 shards bitsandbytes' 4-bit weights "
                          "only when they are stored in a float dtype (bnb_4bit_quant_storage=bfloat16) on CUDA; "
                          "on CPU use --method lora or full with --fsdp, or qlora without --fsdp")
    if cfg.fsdp_cpu_offload and device == "cpu":  # torch pins the offloaded shards: needs an accelerator
        raise ConfigError("config: fsdp_cpu_offload moves shards from GPU to CPU memory; training on CPU they are "
                          "there already (and FSDP2's offload pins memory, which needs a GPU): drop it")
    if cfg.fsdp == "hybrid_shard" and device == "cpu":
        raise ConfigError("config: fsdp hybrid_shard (shard within a node, replicate across nodes) needs "
                          "accelerate's ParallelismConfig, which accelerate refuses on CPU (MULTI_CPU); use "
                          "full_shard or shard_grad_op on CPU")


def plugin(cfg, layer_classes: list[str]):
    """accelerate's FSDP plugin for `cfg`: full_shard = reshard parameters after forward (least memory),
    shard_grad_op = keep them gathered from forward to backward (ZeRO-2-like: less communication)."""
    from accelerate.utils import FullyShardedDataParallelPlugin

    return FullyShardedDataParallelPlugin(
        fsdp_version=2, reshard_after_forward=cfg.fsdp != "shard_grad_op",
        auto_wrap_policy="transformer_based_wrap", transformer_cls_names_to_wrap=layer_classes or None,
        cpu_offload=cfg.fsdp_cpu_offload, activation_checkpointing=cfg.fsdp_activation_checkpointing,
        state_dict_type="SHARDED_STATE_DICT", cpu_ram_efficient_loading=False)


def accelerator(cfg, device: str):
    """The Accelerator for an FSDP launch (see the module docstring for CPU)."""
    from accelerate import Accelerator

    if device == "cpu":
        return Accelerator(cpu=True)
    kw = {}
    if cfg.fsdp == "hybrid_shard":
        from accelerate.utils import ParallelismConfig

        local = int(os.environ.get("LOCAL_WORLD_SIZE", os.environ.get("WORLD_SIZE", "1")))
        world = int(os.environ.get("WORLD_SIZE", "1"))
        kw["parallelism_config"] = ParallelismConfig(dp_replicate_size=world // local, dp_shard_size=local)
    return Accelerator(fsdp_plugin=plugin(cfg, []), **kw)


def layer_classes(model) -> list[str]:
    """The decoder-layer classes each sharded as one unit (transformers' `_no_split_modules`)."""
    found = set()
    for m in model.modules():
        found.update(getattr(m, "_no_split_modules", None) or [])
    return sorted(found)


def shard(acc, cfg, model):
    """`model` sharded in place with fully_shard (returned: an FSDPModule); build the optimizer afterwards, on
    the sharded parameters."""
    from accelerate.utils import DistributedType
    from accelerate.utils.fsdp_utils import fsdp2_prepare_model

    p = plugin(cfg, layer_classes(model))
    if acc.distributed_type != DistributedType.FSDP:  # CPU: accelerate dropped the plugin (module docstring)
        acc.state.fsdp_plugin = p
    else:
        acc.state.fsdp_plugin.transformer_cls_names_to_wrap = p.transformer_cls_names_to_wrap
    if cfg.fsdp_activation_checkpointing:
        from accelerate.utils.fsdp_utils import fsdp2_apply_ac

        model = fsdp2_apply_ac(acc, model)
    return fsdp2_prepare_model(acc, model)


def is_sharded(model) -> bool:
    from torch.distributed.fsdp import FSDPModule

    return isinstance(model, FSDPModule)


# --- whole weights out of a sharded model (collectives: every rank calls them) ---

def full_state(model, trainable_only: bool = False) -> dict[str, torch.Tensor]:
    """The model's full state dict on rank 0 (CPU tensors), {} elsewhere."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    sd = get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
    if trainable_only:
        keep = _trainable_keys(model)
        sd = {k: v for k, v in sd.items() if k in keep}
    return sd


# --- sharded checkpoints (DCP) ---

def _trainable_keys(model) -> set[str]:
    """State-dict names of the trainable parameters (activation checkpointing's wrapper is not in them)."""
    return {n.replace("_checkpoint_wrapped_module.", "") for n, p in model.named_parameters() if p.requires_grad}


def save_sharded(d: Path, model, optimizer) -> None:
    """Every rank writes its shards of the trainable weights and the optimizer state into `d/dcp`."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import get_state_dict

    msd, osd = get_state_dict(model, optimizer)
    keep = _trainable_keys(model)
    dcp.save({"model": {k: v for k, v in msd.items() if k in keep}, "optim": osd}, checkpoint_id=str(d / "dcp"))


def load_sharded(d: Path, model, optimizer) -> None:
    """Read `d/dcp` into this rank's shards (DCP reshards: the files do not depend on the number of ranks)."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_state_dict, set_state_dict

    msd, osd = get_state_dict(model, optimizer)
    keep = _trainable_keys(model)
    sd = {"model": {k: v for k, v in msd.items() if k in keep}, "optim": osd}
    dcp.load(sd, checkpoint_id=str(d / "dcp"))
    set_state_dict(model, optimizer, model_state_dict=sd["model"], optim_state_dict=sd["optim"],
                   options=StateDictOptions(strict=False))


def load_full_trainable(model, state: dict[str, torch.Tensor]) -> None:
    """Load full (unsharded) trainable tensors, given on every rank, into the sharded model."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, set_model_state_dict

    set_model_state_dict(model, state, options=StateDictOptions(full_state_dict=True, strict=False))


# --- memory per rank ---

def _local_bytes(t: torch.Tensor) -> int:
    t = t.to_local() if hasattr(t, "to_local") else t
    return t.numel() * t.element_size()


def memory(model, optimizer) -> dict[str, int]:
    """Bytes this rank holds: parameters, gradients and optimizer state (its shards under FSDP, everything under
    DDP or one process). Gradients are counted at their peak in a step (one per trainable parameter, the same
    shards: the loop frees them after each step)."""
    params = list(model.parameters())
    opt = sum(_local_bytes(v) for st in optimizer.state.values() for v in st.values()
              if isinstance(v, torch.Tensor) and v.dim() > 0)
    return {"param_bytes": sum(_local_bytes(p) for p in params),
            "grad_bytes": sum(_local_bytes(p) for p in params if p.requires_grad),
            "optimizer_bytes": opt}
