"""Issue 23: validation decides how long a run trains. The stop keeps the best step's exact weights, says why in
run.json and the model card, and a run killed after an evaluation resumes with the same patience counter and
learning-rate scale (so it stops where the uninterrupted run stopped)."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

from tests.conftest import arithmetic_rows, write_jsonl
from tuneforge.config import TrainConfig
from tuneforge.train.early_stop import LoopState
from tuneforge.train.sft import train

# lr 0.1 on the tiny model: val loss improves, stalls once (rate halved), improves again, then stalls for good
PLATEAU = dict(per_device_train_batch_size=4, eval_steps=2, learning_rate=0.1, early_stopping_patience=2,
               seed=3, val_split=0.25, max_seq_len=64, save_total_limit=50)


def _cfg(tiny_dir, tmp_path, out: str) -> TrainConfig:
    data = tmp_path / "d.jsonl"
    if not data.exists():
        write_jsonl(data, arithmetic_rows(64))
    return TrainConfig(base=str(tiny_dir), data=str(data), output=str(tmp_path / out), **PLATEAU)


def _rows(run) -> list[dict]:
    return [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def plateau_run(tiny_dir, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("plateau")
    return train(_cfg(tiny_dir, tmp, "ref"), progress=False), tmp


def test_a_plateau_stops_the_run_keeps_the_best_steps_exact_weights_and_says_why(plateau_run):
    run, _ = plateau_run
    info = json.loads((run / "run.json").read_text())
    evals = [r for r in _rows(run) if "val_loss" in r]
    assert info["stopped_early"] and info["steps"] < 72  # 6 epochs of 12 steps planned (epochs auto: a cap)
    best = info["best_step"]
    assert best < info["steps"] and [r["step"] for r in evals][-1] == info["steps"]
    assert min(evals, key=lambda r: (-r["val_exact_match"], r["val_loss"]))["step"] == best
    reason = info["stop_reason"]
    assert reason == (f"validation loss and exact match flat for 2 evaluations; best at step {best} of 72 planned "
                      "(6 epochs)")
    assert f"training stopped: {reason}" in (run / "README.md").read_text()
    # the adapter is byte-identical to the best step's checkpoint
    ckpt = load_file(run / "checkpoints" / f"step-{best}" / "trainable.safetensors")
    adapter = load_file(run / "adapter" / "adapter_model.safetensors")
    assert len(adapter) == len(ckpt)
    for name, t in ckpt.items():
        assert torch.equal(adapter[name.replace(".default", "")], t), name
    last = load_file(run / "checkpoints" / f"step-{info['steps'] - 2}" / "trainable.safetensors")
    assert any(not torch.equal(last[k], ckpt[k]) for k in ckpt)  # later weights differ: the choice mattered


def test_the_plateau_schedule_halves_the_rate_at_each_evaluation_without_progress(plateau_run):
    run, _ = plateau_run
    rows = _rows(run)
    lr = {r["step"]: r["lr"] for r in rows if "lr" in r}
    evals = [r for r in rows if "val_loss" in r]
    stalls = [r["step"] for prev, r in zip(evals, evals[1:]) if r["best_val_loss"] == prev["best_val_loss"]]
    assert stalls  # the scenario has at least one stall before the stop
    for s in stalls:
        if s + 1 in lr and s >= 6:  # past the 4-step warm-up
            assert lr[s + 1] == pytest.approx(lr[s] / 2)  # halved from the very next step


def test_a_run_killed_after_an_evaluation_resumes_with_the_same_patience_and_rate(plateau_run, tiny_dir):
    ref, tmp = plateau_run
    ref_info = json.loads((ref / "run.json").read_text())
    evals = [r for r in _rows(ref) if "val_loss" in r]
    # the first evaluation without progress that the run survived: patience 1 of 2 used there
    stall = next(r["step"] for prev, r in zip(evals, evals[1:]) if r["best_val_loss"] == prev["best_val_loss"])

    def crash(report):
        if report.step == stall + 1:
            raise KeyboardInterrupt  # dies mid-run: the last checkpoint is the one written at the evaluation
        return True

    cfg = _cfg(tiny_dir, tmp, "killed")
    with pytest.raises(KeyboardInterrupt):
        train(cfg, progress=False, on_step=crash)
    state = LoopState.from_json(json.loads((tmp / "killed" / "checkpoints" / f"step-{stall}" / "state.json")
                                           .read_text()))
    assert state.bad_evals == 1 and state.lr_scale == 0.5
    run = train(cfg, resume=True, progress=False)
    info = json.loads((run / "run.json").read_text())
    for k in ("steps", "best_step", "stop_reason", "stopped_early"):
        assert info[k] == ref_info[k], k
    assert [r["val_loss"] for r in _rows(run) if "val_loss" in r] == pytest.approx([r["val_loss"] for r in evals])
