"""Size-aware defaults: the epochs and learning-rate rules at their boundaries, explicit values win, the choice
is printed by `train` and saved resolved in config.yaml."""

from __future__ import annotations

import json
import math

import pytest
import yaml

from tests.helpers import arithmetic_rows, write_jsonl
from tests.helpers import tf
from tuneforge import methods
from tuneforge.config import TrainConfig
from tuneforge.train import auto
from tuneforge.train.auto import CAP_EPOCHS, MAX_EPOCHS, MAX_EXAMPLES, MIN_STEPS


def _steps(n: int, batch: int = 8, accum: int = 1) -> int:
    ep, _ = auto.epochs(n, batch, accum)
    return math.ceil(ep * auto.steps_per_epoch(n, batch, accum))


def test_small_sets_get_at_least_min_steps_and_the_base_epochs_above_that():
    spe_edge = math.ceil(MIN_STEPS / CAP_EPOCHS)  # the fewest steps per epoch at which the base epochs suffice
    at, below = spe_edge * 8, (spe_edge - 1) * 8  # examples at batch 8
    assert auto.epochs(at, 8, 1)[0] == CAP_EPOCHS
    assert auto.epochs(below, 8, 1)[0] > CAP_EPOCHS and _steps(below) >= MIN_STEPS
    for n in range(8, at, 8):  # every small set reaches MIN_STEPS unless capped at MAX_EPOCHS
        ep = auto.epochs(n, 8, 1)[0]
        assert _steps(n) >= MIN_STEPS or ep == MAX_EPOCHS
        assert ep <= MAX_EPOCHS


def test_tiny_sets_are_capped_at_max_epochs_and_say_so():
    ep, why = auto.epochs(8, 8, 1)  # one step per epoch
    assert ep == MAX_EPOCHS and f"at most {MAX_EPOCHS} epochs" in why
    n = 8 * math.ceil(MIN_STEPS / MAX_EPOCHS)  # the first size at which MAX_EPOCHS reaches MIN_STEPS
    ep, why = auto.epochs(n, 8, 1)
    assert ep == MAX_EPOCHS and _steps(n) >= MIN_STEPS and f"at least {MIN_STEPS}" in why
    assert auto.epochs(n + 8, 8, 1)[0] < MAX_EPOCHS


def test_large_sets_see_about_max_examples_and_never_less_than_one_pass():
    edge = int(MAX_EXAMPLES // CAP_EPOCHS)
    assert auto.epochs(edge, 8, 1)[0] == CAP_EPOCHS
    assert auto.epochs(edge + 3, 8, 1)[0] <= CAP_EPOCHS
    ep, why = auto.epochs(edge + 100, 8, 1)
    assert ep < CAP_EPOCHS and "large set" in why
    assert auto.epochs(20_000, 8, 1)[0] == pytest.approx(MAX_EXAMPLES / 20_000, abs=0.01)
    assert auto.epochs(MAX_EXAMPLES, 8, 1)[0] == 1 and auto.epochs(10 * MAX_EXAMPLES, 8, 1)[0] == 1


def test_gradient_accumulation_counts_optimizer_steps():
    n = 8 * 4 * (math.ceil(MIN_STEPS / CAP_EPOCHS) - 1)  # enough for batch 8 alone, not for 8 x 4 per step
    assert auto.epochs(n, 8, 1)[0] == CAP_EPOCHS
    assert auto.epochs(n, 8, 4)[0] > CAP_EPOCHS


@pytest.mark.parametrize("method", ["lora", "qlora", "full"])
def test_learning_rate_steps_down_at_each_size_bound(method):
    table = methods.get(method).learning_rates
    assert len(table) > 1 and table[-1][0] == math.inf
    for (bound, rate), (_, next_rate) in zip(table, table[1:]):
        assert auto.learning_rate(method, int(bound) - 1)[0] == rate
        assert auto.learning_rate(method, int(bound))[0] == next_rate
        assert next_rate < rate
    assert auto.learning_rate("full", 135_000_000)[0] < auto.learning_rate("lora", 135_000_000)[0]
    lr, why = auto.learning_rate("prompt-tuning", 135_000_000)
    assert lr == methods.PROMPT_TUNING_LR[0][1] and "soft prompt" in why


def test_learning_rate_reason_names_the_method_and_the_base_size():
    assert auto.learning_rate("qlora", 135_000_000)[1] == (
        "learning_rate 0.002 (auto): qlora on a 135M-parameter base (smaller bases take larger steps); "
        "--learning_rate to override")
    assert auto.learning_rate("full", 1_700_000_000)[1] == (
        "learning_rate 2e-05 (auto): full fine-tuning on a 1.7B-parameter base (every weight moves); "
        "--learning_rate to override")


def test_resolve_fills_only_what_is_auto():
    cfg = TrainConfig(method="lora")
    why = auto.resolve(cfg, n_train=200, n_params=135_000_000)
    assert cfg.learning_rate == methods.LORA_LR[0][1] and set(why) == {"learning_rate", "num_train_epochs",
                                                                    "lr_scheduler_type"}
    cfg = TrainConfig(method="lora", learning_rate=3e-4, num_train_epochs=2, lr_scheduler_type="cosine")
    assert auto.resolve(cfg, n_train=200, n_params=135_000_000) == {}
    assert (cfg.learning_rate, cfg.num_train_epochs) == (3e-4, 2)
    cfg = TrainConfig(method="lora", max_steps=50)  # max_steps decides; epochs records what it amounts to
    why = auto.resolve(cfg, n_train=160, n_params=135_000_000)
    assert "num_train_epochs" not in why and cfg.num_train_epochs == pytest.approx(50 / 20)


def test_learning_rate_multiplier_scales_only_the_auto_rate():
    cfg = TrainConfig(method="lora", learning_rate_multiplier=0.5)  # the jobs API's learning_rate_multiplier
    why = auto.resolve(cfg, n_train=200, n_params=135_000_000)
    assert cfg.learning_rate == pytest.approx(methods.LORA_LR[0][1] * 0.5) and "x0.5" in why["learning_rate"]
    auto.resolve(cfg, n_train=200, n_params=135_000_000)  # resolved once: a resume does not scale it again
    assert cfg.learning_rate == pytest.approx(methods.LORA_LR[0][1] * 0.5)
    cfg = TrainConfig(method="lora", learning_rate=3e-4, learning_rate_multiplier=2)
    auto.resolve(cfg, n_train=200, n_params=135_000_000)
    assert cfg.learning_rate == 3e-4



@pytest.mark.parametrize("objective,scale", [("dpo", 0.025), ("grpo", 0.1)])
def test_preference_and_rl_objectives_take_a_fraction_of_the_supervised_rate_and_say_why(objective, scale):
    sft, other = TrainConfig(method="lora"), TrainConfig(method="lora", objective=objective)
    auto.resolve(sft, n_train=200, n_params=135_000_000)
    why = auto.resolve(other, n_train=200, n_params=135_000_000)
    assert other.learning_rate == pytest.approx(sft.learning_rate * scale)
    assert why["learning_rate"].startswith(f"learning_rate {other.learning_rate:g} (auto: {sft.learning_rate:g} x {scale:g}")
    explicit = TrainConfig(method="lora", objective=objective, learning_rate=1e-4)
    auto.resolve(explicit, n_train=200, n_params=135_000_000)
    assert explicit.learning_rate == 1e-4


def test_grpo_epochs_cap_is_one_pass_over_the_prompts_and_says_why():
    """GRPO's own cap (Objective.cap_epochs): one pass, raised to MIN_STEPS on small prompt sets, 1 without
    validation too; SFT keeps CAP_EPOCHS on the same data."""
    cfg = TrainConfig(method="lora", objective="grpo", learning_rate=1e-4)  # 8 answers = 1 prompt per step
    why = auto.resolve(cfg, n_train=300, n_params=135_000_000)
    assert cfg.num_train_epochs == 1 and "one pass over the prompts" in why["num_train_epochs"]
    small = TrainConfig(method="lora", objective="grpo", learning_rate=1e-4)
    auto.resolve(small, n_train=40, n_params=135_000_000)
    assert small.num_train_epochs == 1.5  # 60 steps of 1 prompt
    noval = TrainConfig(method="lora", objective="grpo", learning_rate=1e-4)
    why = auto.resolve(noval, n_train=300, n_params=135_000_000, n_val=0)
    assert noval.num_train_epochs == 1 and "one pass over the prompts" in why["num_train_epochs"]
    sft = TrainConfig(method="lora", learning_rate=1e-4)
    auto.resolve(sft, n_train=300, n_params=135_000_000)
    assert sft.num_train_epochs == auto.CAP_EPOCHS


@pytest.mark.cli
def test_train_prints_its_choices_and_saves_them_resolved_and_flags_win(tiny_dir, tmp_path):
    data = write_jsonl(tmp_path / "d.jsonl", arithmetic_rows(40))
    run = tmp_path / "run"
    r = tf("train", "--no-progress", "--base", str(tiny_dir), "--data", str(data), "--output", str(run),
           "--per_device_train_batch_size", "18", "--eval_steps", "100")
    assert r.returncode == 0, r.stderr
    err = r.stderr
    assert "method auto → lora" in err and "learning_rate 0.002 (auto)" in err
    assert "num_train_epochs" in err and "(auto)" in err and "small set" in err
    assert "warning: 40 examples is a small set" in err  # issue 16: small data is called out in train's output
    saved = yaml.safe_load((run / "config.yaml").read_text())
    assert saved["method"] == "lora" and saved["learning_rate"] == 2e-3
    n_train = json.loads((run / "data.json").read_text())["train_examples"]  # 40 less the validation hold-out
    assert saved["num_train_epochs"] == auto.epochs(n_train, 18, 1)[0]
    assert "auto" not in (saved["method"], saved["learning_rate"], saved["num_train_epochs"])

    run2 = tmp_path / "run2"
    r = tf("train", "--no-progress", "--base", str(tiny_dir), "--data", str(data), "--output", str(run2),
           "--learning_rate", "3e-4", "--num_train_epochs", "1", "--method", "lora", "--lr_scheduler_type", "linear")
    assert r.returncode == 0, r.stderr
    assert "(auto)" not in r.stderr and "method auto" not in r.stderr
    saved = yaml.safe_load((run2 / "config.yaml").read_text())
    assert (saved["learning_rate"], saved["num_train_epochs"]) == (3e-4, 1)


def test_help_config_states_the_rules_numbers():
    epochs_help = TrainConfig.model_fields["num_train_epochs"].description
    assert f"at least {MIN_STEPS} optimizer steps" in epochs_help and f"at most {MAX_EPOCHS} epochs" in epochs_help
    assert f"{MAX_EXAMPLES:,} examples" in epochs_help and f"auto (default): {CAP_EPOCHS:g};" in epochs_help
    lr_help = TrainConfig.model_fields["learning_rate"].description
    for table, name in ((methods.LORA_LR, "LoRA/QLoRA"), (methods.FULL_LR, "full")):
        part = lr_help[lr_help.index(name):]
        for bound, rate in table:
            assert f"{rate:.0e}".replace("e-0", "e-") in part and (bound == math.inf or f"{bound / 1e9:g}B" in part)
    assert f"prompt tuning {methods.PROMPT_TUNING_LR[0][1]:g}" in lr_help


def test_grpo_temperature_auto_is_cooler_on_small_bases_and_says_why():
    small, large = TrainConfig(method="lora", objective="grpo"), TrainConfig(method="lora", objective="grpo")
    why = auto.resolve(small, n_train=64, n_params=135_000_000)
    assert small.temperature == 0.5 and why["temperature"].startswith("temperature 0.5 (auto): objective grpo on a "
                                                                       "135M-parameter base")
    auto.resolve(large, n_train=64, n_params=7_000_000_000)
    assert large.temperature == 1.0
    explicit = TrainConfig(method="lora", objective="grpo", temperature=0.9)
    assert "temperature" not in auto.resolve(explicit, n_train=64, n_params=135_000_000)
    assert explicit.temperature == 0.9
    sft = TrainConfig(method="lora")  # does not sample: a plain value, no printed reason
    assert "temperature" not in auto.resolve(sft, n_train=64, n_params=135_000_000) and sft.temperature == 1.0
