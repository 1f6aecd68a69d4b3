"""The advisor's verdicts on crafted datasets (tiny, imbalanced, duplicated, already solved by the base, healthy),
with the tiny model as the base; its hyperparameters stay in the guide's ranges; --json and --write-config."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from tests.conftest import write_jsonl
from tests.test_cli import tf
from tuneforge.advise.advisor import advise, recommend_hyperparameters
from tuneforge.train import auto
from tuneforge.config import TrainConfig, load_config

WORDS = ("red green blue cat dog sun moon tree rock river lamp cloud fish bird road hill salt milk wind door "
         "apple stone paper glass chair").split()


def sums(n: int, seed: int = 0) -> list[dict]:
    """n distinct arithmetic questions with varied wording: diverse prompts, answers not in the prompt."""
    r = random.Random(seed)
    seen, rows = set(), []
    while len(rows) < n:
        a, b = r.randint(0, 999), r.randint(0, 999)
        if (a, b) in seen:
            continue
        seen.add((a, b))
        verb = r.choice(["add", "what is the sum of", "please total", "compute", "combine"])
        rows.append({"prompt": f"{verb} {a} and {b}", "completion": f"the total is {a + b}"})
    return rows


def signals(advice) -> dict[str, str]:
    return {r.check: r.signal for r in advice.reasons}


def test_tiny_dataset_is_no_go(tiny_dir, tmp_path):
    a = advise(write_jsonl(tmp_path / "d.jsonl", sums(30)), base=str(tiny_dir), sample=4)
    assert a.verdict == "no-go"
    assert signals(a)["size"] == "no-go"
    assert "30 distinct examples" in next(r.message for r in a.reasons if r.check == "size")


def test_healthy_dataset_is_go(tiny_dir, tmp_path):
    a = advise(write_jsonl(tmp_path / "d.jsonl", sums(1200)), base=str(tiny_dir), sample=8)
    assert a.verdict == "go", a.render()
    sig = signals(a)
    assert sig["size"] == sig["duplicates"] == sig["format"] == sig["zero_shot"] == "go"
    zs = next(r for r in a.reasons if r.check == "zero_shot")
    assert zs.evidence["sample"] == 8 and zs.evidence["score"] < 0.5  # measured: a random tiny model fails
    assert a.method["value"] in ("lora", "qlora") and a.method["reason"]


def test_duplicated_dataset_counts_distinct_examples(tiny_dir, tmp_path):
    base = sums(40)
    rows = [dict(r) for _ in range(30) for r in base]  # 1,200 rows, 40 distinct
    rows += [{"prompt": r["prompt"].upper() + "!", "completion": r["completion"]} for r in base]  # near duplicates
    a = advise(write_jsonl(tmp_path / "d.jsonl", rows), base=str(tiny_dir), sample=0)
    assert a.verdict == "no-go"
    sig = signals(a)
    assert sig["size"] == "no-go" and sig["duplicates"] == "maybe"
    size = next(r for r in a.reasons if r.check == "size")
    assert size.evidence["rows"] == 1240 and size.evidence["distinct"] == 40


def test_imbalanced_labels_are_maybe(tiny_dir, tmp_path):
    r = random.Random(0)
    rows = [{"text": f"{' '.join(r.sample(WORDS, 4))} {i}", "label": "spam" if i % 12 == 0 else "ham"}
            for i in range(1200)]
    a = advise(write_jsonl(tmp_path / "d.jsonl", rows), base=str(tiny_dir), sample=8)
    assert a.verdict == "maybe", a.render()
    bal = next(x for x in a.reasons if x.check == "balance")
    assert bal.signal == "maybe" and bal.evidence["labels"] == {"ham": 1100, "spam": 100}
    assert "synthesize" in bal.message
    assert next(x for x in a.reasons if x.check == "zero_shot").evidence["metric"] == "accuracy"


@pytest.fixture(scope="module")
def ok_model(tiny_dir, tmp_path_factory) -> Path:
    """A tiny model fine-tuned (full) to answer "ok" to anything: a base that already solves an "ok" task."""
    from tuneforge.train.recipe import train

    d = tmp_path_factory.mktemp("ok")
    r = random.Random(0)
    rows = [{"prompt": f"{' '.join(r.choice(WORDS) for _ in range(3))} {i}", "completion": "ok"} for i in range(64)]
    cfg = TrainConfig(base=str(tiny_dir), method="full", data=str(write_jsonl(d / "t.jsonl", rows)),
                      output=str(d / "run"), learning_rate=3e-3, max_steps=40, val_split=0,
                      per_device_train_batch_size=8, logging_steps=10)
    return train(cfg, progress=False) / "model"


def test_task_already_solved_by_the_base_is_no_go(ok_model, tiny_dir, tmp_path):
    r = random.Random(1)
    rows = [{"prompt": f"acknowledge: {' '.join(r.sample(WORDS, 5))} {i}", "completion": "ok"} for i in range(1200)]
    data = write_jsonl(tmp_path / "d.jsonl", rows)
    solved = advise(data, base=str(ok_model), sample=10)
    zs = next(x for x in solved.reasons if x.check == "zero_shot")
    assert zs.signal == "no-go" and zs.evidence["score"] >= 0.8
    assert solved.verdict == "no-go"
    # the same data on a base that cannot do it: the zero-shot evidence says go instead
    fresh = advise(data, base=str(tiny_dir), sample=10)
    assert next(x for x in fresh.reasons if x.check == "zero_shot").signal == "go"


def test_answers_copied_from_prompts_are_flagged(tiny_dir, tmp_path):
    r = random.Random(2)
    rows = []
    for i in range(300):
        words = r.sample(WORDS, 6)
        rows.append({"prompt": f"repeat after me: {' '.join(words)} {i}", "completion": f"{' '.join(words)} {i}"})
    a = advise(write_jsonl(tmp_path / "d.jsonl", rows), base=str(tiny_dir), sample=0)
    cp = next(x for x in a.reasons if x.check == "copying")
    assert cp.signal == "maybe" and cp.evidence["copied_rate"] == 1.0


@pytest.mark.parametrize("n", [50, 600, 5000, 200_000])
@pytest.mark.parametrize("method", ["lora", "qlora", "full"])
def test_hyperparameters_stay_in_the_guides_ranges_and_match_trains_own_rules(n, method):
    hp = recommend_hyperparameters(n, method, n_params=135_000_000, lengths=[40, 60, 80, 700], context=2048)
    assert 4 <= hp["per_device_train_batch_size"]["value"] <= 32
    assert 1 <= hp["num_train_epochs"]["value"] <= 10  # the size-aware rule train itself uses (train/auto.py)
    assert hp["warmup_ratio"]["value"] == 0.1
    if method == "full":
        assert 1e-5 <= hp["learning_rate"]["value"] <= 5e-5
    assert all(v["reason"] and "\n" not in v["reason"] for v in hp.values())
    TrainConfig(**{k: v["value"] for k, v in hp.items()})  # every key is a real config field
    cfg = TrainConfig(method=method, per_device_train_batch_size=hp["per_device_train_batch_size"]["value"])
    auto.resolve(cfg, n_train=n, n_params=135_000_000)
    assert (cfg.learning_rate, cfg.num_train_epochs) == (hp["learning_rate"]["value"],
                                                         hp["num_train_epochs"]["value"])


@pytest.mark.cli
def test_cli_json_and_written_config_trains(tiny_dir, tmp_path):
    data = write_jsonl(tmp_path / "d.jsonl", sums(150))
    cfg = tmp_path / "advised.yaml"
    r = tf("advise", str(data), "--base", str(tiny_dir), "--sample", "4", "--json", "--write-config", str(cfg))
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["verdict"] in ("go", "no-go", "maybe") and out["verdict"] == "maybe"
    assert out["method"]["value"] and out["method"]["reason"]
    assert all(set(v) == {"value", "reason"} for v in out["hyperparameters"].values())
    assert all({"check", "signal", "message", "evidence"} <= set(x) for x in out["reasons"])
    loaded = load_config(cfg)  # the written file is a valid training config, with the advised values
    assert loaded.learning_rate == out["hyperparameters"]["learning_rate"]["value"]
    assert loaded.method == out["method"]["value"] and loaded.data == str(data)
    assert cfg.read_text().count("  # ") >= len(out["hyperparameters"])  # a reason beside each value
    r = tf("train", "--config", str(cfg), "--output", str(tmp_path / "run"), "--max_steps", "2", "--no-progress")
    assert r.returncode == 0, r.stderr
    assert json.loads((tmp_path / "run" / "run.json").read_text())["steps"] == 2


@pytest.mark.cli
def test_cli_bad_input_is_one_line(tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text("{not json\n")
    r = tf("advise", str(bad), "--sample", "0")
    assert r.returncode == 2 and r.stderr.startswith("error:") and len(r.stderr.strip().splitlines()) == 1
    r = tf("advise", str(tmp_path / "missing.jsonl"), "--sample", "0")
    assert r.returncode == 2 and "missing.jsonl" in r.stderr
