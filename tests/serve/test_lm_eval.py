"""lm-evaluation-harness scores a local multiple-choice task through the server (`--model local-completions`:
prompt scoring by `echo` + `logprobs` + `max_tokens: 0` on /v1/completions) exactly as it scores the same merged
model in-process (`--model hf`). No downloads: the task is a YAML over a local jsonl."""

from __future__ import annotations

import json
import os
import random
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.serve.conftest import serving

pytestmark = [pytest.mark.integration,
              pytest.mark.skipif(shutil.which("lm_eval") is None and
                                 __import__("importlib").util.find_spec("lm_eval") is None,
                                 reason="lm-evaluation-harness is not installed (pip install 'tuneforge[dev]')")]

TASK = """task: tf_add
dataset_path: json
dataset_kwargs:
  data_files:
    test: {data}
test_split: test
output_type: multiple_choice
doc_to_text: "add {{{{a}}}} and {{{{b}}}}"
doc_to_choice: "{{{{choices}}}}"
doc_to_target: "{{{{answer}}}}"
metric_list:
  - metric: acc
    aggregation: mean
    higher_is_better: true
  - metric: acc_norm
    aggregation: mean
    higher_is_better: true
"""


def _task(d: Path) -> Path:
    """12 questions in the tiny LoRA run's training format, four choices each (the right sum first)."""
    r = random.Random(0)
    rows = []
    for _ in range(12):
        a, b = r.randint(0, 99), r.randint(0, 99)
        rows.append({"a": a, "b": b, "choices": [f" {a + b}", f" {a + b + 1}", f" {a * b}", f" {abs(a - b)}"],
                     "answer": 0})
    (d / "add.jsonl").write_text("".join(json.dumps(x) + "\n" for x in rows))
    (d / "tasks").mkdir()
    (d / "tasks" / "tf_add.yaml").write_text(TASK.format(data=d / "add.jsonl"))
    return d / "tasks"


def _lm_eval(tasks: Path, out: Path, model: str, model_args: str) -> tuple[dict, list[dict]]:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    cmd = [sys.executable, "-m", "lm_eval", "--model", model, "--model_args", model_args, "--include_path",
           str(tasks), "--tasks", "tf_add", "--batch_size", "1", "--device", "cpu", "--output_path", str(out), "--log_samples"]
    r = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    results = json.loads(next(out.rglob("results_*.json")).read_text())["results"]["tf_add"]
    samples = [json.loads(x) for x in next(out.rglob("samples_tf_add_*.jsonl")).read_text().splitlines()]
    return results, sorted(samples, key=lambda s: s["doc_id"])


def test_local_completions_through_the_server_scores_as_the_hf_model(tiny_lora_run, tmp_path):
    model_dir = tiny_lora_run / "model"  # the merged run
    tasks = _task(tmp_path)
    hf, hf_samples = _lm_eval(tasks, tmp_path / "hf", "hf", f"pretrained={model_dir},dtype=float32")
    with serving(model_dir, engine_kw={"served_model_name": "add"}, response_cache_size=0) as srv:
        api, api_samples = _lm_eval(
            tasks, tmp_path / "api", "local-completions",
            f"model=add,base_url={srv.url}/v1/completions,tokenizer={model_dir},tokenizer_backend=huggingface,"
            "num_concurrent=1,max_retries=1")
    assert api["acc,none"] == hf["acc,none"] and api["acc_norm,none"] == hf["acc_norm,none"]
    assert len(api_samples) == len(hf_samples) == 12
    for a, h in zip(api_samples, hf_samples):
        assert (a["acc"], a["acc_norm"]) == (h["acc"], h["acc_norm"])
        for (la, _), (lh, _) in zip(a["filtered_resps"], h["filtered_resps"]):
            assert float(la) == pytest.approx(float(lh), abs=1e-3)  # each choice's log-likelihood
