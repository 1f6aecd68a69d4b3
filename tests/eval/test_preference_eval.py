"""`tuneforge eval` on preference data: held-out preference accuracy, log-prob margin and greedy behaviour per
model, with DPO's implicit reward of the tuned run against its base."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.helpers import write_jsonl
from tests.train.test_dpo_train import preference_rows
from tuneforge.config import TrainConfig
from tuneforge.data.load import load_samples
from tuneforge.eval import preference
from tuneforge.eval.harness import evaluate_file, load_for_inference
from tuneforge.train.recipe import train


def test_metrics_by_hand_from_log_probs():
    lp = {"pc": [-2.0, -9.0, -3.0], "pr": [-6.0, -4.0, -3.0], "lc": [2, 3, 1], "lr": [3, 2, 3]}
    won, margin = preference.per_pair(lp)
    assert won == [1.0, 0.0, 0.0] and margin == pytest.approx([-1 + 2, -3 + 2, -3 + 1])
    base = {"pc": [-3.0, -8.0, -3.0], "pr": [-5.0, -5.0, -2.0]}
    r = preference.reward_metrics(lp, base, beta=0.5)
    # 0.5·((−2+3) − (−6+5)) = 1, 0.5·((−9+8) − (−4+5)) = −1, 0.5·((−3+3) − (−3+2)) = 0.5
    assert r["reward_accuracy"] == pytest.approx(2 / 3) and r["reward_margin"] == pytest.approx(0.5 / 3)


def test_eval_of_a_dpo_run_reports_preference_metrics_base_vs_tuned(tiny_dir, tmp_path):
    data = write_jsonl(tmp_path / "p.jsonl", preference_rows(40))
    test = write_jsonl(tmp_path / "test.jsonl", preference_rows(12, seed=9))
    run = train(TrainConfig(base=str(tiny_dir), data=str(data), output=str(tmp_path / "run"), objective="dpo",
                            method="lora", max_steps=12, per_device_train_batch_size=4, learning_rate=3e-3,
                            beta=0.3, val_split=0), progress=False)
    res = evaluate_file(str(run), str(test), baseline="base", max_new_tokens=8, progress=False)
    for role in ("baseline", "tuned"):
        m = res["models"][role]["metrics"]
        assert 0 <= m["preference_accuracy"] <= 1 and 0 <= m["greedy_prefers_chosen"] <= 1
    samples = load_samples(test)
    lp = {r: preference.pair_logps(load_for_inference(n), samples)
          for r, n in (("baseline", str(tiny_dir)), ("tuned", str(run)))}
    assert res["models"]["tuned"]["metrics"]["logp_margin"] == pytest.approx(
        preference.model_metrics(lp["tuned"], [""] * 12, samples)["logp_margin"], abs=1e-5)
    assert res["preference"] == pytest.approx(preference.reward_metrics(lp["tuned"], lp["baseline"], 0.3), abs=1e-5)
    assert res["preference"]["reward_margin"] > 0  # trained toward the preferred answers
    assert {"preference_accuracy", "logp_margin", "greedy_prefers_chosen"} <= set(res["delta"])


def test_report_of_a_preference_run_plots_margin_and_accuracy(tmp_path):
    from tuneforge.eval.report import preference_figure

    rows = [{"step": s, "loss": 0.7 - s / 100, "reward_margin": s / 10, "accuracy": min(1, s / 5)} for s in (1, 2, 3)]
    rows.append({"step": 3, "val_loss": 0.6, "val_reward_margin": 0.2, "val_accuracy": 0.75})
    fig = preference_figure(rows)
    lines = {ax.get_title(): [ln.get_ydata().tolist() for ln in ax.get_lines()] for ax in fig.axes}
    assert lines["Reward margin"] == [[0.1, 0.2, 0.3], [0.2]]
    assert lines["Preference accuracy"] == [[0.2, 0.4, 0.6], [0.75]]
    assert preference_figure([{"step": 1, "loss": 1.0}]) is None  # an SFT run has no such figure
