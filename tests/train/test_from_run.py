"""train --from RUN: the new run starts from the parent's adapter (its first loss is where the parent ended,
not where the base starts), takes base/method/adapter shape from it, and records the lineage."""

from __future__ import annotations

import json

import pytest

from tests.conftest import arithmetic_rows, write_jsonl
from tuneforge.config import TrainConfig
from tuneforge.errors import ConfigError
from tuneforge.registry import show_run
from tuneforge.train.recipe import train


def losses(run) -> list[float]:
    return [r["loss"] for r in map(json.loads, (run / "metrics.jsonl").read_text().splitlines()) if "loss" in r]


@pytest.fixture(scope="module")
def lineage_runs(tmp_path_factory):
    """A base whose loss a LoRA can move a lot, a parent trained on it, and a fresh run for comparison."""
    from tests.serve.conftest import lively_tiny

    d = tmp_path_factory.mktemp("from")
    base = lively_tiny(d / "base")
    data = write_jsonl(d / "train.jsonl", arithmetic_rows(160, seed=3))
    common = dict(data=str(data), logging_steps=1, val_split=0.0, per_device_train_batch_size=16, seed=0)
    parent = train(TrainConfig(base=str(base), output=str(d / "parent"), max_steps=40, learning_rate=2e-2,
                               target_modules=["all-linear"], lora_r=8, **common), progress=False)
    # near-zero learning rate: the first logged loss is the starting model's loss on the first batch
    child = train(TrainConfig(from_run=str(parent), output=str(d / "child"), max_steps=2, learning_rate=1e-7,
                              **common), progress=False)
    fresh = train(TrainConfig(base=str(base), output=str(d / "fresh"), max_steps=2, learning_rate=1e-7,
                              target_modules=["all-linear"], lora_r=8, **common), progress=False)
    return {"base": base, "data": data, "parent": parent, "child": child, "fresh": fresh, "dir": d}


def test_the_first_loss_continues_from_the_parent_not_from_the_base(lineage_runs):
    parent_last = sum(losses(lineage_runs["parent"])[-5:]) / 5
    child_first = losses(lineage_runs["child"])[0]
    base_first = losses(lineage_runs["fresh"])[0]
    assert base_first - parent_last > 1.0  # the parent really learned something
    assert abs(child_first - parent_last) < 0.2 * (base_first - parent_last)


def test_base_method_and_adapter_shape_come_from_the_parent(lineage_runs):
    import yaml

    cfg = yaml.safe_load((lineage_runs["child"] / "config.yaml").read_text())
    assert cfg["base"] == str(lineage_runs["base"]) and cfg["method"] == "lora"
    assert cfg["lora_r"] == 8 and cfg["target_modules"] == ["all-linear"]
    assert cfg["from_run"] == str(lineage_runs["parent"])


def test_run_json_and_runs_show_name_the_parent_and_the_lineage(lineage_runs, tmp_path):
    parent, child = lineage_runs["parent"], lineage_runs["child"]
    info = json.loads((child / "run.json").read_text())
    assert info["parent"]["id"] == "parent" and info["parent"]["steps"] == 40 and info["parent"]["method"] == "lora"
    assert len(info["parent"]["weights_sha256"]) == 64
    shown = show_run(child)
    assert shown["parent"] == str(parent.resolve()) and shown["lineage"] == [str(parent.resolve())]
    grandchild = train(TrainConfig(from_run=str(child), data=str(lineage_runs["data"]), output=str(tmp_path / "gc"),
                                   max_steps=1, val_split=0.0), progress=False)
    assert show_run(grandchild)["lineage"] == [str(child.resolve()), str(parent.resolve())]
    assert show_run(parent)["parent"] is None and show_run(parent)["lineage"] == []


def test_a_conflicting_base_method_or_shape_is_an_error_before_anything_is_written(lineage_runs, tmp_path):
    common = dict(from_run=str(lineage_runs["parent"]), data=str(lineage_runs["data"]))
    for kw, msg in [({"lora_r": 16}, "--lora_r 16: --from .* continues its lora_r \\(8\\)"),
                    ({"method": "full"}, "--method 'full'"), ({"base": "smollm2-135m-instruct"}, "--base")]:
        out = tmp_path / f"bad-{next(iter(kw))}"
        with pytest.raises(ConfigError, match=msg):
            train(TrainConfig(output=str(out), **common, **kw), progress=False)
        assert not out.exists()
    with pytest.raises(ConfigError, match="not a finished run"):
        train(TrainConfig(from_run=str(tmp_path), data=str(lineage_runs["data"]), output=str(tmp_path / "x")),
              progress=False)
