"""Estimate vs actual: `tuneforge cost`'s CPU training-time estimate against the measured time of real runs.

Run: `python bench/cost.py` (SmolLM2-135M-Instruct on examples/sql, 1 epoch each: LoRA on 200, 400 and 600 rows,
full fine-tuning on 200 rows; about 15 min on a quiet 2-core machine). Each case runs in its own process, which
makes the estimate (its micro-benchmark) and then trains the same plan straight away, so both see the same machine
conditions. The baseline is the real run: ratio = actual train_seconds (run.json) / estimated train_seconds; the
acceptance is |ratio - 1| <= 0.30. `--quick` proves the plumbing in a few minutes (24 and 48 rows); `--json F`
saves every figure.
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
DEFAULT_CASES = "lora:200,lora:400,lora:600,full:200"
QUICK_CASES = "lora:24,lora:48"
LR = {"full": 5e-5, "lora": 2e-4, "qlora": 2e-4, "prompt-tuning": 3e-2}
TOLERANCE = 0.30


def worker(args) -> dict:
    """One case, one process: estimate, then train the same plan; both timed by the library's own figures."""
    from tuneforge.advise.cost import estimate
    from tuneforge.config import TrainConfig
    from tuneforge.train.recipe import train

    method, rows = args.worker.split(":")
    tmp = Path(tempfile.mkdtemp())
    lines = Path(args.data).read_text().splitlines()[:int(rows)]
    data = tmp / "train.jsonl"
    data.write_text("\n".join(lines) + "\n")
    cfg = TrainConfig(base=args.model, method=method, data=str(data), output=str(tmp / "run"),
                      num_train_epochs=args.epochs, per_device_train_batch_size=8, learning_rate=LR[method],
                      val_split=0.0, early_stopping_patience=0, logging_steps=1000, save_steps=10**6, seed=0)
    load0 = os.getloadavg()[0]
    t0 = time.perf_counter()
    est = estimate(cfg, hardware="cpu", bench_steps=args.bench_steps, progress=False)
    t_est = time.perf_counter() - t0
    load1 = os.getloadavg()[0]
    run = train(cfg, progress=False)
    info = json.loads((run / "run.json").read_text())
    load2 = os.getloadavg()[0]
    return {"case": args.worker, "method": method, "rows": int(rows), "steps": info["steps"],
            "estimated_steps": est["steps"], "train_tokens": info["train_tokens"],
            "estimated_tokens": est["tokens"]["train_tokens"], "estimate_s": est["train_seconds"],
            "actual_s": info["train_seconds"], "ratio": info["train_seconds"] / est["train_seconds"],
            "estimate_wall_s": round(t_est, 1), "bench_gflops": est["benchmark"]["flops_per_second"] / 1e9,
            "fixed_s_per_step": est["benchmark"]["fixed_seconds"], "peak_formula_bytes": est["memory_bytes"][method],
            "peak_measured_bytes": est.get("measured_peak_bytes"), "load_1min": [load0, load1, load2]}


def table(rows: list[dict], cores: int) -> str:
    head = ("| case | steps | tokens | estimate s | actual s | actual/estimate | within 30% | bench GFLOP/s "
            "| est. wall s | load (start/mid/end) |")
    out = [head, "|" + "---|" * (head.count("|") - 1)]
    for r in rows:
        ok = abs(r["ratio"] - 1) <= TOLERANCE
        same = "" if r["steps"] == r["estimated_steps"] and r["train_tokens"] == r["estimated_tokens"] else " (!)"
        out.append(f"| {r['case']} | {r['steps']}{same} | {r['train_tokens']:,} | {r['estimate_s']:.1f} | "
                   f"{r['actual_s']:.1f} | {r['ratio']:.2f} | {'yes' if ok else 'NO'} | {r['bench_gflops']:.1f} | "
                   f"{r['estimate_wall_s']:.0f} | {'/'.join(f'{x:.1f}' for x in r['load_1min'])} |")
    busy = [r["case"] for r in rows if max(r["load_1min"]) > cores + 0.5]
    if busy:
        out.append(f"\nwarning: load average above {cores} cores during {', '.join(busy)}: other work shared the "
                   "CPU, so these timings are noisy; rerun on a quiet machine")
    n_ok = sum(abs(r["ratio"] - 1) <= TOLERANCE for r in rows)
    out.append(f"\n{n_ok} of {len(rows)} cases within {TOLERANCE:.0%} (acceptance: at least 3 cases)")
    return "\n".join(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="smollm2-135m-instruct")
    ap.add_argument("--data", default=str(ROOT / "examples/sql/train.jsonl"))
    ap.add_argument("--cases", default=None, help=f"method:rows,... (default {DEFAULT_CASES})")
    ap.add_argument("--epochs", type=float, default=1.0)
    ap.add_argument("--bench-steps", type=int, default=4, help="optimizer steps the micro-benchmark measures")
    ap.add_argument("--quick", action="store_true", help=f"cases {QUICK_CASES}, 2 benchmark steps")
    ap.add_argument("--json", default=None, help="save every figure here")
    ap.add_argument("--verbose", action="store_true", help="show the workers' output")
    ap.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        print("RESULT " + json.dumps(worker(args)))
        return
    cases = (args.cases or (QUICK_CASES if args.quick else DEFAULT_CASES)).split(",")
    steps = 2 if args.quick and args.bench_steps == 4 else args.bench_steps
    rows = []
    for case in cases:
        cmd = [sys.executable, __file__, "--worker", case, "--model", args.model, "--data", args.data,
               "--epochs", str(args.epochs), "--bench-steps", str(steps)]
        print(f"running {case} ...", file=sys.stderr, flush=True)
        r = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
        if args.verbose or r.returncode != 0:
            print(r.stderr[-4000:], file=sys.stderr)
        if r.returncode != 0:
            sys.exit(f"case {case} failed (exit {r.returncode})")
        rows.append(json.loads(next(x for x in r.stdout.splitlines() if x.startswith("RESULT "))[7:]))
    print(f"model {args.model}, data {args.data}, {args.epochs:g} epoch(s), batch 8, micro-benchmark {steps} steps "
          f"after 1 warm-up; ratio = actual / estimate (train_seconds: optimizer-step time)\n")
    print(table(rows, os.cpu_count() or 1))
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
