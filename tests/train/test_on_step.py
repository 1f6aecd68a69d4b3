"""`train(on_step=...)`: a report after every optimizer step, and a clean stop that resumes exactly."""

from __future__ import annotations

import json

import pytest

from tests.conftest import arithmetic_rows, write_jsonl
from tuneforge.config import TrainConfig
from tuneforge.train.recipe import Stopped, train


def _cfg(tiny_dir, tmp_path, out: str) -> TrainConfig:
    data = tmp_path / "d.jsonl"
    if not data.exists():
        write_jsonl(data, arithmetic_rows(48))
    return TrainConfig(base=str(tiny_dir), data=str(data), output=str(tmp_path / out), max_steps=8,
                       per_device_train_batch_size=4, logging_steps=1, eval_steps=4, save_steps=2,
                       learning_rate=1e-3, early_stopping_patience=0, seed=3)


def _losses(run) -> dict[int, float]:
    rows = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    return {r["step"]: r["loss"] for r in rows if "loss" in r}


def test_on_step_reports_each_step_its_metrics_rows_and_checkpoints(tiny_dir, tmp_path):
    reports = []
    run = train(_cfg(tiny_dir, tmp_path, "run"), progress=False, on_step=lambda r: reports.append(r) or True)
    assert [r.step for r in reports] == list(range(1, 9)) and {r.total for r in reports} == {8}
    rows = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert [row for r in reports for row in r.logged] == rows  # every metrics row, at the step it was written
    assert [r.step for r in reports if any("val_loss" in x for x in r.logged)] == [4, 8]
    assert [r.checkpoint.name for r in reports if r.checkpoint] == ["step-2", "step-4", "step-6"]
    tokens = [r.tokens for r in reports]
    assert tokens == sorted(tokens) and tokens[0] > 0
    assert (run / "run.json").is_file()


def test_stop_saves_a_checkpoint_and_resume_matches_an_uninterrupted_run(tiny_dir, tmp_path):
    ref = train(_cfg(tiny_dir, tmp_path, "ref"), progress=False)
    cfg = _cfg(tiny_dir, tmp_path, "run")
    with pytest.raises(Stopped) as stopped:
        train(cfg, progress=False, on_step=lambda r: r.step < 3)
    assert stopped.value.step == 3 and stopped.value.checkpoint.name == "step-3"
    assert not (tmp_path / "run" / "run.json").exists()  # not finished: no adapter, no run.json
    assert max(_losses(tmp_path / "run")) == 3
    run = train(cfg, resume=True, progress=False)
    assert _losses(run) == pytest.approx(_losses(ref), rel=1e-5, abs=1e-6)


def test_a_stop_request_on_the_last_step_just_finishes(tiny_dir, tmp_path):
    run = train(_cfg(tiny_dir, tmp_path, "run"), progress=False, on_step=lambda r: r.step < 8)
    assert (run / "run.json").is_file()
