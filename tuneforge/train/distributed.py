"""Several training processes through accelerate (launched by `torchrun`, `accelerate launch` or `train --nproc`).

One process is the plain path: `Ranks.single()` wraps nothing and every method is a no-op, so a single-process
run is exactly what it was. With WORLD_SIZE > 1, accelerate's `Accelerator` sets up the process group (gloo on
CPU, nccl on GPU) and wraps the model in DDP. FSDP and DeepSpeed, which shard the weights, are refused with a clear
error until checkpoints gather sharded weights. The recipe (recipe.py) shards micro-batches by rank, sums
the objective's loss counts over ranks, and lets only rank 0 write the run directory.
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

    @classmethod
    def single(cls) -> "Ranks":
        return cls()

    @property
    def main(self) -> bool:
        """Rank 0 writes the run directory, logs and checkpoints."""
        return self.rank == 0

    def wrap(self, model, optimizer, objective):
        """(module computing the objective's loss, optimizer) ready for this launch: unwrapped for one process."""
        module = ObjectiveLoss(model, objective)
        if self.accelerator is None:
            return module, optimizer
        return self.accelerator.prepare(module, optimizer)

    def sum(self, values: list[float]) -> list[float]:
        """Element-wise sum over ranks (one all-reduce for several counters)."""
        if self.accelerator is None:
            return values
        t = torch.tensor(values, dtype=torch.float64, device=self.accelerator.device)
        return self.accelerator.reduce(t, "sum").tolist()

    def no_sync(self, module, last: bool):
        """Gradient accumulation: all-reduce only on the last micro-batch of an optimizer step."""
        if self.accelerator is None or last:
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


def setup(device: str) -> Ranks:
    """Ranks for this launch; with one process nothing is initialised (and accelerate is not imported)."""
    if launched_world_size() <= 1:
        return Ranks.single()
    from accelerate import Accelerator

    acc = Accelerator(cpu=device == "cpu")
    kind = str(acc.distributed_type).rsplit(".", 1)[-1]
    if kind in ("FSDP", "DEEPSPEED"):
        from tuneforge.errors import ConfigError

        raise ConfigError(f"accelerate config asks for {kind}: tuneforge's checkpoints and adapters are written "
                          "from one process's full weights, so sharded training is not supported yet; use DDP "
                          "(plain `accelerate launch` / `torchrun` / `train --nproc N`)")
    return Ranks(acc, acc.process_index, acc.num_processes)


def launch_command(nproc: int, argv: list[str]) -> list[str]:
    """`tuneforge train --nproc N ...` → N local processes through torchrun (torch.distributed.run), each running
    `tuneforge train ...` without --nproc. (accelerate launch's CPU mode needs MPI; torchrun does not, and
    accelerate picks up the process group it sets up.)"""
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
            "-m", "tuneforge.cli", *argv]
