"""optimize prune (magnitude and depth) and distill on a tiny run: new run directories that load, export and
report size, speed and held-out loss against the teacher."""

from __future__ import annotations

import json

import torch

from tests.helpers import tf
from tuneforge.eval.harness import generate, load_for_inference
from tuneforge.run import is_run


def test_magnitude_pruning_zeroes_that_fraction_of_each_decoder_matrix(export_source_run, tmp_path):
    from tuneforge.optimize.prune import decoder_linears, prune

    out, report = prune(export_source_run, sparsity=0.5, output=tmp_path / "sparse")
    assert is_run(out) and json.loads((out / "run.json").read_text())["derived_from"] == str(export_source_run)
    model = load_for_inference(out).model
    for name, lin in decoder_linears(model):
        frac = float((lin.weight == 0).float().mean())
        assert 0.49 <= frac <= 0.52, (name, frac)
    assert report["ratios"]["nonzero_ratio"] < 0.8 and report["ratios"]["size_ratio"] == 1.0
    assert json.loads((out / "optimize.json").read_text())["settings"]["sparsity"] == 0.5


def test_depth_pruning_removes_layers_and_still_generates_with_a_kv_cache(export_source_run, tmp_path):
    r = tf("optimize", "prune", str(export_source_run), "--drop-layers", "1", "--output", str(tmp_path / "shallow"))
    assert r.returncode == 0, r.stderr
    assert "held-out loss" in r.stdout and "teacher" in r.stdout
    loaded = load_for_inference(tmp_path / "shallow")
    assert loaded.model.config.num_hidden_layers == 1
    # cached greedy decoding equals recomputing the whole sequence each step (layer_idx renumbered)
    x = loaded.tokenizer("add 1 and 2", return_tensors="pt")["input_ids"]
    with torch.no_grad():
        cached = loaded.model.generate(x, max_new_tokens=6, do_sample=False, pad_token_id=0)
        seq = x
        for _ in range(6):
            seq = torch.cat([seq, loaded.model(seq, use_cache=False).logits[:, -1:].argmax(-1)], dim=1)
    assert cached.tolist() == seq.tolist()
    r = tf("optimize", "prune", str(export_source_run), "--drop-layers", "5")
    assert r.returncode == 2 and "--drop-layers 5" in r.stderr
    r = tf("optimize", "prune", str(export_source_run))
    assert r.returncode == 2 and "exactly one of" in r.stderr


def test_distill_trains_a_smaller_student_on_the_teachers_answers(export_source_run, tmp_path, monkeypatch):
    from tuneforge.optimize.distill import distill
    from tuneforge.run import read_config

    monkeypatch.setenv("TUNEFORGE_HOME", str(tmp_path / "home"))
    data = read_config(export_source_run)["data"]
    out, report = distill(export_source_run, "drop-layers:1", data, tmp_path / "student", overrides={"max_steps": 2},
                          progress=False)
    assert is_run(out) and (out / "model" / "config.json").is_file()
    info = json.loads((out / "run.json").read_text())
    assert info["distilled_from"] == str(export_source_run) and info["method"] == "full"
    answers = [json.loads(line) for line in (out / "teacher_answers.jsonl").read_text().splitlines()]
    assert answers and all(a["messages"][-1]["role"] == "assistant" for a in answers)
    assert report["student"]["layers"] == 1 and report["teacher"]["layers"] == 2
    assert report["ratios"]["size_ratio"] < 1
    outs, _ = generate(load_for_inference(out), ["add 1 and 2"], max_new_tokens=4)
    assert isinstance(outs[0], str)
