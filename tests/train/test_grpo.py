"""GRPO on the tiny model: batched sampling agrees with one-at-a-time decoding and with the training forward,
the loss pieces match hand computation, graders that fail never stop training, and a stopped run resumes to
exactly the same losses."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from tests.conftest import write_jsonl
from tuneforge.config import TrainConfig
from tuneforge.models.load import load_base
from tuneforge.train.objectives.grpo import (GRPO, clipped_loss, generate, group_advantages, k3_kl,
                                             token_logps)
from tuneforge.train.recipe import Stopped, train

VARIED = "def grade(sample, item):\n    return (sum(map(ord, sample['output_text'])) % 7) / 6\n"


def rl_rows(n: int) -> list[dict]:
    return [{"messages": [{"role": "user", "content": f"say {i % 10}"}], "answer": str(i % 10)} for i in range(n)]


def make_files(tmp_path: Path, source: str = VARIED) -> tuple[Path, Path]:
    data = write_jsonl(tmp_path / "rl.jsonl", rl_rows(20))
    grader = tmp_path / "grader.json"
    grader.write_text(json.dumps({"type": "python", "name": "varied", "source": source}))
    return data, grader


def cfg_for(tiny_dir, data, grader, out, **kw) -> TrainConfig:
    base = dict(base=str(tiny_dir), data=str(data), output=str(out), objective="grpo", grader=str(grader),
                max_steps=6, per_device_train_batch_size=8, num_generations=4, max_completion_length=6,
                logging_steps=1, learning_rate=5e-3, eval_steps=3, save_steps=3, early_stopping_patience=0,
                val_split=0.1)
    return TrainConfig(**{**base, **kw})


def test_group_advantages_and_losses_by_hand():
    adv, std = group_advantages(torch.tensor([[1.0, 0.0, 0.0, 1.0], [0.5, 0.5, 0.5, 0.5]]))
    s = math.sqrt(1 / 3)  # unbiased std of 1,0,0,1
    assert torch.allclose(adv[0], torch.tensor([0.5, -0.5, -0.5, 0.5]) / (s + 1e-4))
    assert torch.equal(adv[1], torch.zeros(4)) and std[1] == 0
    logp, old = torch.log(torch.tensor([0.6, 0.3])), torch.log(torch.tensor([0.4, 0.4]))
    # ratios 1.5 and 0.75; A = +1 clips the first at 1.2, A = -1 clips the second at 0.8 (the min of -r*A)
    got = clipped_loss(logp, old, torch.tensor([1.0, -1.0]), 0.2)
    assert torch.allclose(got, torch.tensor([-1.2, 0.8]))
    assert torch.allclose(k3_kl(logp, logp), torch.zeros(2))
    assert k3_kl(torch.tensor([-1.0]), torch.tensor([-2.0])).item() == pytest.approx(math.exp(-1) + 1 - 1)


def test_batched_sampling_matches_single_rows_and_the_training_forward(tiny_dir):
    base = load_base(str(tiny_dir), device="cpu")
    model, tok = base.model.eval(), base.tokenizer
    prompts = [tok("hello there", add_special_tokens=False)["input_ids"], tok("hi", add_special_tokens=False)[
        "input_ids"], tok("a much longer prompt here", add_special_tokens=False)["input_ids"]]
    batched = generate(model, tok, prompts, max_tokens=7, temperature=0.0)
    for p, b in zip(prompts, batched):
        one = generate(model, tok, [p], max_tokens=7, temperature=0.0)[0]
        assert one.tokens_out == b.tokens_out
    gens = [torch.Generator().manual_seed(i) for i in range(3)]
    sampled = generate(model, tok, prompts, max_tokens=7, temperature=0.9, generators=gens)
    batch = GRPO._tensors(sampled, tok.pad_token_id or 0)
    with torch.no_grad():
        lp = token_logps(model, batch, 0.9)
    m = batch["completion_mask"].bool()
    assert torch.allclose(lp[m], batch["old_logps"][m], atol=1e-4)  # ratio 1 at the sampling weights


def test_batch_size_counts_sampled_answers_as_in_trl_and_must_hold_whole_groups(tiny_dir, tmp_path):
    """8 answers x 8 per prompt = one prompt per micro-batch: one forward holds the batch size, not 8x it."""
    from tuneforge.errors import ConfigError
    from tuneforge.train import auto

    data, grader = make_files(tmp_path)
    cfg = cfg_for(tiny_dir, data, grader, tmp_path / "run", per_device_train_batch_size=8, num_generations=8)
    assert GRPO.items_per_micro_batch(cfg) == 1
    assert GRPO.items_per_micro_batch(cfg.model_copy(update={"per_device_train_batch_size": 16})) == 2
    sized = cfg.model_copy(update={"num_train_epochs": "auto", "max_steps": -1})
    why = auto.resolve(sized, n_train=18, n_params=1_000_000)  # 18 prompts at 1 per step: 18 steps per epoch
    assert "18 training examples = 18 steps/epoch" in why["num_train_epochs"]
    with pytest.raises(ConfigError, match=r"per_device_train_batch_size \(6\) counts sampled answers.*"
                                          r"multiple of num_generations \(4\), e.g. 4 or 8"):
        GRPO(cfg.model_copy(update={"per_device_train_batch_size": 6, "num_generations": 4})).load(str(data))


def test_grpo_run_logs_metrics_and_learns_something(tiny_dir, tmp_path):
    data, grader = make_files(tmp_path)
    out = train(cfg_for(tiny_dir, data, grader, tmp_path / "run"), progress=False)
    rows = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    steps = [r for r in rows if "loss" in r]
    assert len(steps) == 6 and all(r["completions"] == 8 for r in steps)
    for k in ("reward", "reward_std", "zero_std_groups", "completion_length", "grader_errors"):
        assert k in steps[0]
    assert any(r["grad_norm"] and r["grad_norm"] > 0 for r in steps)  # varied rewards give a gradient
    assert 0 < sum(r["reward"] for r in steps) / 6 < 1
    val = [r for r in rows if "val_reward" in r]
    assert val and val[-1]["val_loss"] == pytest.approx(-val[-1]["val_reward"])
    assert (out / "adapter").is_dir() and json.loads((out / "run.json").read_text())["objective"] == "grpo"


@pytest.mark.integration  # waits on a looping grader subprocess's timeout
def test_grader_that_raises_or_hangs_scores_zero_and_training_goes_on(tiny_dir, tmp_path, monkeypatch):
    source = ("def grade(sample, item):\n"
              "    v = sum(map(ord, sample['output_text'])) % 5\n"
              "    if v == 0: raise ValueError('bad sample')\n"
              "    if v == 1:\n"
              "        while True: pass\n"
              "    return v / 4\n")
    data, grader = make_files(tmp_path, source)
    monkeypatch.setenv("TUNEFORGE_GRADER_TIMEOUT", "0.5")
    out = train(cfg_for(tiny_dir, data, grader, tmp_path / "run", max_steps=2, eval_steps=0), progress=False)
    steps = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines() if '"loss"' in x]
    assert len(steps) == 2 and sum(r["grader_errors"] for r in steps) > 0


def test_stopped_then_resumed_run_has_identical_losses(tiny_dir, tmp_path):
    data, grader = make_files(tmp_path)
    ref = train(cfg_for(tiny_dir, data, grader, tmp_path / "ref"), progress=False)
    run = tmp_path / "run"
    with pytest.raises(Stopped):
        train(cfg_for(tiny_dir, data, grader, run), progress=False, on_step=lambda r: r.step < 4)
    train(cfg_for(tiny_dir, data, grader, run), resume=True, progress=False)

    def losses(d):
        return {r["step"]: (r["loss"], r["reward"]) for r in map(json.loads, (d / "metrics.jsonl").read_text()
                                                                  .splitlines()) if "loss" in r}

    a, b = losses(ref), losses(run)
    assert sorted(a) == sorted(b) == list(range(1, 7))
    for s in a:
        assert b[s] == pytest.approx(a[s], abs=1e-6), s
