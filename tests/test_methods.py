"""Each method prepares a trainable model with the documented trade-off; bad method config is an error."""

from __future__ import annotations

import math
import typing

import pytest
import torch

from tuneforge import methods
from tuneforge.config import TrainConfig
from tuneforge.errors import ConfigError
from tuneforge.models.tiny import tiny_model, tiny_tokenizer


def _cfg(**kw) -> TrainConfig:
    return TrainConfig(**kw)


def test_lora_trains_only_adapter_weights_on_the_guides_targets():
    model = methods.prepare(tiny_model(), _cfg(method="lora", target_modules="q_proj,v_proj"))
    names = [n for n, p in model.named_parameters() if p.requires_grad]
    assert names and all("lora_" in n for n in names)
    assert {n.split(".")[-4] for n in names} == {"q_proj", "v_proj"}
    assert model.peft_config["default"].r == 16 and model.peft_config["default"].lora_alpha == 32


def test_unmatched_target_module_is_an_error():
    with pytest.raises(ConfigError, match="query_key_value"):
        methods.prepare(tiny_model(), _cfg(method="lora", target_modules=["q_proj", "query_key_value"]))


def test_all_linear_dora_rslora_and_modules_to_save_reach_peft():
    cfg = _cfg(method="lora", target_modules="all-linear", use_dora=True, use_rslora=True,
               modules_to_save=["lm_head"])
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


def test_config_method_choices_are_the_rows_plus_auto():
    # config (a layer below methods) cannot import the rows: its Literal is held equal to them here
    choices = typing.get_args(TrainConfig.model_fields["method"].annotation)
    assert sorted(choices) == sorted([*methods.METHODS, "auto"])


def test_role_names_pick_rows_with_the_role():
    assert methods.METHODS[methods.DEFAULT].lora_shaped and not methods.METHODS[methods.DEFAULT].quantized_base
    assert methods.METHODS[methods.LOW_MEMORY].quantized_base and methods.METHODS[methods.LOW_MEMORY].lora_shaped
    assert methods.METHODS[methods.ALL_WEIGHTS].weight_gradients and not methods.METHODS[methods.ALL_WEIGHTS].adapter


@pytest.mark.parametrize("name", list(methods.METHODS))
def test_every_row_has_a_learning_rate_for_every_base_size(name):
    table = methods.METHODS[name].learning_rates
    bounds = [b for b, _ in table]
    assert bounds == sorted(bounds) and bounds[-1] == math.inf and all(rate > 0 for _, rate in table)


def _linear_weight_bytes(model) -> int:
    head = model.get_output_embeddings()
    return sum(methods.stored_bytes(m.weight) for m in model.modules()
               if isinstance(m, torch.nn.Linear) and m is not head)


def test_torchao_nf4_holds_linear_weights_in_about_4_bits_and_trains_only_lora():
    from tuneforge.methods import qlora

    model = tiny_model()
    ids = torch.tensor([[1, 2, 3, 4, 5, 6]])
    ref = model(input_ids=ids).logits
    fp32_bytes = _linear_weight_bytes(model)
    assert qlora.quantize_nf4(model) == 2 * 7  # every projection of both layers, not the tied output head
    assert _linear_weight_bytes(model) < fp32_bytes / 6  # 4 bits + scales vs 32 bits
    quantized = model(input_ids=ids).logits
    assert 0 < (quantized - ref).abs().max() < 0.1 * ref.abs().max()  # lossy, but close

    peft_model = methods.prepare(model, _cfg(method="qlora", quant_backend="torchao"))
    peft_model(input_ids=ids, labels=ids).loss.backward()
    trained = {n for n, p in peft_model.named_parameters() if p.grad is not None}
    assert trained and all("lora_" in n for n in trained)


def test_qlora_falls_back_to_torchao_when_bitsandbytes_cannot_import(monkeypatch):
    import sys

    from tuneforge.methods import qlora

    monkeypatch.setitem(sys.modules, "bitsandbytes", None)  # what `import bitsandbytes` sees when it is absent
    assert qlora.resolve_backend(_cfg(method="qlora")) == "torchao"
    with pytest.raises(ConfigError, match="pip install bitsandbytes"):
        qlora.resolve_backend(_cfg(method="qlora", quant_backend="bitsandbytes"))
    monkeypatch.setitem(sys.modules, "torchao", None)
    with pytest.raises(ConfigError, match="needs bitsandbytes or torchao"):
        qlora.resolve_backend(_cfg(method="qlora"))


def test_torchao_backend_refuses_fp4():
    from tuneforge.methods import qlora

    with pytest.raises(ConfigError, match="NF4 only"):
        qlora.resolve_backend(_cfg(method="qlora", quant_backend="torchao", bnb_4bit_quant_type="fp4"))


@pytest.mark.parametrize("backend", ["bitsandbytes", "torchao"])
def test_qlora_base_keeps_the_output_head_tied_and_full_precision(backend, tiny_dir):
    from tuneforge.methods import qlora

    model = qlora.load(_cfg(method="qlora", base=str(tiny_dir), quant_backend=backend), "cpu").model
    # copying params off the checkpoint's memory map must not untie the head from the embeddings
    assert model.lm_head.weight is model.model.embed_tokens.weight
    assert model.lm_head.weight.dtype == torch.float32 and not hasattr(model.lm_head.weight, "__tensor_flatten__")
    q = model.model.layers[0].self_attn.q_proj.weight
    assert q.dtype == torch.uint8 if backend == "bitsandbytes" else hasattr(q, "__tensor_flatten__")


@pytest.mark.parametrize("free_x,want", [(64, "lora"), (0.5, "qlora"), (0.01, None)])
def test_method_auto_picks_by_weight_size_and_free_memory(tiny_dir, monkeypatch, free_x, want):
    import psutil

    from tuneforge.errors import ConfigError
    from tuneforge.methods import choose, weight_bytes

    avail = free_x * weight_bytes(tiny_dir)  # free memory as a multiple of the weights' size
    monkeypatch.setattr(psutil, "virtual_memory", lambda: type("VM", (), {"available": avail})())
    if want is None:
        with pytest.raises(ConfigError, match="do not fit"):
            choose(tiny_dir, "cpu")
    else:
        method, why = choose(tiny_dir, "cpu")
        assert method == want and why.startswith(f"method auto → {want}")
