"""`train --fsdp` on two CPU processes (gloo): FSDP2 shards the tiny model; the same global batch gives the losses
of one process (full and LoRA), each rank holds half the parameters and optimizer state, a kill -9 of one rank
resumes exactly from the sharded checkpoint, and the outputs load in plain transformers/peft."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.helpers import arithmetic_rows, write_jsonl

ROOT = Path(__file__).resolve().parents[2]
STEPS = 16
TOLERANCE = 1e-3  # relative; measured: equal to 5 decimals (the same maths, reduced in another order)


def _cmd(tiny_dir: Path, data: Path, out: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "tuneforge.cli", "train", "--no-progress", "--base", str(tiny_dir),
            "--data", str(data), "--output", str(out), "--max_steps", str(STEPS), "--logging_steps", "1",
            "--eval_steps", "8", "--save_steps", "4", "--learning_rate", "1e-3", "--lora_dropout", "0",
            "--early_stopping_patience", "0", "--per_device_train_batch_size", "4", *extra]


ONE = ("--gradient_accumulation_steps", "2")  # one process, 2 micro-batches of 4 = the global batch of 2 x 4
TWO = ("--fsdp", "full_shard", "--nproc", "2")


def _env() -> dict:
    return {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}


def _rows(run: Path) -> list[dict]:
    return [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]


def _losses(run: Path) -> dict[int, float]:
    return {r["step"]: r["loss"] for r in _rows(run) if "loss" in r}


def _train(*args) -> subprocess.CompletedProcess:
    r = subprocess.run(list(args), env=_env(), capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-3000:]
    return r


@pytest.fixture(scope="module")
def runs(tiny_dir, tmp_path_factory):
    d = tmp_path_factory.mktemp("fsdp")
    data = write_jsonl(d / "d.jsonl", arithmetic_rows(200))
    out = {}
    for method in ("full", "lora"):
        for name, extra in (("one", ONE), ("two", TWO)):
            out[method, name] = d / f"{method}-{name}"
            _train(*_cmd(tiny_dir, data, out[method, name], "--method", method, *extra))
    return data, out


@pytest.mark.integration
@pytest.mark.parametrize("method", ["full", "lora"])
def test_fsdp_on_two_processes_gives_the_single_process_losses_for_the_same_global_batch(runs, method):
    _, out = runs
    a, b = _losses(out[method, "one"]), _losses(out[method, "two"])
    assert sorted(a) == sorted(b) == list(range(1, STEPS + 1))
    for step in a:
        assert b[step] == pytest.approx(a[step], rel=TOLERANCE), step
    va = [r["val_loss"] for r in _rows(out[method, "one"]) if "val_loss" in r]
    vb = [r["val_loss"] for r in _rows(out[method, "two"]) if "val_loss" in r]
    assert vb == pytest.approx(va, rel=TOLERANCE)


@pytest.mark.integration
def test_each_rank_holds_about_half_the_parameters_and_optimizer_state_in_full_fine_tuning(runs):
    _, out = runs
    [single] = json.loads((out["full", "one"] / "run.json").read_text())["memory_per_rank"]
    info = json.loads((out["full", "two"] / "run.json").read_text())
    ranks = info["memory_per_rank"]
    assert info["fsdp"] == "full_shard" and len(ranks) == 2
    assert [r for r in _rows(out["full", "two"]) if "memory_per_rank" in r][0]["memory_per_rank"] == ranks
    whole = single["param_bytes"] + single["optimizer_bytes"]
    for r in ranks:
        assert r["param_bytes"] + r["optimizer_bytes"] == pytest.approx(whole / 2, rel=0.05)
        assert r["grad_bytes"] == pytest.approx(single["grad_bytes"] / 2, rel=0.05)
    assert sum(r["param_bytes"] for r in ranks) == single["param_bytes"]  # sharded, not replicated


@pytest.mark.integration
def test_the_outputs_load_in_plain_transformers_and_peft_with_the_single_process_weights(runs, tiny_dir):
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    _, out = runs
    full = [AutoModelForCausalLM.from_pretrained(out["full", k] / "model") for k in ("one", "two")]
    for (n, a), b in zip(full[0].state_dict().items(), full[1].state_dict().values()):
        assert torch.allclose(a, b, atol=1e-5), n
    lora = [PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_dir), str(out["lora", k] / "adapter"))
            for k in ("one", "two")]
    ad = [{n: t for n, t in m.state_dict().items() if "lora_" in n} for m in lora]
    assert ad[0] and ad[0].keys() == ad[1].keys()
    for n in ad[0]:
        assert torch.allclose(ad[0][n], ad[1][n], atol=1e-5), n


@pytest.mark.integration
def test_checkpoints_are_sharded_and_no_staging_directory_is_left(runs):
    _, out = runs
    ck = out["full", "two"] / "checkpoints"
    assert sorted(p.name for p in ck.iterdir()) == ["step-12", "step-8"]
    state = json.loads((ck / "step-12" / "state.json").read_text())
    assert state["sharded"] is True and state["world_size"] == 2
    assert (ck / "step-12" / "dcp" / ".metadata").is_file()
    assert len(list((ck / "step-12" / "dcp").glob("*.distcp"))) == 2  # one file per rank


def _rank_pids(launcher: int) -> list[int]:
    import psutil

    return [p.pid for p in psutil.Process(launcher).children(recursive=True)  # not torchrun's own process
            if "tuneforge.cli" in " ".join(p.cmdline()) and "torch.distributed.run" not in " ".join(p.cmdline())]


@pytest.mark.integration
def test_kill_9_of_one_rank_then_resume_continues_with_identical_losses(runs, tiny_dir, tmp_path):
    data, out = runs
    run = tmp_path / "killed"
    child = subprocess.Popen(_cmd(tiny_dir, data, run, "--method", "full", *TWO), env=_env(),
                             stderr=subprocess.DEVNULL)
    deadline = time.time() + 180
    while not (run / "checkpoints" / "step-8").exists() and time.time() < deadline and child.poll() is None:
        time.sleep(0.01)
    ranks = _rank_pids(child.pid)
    assert len(ranks) == 2, ranks
    os.kill(ranks[1], signal.SIGKILL)  # one rank dies; torchrun stops the other and fails
    assert child.wait(timeout=120) != 0
    assert not (run / "run.json").exists(), "training finished before it could be killed"
    one = subprocess.run([sys.executable, "-m", "tuneforge.cli", "train", "--resume", "--no-progress", "--output",
                          str(run)], env=_env(), capture_output=True, text=True)
    assert one.returncode != 0 and "fsdp shards over processes" in one.stderr  # 1 process: refused
    r = _train(sys.executable, "-m", "tuneforge.cli", "train", "--resume", "--no-progress", "--output", str(run),
               "--nproc", "2")
    assert "resumed" in r.stderr
    got, want = _losses(run), _losses(out["full", "two"])
    assert sorted(got) == list(range(1, STEPS + 1))
    for step in want:
        assert got[step] == pytest.approx(want[step], rel=1e-6), step


def test_fsdp_refusals_name_what_would_be_needed():
    from tuneforge.config import TrainConfig, load_config
    from tuneforge.errors import ConfigError
    from tuneforge.train import shard

    with pytest.raises(ConfigError, match="CUDA.*bnb_4bit_quant_storage"):
        shard.check(TrainConfig(method="qlora", fsdp="full_shard"), "cpu", 2)
    with pytest.raises(ConfigError, match="launch several"):
        shard.check(TrainConfig(method="lora", fsdp="full_shard"), "cpu", 1)
    with pytest.raises(ConfigError, match="fsdp_cpu_offload.*drop it"):
        shard.check(TrainConfig(method="full", fsdp="full_shard", fsdp_cpu_offload=True), "cpu", 2)
    with pytest.raises(ConfigError, match="hybrid_shard.*CPU"):
        shard.check(TrainConfig(method="lora", fsdp="hybrid_shard"), "cpu", 2)
    with pytest.raises(ConfigError, match="objective dpo"):
        shard.check(TrainConfig(method="lora", objective="dpo", fsdp="full_shard"), "cpu", 2)
    shard.check(TrainConfig(method="full", fsdp="shard_grad_op"), "cpu", 2)  # fine
    with pytest.raises(ConfigError, match="fsdp"):
        load_config(None, {"fsdp": "zero3"})
    with pytest.raises(ConfigError, match="command line: deepspeed is not supported.*--fsdp full_shard"):
        load_config(None, {"deepspeed": "ds_config.json"})
