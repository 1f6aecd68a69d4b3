"""THE supervised fine-tuning recipe: setup → loop (grad-accum, eval, early stop, checkpoints) → save.

Library: `train(cfg)`; CLI: `tuneforge train --data F --output RUN [--key value ...]`.
"""

from __future__ import annotations

import json
import math
import random
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

import tuneforge
from tuneforge import methods
from tuneforge.config import TrainConfig, load_config, save_config
from tuneforge.data.formats import Sample, near_key
from tuneforge.data.load import load_samples
from tuneforge.data.split import split_indices
from tuneforge.data.tokenize import Encoded, encode
from tuneforge.errors import ConfigError, DataError, TuneforgeError
from tuneforge.memory import return_large_buffers
from tuneforge.models.load import default_device, load_base, resolve
from tuneforge.run import file_sha256, model_card, read_metrics
from tuneforge.train import checkpoint
from tuneforge.train.checkpoint import write_atomic_dir, write_atomic_text
from tuneforge.eval.report import overfitting_signal
from tuneforge.registry import record_git_commit
from tuneforge.train.loss import evaluate, loss_sum
from tuneforge.train.trackers import check_available as check_trackers
from tuneforge.train.trackers import open_trackers
from tuneforge.train.packing import collate, restore_attention, use_packed_attention


@dataclass
class Prepared:
    cfg: TrainConfig
    base: object
    model: object
    train: list[Encoded]
    val: list[Encoded]
    data_info: dict


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def holdout(samples: list[Sample], frac: float, seed: int) -> tuple[list[Sample], list[Sample]]:
    """Seeded validation hold-out; near-duplicates stay on one side (no leakage), stratified by label."""
    if frac <= 0 or len(samples) < 2:
        return samples, []
    labels = [s.label for s in samples]
    idx = split_indices([near_key(s) for s in samples], test=0.0, val=frac, seed=seed,
                        stratify=labels if all(x is not None for x in labels) else None)
    return [samples[i] for i in idx["train"]], [samples[i] for i in idx["val"]]


def _encode_all(samples: list[Sample], tok, cfg: TrainConfig, what: str) -> tuple[list[Encoded], int]:
    out, truncated = [], 0
    for s in samples:
        e = encode(s, tok, max_seq_len=cfg.max_seq_len, train_on_prompt=cfg.train_on_prompt)
        truncated += e.truncated
        if e.n_supervised:
            out.append(e)
    if not out:
        raise DataError(f"no {what} example has a supervised token left after truncation to "
                        f"max_seq_len={cfg.max_seq_len}", path=samples[0].where.rsplit(":", 1)[0] if samples else "",
                        field="max_seq_len", code="empty")
    return out, truncated


def prepare(cfg: TrainConfig, split: tuple[list[Sample], list[Sample]] | None = None) -> Prepared:
    """Everything that can fail on bad input happens here, before anything is written.

    `split` gives the (train, val) samples directly (cross-validation folds) instead of reading cfg.data.
    """
    if not cfg.data:
        raise ConfigError("config: 'data' is required (--data FILE)")
    if cfg.method != "auto":
        methods.get(cfg.method)
    check_trackers(cfg.report_to)
    if split is not None:
        train_s, val_s = split
    elif cfg.val_data:
        train_s, val_s = load_samples(cfg.data), load_samples(cfg.val_data)
    else:
        train_s, val_s = holdout(load_samples(cfg.data), cfg.val_split, cfg.seed)
    seed_everything(cfg.seed)
    device = default_device()
    if device == "cpu":
        return_large_buffers()  # activation sizes vary per step: keep glibc's heap from hoarding them
    if cfg.method == "auto":
        cfg.method, why = methods.choose(resolve(cfg.base), device)
        print(f"tuneforge: {why}", file=sys.stderr)
    method = methods.get(cfg.method)
    if cfg.packing and not method.packing:
        cfg.packing = False  # recorded in config.yaml: what actually ran
    base = method.load(cfg, device) if method.load else load_base(cfg.base, device=device)
    if cfg.packing:
        use_packed_attention(base.model)  # one causal attention call per packed example
    train, n_trunc = _encode_all(train_s, base.tokenizer, cfg, "training")
    val, _ = _encode_all(val_s, base.tokenizer, cfg, "validation") if val_s else ([], 0)
    seed_everything(cfg.seed)  # adapter init depends only on the seed
    model = methods.prepare(base.model, cfg)
    model.train()
    files = [{"path": str(p), "sha256": file_sha256(p), "examples": n}
             for p, n in [(cfg.data, len(train_s) + (0 if cfg.val_data and split is None else len(val_s))),
                          (cfg.val_data if split is None else None, len(val_s))] if p]
    info = {"files": files, "train_examples": len(train), "val_examples": len(val),
            "truncated_examples": n_trunc, "dropped_without_supervision": len(train_s) - len(train),
            "val_source": "val_data" if cfg.val_data else f"val_split={cfg.val_split}", "split_seed": cfg.seed,
            "train_tokens": sum(len(e.input_ids) for e in train),
            "train_supervised_tokens": sum(e.n_supervised for e in train),
            "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    return Prepared(cfg, base, model, train, val, info)


def epoch_order(n: int, seed: int, epoch: int) -> list[int]:
    """Stateless data order: a resumed run recomputes exactly the same permutation."""
    g = torch.Generator().manual_seed(seed * 1000 + epoch)
    return torch.randperm(n, generator=g).tolist()


def micro_batch(p: Prepared, index: int) -> dict[str, torch.Tensor]:
    """The index-th micro-batch of the whole run (epochs concatenated)."""
    bs, n = p.cfg.per_device_train_batch_size, len(p.train)
    per_epoch = math.ceil(n / bs)
    epoch, k = divmod(index, per_epoch)
    order = epoch_order(n, p.cfg.seed, epoch)[k * bs:(k + 1) * bs]
    return collate([p.train[i] for i in order], packing=p.cfg.packing, pad_id=p.base.tokenizer.pad_token_id)


def make_optimizer(model, cfg: TrainConfig):
    decay, no_decay = [], []
    for n, prm in model.named_parameters():
        if prm.requires_grad:
            (no_decay if prm.ndim < 2 or "norm" in n.lower() else decay).append(prm)
    groups = [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.AdamW([g for g in groups if g["params"]], lr=cfg.learning_rate)


def make_scheduler(opt, cfg: TrainConfig, total: int):
    warm = cfg.warmup_steps or math.ceil(cfg.warmup_ratio * total)

    def factor(step: int) -> float:
        if step < warm:
            return (step + 1) / (warm + 1)
        if cfg.lr_scheduler_type == "constant":
            return 1.0
        frac = (step - warm) / max(1, total - warm)
        return max(0.0, 1 - frac) if cfg.lr_scheduler_type == "linear" else 0.5 * (1 + math.cos(math.pi * frac))

    return torch.optim.lr_scheduler.LambdaLR(opt, factor)


def schedule(p: Prepared) -> tuple[int, int, int]:
    """(total optimizer steps, steps per epoch, eval interval)."""
    per_epoch_micro = math.ceil(len(p.train) / p.cfg.per_device_train_batch_size)
    steps_per_epoch = max(1, per_epoch_micro // p.cfg.gradient_accumulation_steps)
    total = p.cfg.max_steps if p.cfg.max_steps > 0 else math.ceil(p.cfg.num_train_epochs * steps_per_epoch)
    every = p.cfg.eval_steps or max(1, math.ceil(steps_per_epoch / 2))
    return total, steps_per_epoch, every


def _append_jsonl(path: Path, rec: dict) -> None:
    with open(path, "a") as f:
        f.write(json.dumps(rec) + "\n")
        f.flush()


def _start_run_dir(p: Prepared, out: Path, resume: bool) -> tuple[int, dict]:
    """Create (or reopen on resume) the run directory; returns (start step, loop state)."""
    ckpts = out / "checkpoints"
    if resume:
        before = json.loads((out / "data.json").read_text()) if (out / "data.json").is_file() else {}
        now = {f["path"]: f["sha256"] for f in p.data_info["files"]}
        for f in before.get("files", []):
            if now.get(f["path"], f["sha256"]) != f["sha256"]:
                raise DataError("file changed since the run started; resuming would not reproduce the run",
                                path=f["path"], code="data_changed")
        last = checkpoint.latest(ckpts)
        if last is not None:
            return -1, {"_ckpt": last}
        shutil.rmtree(out / "best", ignore_errors=True)  # no checkpoint yet: start over in place
    out.mkdir(parents=True, exist_ok=True)
    save_config(p.cfg, out / "config.yaml")
    write_atomic_text(out / "data.json", json.dumps(p.data_info, indent=1))
    (out / "metrics.jsonl").write_text("")
    return 0, {}


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


def resume_config(out: Path, overrides: dict | None = None) -> TrainConfig:
    """A resumed run uses its saved config unchanged: any other value would not reproduce the run."""
    if not (out / "config.yaml").is_file():
        raise TuneforgeError(f"{out}: nothing to resume (no config.yaml)")
    cfg = load_config(out / "config.yaml")
    bad = [k for k in (overrides or {}) if k not in ("output",)]
    if bad:
        raise ConfigError(f"--resume uses {out}/config.yaml; cannot override: {', '.join(bad)}")
    return cfg


def train(cfg: TrainConfig, *, resume: bool = False, progress: bool = True,
          prepared: Prepared | None = None) -> Path:
    """Run the recipe; returns the run directory. `prepared` (from `prepare`, possibly with a fold's split)
    lets a caller use or inspect the loaded model before the loop."""
    out = check_output(cfg, resume)
    p = prepared or prepare(cfg)
    model = p.model
    total, steps_per_epoch, eval_every = schedule(p)
    save_every = cfg.save_steps or eval_every
    opt = make_optimizer(model, cfg)
    sched = make_scheduler(opt, cfg, total)
    start, state = _start_run_dir(p, out, resume)
    metrics = out / "metrics.jsonl"
    if "_ckpt" in state:
        state = checkpoint.load(state["_ckpt"], model, opt, sched)
        start = state["step"]
        keep = [r for r in read_metrics(out) if r.get("step", 0) <= start]
        write_atomic_text(metrics, "".join(json.dumps(r) + "\n" for r in keep))
    state = {"best_val": state.get("best_val"), "best_step": state.get("best_step"),
             "bad_evals": state.get("bad_evals", 0), "elapsed": state.get("elapsed", 0.0),
             "tokens": state.get("tokens", 0), "stopped_early": False}
    accum = cfg.gradient_accumulation_steps
    val_batches = [collate(p.val[i:i + 16], packing=cfg.packing, pad_id=p.base.tokenizer.pad_token_id)
                   for i in range(0, len(p.val), 16)]
    trainable, n_params = methods.count_parameters(model)
    print(f"tuneforge: {cfg.method} on {cfg.base}: {trainable:,} trainable of {n_params:,} parameters "
          f"({100 * trainable / n_params:.2f}%); {len(p.train)} train / {len(p.val)} val examples; "
          f"{total} steps", file=sys.stderr)
    bar = tqdm(total=total, initial=start, desc="train", disable=not progress, mininterval=1.0,
               dynamic_ncols=True, file=sys.stderr)
    trackers = open_trackers(cfg.report_to, out, cfg.model_dump())
    run_loss, run_sup, win_tok, win_t0 = torch.zeros(()), 0, 0, time.perf_counter()
    step = start
    for step in range(start + 1, total + 1):
        t0 = time.perf_counter()
        batches = [micro_batch(p, (step - 1) * accum + j) for j in range(accum)]
        n_sup_step = sum(int((b["targets"] != -100).sum()) for b in batches)
        for b in batches:
            s, _, n_tok = loss_sum(model, b)
            (s / n_sup_step).backward()
            run_loss += s.detach()
            win_tok += n_tok
            state["tokens"] += n_tok
        run_sup += n_sup_step
        gnorm = (torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.max_grad_norm)
                 if cfg.max_grad_norm > 0 else None)
        opt.step()
        sched.step()
        opt.zero_grad(set_to_none=True)
        state["elapsed"] += time.perf_counter() - t0
        bar.update(1)
        if step % cfg.logging_steps == 0 or step == total:
            now = time.perf_counter()
            rec = {"step": step, "epoch": round(step / steps_per_epoch, 4),
                   "loss": float(run_loss) / max(run_sup, 1), "lr": sched.get_last_lr()[0],
                   "grad_norm": None if gnorm is None else float(gnorm),
                   "tokens_per_s": win_tok / max(now - win_t0, 1e-9), "supervised_tokens": run_sup}
            _append_jsonl(metrics, rec)
            trackers.log(rec)
            bar.set_postfix(loss=f"{rec['loss']:.4f}", tok_s=f"{rec['tokens_per_s']:.0f}")
            run_loss, run_sup, win_tok, win_t0 = torch.zeros(()), 0, 0, now
        if val_batches and (step % eval_every == 0 or step == total):
            val_loss = evaluate(model, val_batches)
            improved = state["best_val"] is None or val_loss < state["best_val"] - 1e-4
            if improved:
                state.update(best_val=val_loss, best_step=step, bad_evals=0)
                write_atomic_dir(out / "best", lambda d: checkpoint.save_file(
                    checkpoint.trainable_state(model), d / "trainable.safetensors"))
            else:
                state["bad_evals"] += 1
            rec = {"step": step, "epoch": round(step / steps_per_epoch, 4), "val_loss": val_loss,
                   "best_val_loss": state["best_val"]}
            _append_jsonl(metrics, rec)
            trackers.log(rec)
            bar.write(f"step {step}: val_loss {val_loss:.4f}" + (" (best)" if improved else ""), file=sys.stderr)
            warning = overfitting_signal(read_metrics(out))
            if warning and not state.get("warned"):
                bar.write(f"warning: {warning}", file=sys.stderr)
                state["warned"] = True
            if cfg.early_stopping_patience and state["bad_evals"] >= cfg.early_stopping_patience:
                state["stopped_early"] = True
                bar.write(f"early stopping: no val-loss improvement in {state['bad_evals']} evaluations; "
                          f"keeping step {state['best_step']}", file=sys.stderr)
        if step % save_every == 0 and step < total and not state["stopped_early"]:
            checkpoint.save(out / "checkpoints", step, model, opt, sched,
                            {k: v for k, v in state.items() if k != "stopped_early"}, keep=cfg.save_total_limit)
        if state["stopped_early"]:
            break
    bar.close()
    trackers.close()
    finish(p, out, state, step)
    return out


def finish(p: Prepared, out: Path, state: dict, step: int) -> None:
    """Restore the best weights, write adapter/ (peft) or model/ (transformers), run.json and the card."""
    cfg, model, tok = p.cfg, p.model, p.base.tokenizer
    if (out / "best" / "trainable.safetensors").is_file():
        checkpoint.load_trainable(model, checkpoint.load_file(out / "best" / "trainable.safetensors"))
    adapter = methods.saves_adapter(cfg.method)
    restore_attention(p.base.model)

    def write_weights(d: Path) -> None:
        model.save_pretrained(d)
        tok.save_pretrained(d)

    write_atomic_dir(out / ("adapter" if adapter else "model"), write_weights)
    trainable, n_params = methods.count_parameters(model)
    info = {"schema": 1, "tuneforge_version": tuneforge.__version__, "run_dir": str(out),
            "created": p.data_info.get("created"), "git_commit": record_git_commit(out),
            "base": cfg.base, "base_path": p.base.path, "method": cfg.method, "adapter": adapter,
            "trainable_parameters": trainable, "total_parameters": n_params, "steps": step,
            "stopped_early": state["stopped_early"], "best_step": state["best_step"],
            "train_seconds": round(state["elapsed"], 2), "train_tokens": state["tokens"],
            "results": {k: v for k, v in {"best_val_loss": state["best_val"], "best_step": state["best_step"],
                                          "final_step": step}.items() if v is not None}}
    write_atomic_text(out / "run.json", json.dumps(info, indent=1))
    write_atomic_text(out / "README.md", model_card(cfg.model_dump(), info, p.data_info))
    from tuneforge.eval.report import write_report

    write_report(out)
    shutil.rmtree(out / "best", ignore_errors=True)
    print(f"tuneforge: run written to {out} ({'adapter/' if adapter else 'model/'}, best val loss "
          f"{state['best_val'] if state['best_val'] is not None else 'n/a'})", file=sys.stderr)
