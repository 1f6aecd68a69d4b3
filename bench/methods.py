"""Full vs LoRA vs QLoRA vs prompt tuning on the same data, model and number of steps.

Run: `python bench/methods.py [--model smollm2-135m-instruct] [--steps 40]` (each method in its own process,
so peak memory is per method). Prints trainable params, base weight memory, peak memory while loading and
while training (process RSS on CPU, torch.cuda.max_memory_allocated on GPU), tokens/s,
final validation loss and held-out exact match; `--json F` saves the figures.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
METHODS = ["full", "lora", "qlora", "qlora-torchao", "prompt-tuning"]
# per-method learning rates: each at its usual range (full 1e-5..5e-5 per the guide; adapters higher)
LR = {"full": 5e-5, "lora": 3e-4, "qlora": 3e-4, "qlora-torchao": 3e-4, "prompt-tuning": 3e-2}
# a row name → (method, extra config): qlora-torchao is QLoRA through the torchao NF4 fallback
ROWS = {"qlora": ("qlora", {"quant_backend": "bitsandbytes"}),
        "qlora-torchao": ("qlora", {"quant_backend": "torchao"})}


def frozen_weight_bytes(model) -> int:
    """Bytes of the frozen base weights as stored (4-bit packed for QLoRA), buffers included."""
    from tuneforge.methods import stored_bytes

    n = sum(stored_bytes(p) for p in model.parameters() if not p.requires_grad)
    return n + sum(stored_bytes(b) for b in model.buffers())


def all_weight_bytes(model) -> int:
    return sum(p.numel() * p.element_size() for p in model.parameters())


def reset_peak_rss() -> None:
    """Linux: writing 5 to clear_refs resets this process's RSS high-water mark (VmHWM)."""
    Path("/proc/self/clear_refs").write_text("5")


def _status_kb(field: str) -> int:
    line = next(x for x in Path("/proc/self/status").read_text().splitlines() if x.startswith(field + ":"))
    return int(line.split()[1]) * 1024


def peak_rss() -> int:
    return _status_kb("VmHWM")


def rss_now() -> int:
    return _status_kb("VmRSS")


def worker(args) -> dict:
    import torch

    from tuneforge import methods
    from tuneforge.config import TrainConfig
    from tuneforge.eval import metrics as M
    from tuneforge.eval.harness import generate, load_for_inference
    from tuneforge.data.load import load_samples
    from tuneforge.train.recipe import prepare, train

    out = Path(tempfile.mkdtemp()) / "run"
    method, extra = ROWS.get(args.worker, (args.worker, {}))
    extra = {"target_modules": ["q_proj", "v_proj"], **extra}  # the guide's LoRA targets: figures stay comparable
    cfg = TrainConfig(base=args.model, method=method, **extra, data=args.data, val_data=args.val, output=str(out),
                      max_steps=args.steps, per_device_train_batch_size=8, learning_rate=LR[args.worker],
                      eval_steps=args.steps, early_stopping_patience=0, logging_steps=5, seed=0,
                      max_seq_len=256, num_virtual_tokens=20,
                      prompt_tuning_init_text="Translate the question to a SQL query:")
    p = prepare(cfg)
    base_bytes = (frozen_weight_bytes(p.model) if args.worker != "full" else all_weight_bytes(p.model))
    trainable, total = methods.count_parameters(p.model)
    load_peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    # the training peak excludes loading: it briefly holds full-precision weights for every method
    gc.collect()
    after_load = rss_now()
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
    else:
        reset_peak_rss()
    t0 = time.perf_counter()
    train(cfg, progress=False, prepared=p)
    wall = time.perf_counter() - t0
    info = json.loads((out / "run.json").read_text())
    peak = torch.cuda.max_memory_allocated() if torch.cuda.is_available() else peak_rss()
    del p
    loaded = load_for_inference(out)
    test = load_samples(args.test)[: args.n_test]
    preds, _ = generate(loaded, test, max_new_tokens=64, batch_size=16)
    em = M.exact_match(preds, [s.reference for s in test], normalized=True)
    return {"method": args.worker, "trainable": trainable, "total": total,
            "trainable_pct": 100 * trainable / total, "base_weight_mb": base_bytes / 2**20,
            "load_peak_mb": load_peak / 2**20, "after_load_mb": after_load / 2**20, "peak_mem_mb": peak / 2**20,
            "peak_kind": "cuda_max_allocated" if torch.cuda.is_available() else "rss",
            "tokens_per_s": info["train_tokens"] / max(info["train_seconds"], 1e-9), "train_wall_s": wall,
            "val_loss": info["results"].get("best_val_loss"), "exact_match": em, "n_test": len(test)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="smollm2-135m-instruct")
    ap.add_argument("--data", default=str(ROOT / "examples/sql/train.jsonl"))
    ap.add_argument("--val", default=str(ROOT / "examples/sql/val.jsonl"))
    ap.add_argument("--test", default=str(ROOT / "examples/sql/test.jsonl"))
    ap.add_argument("--n-test", type=int, default=50)
    ap.add_argument("--steps", type=int, default=40)
    ap.add_argument("--methods", default=",".join(METHODS))
    ap.add_argument("--json", default=None)
    ap.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        print("RESULT " + json.dumps(worker(args)), flush=True)
        return
    rows = []
    for m in args.methods.split(","):
        cmd = [sys.executable, __file__, "--worker", m, "--model", args.model, "--data", args.data, "--val",
               args.val, "--test", args.test, "--n-test", str(args.n_test), "--steps", str(args.steps)]
        r = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
        line = [x for x in r.stdout.splitlines() if x.startswith("RESULT ")]
        if r.returncode or not line:
            print(f"{m}: failed\n{r.stderr[-2000:]}", file=sys.stderr)
            continue
        rows.append(json.loads(line[-1][7:]))
        print(f"done {m}", file=sys.stderr)
    lora = next((r for r in rows if r["method"] == "lora"), None)
    hdr = (f"{'method':<15}{'trainable':>12}{'% of model':>11}{'base MB':>9}{'load MB':>9}{'loaded':>8}"
           f"{'train MB':>9}{'tok/s':>8}{'val loss':>9}{'EM':>7}")
    if not rows:
        sys.exit("no method finished")
    print(f"\nmodel {args.model}, {args.steps} steps x 8 examples, exact match on {rows[0]['n_test']} "
          f"held-out rows\n" + hdr)
    for r in rows:
        print(f"{r['method']:<15}{r['trainable']:>12,}{r['trainable_pct']:>10.3f}%{r['base_weight_mb']:>9.0f}"
              f"{r['load_peak_mb']:>9.0f}{r['after_load_mb']:>8.0f}{r['peak_mem_mb']:>9.0f}{r['tokens_per_s']:>8.0f}"
              f"{r['val_loss'] or float('nan'):>9.3f}{r['exact_match']:>7.2f}")
    if lora:
        for r in rows:
            print(f"{r['method']}: base weight memory {lora['base_weight_mb'] / r['base_weight_mb']:.2f}x smaller "
                  f"than LoRA's; tokens/s {r['tokens_per_s'] / lora['tokens_per_s']:.2f}x LoRA's")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
