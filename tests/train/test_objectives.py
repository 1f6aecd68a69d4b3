"""The objective seam: the recipe's loop runs whatever objective `cfg.objective` names, and SFT through the seam
trains exactly as the loop did before the seam existed."""

from __future__ import annotations

import json

import pytest

from tests.conftest import arithmetic_rows, write_jsonl
from tuneforge.config import TrainConfig
from tuneforge.errors import ConfigError
from tuneforge.train import objectives
from tuneforge.train.objectives.sft import SFT
from tuneforge.train.recipe import Stopped, prepare, train


def _rows(run) -> list[dict]:
    return [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]


# Losses of a 20-step tiny LoRA run as computed by the recipe BEFORE the objective seam (train/sft.py at
# 16ce391; /tmp comparison in the #21 report: metrics.jsonl and adapter bytes were identical on the same
# machine). A tolerance only for other CPUs' float kernels: any change in batching or normalisation moves the
# losses by far more.
GOLDEN = {
    "packed": ({}, [5.591984675480769, 5.464987618582589, 5.574128214518229, 5.542558942522321, 5.423446110316685,
                    5.4058176676432295, 5.331061771937779, 5.335262843540737, 5.3892341026893025, 5.3744049072265625,
                    5.334905351911273, 5.299581255231585, 5.174101829528809, 5.362389784592849, 5.30895015171596,
                    5.227699788411458, 5.211418628692627, 5.295721871512277, 5.214946746826172, 5.343957083565848],
               [5.44267443756559, 5.353361101292852, 5.322843637039412, 5.315575443097015]),
    "padded-accum": (dict(packing=False, gradient_accumulation_steps=2, per_device_train_batch_size=3),
                     [5.569255283900669, 5.534231276739211, 5.585992358979725, 5.421229275790128, 5.392321632021949,
                      5.420188522338867, 5.420632795854048, 5.354843866257441, 5.216209411621094, 5.403639221191407,
                      5.257123200789742, 5.265624306418679, 5.255653744652157, 5.328349304199219, 5.2880727594549,
                      5.185057640075684, 5.280475616455078, 5.239447457449777, 5.284741356259301, 5.33706301734561],
                     [5.431779548303405, 5.342135187405259, 5.317086632572003, 5.311610663115089]),
}


@pytest.mark.parametrize("case", sorted(GOLDEN))
def test_sft_through_the_seam_gives_the_losses_of_the_loop_before_it(tiny_dir, tmp_path, case):
    extra, train_losses, val_losses = GOLDEN[case]
    data = write_jsonl(tmp_path / "d.jsonl", arithmetic_rows(200))
    cfg = TrainConfig(base=str(tiny_dir), data=str(data), output=str(tmp_path / "run"), max_steps=20,
                      learning_rate=1e-3, logging_steps=1, eval_steps=5, early_stopping_patience=0, seed=3,
                      **{"per_device_train_batch_size": 4, **extra})
    rows = _rows(train(cfg, progress=False))
    assert [r["loss"] for r in rows if "loss" in r] == pytest.approx(train_losses, rel=1e-5)
    assert [r["val_loss"] for r in rows if "val_loss" in r] == pytest.approx(val_losses, rel=1e-5)
    assert all("supervised_tokens" in r for r in rows if "loss" in r)


def test_an_unknown_objective_is_a_config_error_naming_the_registered_ones(tmp_path, pc_file):
    cfg = TrainConfig(data=str(pc_file), output=str(tmp_path / "run"), objective="sfft")
    with pytest.raises(ConfigError, match=r"unknown objective 'sfft' \(did you mean 'sft'\?\); have: sft"):
        prepare(cfg)
    assert not (tmp_path / "run").exists()
    assert objectives.get("sft") is SFT and TrainConfig().objective == "sft"


class PerExample(SFT):
    """A test objective: SFT normalised per example instead of per token, with its own metrics and state —
    registered by one line in OBJECTIVES, like a real one."""

    name = "per-example"
    count_key = "examples"
    made: list["PerExample"] = []

    def __init__(self, cfg):
        super().__init__(cfg)
        self.batches_seen = 0
        PerExample.made.append(self)

    def batch(self, p, items, model):
        assert model is p.model  # an on-policy objective could generate with it
        self.batches_seen += 1
        return {**super().batch(p, items, model), "examples": len(items)}

    def count(self, batch):
        return batch["examples"]

    def val_batches(self, p):
        return [{**b, "examples": 0} for b in super().val_batches(p)]  # validation stays token-weighted

    def validate(self, model, forward, batches):
        return {**super().validate(model, forward, batches), "val_batches": float(len(batches))}

    def loss(self, model, batch):
        s, _ = super().loss(model, batch)
        return s, {"answer_tokens": float(super().count(batch))}  # summed per batch: logged per example

    def state_dict(self):
        return {"batches_seen": self.batches_seen}

    def load_state_dict(self, state):
        self.batches_seen = state["batches_seen"]


def _per_example_cfg(tiny_dir, tmp_path, out: str) -> TrainConfig:
    data = tmp_path / "d.jsonl"
    if not data.exists():
        write_jsonl(data, arithmetic_rows(48))
    return TrainConfig(base=str(tiny_dir), data=str(data), output=str(tmp_path / out), objective="per-example",
                       max_steps=6, per_device_train_batch_size=4, gradient_accumulation_steps=2, logging_steps=2,
                       eval_steps=3, save_steps=2, learning_rate=1e-3, early_stopping_patience=0, seed=3)


def test_a_registered_objective_drives_the_loop_its_metrics_and_an_exact_resume(tiny_dir, tmp_path, monkeypatch):
    monkeypatch.setitem(objectives.OBJECTIVES, "per-example", f"{__name__}:PerExample")
    PerExample.made.clear()
    ref = train(_per_example_cfg(tiny_dir, tmp_path, "ref"), progress=False)
    rows = _rows(ref)
    logged = [r for r in rows if "loss" in r]
    assert [r["step"] for r in logged] == [2, 4, 6]
    assert all("supervised_tokens" not in r for r in logged)
    # 12 micro-batches of 4: one epoch of 43 training examples (the last batch holds 3), then 4 of the next
    assert [r["examples"] for r in logged] == [16, 16, 15]
    assert all(1 <= r["answer_tokens"] <= 8 for r in logged)  # mean answer tokens per example (sums ÷ examples)
    assert [r["val_batches"] for r in rows if "val_loss" in r] == [1.0, 1.0]
    assert json.loads((ref / "run.json").read_text())["objective"] == "per-example"
    assert "objective: per-example" in (ref / "config.yaml").read_text()

    cfg = _per_example_cfg(tiny_dir, tmp_path, "run")
    with pytest.raises(Stopped):
        train(cfg, progress=False, on_step=lambda r: r.step < 4)  # at a logging step: windows line up
    PerExample.made.clear()
    run = train(cfg, resume=True, progress=False)
    assert PerExample.made[-1].batches_seen == 6 * 2  # its state came back from the step-4 checkpoint
    assert [r["loss"] for r in _rows(run) if "loss" in r] == pytest.approx([r["loss"] for r in logged], rel=1e-6)
