"""Two CPU processes (gloo) through `train --nproc 2`: the same global batch gives the losses of one process,
a kill of both processes resumes exactly, rank 0 alone writes the run, and the adapter loads with peft."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.helpers import arithmetic_rows, write_jsonl

pytestmark = pytest.mark.cli
ROOT = Path(__file__).resolve().parents[2]
STEPS = 60
TOLERANCE = 1e-4  # relative: the same maths, summed in another order across processes


def _cmd(tiny_dir: Path, data: Path, out: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "tuneforge.cli", "train", "--no-progress", "--base", str(tiny_dir),
            "--data", str(data), "--output", str(out), "--max_steps", str(STEPS), "--logging_steps", "1",
            "--eval_steps", "10", "--save_steps", "4", "--learning_rate", "1e-3", "--lora_dropout", "0",
            "--early_stopping_patience", "0", *extra]


def _env() -> dict:
    return {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}


def _rows(run: Path) -> list[dict]:
    return [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]


def _kill_tree(pid: int) -> None:
    """SIGKILL the launcher and its training processes (torchrun starts them in sessions of their own)."""
    import psutil

    try:
        procs = [psutil.Process(pid), *psutil.Process(pid).children(recursive=True)]
    except psutil.NoSuchProcess:
        return
    for p in procs:
        try:
            p.kill()
        except psutil.NoSuchProcess:
            pass
    psutil.wait_procs(procs, timeout=30)


def _losses(run: Path) -> dict[int, float]:
    return {r["step"]: r["loss"] for r in _rows(run) if "loss" in r}


@pytest.fixture(scope="module")
def runs(tiny_dir, tmp_path_factory):
    d = tmp_path_factory.mktemp("ddp")
    data = write_jsonl(d / "d.jsonl", arithmetic_rows(200))
    one, two = d / "one", d / "two"
    # one process: 2 micro-batches of 4 per step; two processes: 1 micro-batch of 4 each -> the same 8 examples
    r1 = subprocess.run(_cmd(tiny_dir, data, one, "--per_device_train_batch_size", "4",
                             "--gradient_accumulation_steps", "2"), env=_env(), capture_output=True, text=True)
    assert r1.returncode == 0, r1.stderr
    r2 = subprocess.run(_cmd(tiny_dir, data, two, "--per_device_train_batch_size", "4", "--nproc", "2"),
                        env=_env(), capture_output=True, text=True)
    assert r2.returncode == 0, r2.stderr
    return data, one, two, r2


def test_two_processes_give_the_single_process_losses_for_the_same_global_batch(runs):
    _, one, two, r2 = runs
    assert "on 2 processes" in r2.stderr
    a, b = _losses(one), _losses(two)
    assert sorted(a) == sorted(b) == list(range(1, STEPS + 1))
    for step in a:
        assert b[step] == pytest.approx(a[step], rel=TOLERANCE), step
    va = [r["val_loss"] for r in _rows(one) if "val_loss" in r]
    vb = [r["val_loss"] for r in _rows(two) if "val_loss" in r]
    assert vb == pytest.approx(va, rel=TOLERANCE)


def test_rank_zero_alone_writes_the_run_directory(runs):
    _, one, two, _ = runs
    steps = [r["step"] for r in _rows(two) if "loss" in r]
    assert steps == sorted(set(steps))  # one writer: no step logged twice
    names = lambda run: sorted(str(p.relative_to(run)) for p in run.rglob("*")  # noqa: E731
                               if "tensorboard" not in str(p))
    assert names(two) == names(one)
    info = json.loads((two / "run.json").read_text())
    assert info["steps"] == STEPS and info["train_tokens"] == json.loads((one / "run.json").read_text())[
        "train_tokens"]


def test_the_adapter_loads_with_peft(runs, tiny_dir):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    _, _, two, _ = runs
    PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_dir), str(two / "adapter"))


def test_killing_both_processes_then_resume_continues_exactly_with_the_same_process_count(runs, tiny_dir, tmp_path):
    data, _, two, _ = runs
    run = tmp_path / "killed"
    child = subprocess.Popen(_cmd(tiny_dir, data, run, "--per_device_train_batch_size", "4", "--nproc", "2"),
                             env=_env(), stderr=subprocess.DEVNULL)
    deadline = time.time() + 180
    while not (run / "checkpoints" / "step-8").exists() and time.time() < deadline and child.poll() is None:
        time.sleep(0.01)
    _kill_tree(child.pid)  # the launcher and both training processes
    child.wait()
    assert not (run / "run.json").exists(), "training finished before it could be killed"
    one = subprocess.run([sys.executable, "-m", "tuneforge.cli", "train", "--resume", "--no-progress", "--output",
                          str(run)], env=_env(), capture_output=True, text=True)
    assert one.returncode == 2 and "resume it with the same number" in one.stderr  # 1 process: refused
    r = subprocess.run([sys.executable, "-m", "tuneforge.cli", "train", "--resume", "--no-progress", "--output",
                        str(run), "--nproc", "2"], env=_env(), capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert "resumed" in r.stderr
    got, want = _losses(run), _losses(two)
    assert sorted(got) == list(range(1, STEPS + 1))
    for step in want:
        assert got[step] == pytest.approx(want[step], rel=1e-6), step
