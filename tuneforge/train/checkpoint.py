"""Atomic save/resume: trainable weights, optimizer, scheduler, RNG and data position.

A checkpoint is written to `checkpoints/.tmp-step-N/`, fsynced, then renamed to `step-N/`: a kill at
any moment leaves either the old set of checkpoints or the new one, never a half-written one.

Under FSDP (`save_sharded`) every rank writes its shards with torch.distributed.checkpoint into
`checkpoints/.dcp-step-N/`; rank 0 then moves them into the temp directory with the scheduler/RNG/loop state and
renames it to `step-N/` the same way, so a kill of any rank at any moment leaves no half checkpoint either.
"""

from __future__ import annotations

import json
import random
import shutil
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from tuneforge.run import write_atomic_dir

SCHEMA = 1


def trainable_state(model) -> dict[str, torch.Tensor]:
    return {n: p.detach().contiguous().clone() for n, p in model.named_parameters() if p.requires_grad}


def load_trainable(model, state: dict[str, torch.Tensor]) -> None:
    params = dict(model.named_parameters())
    missing = [n for n in state if n not in params]
    if missing:
        raise RuntimeError(f"checkpoint has parameters the model lacks: {missing[:3]}")
    with torch.no_grad():
        for n, t in state.items():
            params[n].copy_(t)


def rng_state() -> dict:
    st = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        st["cuda"] = torch.cuda.get_rng_state_all()
    return st


def set_rng_state(st: dict) -> None:
    random.setstate(st["python"])
    np.random.set_state(st["numpy"])
    torch.set_rng_state(st["torch"])
    if "cuda" in st and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(st["cuda"])


def save(ckpt_root: Path, step: int, model, optimizer, scheduler, state: dict, keep: int = 2,
         rng_states: list | None = None, objective_states: list[dict] | None = None) -> Path:
    """`rng_states`: every rank's RNG state in rank order (multi-process runs); default this process's.
    `objective_states`: every rank's `Objective.state_dict()` in rank order (e.g. an on-policy sampler's RNG)."""
    rngs = rng_states or [rng_state()]

    def write(d: Path) -> None:
        save_file(trainable_state(model), d / "trainable.safetensors")
        torch.save({"optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                    "rng": rngs[0], "rng_ranks": rngs, "objective_ranks": objective_states or [{}]},
                   d / "optimizer.pt")
        (d / "state.json").write_text(json.dumps({"schema": SCHEMA, "step": step, "world_size": len(rngs),
                                                  **state}, indent=1))

    path = write_atomic_dir(ckpt_root / f"step-{step}", write)
    for old in sorted(list_checkpoints(ckpt_root))[:-keep]:
        shutil.rmtree(old[1], ignore_errors=True)
    return path


def save_sharded(ckpt_root: Path, step: int, model, optimizer, scheduler, state: dict, *, rank: int, barrier,
                 keep: int = 2, rng_states: list, objective_states: list[dict]) -> Path:
    """FSDP checkpoint; every rank calls it (`barrier` = Ranks.barrier). Weights and optimizer state as DCP
    shards (`dcp/`), the rest as in `save` (`trainer.pt`, `state.json` with `"sharded": true`)."""
    from tuneforge.train import shard

    staging = Path(ckpt_root) / f".dcp-step-{step}"
    if rank == 0:
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir(parents=True)
    barrier()
    shard.save_sharded(staging, model, optimizer)
    barrier()
    path = Path(ckpt_root) / f"step-{step}"
    if rank == 0:
        def write(d: Path) -> None:
            (staging / "dcp").rename(d / "dcp")
            torch.save({"scheduler": scheduler.state_dict(), "rng": rng_states[0], "rng_ranks": rng_states,
                        "objective_ranks": objective_states}, d / "trainer.pt")
            (d / "state.json").write_text(json.dumps({"schema": SCHEMA, "step": step, "world_size": len(rng_states),
                                                      "sharded": True, **state}, indent=1))

        write_atomic_dir(path, write)
        shutil.rmtree(staging, ignore_errors=True)
        for old in sorted(list_checkpoints(ckpt_root))[:-keep]:
            shutil.rmtree(old[1], ignore_errors=True)
    barrier()
    return path


def list_checkpoints(ckpt_root: Path) -> list[tuple[int, Path]]:
    if not ckpt_root.is_dir():
        return []
    out = []
    for d in ckpt_root.iterdir():
        if d.is_dir() and d.name.startswith("step-") and (d / "state.json").is_file():
            out.append((int(d.name.split("-", 1)[1]), d))
    return sorted(out)


def latest(ckpt_root: Path) -> Path | None:
    found = list_checkpoints(ckpt_root)
    return found[-1][1] if found else None


def load(path: Path, model, optimizer, scheduler, rank: int = 0, world: int = 1, objective=None) -> dict:
    """Restore a checkpoint into this process; a multi-process run resumes with the same number of processes
    (each rank gets back its own RNG stream and, given `objective`, its objective state)."""
    state = json.loads((path / "state.json").read_text())
    if state.get("world_size", 1) != world:
        from tuneforge.errors import TuneforgeError

        raise TuneforgeError(f"{path}: written by {state.get('world_size', 1)} process(es); resume it with the same "
                             f"number (this launch has {world}): each step's batches and every process's RNG "
                             "stream depend on it, so another number would not continue the same run")
    from tuneforge.train import shard

    if state.get("sharded", False) != shard.is_sharded(model):
        from tuneforge.errors import TuneforgeError

        raise TuneforgeError(f"{path}: written {'with' if state.get('sharded') else 'without'} fsdp; resume it the "
                             "same way")
    if state.get("sharded"):  # every rank reads its shards (a collective)
        shard.load_sharded(path, model, optimizer)
        extra = torch.load(path / "trainer.pt", weights_only=False)
    else:
        load_trainable(model, load_file(path / "trainable.safetensors"))
        extra = torch.load(path / "optimizer.pt", weights_only=False)
        optimizer.load_state_dict(extra["optimizer"])
    scheduler.load_state_dict(extra["scheduler"])
    set_rng_state(extra.get("rng_ranks", [extra["rng"]])[rank])
    if objective is not None:
        objective.load_state_dict(extra.get("objective_ranks", [{}] * world)[rank])
    return state
