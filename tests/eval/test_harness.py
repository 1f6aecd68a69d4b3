"""`tuneforge eval`: batched generation with a real (tiny) model, metrics, deltas with CIs, eval.json."""

import json

import pytest

from tests.helpers import arithmetic_rows, write_jsonl
from tests.helpers import tf
from tuneforge.eval import metrics as M
from tuneforge.eval.harness import evaluate_file, generate, load_for_inference


def test_batched_generation_equals_one_by_one(tiny_dir):
    loaded = load_for_inference(str(tiny_dir))
    prompts = ["add 1 and 2", "a much longer prompt that needs left padding in a batch", "hi"]
    batched, lat = generate(loaded, prompts, max_new_tokens=6, batch_size=3)
    single = [generate(loaded, [p], max_new_tokens=6, batch_size=1)[0][0] for p in prompts]
    assert batched == single and len(lat) == 3


def test_eval_with_baseline_reports_metrics_deltas_and_examples(tiny_dir, tmp_path):
    data = write_jsonl(tmp_path / "test.jsonl", arithmetic_rows(6, seed=5))
    res = evaluate_file(str(tiny_dir), str(data), baseline=str(tiny_dir), max_new_tokens=4, progress=False)
    assert set(res["models"]) == {"baseline", "tuned"} and res["n_examples"] == 6
    m = res["models"]["tuned"]["metrics"]
    preds = [e["tuned_prediction"] for e in res["examples"]]
    refs = [e["reference"] for e in res["examples"]]
    assert m["bleu"] == M.bleu(preds, refs) and m["perplexity"] > 1
    assert res["delta"]["exact_match"]["delta"] == 0  # same model on both sides
    assert all(e["tuned_latency_s"] > 0 for e in res["examples"])
    assert res["generation"]["do_sample"] is False


@pytest.mark.cli
def test_eval_cli_writes_eval_json_and_prints_a_table(tiny_dir, tmp_path):
    data = write_jsonl(tmp_path / "test.jsonl", arithmetic_rows(4, seed=6))
    out = tmp_path / "eval.json"
    r = tf("eval", str(tiny_dir), "--data", str(data), "--max-new-tokens", "3", "--output", str(out),
           "--no-progress")
    assert r.returncode == 0, r.stderr
    assert json.loads(out.read_text())["n_examples"] == 4 and "exact_match" in r.stdout


def test_eval_refuses_a_test_file_in_another_format_than_training(tmp_path):
    import pytest

    from tuneforge.errors import TuneforgeError

    run = tmp_path / "run"
    run.mkdir()
    train = write_jsonl(tmp_path / "train.jsonl", arithmetic_rows(3))
    (run / "run.json").write_text(json.dumps({"base": "x", "method": "lora"}))
    (run / "config.yaml").write_text(f"data: {train}\n")
    chat = write_jsonl(tmp_path / "chat.jsonl", [{"messages": [{"role": "user", "content": "a"},
                                                               {"role": "assistant", "content": "b"}]}])
    with pytest.raises(TuneforgeError, match="chat.jsonl: examples are chat but .* trained on prompt_completion"):
        evaluate_file(str(run), str(chat), progress=False)


def test_eval_of_an_empty_file_is_a_clear_error(tiny_dir, tmp_path):
    import pytest

    from tuneforge.errors import DataError

    (tmp_path / "empty.jsonl").write_text("")
    with pytest.raises(DataError, match="empty.jsonl: empty_file"):
        evaluate_file(str(tiny_dir), str(tmp_path / "empty.jsonl"), progress=False)


def test_eval_refuses_a_label_the_run_never_saw(tmp_path):
    import pytest

    from tuneforge.errors import TuneforgeError

    run = tmp_path / "run"
    run.mkdir()
    train = write_jsonl(tmp_path / "train.jsonl", [{"text": "good", "label": "pos"}, {"text": "bad", "label": "neg"}])
    (run / "run.json").write_text(json.dumps({"base": "x", "method": "lora"}))
    (run / "config.yaml").write_text(f"data: {train}\n")
    test = write_jsonl(tmp_path / "test.jsonl", [{"text": "meh", "label": "pos"}, {"text": "so-so", "label": "mixed"}])
    with pytest.raises(TuneforgeError, match=r"test.jsonl:2: label 'mixed' is not in the label set .*neg, pos"):
        evaluate_file(str(run), str(test), progress=False)


def test_metrics_option_selects_and_rejects_unknown_names(tiny_dir, tmp_path):
    import pytest

    from tuneforge.errors import TuneforgeError

    data = write_jsonl(tmp_path / "t.jsonl", arithmetic_rows(3, seed=9))
    res = evaluate_file(str(tiny_dir), str(data), max_new_tokens=2, progress=False, metrics=["bleu", "exact_match"])
    assert set(res["models"]["tuned"]["metrics"]) == {"bleu", "exact_match"}
    with pytest.raises(TuneforgeError, match="unknown metric.*blue"):
        evaluate_file(str(tiny_dir), str(data), max_new_tokens=2, progress=False, metrics=["blue"])
    sampled = evaluate_file(str(tiny_dir), str(data), max_new_tokens=3, progress=False, temperature=0.8, seed=1)
    again = evaluate_file(str(tiny_dir), str(data), max_new_tokens=3, progress=False, temperature=0.8, seed=1)
    assert sampled["generation"]["do_sample"] is True
    assert [e["tuned_prediction"] for e in sampled["examples"]] == [e["tuned_prediction"] for e in again["examples"]]
