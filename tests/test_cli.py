"""The CLI end to end on a tiny model: train → adapter → merge → pipeline → generate, and bad input
that fails with one line naming file/line/field, exit 2, and nothing written."""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import pytest
import yaml

pytestmark = pytest.mark.cli

from tests.helpers import arithmetic_rows, tf, write_jsonl


@pytest.fixture(scope="module")
def tiny_run(tiny_dir, tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("cli")
    data = write_jsonl(d / "train.jsonl", arithmetic_rows(120))
    run = d / "run"
    r = tf("train", "--no-progress", "--base", str(tiny_dir), "--data", str(data), "--output", str(run),
           "--num_train_epochs", "1", "--learning_rate", "1e-3")
    assert r.returncode == 0, r.stderr
    return run


def test_train_warns_about_small_data_and_names_next_steps(tiny_dir, tmp_path):
    data = write_jsonl(tmp_path / "small.jsonl", arithmetic_rows(60))
    r = tf("train", "--no-progress", "--base", str(tiny_dir), "--data", str(data), "--output",
           str(tmp_path / "run"), "--max_steps", "2")
    assert r.returncode == 0, r.stderr
    assert "warning: 60 examples is a small set" in r.stderr
    assert f"run: {tmp_path / 'run'}" in r.stdout and "tuneforge eval" in r.stdout


def test_train_help_lists_the_main_options():
    out = tf("train", "--help").stdout
    for flag in ("--data", "--output", "--base", "--method", "--resume", "--help-config"):
        assert flag in out, flag


def test_train_writes_a_self_describing_run(tiny_run):
    for name in ("config.yaml", "data.json", "metrics.jsonl", "run.json", "README.md",
                 "adapter/adapter_config.json", "adapter/adapter_model.safetensors"):
        assert (tiny_run / name).is_file(), name
    data = json.loads((tiny_run / "data.json").read_text())
    assert data["train_examples"] + data["val_examples"] == 120
    assert len(data["files"][0]["sha256"]) == 64
    rows = [json.loads(x) for x in (tiny_run / "metrics.jsonl").read_text().splitlines()]
    assert any("loss" in r for r in rows) and any("val_loss" in r for r in rows)


def test_adapter_loads_with_peft_and_merge_loads_with_pipeline(tiny_run, tiny_dir):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, pipeline

    base = AutoModelForCausalLM.from_pretrained(tiny_dir)
    PeftModel.from_pretrained(base, str(tiny_run / "adapter"))
    r = tf("export", "merge", str(tiny_run))
    assert r.returncode == 0, r.stderr
    pipe = pipeline("text-generation", model=str(tiny_run / "model"))  # the guide's snippet, minus device=0
    out = pipe("Your prompt here", max_new_tokens=4)
    assert out[0]["generated_text"].startswith("Your prompt here")


def test_torchao_qlora_adapter_merges_onto_the_full_precision_base_with_a_parity_check(tiny_dir, tmp_path):
    data = write_jsonl(tmp_path / "train.jsonl", arithmetic_rows(80))
    run = tmp_path / "run"
    r = tf("train", "--no-progress", "--base", str(tiny_dir), "--data", str(data), "--output", str(run),
           "--method", "qlora", "--quant_backend", "torchao", "--max_steps", "6", "--learning_rate", "1e-3")
    assert r.returncode == 0, r.stderr
    assert json.loads((run / "adapter" / "adapter_config.json").read_text())["peft_type"] == "LORA"
    r = tf("export", "merge", str(run), "--check")
    assert r.returncode == 0, r.stderr
    check = json.loads((run / "model" / "merge_check.json").read_text())
    assert check["examples"] > 0 and abs(check["relative_change"]) < 0.05, check  # NF4 error is small


def test_generate_answers_with_the_tuned_model(tiny_run):
    r = tf("generate", str(tiny_run), "add 2 and 3", "--max-new-tokens", "5")
    assert r.returncode == 0, r.stderr


def _assert_clean_failure(r, *needles, out: Path | None = None):
    assert r.returncode == 2, (r.returncode, r.stderr)
    lines = [x for x in r.stderr.strip().splitlines() if x.startswith("error:")]
    assert len(lines) == 1, r.stderr
    for n in needles:
        assert n in lines[0], lines[0]
    if out is not None:
        assert not out.exists(), "a run directory was left behind"


def test_malformed_jsonl_line_names_file_and_line(tiny_dir, tmp_path):
    f = tmp_path / "bad.jsonl"
    f.write_text('{"prompt": "a", "completion": "b"}\n{"prompt": "a", "completion": \n')
    out = tmp_path / "run"
    r = tf("train", "--base", str(tiny_dir), "--data", str(f), "--output", str(out))
    _assert_clean_failure(r, "bad.jsonl:2", out=out)


def test_missing_column_names_the_field(tiny_dir, tmp_path):
    f = write_jsonl(tmp_path / "bad.jsonl", [{"prompt": "a", "completion": "b"}, {"prompt": "a"}])
    out = tmp_path / "run"
    r = tf("train", "--base", str(tiny_dir), "--data", str(f), "--output", str(out))
    _assert_clean_failure(r, "bad.jsonl:2", out=out)


def test_unknown_format_is_rejected(tiny_dir, tmp_path):
    f = write_jsonl(tmp_path / "bad.jsonl", [{"question": "a", "answer": "b"}])
    out = tmp_path / "run"
    r = tf("train", "--base", str(tiny_dir), "--data", str(f), "--output", str(out))
    _assert_clean_failure(r, "bad.jsonl:1", "unknown_format", out=out)


def test_unknown_config_key_suggests_the_right_one(tiny_dir, pc_file, tmp_path):
    out = tmp_path / "run"
    r = tf("train", "--base", str(tiny_dir), "--data", str(pc_file), "--output", str(out), "--lerning_rate", "1")
    _assert_clean_failure(r, "lerning_rate", "learning_rate", out=out)


def test_unknown_key_in_yaml_names_the_file(tiny_dir, pc_file, tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text(f"base: {tiny_dir}\ndata: {pc_file}\nepochs: 3\n")
    out = tmp_path / "run"
    r = tf("train", "--config", str(cfg), "--output", str(out))
    _assert_clean_failure(r, "c.yaml", "epochs", out=out)


def test_missing_model_is_a_clear_error(pc_file, tmp_path):
    out = tmp_path / "run"
    r = tf("train", "--base", str(tmp_path / "no-such-model"), "--data", str(pc_file), "--output", str(out))
    _assert_clean_failure(r, "no-such-model", "not found", out=out)


def _no_hub(tmp_path: Path) -> dict:
    """A Hub endpoint that refuses connections at once, and an empty Hugging Face cache."""
    return {"HF_ENDPOINT": "http://127.0.0.1:9", "HF_HUB_CACHE": str(tmp_path / "hf-cache"), "HF_HUB_OFFLINE": "0"}


def test_unreachable_hub_fails_fast_with_one_clear_line(pc_file, tmp_path):
    out = tmp_path / "run"
    t0 = time.perf_counter()
    r = tf("train", "--base", "some-org/some-model", "--data", str(pc_file), "--output", str(out),
           env=_no_hub(tmp_path))
    _assert_clean_failure(r, "some-org/some-model", "Hugging Face Hub", out=out)
    assert time.perf_counter() - t0 < 30  # not ~50 s of connection retries


def test_hub_model_in_the_local_cache_trains_without_a_network(tiny_dir, pc_file, tmp_path):
    env = _no_hub(tmp_path)
    repo = Path(env["HF_HUB_CACHE"]) / "models--some-org--tiny"
    commit = "0" * 40
    shutil.copytree(tiny_dir, repo / "snapshots" / commit)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    r = tf("train", "--no-progress", "--base", "some-org/tiny", "--data", str(pc_file), "--output",
           str(tmp_path / "run"), "--max_steps", "1", env=env)
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "run" / "adapter" / "adapter_model.safetensors").is_file()


def test_unmatched_target_module_is_an_error(tiny_dir, pc_file, tmp_path):
    out = tmp_path / "run"
    r = tf("train", "--base", str(tiny_dir), "--data", str(pc_file), "--output", str(out),
           "--target_modules", "q_proj,query_key_value")
    _assert_clean_failure(r, "query_key_value", "target_modules", out=out)


def test_existing_output_is_not_overwritten(tiny_run, tiny_dir, pc_file):
    r = tf("train", "--base", str(tiny_dir), "--data", str(pc_file), "--output", str(tiny_run))
    _assert_clean_failure(r, "exists")


def test_cross_validation_reports_mean_and_std_over_folds(tiny_dir, tmp_path):
    data = write_jsonl(tmp_path / "d.jsonl", arithmetic_rows(60))
    out = tmp_path / "cv"
    r = tf("train", "--no-progress", "--base", str(tiny_dir), "--data", str(data), "--output", str(out),
           "--cv", "3", "--max_steps", "4")
    assert r.returncode == 0, r.stderr
    res = json.loads((out / "cv.json").read_text())
    assert len(res["folds"]) == 3 and "±" in r.stdout
    losses = [f["best_val_loss"] for f in res["folds"]]
    assert abs(res["val_loss_mean"] - sum(losses) / 3) < 1e-9
    assert all((out / f"fold-{i}" / "adapter").is_dir() for i in (1, 2, 3))


def test_data_check_json_report_and_exit_code(tmp_path):
    good = write_jsonl(tmp_path / "good.jsonl", arithmetic_rows(5))
    r = tf("data", "check", str(good), "--json", "--no-tokens")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["n_examples"] == 5
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"prompt": "a", "completion": "b"}\n{"prompt": "a"}\n')
    r = tf("data", "check", str(bad), "--no-tokens")
    assert r.returncode == 1 and "bad.jsonl:2" in r.stdout


def test_report_to_tensorboard_and_mlflow_mirrors_the_training_metrics(tiny_dir, pc_file, tmp_path, monkeypatch):
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    from mlflow.tracking import MlflowClient
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    out = tmp_path / "run"
    r = tf("train", "--no-progress", "--base", str(tiny_dir), "--data", str(pc_file), "--output", str(out),
           "--max_steps", "4", "--logging_steps", "1", "--eval_steps", "2", "--report_to", "tensorboard,mlflow")
    assert r.returncode == 0, r.stderr
    rows = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    losses = [x["loss"] for x in rows if "loss" in x]
    ev = EventAccumulator(str(out / "tensorboard"))
    ev.Reload()
    assert [round(e.value, 5) for e in ev.Scalars("train/loss")] == [round(v, 5) for v in losses]
    assert len(ev.Scalars("val/val_loss")) == 2
    client = MlflowClient(tracking_uri=(out / "mlruns").resolve().as_uri())
    exp = client.get_experiment_by_name("tuneforge")
    run = client.search_runs([exp.experiment_id])[0]
    hist = client.get_metric_history(run.info.run_id, "loss")
    assert [round(m.value, 5) for m in sorted(hist, key=lambda m: m.step)] == [round(v, 5) for v in losses]
    resolved = yaml.safe_load((out / "config.yaml").read_text())["learning_rate"]  # "auto", resolved by train
    assert float(run.data.params["learning_rate"]) == resolved
