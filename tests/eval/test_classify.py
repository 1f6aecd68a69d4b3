"""Classification runs answer with a label: constrained prediction on a real (tiny) model, eval.json, CLI.

Label scores are checked against an independent computation (the training loss of each prompt+label example),
accuracy against scikit-learn on the reported predictions, calibration against the metric on the reported
probabilities.
"""

from __future__ import annotations

import json
import math
import random

import pytest
from sklearn.metrics import accuracy_score

from tests.helpers import write_jsonl
from tests.helpers import tf
from tuneforge.data.formats import Sample
from tuneforge.data.tokenize import encode
from tuneforge.eval import classify
from tuneforge.eval import metrics as M
from tuneforge.eval.harness import evaluate_file, load_for_inference
from tuneforge.train.loss import loss_sum
from tuneforge.train.packing import pad

PROMPTS = ["is 12 even?", "a much longer prompt about whether seventeen is odd or even, padded left in a batch",
           [{"role": "system", "content": "Answer with one word."}, {"role": "user", "content": "7?"}], "x"]
LABELS = ["even", "even more", "odd", "neither"]  # "even" is a prefix of "even more"


def _nll(loaded, messages, label) -> float:
    """-log p(label + end-of-turn | prompt) through the training loss: an independent computation."""
    import torch

    enc = encode(Sample(messages=[*messages, {"role": "assistant", "content": label}]), loaded.tokenizer)
    with torch.no_grad():
        s, _, _ = loss_sum(loaded.model, pad([enc], loaded.tokenizer.pad_token_id))
    return float(s)


def parity_rows(n: int, seed: int) -> list[dict]:
    r = random.Random(seed)
    return [{"text": f"is {k} even or odd", "label": "even" if k % 2 == 0 else "odd"}
            for k in (r.randint(0, 999) for _ in range(n))]


@pytest.fixture(scope="module")
def loaded(tiny_dir):
    return load_for_inference(str(tiny_dir))


def test_label_scores_equal_the_training_loss_of_each_label_end_of_turn_included(loaded):
    scores, lat = classify.label_log_likelihoods(loaded.model, loaded.tokenizer, PROMPTS, LABELS, batch_size=3)
    assert len(scores) == len(PROMPTS) and len(lat) == len(PROMPTS)
    for p, row in zip(PROMPTS, scores):
        for lab, got in zip(LABELS, row):
            assert got == pytest.approx(-_nll(loaded, classify.as_messages(p), lab), abs=2e-4)
    # the cached path itself (one prompt forward, labels on the KV cache) agrees with scoring full rows
    per_prompt = [classify._pairs(classify.as_messages(p), LABELS, loaded.tokenizer) for p in PROMPTS]
    pad_id = loaded.tokenizer.pad_token_id
    cached = classify._score_cached(loaded.model, [q[0].prompt for q in per_prompt],
                                    [[x.answer for x in q] for q in per_prompt], pad_id)
    rows = classify.score_rows(loaded.model, [x for q in per_prompt for x in q], pad_id)
    assert [x for row in cached for x in row] == pytest.approx(rows, abs=2e-4)
    assert cached == [pytest.approx(row, abs=2e-4) for row in scores]


def test_predictions_are_in_the_label_set_and_probabilities_sum_to_one(loaded):
    rng = random.Random(0)
    for labels in (["yes", "no"], LABELS, [f"class {i}" for i in range(7)], ["1", "2", "10"]):
        prompts = [f"question {rng.randint(0, 10**6)}" for _ in range(5)]
        preds, _ = classify.predict(loaded, prompts, labels, batch_size=2)
        for p in preds:
            assert p.label in labels and list(p.probabilities) == labels
            assert math.fsum(p.probabilities.values()) == pytest.approx(1.0, abs=1e-9)
            assert p.probabilities[p.label] == max(p.probabilities.values())


def test_soft_prompt_models_are_scored_with_their_virtual_tokens(tiny_dir):
    from tuneforge import methods
    from tuneforge.config import TrainConfig
    from tuneforge.eval.harness import Loaded
    from tuneforge.models.load import load_base

    b = load_base(str(tiny_dir))
    model = methods.prepare(b.model, TrainConfig(method="prompt-tuning", num_virtual_tokens=4)).eval()
    soft = Loaded(model, b.tokenizer, "soft")
    scores, _ = classify.label_log_likelihoods(model, b.tokenizer, PROMPTS[:2], ["even", "odd"])
    for p, row in zip(PROMPTS[:2], scores):
        assert row == pytest.approx([-_nll(soft, classify.as_messages(p), lab) for lab in ("even", "odd")],
                                    abs=2e-4)


def test_a_label_set_needs_two_distinct_labels(loaded):
    from tuneforge.errors import TuneforgeError

    with pytest.raises(TuneforgeError, match="at least 2 labels"):
        classify.predict(loaded, ["x"], ["only"])
    with pytest.raises(TuneforgeError, match="repeats"):
        classify.predict(loaded, ["x"], ["a", "a"])


@pytest.fixture(scope="module")
def cls_run(tiny_dir, tmp_path_factory):
    d = tmp_path_factory.mktemp("cls")
    train = write_jsonl(d / "train.jsonl", parity_rows(40, seed=1))
    test = write_jsonl(d / "test.jsonl", parity_rows(16, seed=2))
    r = tf("train", "--no-progress", "--base", str(tiny_dir), "--data", str(train), "--output", str(d / "run"),
           "--max_steps", "3", "--eval_steps", "3")
    assert r.returncode == 0, r.stderr
    return d / "run", test


@pytest.mark.cli
def test_a_classification_run_records_its_label_set(cls_run):
    run, _ = cls_run
    info = json.loads((run / "run.json").read_text())
    assert info["task"] == "classification" and info["labels"] == ["even", "odd"]
    counts = json.loads((run / "data.json").read_text())["label_counts"]
    assert set(counts) == {"even", "odd"} and sum(counts.values()) == json.loads(
        (run / "data.json").read_text())["train_examples"]
    card = (run / "README.md").read_text()
    assert "## Task: classification" in card and "`even`, `odd`" in card


@pytest.mark.cli
def test_eval_is_constrained_for_both_models_with_probabilities_and_calibration(cls_run, tiny_dir):
    run, test = cls_run
    res = evaluate_file(str(run), str(test), baseline="base", progress=False)
    assert res["mode"] == "constrained" and res["labels"] == ["even", "odd"]
    refs = [e["reference"] for e in res["examples"]]
    for role in ("baseline", "tuned"):
        preds = [e[f"{role}_prediction"] for e in res["examples"]]
        probs = [e[f"{role}_probabilities"] for e in res["examples"]]
        assert set(preds) <= {"even", "odd"}
        assert all(math.fsum(p.values()) == pytest.approx(1.0, abs=1e-9) for p in probs)
        assert all(p[x] == max(p.values()) for p, x in zip(probs, preds))
        m = res["models"][role]["metrics"]
        assert m["accuracy"] == accuracy_score(refs, preds)
        assert m["expected_calibration_error"] == pytest.approx(
            M.expected_calibration_error([p[x] for p, x in zip(probs, preds)], [x == y for x, y in zip(preds, refs)]))
    assert res["delta"]["accuracy"]["delta"] == pytest.approx(
        res["models"]["tuned"]["metrics"]["accuracy"] - res["models"]["baseline"]["metrics"]["accuracy"])


@pytest.mark.cli
def test_free_flag_keeps_free_generation(cls_run):
    run, test = cls_run
    out = run.parent / "free.json"
    r = tf("eval", str(run), "--data", str(test), "--free", "--max-new-tokens", "3", "--output", str(out),
           "--no-progress")
    assert r.returncode == 0, r.stderr
    res = json.loads(out.read_text())
    assert res["mode"] == "free" and not any("tuned_probabilities" in e for e in res["examples"])
    assert res["models"]["tuned"]["metrics"]["accuracy"] == accuracy_score(
        [e["reference"] for e in res["examples"]], [e["tuned_prediction"] for e in res["examples"]])

    r = tf("generate", str(run), "is 12 even or odd")
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() in ("even", "odd") and "label probabilities:" in r.stderr
    r = tf("generate", str(run), "is 12 even or odd", "--free", "--max-new-tokens", "4")
    assert r.returncode == 0, r.stderr
    assert "label probabilities" not in r.stderr
    from tuneforge.eval.harness import generate

    expected, _ = generate(load_for_inference(str(run)), ["is 12 even or odd"], max_new_tokens=4)
    assert r.stdout.strip() == expected[0]
