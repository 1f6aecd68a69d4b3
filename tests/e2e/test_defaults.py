"""Slow: with no flags at all, SmolLM2-135M learns a 2-label task of 200 rows (bench/tasks.py `sentiment`: a
review → positive/negative, the last clause deciding) to >= 0.9 held-out accuracy, answering by constrained
prediction over the label set."""

from __future__ import annotations

import json

import pytest

from bench.tasks import TASKS, write
from tests.helpers import tf

pytestmark = pytest.mark.slow


def test_two_label_task_of_200_rows_learns_with_defaults(tmp_path):
    task = TASKS["sentiment"]
    paths = write(task, tmp_path / "data", n_train=200, n_test=100)
    run = tmp_path / "run"
    r = tf("train", "--no-progress", "--data", str(paths["train"]), "--output", str(run))
    assert r.returncode == 0, r.stderr
    assert "(auto)" in r.stderr  # the settings it chose, with the reasons, are in train's output
    r = tf("eval", str(run), "--data", str(paths["test"]), "--no-progress", "--metrics", "accuracy")
    assert r.returncode == 0, r.stderr
    res = json.loads((run / "eval.json").read_text())
    assert res["mode"] == "constrained" and res["n_examples"] == 100
    assert {e["tuned_prediction"] for e in res["examples"]} <= {"positive", "negative"}
    assert res["models"]["tuned"]["metrics"]["accuracy"] >= 0.9, res["models"]["tuned"]["metrics"]
