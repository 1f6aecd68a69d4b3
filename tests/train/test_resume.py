"""A run killed with SIGKILL mid-training resumes to exactly the per-step losses of an uninterrupted run."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.cli

from tests.helpers import arithmetic_rows, write_jsonl


def _train_cmd(tiny_dir: Path, data: Path, out: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "tuneforge.cli", "train", "--no-progress", "--base", str(tiny_dir),
            "--data", str(data), "--output", str(out), "--max_steps", "60", "--per_device_train_batch_size", "4",
            "--gradient_accumulation_steps", "2", "--logging_steps", "1", "--eval_steps", "10", "--save_steps", "4",
            "--learning_rate", "1e-3", "--early_stopping_patience", "0", *extra]


def _losses(run: Path) -> dict[int, float]:
    rows = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    return {r["step"]: r["loss"] for r in rows if "loss" in r}


def _env():
    return {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2]), "OMP_NUM_THREADS": "1"}


@pytest.mark.parametrize("method", [[], ["--method", "qlora", "--quant_backend", "torchao"]], ids=["lora", "qlora"])
def test_sigkill_then_resume_matches_uninterrupted_run(tiny_dir, tmp_path, method):
    data = write_jsonl(tmp_path / "d.jsonl", arithmetic_rows(400))
    ref = tmp_path / "ref"
    subprocess.run(_train_cmd(tiny_dir, data, ref, *method), check=True, env=_env(), capture_output=True)

    run = tmp_path / "run"
    child = subprocess.Popen(_train_cmd(tiny_dir, data, run, *method), env=_env(), stderr=subprocess.PIPE)
    deadline = time.time() + 120
    while not (run / "checkpoints" / "step-8").exists() and time.time() < deadline and child.poll() is None:
        time.sleep(0.01)
    child.send_signal(signal.SIGKILL)
    child.wait()
    assert child.returncode == -signal.SIGKILL, "training finished before it could be killed"
    assert not (run / "adapter").exists()
    killed_at = max(_losses(run))

    r = subprocess.run([sys.executable, "-m", "tuneforge.cli", "train", "--resume", "--no-progress",
                        "--output", str(run)], env=_env(), capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert f"resumed {run} from step {killed_at - killed_at % 4} of 60" in r.stderr  # checkpoints every 4 steps
    resumed, expected = _losses(run), _losses(ref)
    assert sorted(resumed) == sorted(expected) == list(range(1, 61))
    assert killed_at < 60
    for step in expected:
        assert resumed[step] == expected[step], f"step {step}: {resumed[step]} != {expected[step]}"
    if method:  # the backend chosen is recorded, so a resume re-quantizes the base the same way
        assert "quant_backend: torchao" in (run / "config.yaml").read_text()
    assert (run / "adapter" / "adapter_model.safetensors").read_bytes() == \
        (ref / "adapter" / "adapter_model.safetensors").read_bytes()


def test_resume_of_a_finished_run_changes_nothing_and_says_so(tiny_lora_run):
    before = {f: (f.stat().st_mtime_ns, f.read_bytes()) for f in tiny_lora_run.rglob("*") if f.is_file()}
    r = subprocess.run([sys.executable, "-m", "tuneforge.cli", "train", "--resume", "--no-progress", "--output",
                        str(tiny_lora_run)], env=_env(), capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert "already finished" in r.stderr and "nothing to resume" in r.stderr
    after = {f: (f.stat().st_mtime_ns, f.read_bytes()) for f in tiny_lora_run.rglob("*") if f.is_file()}
    assert after == before


def test_resume_of_a_run_without_checkpoints_is_a_clear_error(tmp_path):
    r = subprocess.run([sys.executable, "-m", "tuneforge.cli", "train", "--resume", "--output",
                        str(tmp_path / "nope")], env=_env(), capture_output=True, text=True)
    assert r.returncode == 2
    assert "nothing to resume" in r.stderr
