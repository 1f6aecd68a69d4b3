"""Slow: the real SmolLM2-135M-Instruct end to end — train → merge → the guide's pipeline() → generate."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.helpers import tf

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[2]


def test_default_model_loads_from_cache_in_seconds():
    from tuneforge.models.load import load_base, resolve

    resolve("smollm2-135m-instruct")  # converts once if the cache is cold
    t0 = time.perf_counter()
    b = load_base("smollm2-135m-instruct")
    assert time.perf_counter() - t0 < 15
    assert b.tokenizer.chat_template and "<|im_start|>" in b.tokenizer.chat_template
    assert sum(p.numel() for p in b.model.parameters()) > 100e6


def test_train_merge_pipeline_generate(tmp_path):
    run = tmp_path / "run"
    r = tf("train", "--no-progress", "--data", str(ROOT / "examples/sql/train.jsonl"), "--output", str(run),
           "--max_steps", "6", "--eval_steps", "6", "--val_split", "0.05")
    assert r.returncode == 0, r.stderr
    assert (run / "adapter" / "adapter_model.safetensors").is_file()

    from peft import AutoPeftModelForCausalLM

    AutoPeftModelForCausalLM.from_pretrained(str(run / "adapter"))  # plain peft, no tuneforge

    r = tf("export", "merge", str(run))
    assert r.returncode == 0, r.stderr
    from transformers import pipeline

    pipe = pipeline("text-generation", model=str(run / "model"))
    result = pipe("Your prompt here", max_new_tokens=5)
    assert result[0]["generated_text"].startswith("Your prompt here")
    chat = pipe([{"role": "user", "content": "Translate to SQL: Show all users"}], max_new_tokens=20)
    assert chat[0]["generated_text"][-1]["role"] == "assistant"

    r = tf("generate", str(run), "Translate to SQL: Show all users", "--max-new-tokens", "24")
    assert r.returncode == 0 and r.stdout.strip(), r.stderr


@pytest.mark.parametrize("method", ["full", "lora", "qlora", "qlora-torchao", "prompt-tuning"])
def test_each_method_trains_saves_reloads_and_generates(method, tmp_path):
    from tuneforge.eval.harness import generate, load_for_inference

    run = tmp_path / method
    backend = ["--quant_backend", "torchao"] if method == "qlora-torchao" else []
    method = method.removesuffix("-torchao")
    r = tf("train", "--no-progress", "--method", method, *backend, "--data", str(ROOT / "examples/sql/train.jsonl"),
           "--val_data", str(ROOT / "examples/sql/val.jsonl"), "--output", str(run), "--max_steps", "3",
           "--eval_steps", "3", "--per_device_train_batch_size", "4")
    assert r.returncode == 0, r.stderr
    assert (run / ("model" if method == "full" else "adapter")).is_dir()
    loaded = load_for_inference(run)
    out, _ = generate(loaded, ["Translate to SQL: Show all users"], max_new_tokens=12)
    assert isinstance(out[0], str) and out[0]
    if method == "qlora":  # the adapter merges onto the full-precision base, with a parity check
        r = tf("export", "merge", str(run))
        assert r.returncode == 0, r.stderr
        check = json.loads((run / "model" / "merge_check.json").read_text())
        # merged onto fp32 weights the model is at least as good as on the 4-bit base it trained on
        assert check["relative_change"] < 0.05, check
    if method == "prompt-tuning":  # cannot become plain weights: say so instead of writing something broken
        r = tf("export", "merge", str(run))
        assert r.returncode == 2 and "cannot be merged" in r.stderr and not (run / "model").exists()
