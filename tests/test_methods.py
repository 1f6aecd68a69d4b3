"""Each method prepares a trainable model with the documented trade-off; bad method config is an error."""

from __future__ import annotations

import pytest
import torch

from tuneforge import methods
from tuneforge.config import TrainConfig
from tuneforge.errors import ConfigError
from tuneforge.models.tiny import tiny_model, tiny_tokenizer


def _cfg(**kw) -> TrainConfig:
    return TrainConfig(**kw)


def test_lora_trains_only_adapter_weights_on_the_guides_targets():
    model = methods.prepare(tiny_model(), _cfg(method="lora"))
    names = [n for n, p in model.named_parameters() if p.requires_grad]
    assert names and all("lora_" in n for n in names)
    assert {n.split(".")[-4] for n in names} == {"q_proj", "v_proj"}
    assert model.peft_config["default"].r == 16 and model.peft_config["default"].lora_alpha == 32


def test_unmatched_target_module_is_an_error():
    with pytest.raises(ConfigError, match="query_key_value"):
        methods.prepare(tiny_model(), _cfg(target_modules=["q_proj", "query_key_value"]))


def test_all_linear_dora_rslora_and_modules_to_save_reach_peft():
    cfg = _cfg(target_modules="all-linear", use_dora=True, use_rslora=True, modules_to_save=["lm_head"])
    model = methods.prepare(tiny_model(), cfg)
    pc = model.peft_config["default"]
    assert pc.use_dora and pc.use_rslora and "lm_head" in pc.modules_to_save
    adapted = {n.split(".")[-4] for n, _ in model.named_parameters() if "lora_A" in n}
    assert {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"} <= adapted


def test_full_trains_every_weight():
    model = methods.prepare(tiny_model(), _cfg(method="full"))
    trainable, total = methods.count_parameters(model)
    assert trainable == total


def test_prompt_tuning_trains_under_a_tenth_of_a_percent_of_a_real_sized_model():
    tok = tiny_tokenizer()
    model = methods.prepare(tiny_model(tok, hidden_size=256, layers=4), _cfg(method="prompt-tuning",
                                                                            num_virtual_tokens=8))
    trainable, total = methods.count_parameters(model)
    assert trainable == 8 * 256
    out = model(input_ids=torch.tensor([[1, 2, 3]]), attention_mask=torch.ones(1, 3, dtype=torch.long))
    assert out.logits.shape[1] == 3 + 8


def test_unknown_method_lists_the_available_ones():
    with pytest.raises(ConfigError, match="lora"):
        methods.get("adalora")
