"""Job fields → tuneforge's recipe: OpenAI's "auto" epochs rule, hyperparameter and option checks, file checks,
model names."""

from __future__ import annotations

import json

import pytest

from tuneforge.jobs import recipe
from tuneforge.jobs.recipe import SpecError


@pytest.mark.parametrize("n,epochs", [(1, 25), (10, 10), (16, 7), (33, 4), (34, 3), (8333, 3), (8334, 2),
                                      (12_500, 2), (12_501, 1), (100_000, 1)])
def test_auto_epochs_keeps_examples_times_epochs_within_100_to_25000(n, epochs):
    assert recipe.auto_epochs(n) == epochs
    if 4 <= n <= 25_000:
        assert 100 <= n * epochs <= 25_000


def test_hyperparameters_top_level_or_in_method_with_auto_defaults():
    assert recipe.hyperparameters_from({}) == (
        {"n_epochs": "auto", "batch_size": "auto", "learning_rate_multiplier": "auto"}, False)
    hp, via_method = recipe.hyperparameters_from(
        {"method": {"type": "supervised", "supervised": {"hyperparameters": {"n_epochs": 2, "batch_size": 4.0}}}})
    assert via_method and hp == {"n_epochs": 2, "batch_size": 4, "learning_rate_multiplier": "auto"}
    hp, _ = recipe.hyperparameters_from({"hyperparameters": {"learning_rate_multiplier": 0.5}})
    assert hp["learning_rate_multiplier"] == 0.5


@pytest.mark.parametrize("body,param", [
    ({"hyperparameters": {"n_epochs": 0}}, "hyperparameters.n_epochs"),
    ({"hyperparameters": {"n_epochs": 2.5}}, "hyperparameters.n_epochs"),
    ({"hyperparameters": {"batch_size": True}}, "hyperparameters.batch_size"),
    ({"hyperparameters": {"learning_rate_multiplier": 0}}, "hyperparameters.learning_rate_multiplier"),
    ({"hyperparameters": {"learning_rate_multiplier": "fast"}}, "hyperparameters.learning_rate_multiplier"),
    ({"hyperparameters": {"epochs": 3}}, "hyperparameters.epochs"),
    ({"method": {"type": "rlhf"}}, "method.type"),
    ({"method": {"type": "supervised", "supervised": {"hyperparameters": {"n_epochs": 99}}}},
     "method.supervised.hyperparameters.n_epochs"),
    ({"hyperparameters": {"n_epochs": 2}, "method": {"type": "supervised", "supervised": {
        "hyperparameters": {"n_epochs": 3}}}}, "hyperparameters"),
])
def test_bad_hyperparameters_name_their_field(body, param):
    with pytest.raises(SpecError) as e:
        recipe.hyperparameters_from(body)
    assert e.value.param == param


def test_tuneforge_options_are_train_config_keys_the_job_does_not_own():
    assert recipe.options_from({"tuneforge": {"method": "qlora", "lora_r": 8}}) == {"method": "qlora", "lora_r": 8}
    for opts, param in [({"lora_rank": 8}, "tuneforge.lora_rank"), ({"lora_r": 0}, "tuneforge.lora_r"),
                        ({"learning_rate": 1e-3}, "tuneforge.learning_rate"), ({"data": "x"}, "tuneforge.data"),
                        ({"method": "full"}, "tuneforge.method")]:
        with pytest.raises(SpecError) as e:
            recipe.options_from({"tuneforge": opts})
        assert e.value.param == param, opts


def test_train_config_maps_openai_hyperparameters_onto_the_recipe(tmp_path):
    hp = recipe.resolve_hyperparameters({"n_epochs": "auto", "batch_size": "auto", "learning_rate_multiplier": 2},
                                        n_examples=20)
    assert hp == {"n_epochs": 5, "batch_size": 8, "learning_rate_multiplier": 2.0}
    cfg = recipe.train_config(base="b", data=tmp_path / "t.jsonl", val_data=None, output=tmp_path / "run", seed=7,
                              hyperparameters=hp, options={"lora_r": 4})
    assert (cfg.num_train_epochs, cfg.per_device_train_batch_size, cfg.seed, cfg.lora_r) == (5, 8, 7, 4)
    assert (cfg.learning_rate, cfg.learning_rate_multiplier, cfg.logging_steps) == ("auto", 2.0, 1)


def test_file_checks_give_the_data_check_code_line_and_param(tmp_path):
    good = tmp_path / "good.jsonl"
    good.write_text("".join(json.dumps({"prompt": f"q{i}", "completion": f"a{i}"}) + "\n" for i in range(12)))
    assert recipe.check_file(good, "training_file") == (12, None)

    bad = tmp_path / "bad.jsonl"
    bad.write_text(good.read_text() + '{"messages": [{"role": "wizard", "content": "hi"}]}\n')
    n, err = recipe.check_file(bad, "training_file")
    assert err["param"] == "training_file" and err["code"] == "unrecognized_role" and "line 13" in err["message"]

    few = tmp_path / "few.jsonl"
    few.write_text("".join(good.read_text().splitlines(keepends=True)[:3]))
    assert recipe.check_file(few, "training_file")[1]["code"] == "invalid_n_examples"
    assert recipe.check_file(few, "validation_file", min_examples=1) == (3, None)


def test_fine_tuned_model_names_follow_openai():
    assert recipe.fine_tuned_model_name("smollm2-135m-instruct", "sql", "ftjob-abc") == \
        "ft:smollm2-135m-instruct:sql:abc"
    assert recipe.fine_tuned_model_name("/models/tiny", None, "ftjob-abc") == "ft:tiny::abc"
    assert recipe.checkpoint_model_name("ft:m:s:abc", 4) == "ft:m:s:abc:ckpt-step-4"
