"""1 process vs 2 processes with DDP vs 2 processes with FSDP (`--fsdp full_shard`): the same run (same global
batch, data, seed) through `train --nproc`.

Run: `python bench/shard.py [--model tiny|smollm2-135m-instruct] [--method full|lora] [--steps 20]`. Prints, per
configuration, the training loop's time (run.json train_seconds), input tokens/s, the per-rank bytes the run
recorded (parameters + gradients + optimizer state, run.json memory_per_rank; the largest rank), the final train
loss, and ratios against the single-process run of the same invocation (the baseline). `--model tiny` writes the
tiny random model (tuneforge.models.tiny) first. On a 2-core CPU shared with other work expect 2 processes to be
slower, not faster: the figure documents what sharding saves in memory and what its communication costs.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def run(model: str, data: Path, out: Path, steps: int, nproc: int, fsdp: bool, method: str,
        global_batch: int) -> dict:
    per_device = global_batch // nproc
    cmd = [sys.executable, "-m", "tuneforge.cli", "train", "--no-progress", "--base", model, "--data", str(data),
           "--output", str(out), "--method", method, "--max_steps", str(steps),
           "--per_device_train_batch_size", str(per_device), "--logging_steps", "1", "--eval_steps", str(steps + 1),
           "--save_steps", str(steps + 1), "--early_stopping_patience", "0", "--val_split", "0",
           "--max_seq_len", "256", "--learning_rate", "1e-4", "--lora_dropout", "0"]
    if nproc > 1:
        cmd += ["--nproc", str(nproc)]
    if fsdp:
        cmd += ["--fsdp", "full_shard"]
    t0 = time.perf_counter()
    r = subprocess.run(cmd, env={**os.environ, "PYTHONPATH": str(ROOT)}, capture_output=True, text=True)
    if r.returncode:
        sys.exit(f"{' '.join(cmd)} failed:\n{r.stderr[-3000:]}")
    wall = time.perf_counter() - t0
    info = json.loads((out / "run.json").read_text())
    rows = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    mem = max(sum(m.values()) for m in info["memory_per_rank"])
    return {"name": f"{nproc} proc" + (" FSDP" if fsdp else " DDP" if nproc > 1 else ""), "loop_s":
            info["train_seconds"], "wall_s": wall, "tok_s": info["train_tokens"] / info["train_seconds"],
            "rank_bytes": mem, "memory_per_rank": info["memory_per_rank"],
            "losses": [r["loss"] for r in rows if "loss" in r]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="tiny")
    ap.add_argument("--method", default="full")
    ap.add_argument("--data", type=Path, default=ROOT / "examples" / "sql" / "train.jsonl")
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--global-batch", type=int, default=8)
    ap.add_argument("--json", type=Path, help="also write every figure here")
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="tuneforge-shard-"))
    model = args.model
    if model == "tiny":
        from tuneforge.models.tiny import save_tiny

        model = str(save_tiny(work / "tiny", hidden_size=128, layers=4))
    rows = [run(model, args.data, work / f"r{i}", args.steps, n, fsdp, args.method, args.global_batch)
            for i, (n, fsdp) in enumerate([(1, False), (2, False), (2, True)])]
    base = rows[0]
    print(f"model {args.model}, method {args.method}, data {args.data.name}, {args.steps} steps, "
          f"global batch {args.global_batch}")
    print(f"{'run':>11} {'loop s':>7} {'wall s':>7} {'tok/s':>8} {'vs 1':>6} {'rank MB':>8} {'vs 1':>6} "
          f"{'final loss':>11} {'max |Δloss|/loss':>17}")
    for r in rows:
        dev = max(abs(a - b) / b for a, b in zip(r["losses"], base["losses"]))
        print(f"{r['name']:>11} {r['loop_s']:>7.1f} {r['wall_s']:>7.1f} {r['tok_s']:>8.0f} "
              f"{r['tok_s'] / base['tok_s']:>5.2f}x {r['rank_bytes'] / 2**20:>8.2f} "
              f"{r['rank_bytes'] / base['rank_bytes']:>5.2f}x {r['losses'][-1]:>11.4f} {dev:>17.2e}")
    if args.json:
        args.json.write_text(json.dumps({"args": {k: str(v) for k, v in vars(args).items()}, "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
