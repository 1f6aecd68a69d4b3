"""report.html: sections, embedded figures, escaping, the overfitting signal, and a real browser rendering."""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from tuneforge.eval.report import (TRAIN_LOSS_COLOR, bar_values, overfitting_signal, worst_examples,
                                   write_report)

CHROMIUM = "/usr/bin/chromium"


def metrics_rows(steps: int = 60, eval_every: int = 10, u_shaped: bool = True) -> list[dict]:
    """Train loss falls steadily; val loss falls then (if u_shaped) rises for the last three evaluations."""
    rows = []
    for s in range(5, steps + 1, 5):
        rows.append({"step": s, "epoch": s / 20, "loss": 2.5 * math.exp(-s / 25) + 0.1,
                     "lr": 2e-4 * min(1.0, s / 10) * (1 - s / (steps + 5)), "grad_norm": 1.0,
                     "tokens_per_s": 900.0, "supervised_tokens": 400})
        if s % eval_every == 0:
            val = 1.2 + 0.0004 * (s - 30) ** 2 if u_shaped else 2.0 * math.exp(-s / 30) + 0.5
            best = min([r["val_loss"] for r in rows if "val_loss" in r] + [val])
            rows.append({"step": s, "epoch": s / 20, "val_loss": val, "best_val_loss": best})
    return rows


def eval_result(task: str = "generation") -> dict:
    if task == "classification":
        refs = ["pos", "neg", "pos", "neg", "pos", "neu"]
        tuned = ["pos", "neg", "neg", "neg", "pos", "pos"]
        base = ["neg", "neg", "neg", "pos", "maybe", "pos"]
        cm = {"labels": ["neg", "neu", "pos"], "matrix": [[2, 0, 0], [0, 0, 1], [1, 0, 2]]}
        metrics = lambda acc: {"accuracy": acc, "f1_macro": acc - 0.1, "confusion_matrix": cm,  # noqa: E731
                               "per_label": {}}
        models = {"baseline": {"name": "base-model", "metrics": metrics(0.33), "mean_latency_s": 0.02},
                  "tuned": {"name": "runs/r1", "metrics": metrics(0.67), "mean_latency_s": 0.02}}
    else:
        refs = ["4", "10", "<b>7</b>", "12", "3"]
        tuned = ["4", "10 or 11", "<script>alert(1)</script>", "12", "three"]
        base = ["five", "ten", "7", "I think 12", "3"]
        models = {"baseline": {"name": "base-model", "metrics": {"exact_match": 0.2, "exact_match_normalized": 0.2,
                                                                "bleu": 12.5, "chrf": 30.1, "rougeL": 0.25,
                                                                "perplexity": 35.0},
                               "mean_latency_s": 0.05},
                  "tuned": {"name": "runs/r1", "metrics": {"exact_match": 0.4, "exact_match_normalized": 0.4,
                                                          "bleu": 40.0, "chrf": 55.5, "rougeL": 0.5,
                                                          "perplexity": 6.0},
                            "mean_latency_s": 0.05}}
    examples = [{"where": f"val.jsonl:{i + 1}", "prompt": f"question {i} & more", "reference": r,
                 "baseline_prediction": b, "tuned_prediction": t, "baseline_latency_s": 0.05,
                 "tuned_latency_s": 0.05} for i, (r, t, b) in enumerate(zip(refs, tuned, base))]
    delta = {"exact_match": {"delta": 0.2, "low": -0.2, "high": 0.6}}
    return {"data": "val.jsonl", "task": task, "n_examples": len(refs), "generation": {"max_new_tokens": 32},
            "models": models, "examples": examples, "delta": delta}


def make_run(root: Path, *, u_shaped: bool = True, task: str | None = "generation") -> Path:
    run = root / "run1"
    run.mkdir(parents=True)
    cfg = {"base": "smollm2-135m-instruct", "method": "lora", "data": "train.jsonl", "output": str(run),
           "learning_rate": 2e-4, "num_train_epochs": 3, "per_device_train_batch_size": 8, "lora_r": 16,
           "lora_alpha": 32, "lora_dropout": 0.05, "target_modules": ["q_proj", "v_proj"], "seed": 42}
    (run / "config.yaml").write_text(yaml.safe_dump(cfg))
    (run / "data.json").write_text(json.dumps({
        "files": [{"path": "train.jsonl", "sha256": "ab" * 32, "examples": 200}], "train_examples": 180,
        "val_examples": 20, "truncated_examples": 0, "split_seed": 42, "val_source": "val_split=0.1"}))
    (run / "run.json").write_text(json.dumps({
        "schema": 1, "run_dir": str(run), "base": "smollm2-135m-instruct", "method": "lora", "adapter": True,
        "steps": 60, "best_step": 30, "stopped_early": False, "train_seconds": 125.4, "train_tokens": 54000,
        "results": {"best_val_loss": 1.2}}))
    (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in metrics_rows(u_shaped=u_shaped)))
    if task:
        (run / "eval.json").write_text(json.dumps(eval_result(task)))
    return run


def test_overfitting_signal_fires_on_u_shaped_val_loss_with_falling_train_loss():
    msg = overfitting_signal(metrics_rows(u_shaped=True))
    assert msg is not None
    assert "early stopping" in msg and "fewer epochs" in msg and "more data" in msg and "dropout" in msg
    assert "step 30" in msg  # names where the best validation loss was


def test_overfitting_advice_does_not_ask_to_enable_early_stopping_that_is_on():
    msg = overfitting_signal(metrics_rows(u_shaped=True), early_stopping=True)
    assert msg is not None and "enable early stopping" not in msg
    assert "Early stopping is on" in msg and "more data" in msg and "step 30" in msg


def test_overfitting_signal_silent_when_val_loss_keeps_falling():
    assert overfitting_signal(metrics_rows(u_shaped=False)) is None


def test_overfitting_signal_needs_two_consecutive_rises_and_falling_train_loss():
    ev = lambda s, v: {"step": s, "val_loss": v}  # noqa: E731
    tr = lambda s, v: {"step": s, "loss": v}  # noqa: E731
    one_rise = [tr(1, 2.0), ev(1, 1.5), tr(2, 1.5), ev(2, 1.2), tr(3, 1.0), ev(3, 1.3)]
    assert overfitting_signal(one_rise) is None
    two_rises = one_rise[:4] + [tr(3, 1.0), ev(3, 1.3), tr(4, 0.8), ev(4, 1.4)]
    assert overfitting_signal(two_rises) is not None
    train_also_rising = one_rise[:4] + [tr(3, 1.6), ev(3, 1.3), tr(4, 1.8), ev(4, 1.4)]
    assert overfitting_signal(train_also_rising) is None  # both rising: divergence, not overfitting
    assert overfitting_signal([]) is None


def test_report_has_sections_embedded_images_and_warning(tmp_path):
    out = write_report(make_run(tmp_path))
    assert out == tmp_path / "run1" / "report.html"
    text = out.read_text()
    for section in ("<h2>Summary</h2>", "<h2>Training curves</h2>", "<h2>Evaluation</h2>", "Worst examples"):
        assert section in text
    assert "smollm2-135m-instruct" in text and "lora_r" in text and "2m 5s" in text and "180" in text
    imgs = re.findall(r'<img alt="figure" src="data:image/png;base64,([A-Za-z0-9+/=]+)"', text)
    assert len(imgs) == 3  # loss, learning rate, metric bars
    assert 'id="overfitting"' in text
    assert not re.search(r'(src|href)="(?!data:)', text)  # nothing fetched from outside the file


def test_report_escapes_user_text(tmp_path):
    text = write_report(make_run(tmp_path)).read_text()
    assert "<script>alert(1)</script>" not in text
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in text
    assert "question 1 &amp; more" in text


def test_worst_examples_are_tuned_failures_lowest_score_first():
    worst = worst_examples(eval_result("generation"))
    # scores 0, 0 (file order kept), then the partly right "10 or 11" (ROUGE-L 0.5); exact matches left out
    assert [w["tuned_prediction"] for w in worst] == ["<script>alert(1)</script>", "three", "10 or 11"]
    assert [round(w["score"], 2) for w in worst] == [0.0, 0.0, 0.5]


def test_metric_bars_put_fractions_and_bleu_on_one_scale_and_skip_perplexity():
    vals = bar_values(eval_result("generation")["models"])
    assert vals["exact_match"] == {"baseline": 20.0, "tuned": 40.0}
    assert vals["bleu"] == {"baseline": 12.5, "tuned": 40.0}
    assert "perplexity" not in vals


def test_classification_report_has_confusion_matrix(tmp_path):
    text = write_report(make_run(tmp_path, task="classification", u_shaped=False)).read_text()
    assert text.count("data:image/png;base64,") == 4  # loss, lr, bars, confusion matrices
    assert 'id="overfitting"' not in text
    assert "Worst examples" in text and "neu" in text


def test_report_without_eval_json_says_how_to_get_one(tmp_path):
    text = write_report(make_run(tmp_path, task=None)).read_text()
    assert "No eval.json yet" in text and text.count("data:image/png;base64,") == 2


def color_pixels(png: Path, hex_color: str, tol: int = 40) -> int:
    from PIL import Image

    want = tuple(int(hex_color[i:i + 2], 16) for i in (1, 3, 5))
    img = Image.open(png).convert("RGB")
    return sum(1 for px in img.getdata() if all(abs(a - b) <= tol for a, b in zip(px, want)))


@pytest.mark.integration  # starts a headless browser: out of the quick loop
@pytest.mark.skipif(not Path(CHROMIUM).exists() and not os.environ.get("CI"),
                    reason="headless Chromium not installed (run scripts/install-chromium.sh); required in CI")
def test_report_renders_loss_curve_in_headless_chromium(tmp_path):
    report = write_report(make_run(tmp_path))
    shot = tmp_path / "report.png"
    subprocess.run([CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                    "--disable-background-networking", "--disable-component-update", "--disable-sync",
                    "--hide-scrollbars", f"--user-data-dir={tmp_path / 'profile'}", f"--screenshot={shot}",
                    "--window-size=1200,2000", report.resolve().as_uri()],
                   check=True, capture_output=True, timeout=120)
    keep = os.environ.get("TUNEFORGE_KEEP_SCREENSHOT")
    if keep:
        shutil.copy(shot, keep)
    # the train-loss line is drawn in a colour used nowhere else: a blank, broken or missing image has none,
    # and the legend swatch alone gives ~100 pixels; the whole curve at this size gives ~1700
    assert color_pixels(shot, TRAIN_LOSS_COLOR) > 800
