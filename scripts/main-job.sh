#!/usr/bin/env bash
# The main job: install, LoRA fine-tune the default SmolLM2-135M-Instruct on the bundled text-to-SQL
# example, then print held-out exact match and sample answers for the base and the tuned model.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh
RUN=${RUN:-runs/sql-lora}
rm -rf "$RUN"
tuneforge data check examples/sql/train.jsonl --max-seq-len 256 || true   # pre-flight (warns: < 1000 rows)
tuneforge train --config examples/sql/config.yaml --output "$RUN"
tuneforge export merge "$RUN"
tuneforge eval "$RUN" --data examples/sql/test.jsonl --baseline base --max-new-tokens 64 --samples 5
