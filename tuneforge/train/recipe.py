"""THE training recipe: prepare → loop (grad-accum, eval, early stop, checkpoints, exact resume) → finish.

Library: `train(cfg)`; CLI: `tuneforge train --data F --output RUN [--key value ...]`. What is learned comes from
the run's objective (`cfg.objective`, `train.objectives`: SFT by default): it turns rows into items, items into
micro-batches, and a micro-batch into a loss sum and its count; everything else is here, once. The parts other
packages reuse are public: `prepare` (with or without loading weights), the batch plan (`schedule`,
`epoch_order`, `batch_indices`, `micro_batch`), `make_optimizer`/`make_scheduler`, `optimizer_step` (=
`backward` + `update`), `finish`.
"""

from __future__ import annotations

import functools
import json
import math
import os
import random
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from tqdm.auto import tqdm

import tuneforge
from tuneforge import methods
from tuneforge.config import TrainConfig, load_config, plan_key, save_config
from tuneforge.errors import ConfigError, DataError, TuneforgeError
from tuneforge.memory import large_buffers_returned
from tuneforge.models.load import Base, default_device, load_base, load_tokenizer, resolve, set_default_decoding
from tuneforge.run import (answer_budget, append_jsonl, file_sha256, model_card, read_json, read_metrics, record_git_commit,
                           run_status, write_atomic_dir, write_atomic_text, write_json)
from tuneforge.train import auto, checkpoint, distributed, lineage, objectives
from tuneforge.train.objectives import Prepared  # noqa: F401 - recipe.Prepared is public
from tuneforge.train.early_stop import LoopState, after_evaluation, anneal_done, anneal_factor, stop_reason
from tuneforge.train.packing import packed_attention
from tuneforge.train.schedule import make_scheduler, refresh
from tuneforge.train.trackers import check_available as check_trackers
from tuneforge.train.trackers import open_trackers

SMALL_DATA = 1000  # the guide's rule of thumb for the examples a fine-tune needs
PLATEAU_DECAY = 0.5  # the plateau schedule's factor per evaluation without progress
ANNEAL_ABOVE = 0.2  # patience used up at a rate above this share of the peak (not plateau): decay to zero first


@dataclass
class StepReport:
    """What `train(..., on_step=fn)` hands `fn` after each optimizer step (the jobs worker reports it)."""

    step: int
    total: int
    tokens: int  # tokens trained on so far, this run (resumes included)
    elapsed: float  # training seconds so far, this run (resumes included)
    logged: list[dict]  # metrics.jsonl rows written at this step (train loss, val loss)
    checkpoint: Path | None  # the checkpoint saved at this step, if any


class Stopped(Exception):
    """`on_step` asked the loop to stop: the state is in a checkpoint; `train(cfg, resume=True)` continues."""

    def __init__(self, step: int, checkpoint: Path):
        super().__init__(f"training stopped at step {step} ({checkpoint})")
        self.step, self.checkpoint = step, checkpoint


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def prepare(cfg: TrainConfig, split: tuple[list, list] | None = None, *, weights: bool = True) -> Prepared:
    """Everything that can fail on bad input happens here, before anything is written.

    `split` gives the (train, val) rows directly (cross-validation folds) instead of reading cfg.data.
    Settings left at "auto" (method, learning rate, epochs) are resolved here from the model and data size,
    printed with their reasons, and returned in `Prepared.cfg`; the caller's `cfg` is left as it was.

    `weights=False` prepares without loading the base (`advise.cost` for hardware other than this machine, any
    base size): the same rows, hold-out, encoding (tokenizer only), method choice and batch plan, with
    `base.model` and `model` None; learning rate and epochs left "auto" need the parameter count, so the caller
    resolves them (`train.auto.resolve`).
    """
    cfg = cfg.model_copy(deep=True)
    if not cfg.data:
        raise ConfigError("config: 'data' is required (--data FILE)")
    objective = objectives.create(cfg)  # holds this copy of cfg: it sees every value resolved below
    # the plan as asked ("auto" unresolved): `tuneforge cost` remembers its estimate under this key; a fold or a
    # distillation (`split` given) trains on other rows than cfg.data, so it is no such plan
    key = plan_key(cfg) if split is None else None
    if cfg.from_run:
        lineage.inherit(cfg)  # base, method and adapter shape come from the parent run
    if cfg.method != "auto":
        methods.get(cfg.method)
    check_trackers(cfg.report_to)
    if split is not None:
        train_s, val_s = split
    elif cfg.val_data:
        train_s, val_s = objective.load(cfg.data), objective.load(cfg.val_data)
    else:
        train_s, val_s = objective.holdout(objective.load(cfg.data), cfg.val_split, cfg.seed)
    seed_everything(cfg.seed)
    device = default_device()
    chosen = {}
    if cfg.method == "auto":
        cfg.method, chosen["method"] = methods.choose(resolve(cfg.base), device)
    method = methods.get(cfg.method)
    if cfg.packing and not (method.packing and objective.packing):
        cfg.packing = False  # recorded in config.yaml: what actually ran
    if not weights:
        base = Base(None, load_tokenizer(cfg.base), cfg.base, str(resolve(cfg.base)))
    else:
        base = method.load(cfg, device) if method.load else load_base(cfg.base, device=device)
    train, n_trunc = objective.encode(train_s, base.tokenizer, "training")
    val, _ = objective.encode(val_s, base.tokenizer, "validation") if val_s else ([], 0)
    if weights:
        chosen.update(auto.resolve(cfg, n_train=len(train), n_params=methods.count_parameters(base.model)[1],
                                   world=distributed.launched_world_size(), n_val=len(val)))
    if int(os.environ.get("RANK", "0")) == 0:  # one copy of the reasons, not one per process
        for why in chosen.values():
            _say(why)
        _say(validation_note(cfg, len(val), split is not None))
        for note in objective.notes(train_s + val_s):
            _say(note)
    labels = objective.labels(train_s + val_s)
    model = None
    if weights:
        seed_everything(cfg.seed)  # adapter init depends only on the seed
        model = methods.prepare(base.model, cfg)
        if cfg.from_run:
            lineage.load_parent(model, cfg)
        model.train()
    files = [{"path": str(p), "sha256": file_sha256(p), "examples": n}
             for p, n in [(cfg.data, len(train_s) + (0 if cfg.val_data and split is None else len(val_s))),
                          (cfg.val_data if split is None else None, len(val_s))] if p]
    info = {"files": files, "train_examples": len(train), "val_examples": len(val),
            "truncated_examples": n_trunc, "dropped_without_supervision": len(train_s) - len(train),
            "val_source": "val_data" if cfg.val_data else f"val_split={cfg.val_split}", "split_seed": cfg.seed,
            **objective.data_info(train), "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    if labels:
        info["label_counts"] = {lab: sum(s.label == lab for s in train_s) for lab in labels}
    if key:
        info["plan_key"] = key
    return Prepared(cfg, base, model, train, val, info, labels, chosen, objective)


def validation_note(cfg: TrainConfig, n_val: int, given_split: bool) -> str:
    """Where the validation set comes from, how big it is, and how to change it (printed by `prepare`)."""
    if given_split:
        return f"validation: {n_val} examples (this fold's held-out part)"
    if cfg.val_data:
        return f"validation: {n_val} examples from {cfg.val_data}"
    if not n_val:
        return ("validation: none (val_split 0): no early stopping, no best-weights choice; --val_split 0.1 or "
                "--val_data FILE add one")
    return (f"validation: {n_val} examples held out of {cfg.data} (val_split {cfg.val_split:g}); they decide when "
            "training stops; --val_data FILE or --val_split 0 change it")


def epoch_order(n: int, seed: int, epoch: int) -> list[int]:
    """Stateless data order: a resumed run recomputes exactly the same permutation."""
    return list(_epoch_order(n, seed, epoch))


@functools.lru_cache(maxsize=2)  # an epoch's micro-batches all read one permutation (cost counts whole runs)
def _epoch_order(n: int, seed: int, epoch: int) -> tuple[int, ...]:
    g = torch.Generator().manual_seed(seed * 1000 + epoch)
    return tuple(torch.randperm(n, generator=g).tolist())


def batch_indices(n: int, cfg: TrainConfig, index: int, rank: int = 0, world: int = 1) -> list[int]:
    """Which of the `n` training items make this rank's index-th micro-batch of the whole run (epochs
    concatenated). With several processes the run's micro-batches are dealt out in turn (global micro-batch
    index*world + rank), so each item is seen once per epoch by exactly one process."""
    bs = objectives.get(cfg.objective).items_per_micro_batch(cfg)
    per_epoch = math.ceil(n / bs)
    epoch, k = divmod(index * world + rank, per_epoch)
    return list(_epoch_order(n, cfg.seed, epoch)[k * bs:(k + 1) * bs])


def micro_batch(p: Prepared, index: int, rank: int = 0, world: int = 1) -> dict[str, torch.Tensor]:
    """This rank's index-th micro-batch of the whole run, built by the objective (from the model being
    trained, for an on-policy objective)."""
    return p.objective.batch(p, [p.train[i] for i in batch_indices(len(p.train), p.cfg, index, rank, world)],
                             p.model)


def make_optimizer(model, cfg: TrainConfig):
    decay, no_decay = [], []
    for n, prm in model.named_parameters():
        if prm.requires_grad:
            (no_decay if prm.ndim < 2 or "norm" in n.lower() else decay).append(prm)
    groups = [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.AdamW([g for g in groups if g["params"]], lr=cfg.learning_rate)


def schedule(p: Prepared, world: int = 1) -> tuple[int, int, int]:
    """(total optimizer steps, steps per epoch, eval interval). An optimizer step takes
    gradient_accumulation_steps micro-batches on each of `world` processes."""
    per_epoch_micro = math.ceil(len(p.train) / p.objective.items_per_micro_batch(p.cfg))
    steps_per_epoch = max(1, per_epoch_micro // (p.cfg.gradient_accumulation_steps * world))
    total = p.cfg.max_steps if p.cfg.max_steps > 0 else math.ceil(p.cfg.num_train_epochs * steps_per_epoch)
    every = p.cfg.eval_steps or auto.eval_interval(steps_per_epoch)
    return total, steps_per_epoch, every


@dataclass
class StepDone:
    """What one optimizer step did (`optimizer_step`)."""

    loss_sums: list[torch.Tensor]  # each micro-batch's loss sum on this process (detached), in order
    count: int  # the step's normaliser: the objective's units over every micro-batch and process
    tokens: int  # input tokens over every micro-batch and process
    metrics: dict[str, float]  # the objective's metric sums on this process
    grad_norm: torch.Tensor | None  # before clipping; None when clipping is off


def optimizer_step(module, opt, sched, objective: objectives.Objective, batches: list[dict], ranks: distributed.Ranks,
                   max_grad_norm: float) -> StepDone:
    """One optimizer step over `batches` (this process's micro-batches of the step): `backward` then `update`.
    `module` is `ranks.wrap`'s."""
    done = backward(module, objective, batches, ranks)
    done.grad_norm = update(module, opt, sched, ranks, max_grad_norm)
    return done


def backward(module, objective: objectives.Objective, batches: list[dict], ranks: distributed.Ranks) -> StepDone:
    """Forward and backward of each micro-batch, normalised by the step's total count over all micro-batches
    and processes, so accumulation equals one larger batch exactly (grad_norm not known yet: None)."""
    count, tokens = (int(x) for x in ranks.sum([sum(objective.count(b) for b in batches),
                                                sum(objective.tokens(b) for b in batches)]))
    sums, metrics = [], {}
    for j, b in enumerate(batches):
        with ranks.no_sync(module, last=j == len(batches) - 1):
            s, m = module(b)
            (s / count * ranks.world).backward()  # DDP averages gradients over processes
        sums.append(s.detach())
        for k, v in m.items():
            metrics[k] = metrics.get(k, 0.0) + float(v)
    return StepDone(sums, count, tokens, metrics, None)


def update(module, opt, sched, ranks: distributed.Ranks, max_grad_norm: float):
    """Clip (when max_grad_norm > 0; returns the norm before clipping, else None), optimizer and scheduler step."""
    gnorm = ranks.clip_grad_norm_(module, max_grad_norm) if max_grad_norm > 0 else None
    opt.step()
    sched.step()
    opt.zero_grad(set_to_none=True)
    return gnorm


def _start_run_dir(p: Prepared, out: Path, resume: bool, write: bool = True) -> Path | None:
    """Create (or reopen on resume) the run directory; returns the checkpoint to resume from, if any.
    `write` is False on ranks other than 0 (they only check and read)."""
    if resume:
        before = read_json(out / "data.json")
        now = {f["path"]: f["sha256"] for f in p.data_info["files"]}
        for f in before.get("files", []):
            if now.get(f["path"], f["sha256"]) != f["sha256"]:
                raise DataError("file changed since the run started; resuming would not reproduce the run",
                                path=f["path"], code="data_changed")
        last = checkpoint.latest(out / "checkpoints")
        if last is not None or not write:
            return last
        shutil.rmtree(out / "best", ignore_errors=True)  # no checkpoint yet: start over in place
    if not write:
        return None
    out.mkdir(parents=True, exist_ok=True)
    save_config(p.cfg, out / "config.yaml")
    write_json(out / "data.json", p.data_info)
    write_atomic_text(out / "metrics.jsonl", "")
    return None


def check_output(cfg: TrainConfig, resume: bool) -> Path:
    if not cfg.output:
        raise ConfigError("config: 'output' is required (--output RUN_DIR)")
    out = Path(cfg.output)
    if resume:
        if not (out / "config.yaml").is_file():
            raise TuneforgeError(f"{out}: nothing to resume (no config.yaml)")
    elif out.exists() and any(out.iterdir()):
        raise TuneforgeError(f"{out}: output directory exists and is not empty (use --resume, or another --output)")
    return out


def config_for(config: str | Path | None, overrides: dict, *, resume: bool = False) -> TrainConfig:
    """The config a `train` call runs: YAML + overrides, or on --resume the run's own saved config."""
    if not resume:
        return load_config(config, overrides)
    out = overrides.get("output") or (load_config(config).output if config else None)
    if not out:
        raise TuneforgeError("--resume needs --output RUN_DIR")
    return resume_config(Path(out), {k: v for k, v in overrides.items() if k != "output"})


def resume_config(out: Path, overrides: dict | None = None) -> TrainConfig:
    """A resumed run uses its saved config unchanged: any other value would not reproduce the run. Repeating the
    original command with --resume added is fine: flags equal to the saved values are not overrides."""
    if not (out / "config.yaml").is_file():
        raise TuneforgeError(f"{out}: nothing to resume (no config.yaml)")
    cfg = load_config(out / "config.yaml")
    given = {k: v for k, v in (overrides or {}).items() if k != "output"}
    same = load_config(out / "config.yaml", given) if given else cfg
    bad = [k for k in given if getattr(same, k, None) != getattr(cfg, k, None)]
    if bad:
        raise ConfigError(f"--resume uses {out}/config.yaml; cannot override: {', '.join(bad)}")
    return cfg


def _say(msg: str) -> None:
    print(f"tuneforge: {msg}", file=sys.stderr)


def train(cfg: TrainConfig, *, resume: bool = False, progress: bool = True,
          prepared: Prepared | None = None, on_step: Callable[[StepReport], bool] | None = None) -> Path:
    """Run the recipe; returns the run directory. `prepared` (from `prepare`, possibly with a fold's split)
    lets a caller use or inspect the loaded model before the loop. `on_step` is called (by the main process)
    after every optimizer step; when it returns False the loop saves a checkpoint and raises `Stopped`
    (pause/cancel of a job), unless the run is finishing at that step anyway.

    Resuming a finished run changes nothing (its adapter, card and any merged model/ stay as they are)."""
    out = check_output(cfg, resume)
    if resume and run_status(out) == "finished":
        info = read_json(out / "run.json")
        _say(f"{out} already finished (step {info.get('steps')}); nothing to resume")
        return out
    ranks = distributed.setup(default_device(), cfg)
    ranks.barrier()  # every rank checked the output directory before rank 0 creates it
    try:
        p = prepared or prepare(cfg)
        # activation sizes vary per step: keep glibc's heap from hoarding them (restored when training ends)
        with large_buffers_returned(default_device() == "cpu"), packed_attention(p.base.model, p.cfg.packing):
            return _loop(p, out, ranks, resume=resume, progress=progress and ranks.main, on_step=on_step)
    finally:
        ranks.close()


def _loop(p: Prepared, out: Path, ranks: distributed.Ranks, *, resume: bool, progress: bool,
          on_step: Callable[[StepReport], bool] | None = None) -> Path:
    cfg, model = p.cfg, p.model
    say = _say if ranks.main else (lambda msg: None)
    total, steps_per_epoch, eval_every = schedule(p, ranks.world)
    save_every = cfg.save_steps or eval_every
    objective = p.objective
    # module(batch) -> (loss sum, metric sums) through the objective (DDP/FSDP-aware; FSDP shards `model` in place)
    module, opt = ranks.wrap(model, lambda m: make_optimizer(m, cfg), objective)
    state = LoopState()
    sched = make_scheduler(opt, cfg, total, steps_per_epoch, scale=lambda: state.lr_scale,  # read the live state
                           anneal=lambda step: anneal_factor(state, step))
    ckpt = _start_run_dir(p, out, resume, write=ranks.main)
    ranks.barrier()
    ckpt = ckpt or (checkpoint.latest(out / "checkpoints") if resume else None)
    objective.setup(p, out, ranks, resume)  # before a checkpoint's weights replace the starting ones
    metrics = out / "metrics.jsonl"
    history: list[dict] = []  # metrics rows of this run so far (the overfitting signal reads them)
    if ckpt is not None:
        state = LoopState.from_json(checkpoint.load(ckpt, model, opt, sched, ranks.rank, ranks.world,
                                                    objective=objective))
        history = [r for r in read_metrics(out) if r.get("step", 0) <= state.step]
        if ranks.main:
            write_atomic_text(metrics, "".join(json.dumps(r) + "\n" for r in history))
        say(f"resumed {out} from step {state.step} of {total}")
    state.stopped_early = False
    accum = cfg.gradient_accumulation_steps
    val_batches = objective.val_batches(p) if p.val else []
    planned = f"max_steps {cfg.max_steps}" if cfg.max_steps > 0 else f"{cfg.num_train_epochs:g} epochs"
    trainable, n_params = methods.count_parameters(model)
    say(f"{cfg.method} on {cfg.base}: {trainable:,} trainable of {n_params:,} parameters "
         f"({100 * trainable / n_params:.2f}%); {len(p.train)} train / {len(p.val)} val examples; {total} steps"
        + (f" on {ranks.world} processes" if ranks.world > 1 else ""))
    if len(p.train) + len(p.val) < SMALL_DATA:
        say(f"warning: {len(p.train) + len(p.val)} examples is a small set (the guide suggests {SMALL_DATA}+); "
             "watch the validation loss, and if the model does not learn, add data or raise the learning "
             "rate / epochs (see `tuneforge train --help-config`)")
    bar = tqdm(total=total, initial=state.step, desc="train", disable=not progress, mininterval=1.0,
               dynamic_ncols=True, file=sys.stderr)
    trackers = open_trackers(cfg.report_to if ranks.main else [], out, cfg.model_dump())

    def log(rec: dict) -> None:
        history.append(rec)
        if ranks.main:
            append_jsonl(metrics, rec)
            trackers.log(rec)

    def save_checkpoint(step: int) -> Path:
        rngs = ranks.gather(checkpoint.rng_state())
        objective_states = ranks.gather(objective.state_dict())
        if ranks.fsdp:  # every rank writes its shards
            return checkpoint.save_sharded(out / "checkpoints", step, model, opt, sched, state.to_json(),
                                           rank=ranks.rank, barrier=ranks.barrier, keep=cfg.save_total_limit,
                                           rng_states=rngs, objective_states=objective_states)
        if ranks.main:
            checkpoint.save(out / "checkpoints", step, model, opt, sched, state.to_json(),
                            keep=cfg.save_total_limit, rng_states=rngs, objective_states=objective_states)
        return out / "checkpoints" / f"step-{step}"

    run_loss, run_count, win_tok, win_t0 = torch.zeros(()), 0, 0, time.perf_counter()
    run_metrics: dict[str, float] = {}  # the objective's metric sums over the logging window
    memory = None  # every rank's parameter/gradient/optimizer bytes, measured after this launch's first step
    for step in range(state.step + 1, total + 1):
        t0, logged_before, saved = time.perf_counter(), len(history), None
        # every micro-batch of the step before the first forward pass (on-policy: all from the same weights)
        batches = [micro_batch(p, (step - 1) * accum + j, ranks.rank, ranks.world) for j in range(accum)]
        done = optimizer_step(module, opt, sched, objective, batches, ranks, cfg.max_grad_norm)
        for s in done.loss_sums:
            run_loss = run_loss + s  # not +=: a CPU 0-dim sum cannot take a CUDA loss in place (GPU runs crashed)
        for k, v in done.metrics.items():
            run_metrics[k] = run_metrics.get(k, 0.0) + v
        gnorm = done.grad_norm
        win_tok += done.tokens
        state.tokens += done.tokens
        run_count += done.count
        state.step = step
        state.elapsed += time.perf_counter() - t0
        bar.update(1)
        if memory is None:
            memory = ranks.memory(model, opt)
        epoch = round(step / steps_per_epoch, 4)
        if step % cfg.logging_steps == 0 or step == total:
            now = time.perf_counter()
            names = sorted(run_metrics)
            run_loss, *sums = ranks.sum([float(run_loss), *(run_metrics[k] for k in names)])
            rec = {"step": step, "epoch": epoch, "loss": run_loss / max(run_count, 1),
                   "lr": sched.get_last_lr()[0], "grad_norm": None if gnorm is None else float(gnorm),
                   "tokens_per_s": win_tok / max(now - win_t0, 1e-9), objective.count_key: run_count,
                   **{k: v / max(run_count, 1) for k, v in zip(names, sums)}}
            if not any("memory_per_rank" in r for r in history):
                rec["memory_per_rank"] = memory
            log(rec)
            bar.set_postfix(loss=f"{rec['loss']:.4f}", tok_s=f"{rec['tokens_per_s']:.0f}")
            run_loss, run_count, win_tok, win_t0 = torch.zeros(()), 0, 0, now
            run_metrics.clear()
        if val_batches and (step % eval_every == 0 or step == total or anneal_done(state)):
            validate(model, module, val_batches, state, out, epoch, cfg, history, log,
                     bar.write if ranks.main else None, objective=objective, sched=sched, plan=(total, planned),
                     trainable_state=ranks.trainable_state, anneal=min(eval_every * cfg.early_stopping_patience,
                                                                       total - step))
            state.stopped_early = state.stopped_early or anneal_done(state)
        if step % save_every == 0 and step < total and not state.stopped_early:
            saved = save_checkpoint(step)
        if on_step is not None:  # every process asks the same question: only the main one runs on_step
            go = on_step(StepReport(step, total, state.tokens, state.elapsed, history[logged_before:], saved)) \
                if ranks.main else True
            if ranks.sum([0.0 if go else 1.0])[0] > 0 and step < total and not state.stopped_early:
                saved = saved or save_checkpoint(step)
                bar.close()
                trackers.close()
                raise Stopped(step, saved)
        if state.stopped_early:
            break
    bar.close()
    trackers.close()
    state.stop_reason = stop_reason(state, total=total, patience=cfg.early_stopping_patience,
                                    metric_name=_metric_name(objective, history), planned=planned)
    say(f"stopped: {state.stop_reason}")
    weights = ranks.full_state(model)  # under FSDP: gathered on rank 0 (every rank takes part), else None
    if ranks.main:
        finish(p, out, state, weights=weights, memory=memory)
    ranks.barrier()
    return out


def validate(model, module, val_batches: list, state: LoopState, out: Path, epoch: float, cfg: TrainConfig,
             history: list[dict], log, write, objective: objectives.Objective, *, sched=None,
             plan: tuple[int, str] = (0, ""), trainable_state=checkpoint.trainable_state, anneal: int = 0) -> None:
    """One validation pass: log val loss and the objective's other validation metrics, keep the best weights
    in out/best, warn once on overfitting, lower the rate of a plateau schedule (`sched`) when neither the loss
    nor the objective's `val_metric` (SFT: the validation exact match, train/validation.py) improved, and set
    state.stopped_early when the patience is used up — or, on a schedule other than plateau whose rate is still at
    least ANNEAL_ABOVE of its peak with `anneal` steps left, start the decay to zero over them (early_stop's
    "annealing on stop"; the loop ends the run at its last step). `write` prints beside the progress bar; None on
    ranks other than 0, which compute the same val loss (so all stop together) but write nothing.
    `trainable_state(model)` gives the weights to keep as best: every rank calls it (under FSDP it gathers the
    shards to rank 0)."""
    rec = {"step": state.step, "epoch": epoch, **objective.validate(model, module, val_batches)}
    plateau = cfg.lr_scheduler_type == "plateau"
    metric = objective.val_metric if objective.val_metric in rec else None
    # plateau already lowered the rate at each of those evaluations: it ends as it always did
    high = not plateau and sched is not None and sched.get_last_lr()[0] >= ANNEAL_ABOVE * cfg.learning_rate
    ev = after_evaluation(state, rec["val_loss"], patience=cfg.early_stopping_patience, history=[*history, rec],
                          metric=rec.get(metric) if metric else None, decay=PLATEAU_DECAY if plateau else None,
                          anneal=anneal if high else 0)
    if ev.lr_changed and sched is not None:
        refresh(sched)
    log({**rec, "best_val_loss": state.best_val})
    health = None if state.warned_health else objective.health(history)  # log() appended rec
    state.warned_health = state.warned_health or health is not None
    val_loss = rec["val_loss"]
    best = trainable_state(model) if ev.improved else None
    if write is None:
        return
    if ev.improved:
        write_atomic_dir(out / "best", lambda d: checkpoint.save_file(best, d / "trainable.safetensors"))
    shown = f"; {_metric_name(objective, [rec])} {rec[metric]:.3f}" if metric else ""
    write(f"step {state.step}: val_loss {val_loss:.4f}{shown}" + (" (best)" if ev.improved else "")
          + (f"; no progress, learning rate x{PLATEAU_DECAY:g} -> {sched.get_last_lr()[0]:.3g}"
             if ev.lr_changed and sched is not None else ""), file=sys.stderr)
    for warning in (ev.warning, health):
        if warning:
            write(f"warning: {warning}", file=sys.stderr)
    if ev.annealing:
        write(f"validation flat for {cfg.early_stopping_patience} evaluations at a learning rate of "
              f"{sched.get_last_lr()[0]:.3g}: decaying it to zero over the next {state.anneal_steps} steps, then "
              "stopping (the best weights so far are kept if the decay does not beat them)", file=sys.stderr)
    if ev.stop:
        total, planned = plan
        write("early stopping: " + stop_reason(state, total=total, patience=cfg.early_stopping_patience,
                                                metric_name=_metric_name(objective, [rec]), planned=planned)
              + f"; keeping step {state.best_step}", file=sys.stderr)


def _metric_name(objective: objectives.Objective, rows: list[dict]) -> str | None:
    """"exact match" for "val_exact_match" when the rows measured it (the stop reason's wording), else None."""
    key = objective.val_metric
    if not key or not any(key in r for r in rows):
        return None
    return key.removeprefix("val_").replace("_", " ")


def finish(p: Prepared, out: Path, state: LoopState, *, weights: dict | None = None,
           memory: list[dict] | None = None) -> None:
    """Restore the best weights, write adapter/ (peft) or model/ (transformers), run.json and the card.
    `weights`: the full state dict when the model is sharded (FSDP: gathered by every rank, saved from this one
    as ordinary files); `memory`: every rank's bytes (`Ranks.memory`), recorded in run.json."""
    cfg, model, tok = p.cfg, p.model, p.base.tokenizer
    if (out / "best" / "trainable.safetensors").is_file():
        best = checkpoint.load_file(out / "best" / "trainable.safetensors")
        if weights is None:
            checkpoint.load_trainable(model, best)
        else:
            weights.update(best)
    adapter = methods.saves_adapter(cfg.method)

    if not adapter:  # a full fine-tune's model/ is used as it is: decode like generate/eval by default
        set_default_decoding(model, tok, max_new_tokens=answer_budget(p.data_info))
        if weights is not None and getattr(model.config, "tie_word_embeddings", False):
            for k in getattr(model, "all_tied_weights_keys", None) or {}:  # as save_pretrained writes one process's
                weights.pop(k, None)

    def write_weights(d: Path) -> None:
        model.save_pretrained(d, **({} if weights is None else {"state_dict": weights}))
        tok.save_pretrained(d)

    write_atomic_dir(out / ("adapter" if adapter else "model"), write_weights)
    trainable, n_params = methods.count_parameters(model)
    info = {"schema": 1, "tuneforge_version": tuneforge.__version__, "run_dir": str(out),
            "created": p.data_info.get("created"), "git_commit": record_git_commit(out),
            "base": cfg.base, "base_path": p.base.path, "method": cfg.method, "objective": cfg.objective,
            "adapter": adapter,
            "trainable_parameters": trainable, "total_parameters": n_params, "steps": state.step,
            "stopped_early": state.stopped_early, "best_step": state.best_step, "stop_reason": state.stop_reason,
            "train_seconds": round(state.elapsed, 2), "train_tokens": state.tokens,
            "results": {k: v for k, v in {"best_val_loss": state.best_step_val if state.best_step_val is not None
                                          else state.best_val, "best_val_exact_match": state.best_metric,
                                          "best_step": state.best_step, "final_step": state.step}.items()
                        if v is not None}}
    if memory:
        info["memory_per_rank"] = memory
        if cfg.fsdp:
            info["fsdp"] = cfg.fsdp
    if p.auto:
        info["auto"] = p.auto
    if p.labels:
        info.update(task="classification", labels=p.labels)
    if cfg.from_run:
        info["parent"] = lineage.parent_info(cfg.from_run)
    write_json(out / "run.json", info)
    write_atomic_text(out / "README.md", model_card(cfg.model_dump(), info, p.data_info))
    shutil.rmtree(out / "best", ignore_errors=True)
    best = (f"kept step {state.best_step}: val loss {info['results']['best_val_loss']:.4f}"
            + (f", val exact match {state.best_metric:.3f}" if state.best_metric is not None else "")
            if state.best_val is not None else "no validation set")
    _say(f"run written to {out} ({'adapter/' if adapter else 'model/'}; {state.step} steps, "
         f"{state.elapsed:.0f} s; {best})")
