"""1 vs N training processes on this machine: the same run (same global batch, data, seed) through `train --nproc`.

Run: `python bench/scale.py [--model smollm2-135m-instruct] [--steps 20] [--nproc 2]`. Prints the training loop's
time (run.json train_seconds), supervised tokens/s, final train loss for each process count, and the speed ratio
against the single-process run (the baseline). On a 2-core CPU expect little or no gain: the figure documents
the overhead of gradient all-reduce (gloo) and of splitting 2 cores into 2 single-threaded processes.
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


def run(model: str, data: Path, out: Path, steps: int, nproc: int, global_batch: int) -> dict:
    per_device = global_batch // nproc
    cmd = [sys.executable, "-m", "tuneforge.cli", "train", "--no-progress", "--base", model, "--data", str(data),
           "--output", str(out), "--max_steps", str(steps), "--per_device_train_batch_size", str(per_device),
           "--logging_steps", "1", "--eval_steps", str(steps + 1), "--save_steps", str(steps + 1),
           "--early_stopping_patience", "0", "--val_split", "0", "--max_seq_len", "256", "--nproc", str(nproc)]
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True, env={**os.environ, "PYTHONPATH": str(ROOT)}, capture_output=True)
    wall = time.perf_counter() - t0
    info = json.loads((out / "run.json").read_text())
    rows = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    sup = sum(r["supervised_tokens"] for r in rows if "supervised_tokens" in r)
    return {"nproc": nproc, "loop_s": info["train_seconds"], "wall_s": wall, "supervised_tok_s":
            sup / info["train_seconds"], "final_loss": [r["loss"] for r in rows if "loss" in r][-1]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="smollm2-135m-instruct")
    ap.add_argument("--data", type=Path, default=ROOT / "examples" / "sql" / "train.jsonl")
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--nproc", type=int, default=2)
    ap.add_argument("--global-batch", type=int, default=8)
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="tuneforge-scale-"))
    rows = [run(args.model, args.data, work / f"p{n}", args.steps, n, args.global_batch) for n in (1, args.nproc)]
    base = rows[0]
    print(f"model {args.model}, data {args.data.name}, {args.steps} steps, global batch {args.global_batch}")
    print(f"{'processes':>9} {'loop s':>8} {'wall s':>8} {'sup tok/s':>10} {'vs 1 proc':>10} {'final loss':>11}")
    for r in rows:
        print(f"{r['nproc']:>9} {r['loop_s']:>8.1f} {r['wall_s']:>8.1f} {r['supervised_tok_s']:>10.1f} "
              f"{r['supervised_tok_s'] / base['supervised_tok_s']:>9.2f}x {r['final_loss']:>11.4f}")


if __name__ == "__main__":
    main()
