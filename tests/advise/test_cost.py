"""Cost estimates: the plan counts what the recipe really runs (steps, tokens, micro-batches, trainable
parameters per method), the micro-benchmark runs real steps, GPU rows use the price table, and a run
records the estimate that `runs show` prints beside the actual figures."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.conftest import arithmetic_rows, write_jsonl
from tests.test_cli import tf
from tuneforge import methods
from tuneforge.advise.cost import (Counts, batch_counts, estimate, example_counts, load_prices, model_shape,
                                   plan_from, plan_key, step_flops, tensor_counts, trainable_params)
from tuneforge.config import TrainConfig
from tuneforge.errors import ConfigError
from tuneforge.train.recipe import micro_batch, prepare, schedule


@pytest.fixture
def data(tmp_path) -> Path:
    return write_jsonl(tmp_path / "d.jsonl", arithmetic_rows(50))


def cfg_for(tiny_dir, data, **kw) -> TrainConfig:
    return TrainConfig(base=str(tiny_dir), data=str(data), num_train_epochs=2, per_device_train_batch_size=4,
                       **kw)


@pytest.mark.parametrize("method,kw", [("lora", {}), ("full", {"gradient_accumulation_steps": 2}),
                                       ("prompt-tuning", {"num_virtual_tokens": 5}),
                                       ("lora", {"target_modules": "all-linear", "use_dora": True, "lora_r": 4})])
def test_plan_counts_what_the_recipe_runs(method, kw, tiny_dir, data):
    p = prepare(cfg_for(tiny_dir, data, method=method, **kw))
    shape = model_shape(str(tiny_dir))
    plan = plan_from(p, shape)
    assert plan.steps == schedule(p)[0]
    assert plan.trainable == methods.count_parameters(p.model)[0]  # the formula agrees with peft
    from transformers import AutoModelForCausalLM

    assert shape.params == AutoModelForCausalLM.from_pretrained(tiny_dir).num_parameters()  # read from config only
    accum = p.cfg.gradient_accumulation_steps
    for step in range(min(plan.steps, 6)):  # the counts of each step = the micro-batches the recipe builds
        got = [tensor_counts(micro_batch(p, step * accum + j), virtual=plan.virtual) for j in range(accum)]
        assert plan.step_counts[step] == Counts(*(sum(getattr(c, f) for c in got)
                                                  for f in ("positions", "supervised", "attn", "tokens")))


@pytest.mark.cli
def test_estimated_steps_and_tokens_equal_the_actual_run(tiny_dir, data, tmp_path):
    cfg = cfg_for(tiny_dir, data, early_stopping_patience=0)
    est = estimate(cfg, bench_steps=2)
    run = tf("train", "--base", str(tiny_dir), "--data", str(data), "--output", str(tmp_path / "run"),
             "--num_train_epochs", "2", "--per_device_train_batch_size", "4", "--early_stopping_patience", "0",
             "--no-progress")
    assert run.returncode == 0, run.stderr
    info = json.loads((tmp_path / "run" / "run.json").read_text())
    assert est["steps"] == info["steps"]
    assert est["tokens"]["train_tokens"] == info["train_tokens"]
    assert est["train_seconds"] > 0 and est["benchmark"]["steps"] == 2
    assert est["time_source"].startswith("measured")
    assert set(est["memory_bytes"]) == {"full", "lora", "qlora", "prompt-tuning"}
    assert est["memory_bytes"]["full"] > est["memory_bytes"]["lora"] > est["memory_bytes"]["qlora"]
    hours = (est["train_seconds"] + est["eval_seconds"]) / 3600
    cpu = load_prices()["hardware"]["cpu"]
    assert est["money"]["on_demand"] == pytest.approx(hours * cpu["on_demand_per_hour"], abs=1e-4)
    assert est["money"]["spot"] == pytest.approx(hours * cpu["spot_per_hour"], abs=1e-4)


def test_flops_follow_the_stated_formulas(tiny_dir):
    s = model_shape(str(tiny_dir))
    fwd = step_flops(s, "full", s.params, 100, 40, 1000, forward_only=True)
    assert fwd == 2 * s.body * 100 + 2 * s.vocab * s.hidden * 40 + 2 * s.layers * s.hidden * 1000
    assert step_flops(s, "full", s.params, 100, 40, 1000) == 3 * fwd  # 6·N·tokens
    attn = 2 * s.layers * s.hidden * 1000
    assert step_flops(s, "lora", 500, 100, 40, 1000) == 2 * fwd + attn + 6 * 500 * 100
    # prompt tuning computes the output layer at every position
    assert step_flops(s, "prompt-tuning", 0, 100, 40, 1000) > step_flops(s, "lora", 0, 100, 40, 1000)


def test_batch_counts_mirror_collate():
    lens = [(10, 3), (6, 2)]
    assert batch_counts(lens, packing=True) == Counts(16, 5, 136, 16)
    assert batch_counts(lens, packing=False, virtual=4) == Counts(28, 5, 2 * 14 * 14, 16)


def test_gpu_estimate_uses_the_published_table_without_loading_the_model(tiny_dir, data):
    est = estimate(cfg_for(tiny_dir, data), hardware="h100")
    h100 = load_prices()["hardware"]["H100"]
    assert est["hardware"] == "H100" and est["time_source"].startswith("published")
    assert "benchmark" not in est and est["fits_memory"] is True
    prices = load_prices()
    rate = h100["peak_tflops"] * 1e12 * prices["assumed_mfu"]
    adam = est["parameters"]["trainable"] * 16 * 2 / (h100["memory_bandwidth_gbs"] * 1e9)  # AdamW state traffic
    floor = prices["assumed_launch_seconds_per_layer"] * model_shape(str(tiny_dir)).layers
    # a tiny model is launch-bound: each step costs the floor, not its FLOPs
    assert est["flops"]["train"] / rate < est["steps"] * floor
    assert est["train_seconds"] == pytest.approx(est["steps"] * (floor + adam), abs=0.006)


def test_plan_key_names_data_content_and_settings(tiny_dir, data, tmp_path):
    a = plan_key(cfg_for(tiny_dir, data, output="x"))
    assert a == plan_key(cfg_for(tiny_dir, data, output="y"))  # the output directory is not part of the plan
    assert a != plan_key(cfg_for(tiny_dir, data, learning_rate=1e-3))
    other = write_jsonl(tmp_path / "e.jsonl", arithmetic_rows(50, seed=1))
    assert a != plan_key(cfg_for(tiny_dir, other))


@pytest.mark.cli
def test_cost_then_train_records_the_estimate_and_runs_show_prints_it(tiny_dir, data, tmp_path):
    env = {"TUNEFORGE_HOME": str(tmp_path / "home")}
    common = ["--base", str(tiny_dir), "--num_train_epochs", "1", "--early_stopping_patience", "0"]
    r = tf("cost", str(data), *common, "--json", "--bench-steps", "2", env=env)
    assert r.returncode == 0, r.stderr
    est = json.loads(r.stdout)
    run = tmp_path / "run"
    r = tf("train", "--data", str(data), "--output", str(run), *common, "--no-progress", env=env)
    assert r.returncode == 0, r.stderr
    assert json.loads((run / "estimate.json").read_text())["plan_key"] == est["plan_key"]
    r = tf("runs", "show", str(run), env=env)
    shown = json.loads(r.stdout)["estimate"]
    info = json.loads((run / "run.json").read_text())
    assert shown["train_seconds"]["estimate"] == est["train_seconds"]
    assert shown["train_seconds"]["actual"] == info["train_seconds"]
    assert shown["train_seconds"]["ratio"] == pytest.approx(info["train_seconds"] / est["train_seconds"], rel=1e-2)
    assert shown["steps"]["ratio"] == 1.0 and shown["train_tokens"]["ratio"] == 1.0
    # a different plan finds no estimate
    r = tf("train", "--data", str(data), "--output", str(tmp_path / "run2"), *common, "--learning_rate", "1e-3",
           "--no-progress", env=env)
    assert r.returncode == 0 and not (tmp_path / "run2" / "estimate.json").exists()


@pytest.mark.cli
def test_cost_human_output_and_bad_input(tiny_dir, data, tmp_path):
    r = tf("cost", str(data), "--base", str(tiny_dir), "--hardware", "A100", "--spot")
    assert r.returncode == 0, r.stderr
    assert "published: A100" in r.stdout and "spot" in r.stdout.split("money")[1].splitlines()[1].split()[0]
    r = tf("cost", str(data), "--base", str(tiny_dir), "--hardware", "Z80")
    assert r.returncode == 2 and "Z80" in r.stderr and len(r.stderr.strip().splitlines()) == 1
    bad = tmp_path / "p.yaml"
    bad.write_text("hardware:\n  cpu:\n    on_demand_per_hour: cheap\n")
    r = tf("cost", str(data), "--base", str(tiny_dir), "--prices", str(bad))
    assert r.returncode == 2 and "on_demand_per_hour" in r.stderr
    with pytest.raises(ConfigError):
        load_prices(tmp_path / "missing.yaml")


@pytest.mark.cli
def test_serving_cost_measures_here_and_prefers_bench_figures(tiny_dir, tmp_path):
    r = tf("cost", "--serve", "--base", str(tiny_dir), "--json")
    assert r.returncode == 0, r.stderr
    rows = {(x["quantization"], x["batch"]): x for x in json.loads(r.stdout)["rows"]}
    assert rows[("none", 1)]["source"].startswith("measured here") and rows[("none", 1)]["tokens_per_s"] > 0
    assert rows[("int4", 1)]["tokens_per_s"] >= rows[("int8", 1)]["tokens_per_s"] >= rows[("none", 1)]["tokens_per_s"]
    assert rows[("int4", 1)]["usd_per_1m_on_demand"] <= rows[("none", 1)]["usd_per_1m_on_demand"]
    bench = tmp_path / "serve.json"
    bench.write_text(json.dumps({"rows": [{"hardware": "cpu", "quantization": "int8", "batch": 8,
                                           "tokens_per_s": 123.0}]}))
    r = tf("cost", "--serve", "--base", str(tiny_dir), "--json", "--measured", str(bench))
    row = next(x for x in json.loads(r.stdout)["rows"] if x["quantization"] == "int8" and x["batch"] == 8)
    assert row["tokens_per_s"] == 123.0 and row["source"].startswith("serving bench")
    serve_bench = tmp_path / "serve.json"  # what `bench/serve.py --json` writes
    serve_bench.write_text(json.dumps([{"row": "(a) pipeline(\"text-generation\"), sequential", "tok_s": 20.0},
                                       {"row": "(b) tuneforge serve, 16 clients", "tok_s": 210.0}]))
    r = tf("cost", "--serve", "--base", str(tiny_dir), "--json", "--measured", str(serve_bench))
    row = next(x for x in json.loads(r.stdout)["rows"] if x["quantization"] == "none" and x["batch"] == 16)
    assert row["tokens_per_s"] == 210.0 and row["source"].startswith("serving bench")
    gpu = json.loads(tf("cost", "--serve", "--base", str(tiny_dir), "--hardware", "L4", "--json").stdout)
    assert all(x["source"].startswith("roofline") for x in gpu["rows"])


def test_trainable_params_match_peft_for_qlora_targets(tiny_dir, data):
    cfg = cfg_for(tiny_dir, data, target_modules="q_proj,k_proj,v_proj,o_proj", lora_r=8)
    p = prepare(cfg.model_copy(update={"method": "lora"}))
    shape = model_shape(str(tiny_dir))
    assert trainable_params(shape, cfg, "qlora") == methods.count_parameters(p.model)[0]
    assert example_counts(p.train[0])[0] == len(p.train[0].input_ids)
