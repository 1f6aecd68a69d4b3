"""Slow: a real SmolLM2-135M-Instruct LoRA run (2 steps) exported as merged, int8, ONNX and GGUF f16, each
passing `export verify` (golden prompts = the run's val_data) through the CLI."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.helpers import tf
from tuneforge.export import manifest

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def smol_run(tmp_path_factory) -> Path:
    run = tmp_path_factory.mktemp("export-smol") / "run"
    r = tf("train", "--no-progress", "--data", str(ROOT / "examples/sql/train.jsonl"), "--val_data",
           str(ROOT / "examples/sql/val.jsonl"), "--output", str(run), "--max_steps", "2", "--eval_steps", "2",
           "--per_device_train_batch_size", "4")
    assert r.returncode == 0, r.stderr
    return run


@pytest.mark.parametrize("command,where", [
    (["merge"], "model"),
    (["quantize", "--bits", "8"], "exports/int8"),
    (["onnx"], "exports/onnx"),
    (["gguf", "--type", "f16"], "exports/gguf-f16"),
])
def test_export_passes_verify_on_smollm2(smol_run, command, where):
    r = tf("export", command[0], str(smol_run), *command[1:])
    assert r.returncode == 0, r.stdout + r.stderr
    assert "verify: PASSED" in r.stdout, r.stdout
    m = manifest.read(smol_run / where)
    assert m["verify"]["passed"] and m["verify"]["golden"]["source"].endswith("(the run's val_data)")
    greedy = next(c for c in m["verify"]["checks"] if c["name"] == "greedy answers")
    if command[0] in ("merge", "onnx", "gguf"):
        assert greedy["passed"], greedy
