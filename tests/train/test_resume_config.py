"""`--resume` runs the saved config: repeating the original flags is accepted, a different value is refused."""

from __future__ import annotations

import pytest

from tuneforge.config import load_config, save_config
from tuneforge.errors import ConfigError
from tuneforge.train.recipe import resume_config


def _saved(tmp_path):
    cfg = load_config(None, {"data": "d.jsonl", "output": str(tmp_path), "objective": "dpo",
                             "learning_rate": 5e-5})
    save_config(cfg, tmp_path / "config.yaml")
    return cfg


def test_resume_accepts_the_original_flags_repeated(tmp_path):
    cfg = _saved(tmp_path)
    again = resume_config(tmp_path, {"data": "d.jsonl", "objective": "dpo", "learning_rate": "5e-5",
                                     "output": str(tmp_path)})
    assert again == cfg


def test_resume_refuses_a_changed_value_and_names_it(tmp_path):
    _saved(tmp_path)
    with pytest.raises(ConfigError, match=r"cannot override: learning_rate$"):
        resume_config(tmp_path, {"data": "d.jsonl", "learning_rate": "1e-3"})
