"""`tuneforge cost` under FSDP: per-process memory divides weights, gradients and optimizer state by the number of
processes (plus the gathered layers), DDP does not, and a GPU row says how many GPUs hold a model that one
does not."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.helpers import arithmetic_rows, write_jsonl
from tuneforge.advise.cost import estimate, model_shape, peak_memory
from tuneforge.advise.cost import Counts
from tuneforge.config import TrainConfig


@pytest.fixture
def data(tmp_path) -> Path:
    return write_jsonl(tmp_path / "d.jsonl", arithmetic_rows(50))


@pytest.fixture
def big_dir(tmp_path) -> Path:
    """A 13B-shaped Llama config beside the tiny tokenizer: no weights (cost builds it on the meta device)."""
    from transformers import LlamaConfig

    from tuneforge.models.tiny import tiny_tokenizer

    d = tmp_path / "big"
    tok = tiny_tokenizer()
    tok.save_pretrained(d)
    LlamaConfig(vocab_size=32000, hidden_size=5120, intermediate_size=13824, num_hidden_layers=40,
                num_attention_heads=40, num_key_value_heads=40).save_pretrained(d)
    return d


def test_fsdp_divides_weights_gradients_and_optimizer_by_the_processes(tiny_dir):
    shape = model_shape(str(tiny_dir))
    micro = Counts(tokens=64, positions=64, supervised=16, attn=0)
    one = peak_memory(shape, "full", shape.params, micro, gpu=True)
    ddp = peak_memory(shape, "full", shape.params, micro, gpu=True, world=2)
    two = peak_memory(shape, "full", shape.params, micro, gpu=True, world=2, fsdp="full_shard")
    assert ddp == one  # DDP: every process holds the whole model
    assert two["weights"] == one["weights"] // 2
    assert two["gradients_and_optimizer"] == one["gradients_and_optimizer"] // 2
    assert 0 < two["gathered_weights"] <= one["weights"]  # (a 2-layer model: two layers are the model)
    assert two["activations"] == one["activations"]  # the per-process micro-batch is the same
    grad_op = peak_memory(shape, "full", shape.params, micro, gpu=True, world=2, fsdp="shard_grad_op")
    assert grad_op["weights"] + grad_op["gathered_weights"] == pytest.approx(one["weights"], abs=1)


def test_cost_says_how_many_gpus_hold_a_model_one_does_not(big_dir, data):
    cfg = TrainConfig(base=str(big_dir), data=str(data), method="full", fsdp="full_shard",
                      per_device_train_batch_size=1, max_steps=2)
    one = estimate(cfg, hardware="h100", nproc=1)
    two = estimate(cfg, hardware="h100", nproc=2)
    assert one["fits_memory"] is False and two["fits_memory"] is True
    assert one["processes_needed"] == two["processes_needed"] == 2
    assert two["memory_parts"]["weights"] == one["memory_parts"]["weights"] // 2
    assert two["processes"] == 2 and two["fsdp"] == "full_shard"
    assert two["memory_parts"]["gathered_weights"] < one["memory_parts"]["weights"] / 10  # 2 of 40 layers + embedding
    json.dumps(two)


def test_cost_cli_prints_the_per_process_memory(big_dir, data):
    from typer.testing import CliRunner

    from tuneforge.cli import app

    r = CliRunner().invoke(app, ["cost", str(data), "--base", str(big_dir), "--method", "full", "--hardware",
                                 "h100", "--nproc", "4", "--fsdp", "full_shard", "--max_steps", "2"])
    assert r.exit_code == 0, r.output
    assert "per process of 4, fsdp full_shard" in r.output
    assert "fsdp full_shard: 2 x H100 hold it" in r.output
