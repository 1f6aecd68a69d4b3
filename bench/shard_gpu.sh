#!/usr/bin/env bash
# GPU check for `train --fsdp` (issue 26), for a machine with CUDA GPUs (the `device` tool when one is lent).
# What it checks, each printed as PASS/FAIL with the figures:
#   1. with >= 2 GPUs: full and LoRA fine-tuning of the tiny model under --fsdp full_shard (nccl) give the losses of
#      one process at the same global batch, and each rank's parameter+optimizer bytes are about half;
#      QLoRA under --fsdp runs (bitsandbytes 4-bit base) and its adapter loads with peft.
#   2. with 1 GPU: FSDP needs 2 processes (nccl refuses two ranks on one device), so only the refusal and a
#      single-GPU baseline run; `bench/shard.py` figures need 2+ GPUs.
# Usage: bash bench/shard_gpu.sh [OUT_DIR]   (writes OUT_DIR/shard_gpu.json; default $OUT or /tmp/shard_gpu)
set -uo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
OUT="${1:-${OUT:-/tmp/shard_gpu}}"
mkdir -p "$OUT"
export PYTHONPATH="$ROOT"
NGPU=$(python -c "import torch; print(torch.cuda.device_count())")
echo "GPUs: $NGPU ($(python -c 'import torch; print(torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none")'))"
python - "$OUT" "$NGPU" <<'PY'
import json, os, subprocess, sys
from pathlib import Path
out, ngpu = Path(sys.argv[1]), int(sys.argv[2])
from tests.helpers import arithmetic_rows, write_jsonl
from tuneforge.models.tiny import save_tiny
tiny = save_tiny(out / "tiny", hidden_size=128, layers=4)
data = write_jsonl(out / "d.jsonl", arithmetic_rows(200))
res = {"gpus": ngpu}

def train(run, *extra):
    cmd = [sys.executable, "-m", "tuneforge.cli", "train", "--no-progress", "--base", str(tiny), "--data", str(data),
           "--output", str(out / run), "--max_steps", "12", "--logging_steps", "1", "--eval_steps", "6",
           "--save_steps", "4", "--learning_rate", "1e-3", "--lora_dropout", "0", "--early_stopping_patience", "0",
           *extra]
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode:
        print(f"FAIL {run}: {r.stderr[-2000:]}")
        return None
    rows = [json.loads(x) for x in (out / run / "metrics.jsonl").read_text().splitlines()]
    return {"losses": [x["loss"] for x in rows if "loss" in x],
            "memory_per_rank": json.loads((out / run / "run.json").read_text()).get("memory_per_rank")}

n = max(ngpu, 1)
for method in ("full", "lora"):
    one = train(f"{method}-1", "--method", method, "--per_device_train_batch_size", str(2 * n))
    res[f"{method}-1"] = one
    if ngpu >= 2:
        many = train(f"{method}-{n}", "--method", method, "--per_device_train_batch_size", "2", "--nproc", str(n),
                     "--fsdp", "full_shard")
        res[f"{method}-{n}-fsdp"] = many
        if one and many:
            dev = max(abs(a - b) / b for a, b in zip(many["losses"], one["losses"]))
            m1 = sum(one["memory_per_rank"][0][k] for k in ("param_bytes", "optimizer_bytes"))
            mn = max(sum(r[k] for k in ("param_bytes", "optimizer_bytes")) for r in many["memory_per_rank"])
            print(f"{'PASS' if dev < 0.01 else 'FAIL'} {method}: {n} GPUs FSDP vs 1: max relative loss difference "
                  f"{dev:.2e}; per-rank param+optimizer {mn / m1:.2f} of one process")
if ngpu >= 2:
    q = train(f"qlora-{n}", "--method", "qlora", "--per_device_train_batch_size", "2", "--nproc", str(n),
              "--fsdp", "full_shard")
    res["qlora-fsdp"] = q
    print(("PASS" if q else "FAIL") + " qlora under fsdp")
else:
    r = subprocess.run([sys.executable, "-m", "tuneforge.cli", "train", "--base", str(tiny), "--data", str(data),
                        "--output", str(out / "refused"), "--fsdp", "full_shard"], capture_output=True, text=True)
    print(("PASS" if r.returncode and "fsdp shards over processes" in r.stderr else "FAIL")
          + " one process with --fsdp is refused")
(out / "shard_gpu.json").write_text(json.dumps(res, indent=1))
PY
