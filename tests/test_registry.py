"""The runs registry: list, show and diff run directories; git commit lookup."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest
import yaml

from tuneforge.errors import TuneforgeError
from tuneforge.registry import diff_runs, format_diff, format_table, list_runs, record_git_commit, show_run


@pytest.fixture(autouse=True)
def no_enclosing_repo(tmp_path, monkeypatch):
    """git must not find a repository above tmp_path (e.g. when /tmp sits inside one)."""
    monkeypatch.setenv("GIT_CEILING_DIRECTORIES", str(tmp_path.parent))  # tmp_path itself is searched


def make_run(root: Path, name: str, *, lr: float = 2e-4, data_sha: str = "a" * 64, val: float = 1.25,
             accuracy: float | None = 0.8, finished: bool = True, mtime: float | None = None) -> Path:
    run = root / name
    run.mkdir(parents=True)
    (run / "config.yaml").write_text(yaml.safe_dump({"base": "smollm2-135m-instruct", "method": "lora",
                                                     "learning_rate": lr, "lora_r": 16, "seed": 42,
                                                     "output": str(run), "data": "train.jsonl"}))
    (run / "data.json").write_text(json.dumps({"files": [{"path": "train.jsonl", "sha256": data_sha,
                                                          "examples": 100}], "train_examples": 90,
                                               "val_examples": 10}))
    rows = [{"step": 10, "loss": 2.0, "lr": lr, "tokens_per_s": 1000.0}, {"step": 10, "val_loss": val + 0.5},
            {"step": 20, "loss": 1.5, "lr": lr, "tokens_per_s": 1000.0}, {"step": 20, "val_loss": val}]
    (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    if finished:
        (run / "run.json").write_text(json.dumps({"base": "smollm2-135m-instruct", "method": "lora", "steps": 20,
                                                  "best_step": 20, "train_seconds": 12.0,
                                                  "results": {"best_val_loss": val}}))
        (run / "adapter").mkdir()
        (run / "adapter" / "adapter_config.json").write_text("{}")
    if accuracy is not None:
        (run / "eval.json").write_text(json.dumps({"task": "classification", "models": {
            "tuned": {"name": str(run), "metrics": {"accuracy": accuracy, "f1_macro": accuracy - 0.1,
                                                    "confusion_matrix": {"labels": [], "matrix": []}}}}}))
    if mtime is not None:
        for f in run.iterdir():
            os.utime(f, (mtime, mtime))
    return run


def git(cwd: Path, *args: str) -> str:
    return subprocess.run(["git", "-c", "user.email=t@example.com", "-c", "user.name=t", *args], cwd=cwd,
                          check=True, capture_output=True, text=True).stdout.strip()


def test_list_runs_reports_each_run_oldest_first(tmp_path):
    make_run(tmp_path / "runs", "b-newer", mtime=2_000_000_000)
    make_run(tmp_path / "runs", "a-older", val=1.5, accuracy=None, mtime=1_000_000_000)
    make_run(tmp_path / "runs", "c-incomplete", finished=False, accuracy=None, mtime=2_100_000_000)
    (tmp_path / "runs" / "not-a-run").mkdir()
    rows = list_runs(tmp_path / "runs")
    assert [r["id"] for r in rows] == ["a-older", "b-newer", "c-incomplete"]
    a, b, c = rows
    assert a["base"] == "smollm2-135m-instruct" and a["method"] == "lora"
    assert a["data"] == ["a" * 12] and a["best_val_loss"] == 1.5 and a["eval"] == {}
    assert b["eval"] == {"accuracy": 0.8, "f1_macro": pytest.approx(0.7)}  # the confusion matrix is left out
    assert c["status"] == "incomplete" and c["best_val_loss"] == 1.25  # from metrics.jsonl
    assert a["created"].startswith("2001-09-0")
    assert a["git_commit"] is None  # tmp_path is not inside a git work tree


def test_list_runs_of_missing_root_is_empty(tmp_path):
    assert list_runs(tmp_path / "nope") == []
    assert format_table([]) == "no runs found"


def test_git_commit_comes_from_the_enclosing_work_tree(tmp_path):
    git(tmp_path, "init", "-q")
    git(tmp_path, "commit", "-q", "--allow-empty", "-m", "init")
    head = git(tmp_path, "rev-parse", "HEAD")
    run = make_run(tmp_path / "runs", "r1")
    assert record_git_commit(run) == head
    row = list_runs(tmp_path / "runs")[0]
    assert row["git_commit"] == head and row["git_commit_recorded"] is False
    assert "*" in format_table([row])  # flagged as looked up now, not recorded at creation


def test_recorded_git_commit_wins_over_current_head(tmp_path):
    run = make_run(tmp_path / "runs", "r1")
    info = json.loads((run / "run.json").read_text())
    (run / "run.json").write_text(json.dumps({**info, "git_commit": "f" * 40}))
    row = list_runs(tmp_path / "runs")[0]
    assert row["git_commit"] == "f" * 40 and row["git_commit_recorded"] is True


def test_record_git_commit_is_none_outside_a_repository(tmp_path):
    assert record_git_commit(tmp_path / "run") is None


def test_show_run_lists_config_hashes_metrics_and_artifacts(tmp_path):
    run = make_run(tmp_path, "r1")
    (run / "report.html").write_text("<html></html>")
    s = show_run(run)
    assert s["config"]["learning_rate"] == 2e-4 and s["data"][0]["sha256"] == "a" * 64
    assert s["data_counts"] == {"train_examples": 90, "val_examples": 10}
    m = s["metrics"]
    assert (m["final_train_loss"], m["min_train_loss"], m["best_val_loss"], m["best_val_step"]) == (1.5, 1.5, 1.25, 20)
    assert m["evaluations"] == 2 and m["mean_tokens_per_s"] == 1000.0
    assert s["artifacts"] == {"adapter/": True, "model/": False, "checkpoints/": False, "eval.json": True,
                              "report.html": True, "README.md": False}
    assert s["eval"]["tuned"]["accuracy"] == 0.8


def test_show_run_rejects_a_directory_that_is_not_a_run(tmp_path):
    with pytest.raises(TuneforgeError, match="not a tuneforge run"):
        show_run(tmp_path)


def test_diff_runs_shows_changed_hyperparameters_metrics_and_data(tmp_path):
    a = make_run(tmp_path, "a", lr=2e-4, val=1.25, accuracy=0.8)
    b = make_run(tmp_path, "b", lr=1e-4, val=1.0, accuracy=0.9, data_sha="b" * 64)
    d = diff_runs(a, b)
    assert d["hyperparameters"] == {"learning_rate": (2e-4, 1e-4)}  # 'output' always differs: ignored
    assert d["metrics"]["best_val_loss"]["delta"] == pytest.approx(-0.25)
    assert d["metrics"]["eval.tuned.accuracy"] == {"a": 0.8, "b": 0.9, "delta": pytest.approx(0.1)}
    assert "final_train_loss" not in d["metrics"]  # equal values are not differences
    assert d["data_equal"] is False
    text = format_diff(d)
    assert "learning_rate: 0.0002 -> 0.0001" in text and "eval.tuned.accuracy: 0.8 -> 0.9 (+0.1)" in text
    assert "data: DIFFERENT" in text


def test_diff_of_identical_runs_says_so(tmp_path):
    d = diff_runs(make_run(tmp_path, "a"), make_run(tmp_path, "b"))
    assert d["hyperparameters"] == {} and d["metrics"] == {} and d["data_equal"] is True
    assert "hyperparameters: identical" in format_diff(d) and "data: same files" in format_diff(d)


def test_format_table_has_one_line_per_run(tmp_path):
    make_run(tmp_path / "runs", "r1", mtime=1_000_000_000)
    make_run(tmp_path / "runs", "r2", accuracy=None, mtime=1_000_000_100)
    lines = format_table(list_runs(tmp_path / "runs")).splitlines()
    assert lines[0].split() == ["id", "created", "status", "method", "base", "best_val", "eval", "data", "commit"]
    assert lines[2].startswith("r1 ") and "accuracy=0.8" in lines[2] and "aaaaaaaaaaaa" in lines[2]
    assert lines[3].startswith("r2 ") and len(lines) == 4
