"""DPO through the one training loop on the tiny model: the first step's loss is ln 2 (policy = reference), the
metrics carry margins and accuracy, the reference is adapter-disabled for LoRA and cached for a full fine-tune,
a stopped run resumes to identical losses, and reference-free losses write no reference."""

from __future__ import annotations

import json
import math
import random
from pathlib import Path

import pytest

from tests.helpers import write_jsonl
from tuneforge.config import TrainConfig
from tuneforge.errors import DataError
from tuneforge.train.recipe import Stopped, train


def preference_rows(n: int, seed: int = 0) -> list[dict]:
    """The preferred answer has a checkable style ("ANSWER: <sum>."), the other is a bare, wrong number."""
    r = random.Random(seed)
    rows = []
    for i in range(n):
        a, b = r.randint(0, 99), r.randint(0, 99)
        rows.append({"input": {"messages": [{"role": "user", "content": f"add {a} and {b}"}]},
                     "preferred_output": [{"role": "assistant", "content": f"ANSWER: {a + b}."}],
                     "non_preferred_output": [{"role": "assistant", "content": str(a + b + 1 + i % 7)}]})
    return rows


def metrics(run: Path) -> list[dict]:
    return [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]


def cfg_for(tiny_dir, tmp_path, name: str, **kw) -> TrainConfig:
    data = tmp_path / "prefs.jsonl"
    if not data.exists():
        write_jsonl(data, preference_rows(48))
    base = dict(base=str(tiny_dir), data=str(data), output=str(tmp_path / name), objective="dpo", method="lora",
                max_steps=8, per_device_train_batch_size=4, logging_steps=1, eval_steps=4, save_steps=2,
                learning_rate=1e-3, early_stopping_patience=0, val_split=0.25)
    return TrainConfig(**{**base, **kw})


def test_lora_dpo_logs_preference_metrics_and_starts_at_ln2(tiny_dir, tmp_path):
    run = train(cfg_for(tiny_dir, tmp_path, "lora"), progress=False)
    rows = metrics(run)
    first = rows[0]
    assert first["step"] == 1 and first["pairs"] == 4
    assert first["loss"] == pytest.approx(math.log(2), abs=1e-5)  # LoRA B = 0: policy == reference at step 1
    assert first["reward_margin"] == pytest.approx(0, abs=1e-6)
    assert {"accuracy", "chosen_reward", "rejected_reward", "logp_chosen", "logp_rejected"} <= set(first)
    val = [r for r in rows if "val_loss" in r]
    assert [r["step"] for r in val] == [4, 8] and all(0 <= r["val_accuracy"] <= 1 for r in val)
    assert rows[-2]["loss"] < math.log(2)  # learning the preference
    info = json.loads((run / "run.json").read_text())
    assert info["objective"] == "dpo" and (run / "adapter" / "adapter_model.safetensors").is_file()
    assert json.loads((run / "data.json").read_text())["reference"] == "adapter"
    assert not (run / "ref_logps.safetensors").exists()


def test_full_finetune_caches_the_reference_and_a_stopped_run_resumes_to_identical_losses(tiny_dir, tmp_path):
    ref = train(cfg_for(tiny_dir, tmp_path, "ref", method="full", learning_rate=1e-4), progress=False)
    assert metrics(ref)[0]["loss"] == pytest.approx(math.log(2), abs=1e-5)
    assert json.loads((ref / "data.json").read_text())["reference"] == "cached"

    cfg = cfg_for(tiny_dir, tmp_path, "run", method="full", learning_rate=1e-4)
    with pytest.raises(Stopped):
        train(cfg, progress=False, on_step=lambda r: r.step < 5)  # stop after step 5 (checkpoint at 5)
    cache = cfg.output + "/ref_logps.safetensors"
    before = Path(cache).stat().st_mtime_ns
    train(cfg, resume=True, progress=False)
    assert Path(cache).stat().st_mtime_ns == before  # reused, not recomputed with trained weights
    got = {r["step"]: r["loss"] for r in metrics(Path(cfg.output)) if "loss" in r}
    want = {r["step"]: r["loss"] for r in metrics(ref) if "loss" in r}
    assert got == want and sorted(got) == list(range(1, 9))


@pytest.mark.parametrize("loss_type", ["simpo", "orpo", "ipo"])
def test_other_loss_types_train_and_reference_free_ones_skip_the_reference(tiny_dir, tmp_path, loss_type):
    run = train(cfg_for(tiny_dir, tmp_path, loss_type, loss_type=loss_type, method="full", learning_rate=1e-4,
                        max_steps=3), progress=False)
    rows = metrics(run)
    assert all(math.isfinite(r["loss"]) for r in rows if "loss" in r)
    ref = json.loads((run / "data.json").read_text())["reference"]
    assert ref == ("cached" if loss_type == "ipo" else "none")
    assert (run / "ref_logps.safetensors").exists() == (loss_type == "ipo")


def test_dpo_on_a_supervised_file_names_the_line(tiny_dir, tmp_path):
    data = write_jsonl(tmp_path / "sft.jsonl", [{"prompt": "a", "completion": "b"}])
    with pytest.raises(DataError, match=r"sft.jsonl:1: unknown_format: objective dpo needs preference rows"):
        train(cfg_for(tiny_dir, tmp_path, "bad", data=str(data)), progress=False)


def test_sft_on_a_preference_file_learns_the_preferred_answers_and_says_so(tiny_dir, tmp_path):
    from tuneforge.models.load import load_tokenizer
    from tuneforge.train.objectives.sft import SFT

    cfg = cfg_for(tiny_dir, tmp_path, "sft", objective="sft")
    sft = SFT(cfg)
    rows = sft.load(cfg.data)
    assert sft.notes(rows) == ["48 preference rows: supervised fine-tuning learns their preferred answers only (the "
                               "other answer is not used); --objective dpo learns from both"]
    tok = load_tokenizer(str(tiny_dir))
    items, _ = sft.encode(rows[:3], tok, "training")
    for row, item in zip(preference_rows(3), items):
        learned = tok.decode([t for t in item.labels if t != -100], skip_special_tokens=True)
        assert learned.strip() == row["preferred_output"][0]["content"]
