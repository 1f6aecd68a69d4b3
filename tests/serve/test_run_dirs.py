"""Serving run directories: a run is served under its directory name (its adapter on its base) and its base
under the name it was trained from; greedy answers equal `tuneforge generate`'s; the CLI end to end."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import httpx
import openai
import pytest

from tests.conftest import arithmetic_rows, wait_for_health, write_jsonl
from tests.serve.conftest import chat, serving
from tests.test_cli import ROOT, tf
from tuneforge.serve.server import free_port


@pytest.fixture(scope="module")
def run_dir(lively_base, tmp_path_factory) -> Path:
    from tuneforge.config import load_config
    from tuneforge.train.recipe import train

    d = tmp_path_factory.mktemp("runs")
    data = write_jsonl(d / "train.jsonl", arithmetic_rows(24))
    cfg = load_config(None, {"base": str(lively_base), "data": str(data), "output": str(d / "sql-run"),
                             "max_steps": 3, "learning_rate": 5e-2, "val_split": 0, "lora_r": 4})
    return train(cfg, progress=False)


PROMPTS = ["add 4 and 5", "add 10 and 32"]


def generate_cli(target, prompt: str, *args: str) -> str:
    """`tuneforge generate TARGET PROMPT ...`, in process (the same command, no interpreter start)."""
    from typer.testing import CliRunner

    from tuneforge.cli import app

    r = CliRunner().invoke(app, ["generate", str(target), prompt, *args])
    assert r.exit_code == 0, r.output
    return r.stdout.strip()


def test_a_run_is_served_by_name_next_to_its_base_and_answers_like_tuneforge_generate(run_dir, lively_base):
    with serving(run_dir) as srv:
        models = {m.id: m for m in openai.OpenAI(base_url=srv.url + "/v1", api_key="x").models.list()}
        assert set(models) == {"sql-run", str(lively_base)} and models["sql-run"].parent == str(lively_base)
        for p in PROMPTS:
            served = chat(srv, "sql-run", p, max_tokens=10, temperature=0).choices[0].message.content
            assert served.strip() == generate_cli(run_dir, p, "--max-new-tokens", "10")  # printed stripped
        base = chat(srv, str(lively_base), PROMPTS[0], max_tokens=10, temperature=0).choices[0].message.content
        assert base.strip() == generate_cli(lively_base, PROMPTS[0], "--max-new-tokens", "10")


def test_a_request_without_decoding_fields_answers_as_generate_does_by_default(run_dir):
    """Same answer everywhere: a run's defaults are greedy within its answer budget, as `tuneforge generate`'s."""
    from tuneforge.run import read_run

    with serving(run_dir) as srv:
        r = chat(srv, "sql-run", PROMPTS[1])
        assert srv.app.state.engine.get("sql-run").defaults == {"temperature": 0.0,
                                                                "max_tokens": read_run(run_dir).max_new_tokens}
    assert r.choices[0].message.content.strip() == generate_cli(run_dir, PROMPTS[1])
    assert r.usage.completion_tokens <= read_run(run_dir).max_new_tokens


def test_served_model_name_and_lora_modules_name_more_adapters(run_dir, adapters):
    with serving(run_dir, lora_modules=[f"second={run_dir}", f"alpha={adapters['alpha']}"],
                 engine_kw={"served_model_name": "prod"}) as srv:
        ids = {m.id for m in openai.OpenAI(base_url=srv.url + "/v1", api_key="x").models.list()}
        assert {"prod", "second", "alpha"} <= ids and "sql-run" not in ids
        a = chat(srv, "prod", PROMPTS[0], max_tokens=8, temperature=0).choices[0].message.content
        b = chat(srv, "second", PROMPTS[0], max_tokens=8, temperature=0).choices[0].message.content
        assert a == b  # the same adapter under two names


@pytest.mark.cli
def test_the_cli_serves_a_run_with_an_api_key(run_dir):
    port = free_port()
    env = {**os.environ, "PYTHONPATH": str(ROOT), "TUNEFORGE_API_KEYS": "k1,k2"}
    proc = subprocess.Popen([sys.executable, "-m", "tuneforge.cli", "serve", str(run_dir), "--port", str(port)],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        url = f"http://127.0.0.1:{port}"
        wait_for_health(proc, url, lambda: proc.stderr.read() if proc.poll() is not None else "")
        assert httpx.get(url + "/v1/models").status_code == 401
        c = openai.OpenAI(base_url=url + "/v1", api_key="k2", max_retries=0)
        r = c.chat.completions.create(model="sql-run", messages=[{"role": "user", "content": "hi"}], max_tokens=3)
        assert r.usage.completion_tokens <= 3
    finally:
        proc.terminate()
        _, err = proc.communicate(timeout=30)
    assert "sql-run (adapter on" in err and "(API key required)" in err


@pytest.mark.cli
def test_cli_bad_targets_are_one_line_errors(tmp_path, run_dir):
    r = tf("serve", str(tmp_path / "missing"))
    assert r.returncode == 2 and r.stderr.startswith("error:") and "missing" in r.stderr
    r = tf("serve", str(run_dir), "--lora-modules", "no-equals-sign")
    assert r.returncode == 2 and "NAME=RUN_OR_ADAPTER_DIR" in r.stderr
    r = tf("serve", str(run_dir), "--lora-modules", f"x={tmp_path}")
    assert r.returncode == 2 and "adapter_config.json" in r.stderr
