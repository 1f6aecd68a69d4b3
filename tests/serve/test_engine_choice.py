"""`tuneforge serve` picks its engine with `--engine auto` (the default): llama.cpp only for a run on the CPU whose
GGUF export is at least as new as its weights, when llama-cpp-python is installed; the builtin engine everywhere
llama.cpp would lose something, each time with the reason (and what would change it)."""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import time

import pytest

from tuneforge.serve.server import choose_engine


@pytest.fixture
def run(tiny_lora_run, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(tiny_lora_run, run)
    return run


def export(run, kind="q8_0", passed=True):
    d = run / "exports" / f"gguf-{kind}"
    d.mkdir(parents=True)
    (d / f"model-{kind}.gguf").write_bytes(b"GGUF")  # only its presence, age and verify result matter here
    (d / "manifest.json").write_text(json.dumps({"format": f"gguf-{kind}", "verify": {"passed": passed}}))
    return d


def test_a_run_with_a_fresh_gguf_export_is_served_by_llamacpp_on_the_cpu(run):
    export(run)
    engine, why = choose_engine(str(run), device="cpu", llamacpp=True)
    assert engine == "llama.cpp" and "gguf-q8_0" in why and "--engine builtin" in why


def test_without_an_export_or_llamacpp_it_stays_builtin_and_says_how_to_get_llamacpp(run):
    engine, why = choose_engine(str(run), device="cpu", llamacpp=True)
    assert engine == "builtin" and f"tuneforge export gguf {run} --type q8_0" in why
    export(run)
    engine, why = choose_engine(str(run), device="cpu", llamacpp=False)
    assert engine == "builtin" and "llama-cpp-python is not installed" in why and "tuneforge[llamacpp]" in why


def test_an_export_that_failed_verify_is_not_served(run):
    export(run, passed=False)
    engine, why = choose_engine(str(run), device="cpu", llamacpp=True)
    assert engine == "builtin" and "has not passed verify" in why


def test_an_export_older_than_the_runs_weights_is_not_served(run):
    d = export(run)
    old = time.time() - 3600
    for f in d.glob("*.gguf"):
        os.utime(f, (old, old))
    engine, why = choose_engine(str(run), device="cpu", llamacpp=True)
    assert engine == "builtin" and "older than the run's weights" in why


def test_gpu_several_adapters_labels_and_non_runs_keep_the_builtin_engine(run, tiny_dir):
    export(run)
    assert choose_engine(str(run), device="cuda", llamacpp=True)[0] == "builtin"
    engine, why = choose_engine(str(run), device="cpu", llamacpp=True, lora_modules=[f"b={run}"])
    assert engine == "builtin" and "--lora-modules" in why
    assert choose_engine(str(tiny_dir), device="cpu", llamacpp=True)[0] == "builtin"
    info = json.loads((run / "run.json").read_text())
    (run / "run.json").write_text(json.dumps({**info, "task": "classification", "labels": ["neg", "pos"]}))
    engine, why = choose_engine(str(run), device="cpu", llamacpp=True)
    assert engine == "builtin" and "classification" in why


@pytest.mark.skipif(importlib.util.find_spec("llama_cpp") is None, reason="llama-cpp-python is not installed")
def test_an_export_llamacpp_cannot_load_falls_back_to_builtin_and_says_why(run, tmp_path):
    from tuneforge.serve.engine import BuiltinEngine
    from tuneforge.service import ServerOptions, build_server

    export(run)  # verified by its manifest, but not a GGUF file llama.cpp can read
    server = build_server(ServerOptions(str(run), device="cpu", db=f"sqlite:///{tmp_path / 'db.sqlite'}",
                                        jobs_worker=False))
    try:
        assert isinstance(server.engine, BuiltinEngine)
        assert server.engine_choice.startswith("engine builtin (auto): llama.cpp could not serve the export")
    finally:
        server.engine.shutdown()
