"""Config: YAML + flags (flags win), typed values, unknown keys and bad values are one-line errors."""

import pytest

from tuneforge.config import TrainConfig, config_help, load_config, parse_overrides
from tuneforge.errors import ConfigError


def test_flags_override_the_yaml_file(tmp_path):
    f = tmp_path / "c.yaml"
    f.write_text("learning_rate: 1.0e-4\nlora_r: 8\n")
    cfg = load_config(f, parse_overrides(["--lora_r", "32", "--target-modules=q_proj,k_proj", "--packing", "false"]))
    assert cfg.learning_rate == 1e-4 and cfg.lora_r == 32
    assert cfg.target_modules == ["q_proj", "k_proj"] and cfg.packing is False


def test_defaults_follow_the_guide_and_the_defaults_bench():
    cfg = TrainConfig()
    assert (cfg.lora_r, cfg.lora_alpha, cfg.lora_dropout, cfg.lora_bias) == (16, 32, 0.05, "none")
    assert cfg.target_modules == ["all-linear"]  # bench/defaults.py: the guide's q_proj,v_proj learns less
    assert cfg.warmup_ratio == 0.1 and cfg.base == "smollm2-135m-instruct"
    assert (cfg.method, cfg.learning_rate, cfg.num_train_epochs) == ("auto", "auto", "auto")  # train/auto.py


def test_auto_fields_take_numbers_or_auto_and_reject_the_rest():
    cfg = load_config(None, {"learning_rate": "3e-4", "num_train_epochs": "2.5"})
    assert cfg.learning_rate == 3e-4 and cfg.num_train_epochs == 2.5
    assert load_config(None, {"learning_rate": "auto"}).learning_rate == "auto"
    for bad in ("0", "-1e-3", "fast"):
        with pytest.raises(ConfigError, match="bad value for 'learning_rate'"):
            load_config(None, {"learning_rate": bad})


def test_unknown_key_is_an_error_with_a_suggestion(tmp_path):
    f = tmp_path / "c.yaml"
    f.write_text("num_train_epoch: 3\n")
    with pytest.raises(ConfigError, match=r"c.yaml: unknown config key 'num_train_epoch' \(did you mean "
                                          r"'num_train_epochs'\?\)"):
        load_config(f)


def test_bad_value_names_the_key():
    with pytest.raises(ConfigError, match="learning_rate"):
        load_config(None, {"learning_rate": "-1"})
    with pytest.raises(ConfigError, match="method"):
        load_config(None, {"method": "magic"})


def test_invalid_yaml_names_the_line(tmp_path):
    f = tmp_path / "c.yaml"
    f.write_text("lora_r: 8\nlearning_rate: [1\n")
    with pytest.raises(ConfigError, match=r"c.yaml:\d+: invalid YAML"):
        load_config(f)


def test_every_field_has_help():
    assert all(f.description for f in TrainConfig.model_fields.values())
    assert "--learning_rate" in config_help()
