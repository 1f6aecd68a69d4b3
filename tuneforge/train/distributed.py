"""Several training processes through accelerate (launched by `torchrun`, `accelerate launch` or `train --nproc`).

One process is the plain path: `Ranks.single()` wraps nothing and every method is a no-op, so a single-process
run is exactly what it was. With WORLD_SIZE > 1, accelerate's `Accelerator` sets up the process group (gloo on
CPU, nccl on GPU) and wraps the model in DDP; with `cfg.fsdp` the model is sharded instead (FSDP2, train/shard.py)
and the methods that read or write whole weights become collectives. DeepSpeed is refused (README: no DeepSpeed
path runs on CPU to test it; FSDP2 gives the same ZeRO-3 sharding). The recipe (recipe.py) shards micro-batches by
rank, sums the objective's loss counts over ranks, and lets only rank 0 write the run directory.
"""

from __future__ import annotations

import contextlib
import os
import sys
from dataclasses import dataclass

import torch



def launched_world_size() -> int:
    """Processes in this launch: WORLD_SIZE as torchrun and accelerate launch set it (1 when run directly)."""
    return int(os.environ.get("WORLD_SIZE", "1"))


class ObjectiveLoss(torch.nn.Module):
    """The objective's loss as a module, so DDP/FSDP see the forward pass they need to synchronise gradients
    while the loss keeps its own shape (SFT: output layer at supervised positions only, in chunks; DPO: the
    policy and reference passes). forward(batch) → (loss sum, {metric: sum})."""

    def __init__(self, model, objective):
        super().__init__()
        self.model = model
        self.objective = objective

    def forward(self, batch: dict[str, torch.Tensor]):
        return self.objective.loss(self.model, batch)


@dataclass
class Ranks:
    """Who this process is and how it talks to the others; `accelerator` is None for a single process."""

    accelerator: object | None = None
    rank: int = 0
    world: int = 1
    cfg: object | None = None  # the TrainConfig when the weights are sharded (cfg.fsdp set), else None

    @property
    def fsdp(self) -> bool:
        return self.cfg is not None

    @classmethod
    def single(cls) -> "Ranks":
        return cls()

    @property
    def main(self) -> bool:
        """Rank 0 writes the run directory, logs and checkpoints."""
        return self.rank == 0

    def wrap(self, model, optimizer, objective):
        """(module computing the objective's loss, optimizer) ready for this launch: unwrapped for one process.
        `optimizer` is an optimizer or a function model → optimizer; under FSDP it must be the function: the model
        is sharded in place first and the optimizer built on its shards."""
        if self.fsdp:
            from tuneforge.train import shard

            model = shard.shard(self.accelerator, self.cfg, model)
            return ObjectiveLoss(model, objective), optimizer(model)
        module = ObjectiveLoss(model, objective)
        optimizer = optimizer(model) if callable(optimizer) else optimizer
        if self.accelerator is None:
            return module, optimizer
        return self.accelerator.prepare(module, optimizer)

    def trainable_state(self, model) -> dict[str, torch.Tensor]:
        """The full trainable weights on rank 0 ({} elsewhere). Under FSDP a collective: every rank calls it."""
        from tuneforge.train import checkpoint, shard

        if self.fsdp:
            return shard.full_state(model, trainable_only=True)
        return checkpoint.trainable_state(model) if self.main else {}

    def full_state(self, model) -> dict[str, torch.Tensor] | None:
        """Under FSDP the whole state dict gathered on rank 0 (a collective); None otherwise (use the model)."""
        if not self.fsdp:
            return None
        from tuneforge.train import shard

        return shard.full_state(model)

    def memory(self, model, optimizer) -> list[dict[str, int]]:
        """Every rank's parameter, gradient and optimizer-state bytes, in rank order (call before zero_grad)."""
        from tuneforge.train import shard

        return self.gather(shard.memory(model, optimizer))

    def sum(self, values: list[float]) -> list[float]:
        """Element-wise sum over ranks (one all-reduce for several counters)."""
        if self.accelerator is None:
            return values
        t = torch.tensor(values, dtype=torch.float64, device=self.accelerator.device)
        return self.accelerator.reduce(t, "sum").tolist()

    def no_sync(self, module, last: bool):
        """Gradient accumulation: all-reduce only on the last micro-batch of an optimizer step."""
        if self.accelerator is None or last or self.fsdp:  # FSDP: reduce-scatter every micro-batch
            return contextlib.nullcontext()
        return self.accelerator.no_sync(module)

    def clip_grad_norm_(self, module, max_norm: float):
        if self.accelerator is None:
            return torch.nn.utils.clip_grad_norm_(module.parameters(), max_norm)
        return self.accelerator.clip_grad_norm_(module.parameters(), max_norm)

    def barrier(self) -> None:
        if self.accelerator is not None:
            self.accelerator.wait_for_everyone()

    def gather(self, obj) -> list:
        """Every rank's `obj`, in rank order (e.g. RNG states for a checkpoint)."""
        if self.accelerator is None:
            return [obj]
        out = [None] * self.world
        torch.distributed.all_gather_object(out, obj)
        return out

    def close(self) -> None:
        if self.accelerator is not None and torch.distributed.is_initialized():
            self.accelerator.wait_for_everyone()
            torch.distributed.destroy_process_group()


def setup(device: str, cfg=None) -> Ranks:
    """Ranks for this launch; with one process nothing is initialised (and accelerate is not imported).
    `cfg` (the TrainConfig) chooses FSDP (`cfg.fsdp`); its impossible combinations are refused here, before any
    weights load."""
    from tuneforge.errors import ConfigError

    fsdp = getattr(cfg, "fsdp", None)
    if fsdp:
        from tuneforge.train import shard

        shard.check(cfg, device, launched_world_size())
    if launched_world_size() <= 1:
        return Ranks.single()
    if fsdp:
        acc = shard.accelerator(cfg, device)
        return Ranks(acc, acc.process_index, acc.num_processes, cfg)
    from accelerate import Accelerator

    acc = Accelerator(cpu=device == "cpu")
    kind = str(acc.distributed_type).rsplit(".", 1)[-1]
    if kind == "FSDP":
        raise ConfigError("accelerate config asks for FSDP: tuneforge configures FSDP itself; launch without "
                          "accelerate's FSDP settings and pass --fsdp full_shard (config key fsdp)")
    if kind == "DEEPSPEED":
        raise ConfigError("accelerate config asks for DeepSpeed: not supported (no DeepSpeed path runs on CPU to "
                          "test it); use --fsdp full_shard for the same ZeRO-3-style sharding")
    return Ranks(acc, acc.process_index, acc.num_processes)


def relaunch(nproc: int, argv: list[str]) -> int:
    """`tuneforge train --nproc N ARGS`: run the same command as N local processes (`launch_command`, --nproc
    removed from ARGS) and return their exit status. Refused inside a launch that already has several processes."""
    import subprocess

    from tuneforge.errors import TuneforgeError

    if launched_world_size() > 1:
        raise TuneforgeError("--nproc: already launched with several processes (torchrun / accelerate launch)")
    argv = list(argv)
    i = next(k for k, a in enumerate(argv) if a == "--nproc" or a.startswith("--nproc="))
    del argv[i:i + (1 if "=" in argv[i] else 2)]
    return subprocess.run(launch_command(nproc, argv), env=os.environ).returncode


def launch_command(nproc: int, argv: list[str]) -> list[str]:
    """`tuneforge train --nproc N ...` → N local processes through torchrun (torch.distributed.run), each running
    `tuneforge train ...` without --nproc. (accelerate launch's CPU mode needs MPI; torchrun does not, and
    accelerate picks up the process group it sets up.)"""
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
            "-m", "tuneforge.cli", *argv]
