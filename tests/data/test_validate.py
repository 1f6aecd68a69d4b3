"""The pre-flight report: counts, errors with lines, tokens, truncation, duplicates, balance, warnings."""

import json

import pytest

from tests.helpers import arithmetic_rows, write_jsonl
from tuneforge.data.formats import Sample
from tuneforge.data.tokenize import encode
from tuneforge.data.validate import check_file
from tuneforge.models.tiny import tiny_tokenizer


def _pc(p, c):
    return {"prompt": p, "completion": c}


def test_report_counts_tokens_truncation_and_duplicates(tmp_path):
    rows = [_pc("Show all users", "SELECT * FROM users;"), _pc("Show all users", "SELECT * FROM users;"),
            _pc("show ALL users!", "select * from users"), _pc("x " * 200, "long")]
    rep = check_file(write_jsonl(tmp_path / "d.jsonl", rows), tokenizer=tiny_tokenizer(), max_seq_len=128)
    d = rep.to_dict()
    assert d["n_examples"] == 4 and d["format"] == "prompt_completion" and rep.ok
    assert d["duplicates"]["exact"] == [[1, 2]] and d["duplicates"]["near"] == [[1, 2, 3]]
    assert d["n_truncated"] == 1 and d["tokens"]["max"] > 400
    assert any("1000" in w for w in d["warnings"]) and any("truncated" in w for w in d["warnings"])
    json.dumps(d)
    assert "OK" in rep.render()


def test_report_lists_every_error_with_its_line(tmp_path):
    f = tmp_path / "d.jsonl"
    f.write_text(json.dumps(_pc("a", "b")) + '\n{"messages": [{"role": "robot", "content": "x"}]}\n{"prompt": 1}\n')
    rep = check_file(f)
    assert not rep.ok
    assert [(e["line"], e["code"]) for e in rep.errors] == [(2, "unrecognized_role"), (3, "unknown_format")]
    assert "d.jsonl:2: unrecognized_role" in rep.render()


def test_label_balance_and_imbalance_warning(tmp_path):
    rows = [{"text": f"t{i}", "label": "a"} for i in range(12)] + [{"text": "u", "label": "b"}]
    rep = check_file(write_jsonl(tmp_path / "d.jsonl", rows))
    assert rep.label_balance == {"a": 12, "b": 1}
    assert any("imbalance" in w for w in rep.warnings)


def test_inconsistent_formatting_is_warned(tmp_path):
    rows = [{"messages": [{"role": "system", "content": "s"}, {"role": "user", "content": "q"},
                          {"role": "assistant", "content": "a"}]},
            {"messages": [{"role": "user", "content": "q2"}, {"role": "assistant", "content": "a2"}]},
            _pc("p", "c")]
    rep = check_file(write_jsonl(tmp_path / "d.jsonl", rows))
    assert sum("inconsistent formatting" in w for w in rep.warnings) == 2
    # training refuses a file with two formats, so the check fails on it too, at the first odd row
    assert [(e["line"], e["code"]) for e in rep.errors] == [(3, "inconsistent_format")]


KEYS = {"path", "n_examples", "format", "errors", "warnings", "tokens", "supervised_tokens", "n_truncated",
        "max_seq_len", "duplicates", "label_balance"}


def test_report_json_has_the_stable_keys(tmp_path):
    f = tmp_path / "d.jsonl"
    f.write_text(json.dumps(_pc("a", "b")) + "\n{}\n")
    d = check_file(f, tokenizer=tiny_tokenizer()).to_dict()
    assert KEYS <= set(d) and json.loads(json.dumps(d)) == d
    assert set(d["tokens"]) == {"min", "max", "mean", "p50", "p95", "total", "histogram"}
    assert sum(d["tokens"]["histogram"]["counts"]) == d["n_valid"]
    assert set(d["duplicates"]) == {"exact", "near"}
    assert d["errors"] == [{"where": f"{f}:2", "line": 2, "field": None, "code": "unknown_format",
                            "message": d["errors"][0]["message"]}]
    no_tok = check_file(f).to_dict()
    assert no_tok["tokens"] is None and no_tok["supervised_tokens"] is None and no_tok["label_balance"] is None


def test_token_lengths_and_truncation_match_encode_with_tiny_tokenizer(tmp_path):
    tok = tiny_tokenizer()
    rows = [_pc("q" * n, "a") for n in (10, 50, 80, 200)]
    full = [encode(Sample(messages=[{"role": "user", "content": r["prompt"]}, {"role": "assistant", "content": "a"}]),
                   tok, max_seq_len=10**6) for r in rows]
    lens = [len(e.input_ids) for e in full]
    assert lens == [n + 22 for n in (10, 50, 80, 200)]  # ChatML framing costs 22 byte-level tokens here
    rep = check_file(write_jsonl(tmp_path / "d.jsonl", rows), tokenizer=tok, max_seq_len=100)
    assert (rep.tokens["min"], rep.tokens["max"], rep.tokens["total"]) == (lens[0], lens[-1], sum(lens))
    assert rep.n_truncated == 2 and any("2 example(s) are longer" in w for w in rep.warnings)
    # the 80-char prompt keeps its answer token but loses <|im_end|>; the 200-char one loses the whole answer
    assert rep.supervised_tokens == 2 + 2 + 1 + 0
    assert rep.n_unsupervised == 1 and any("1 lose their whole answer" in w for w in rep.warnings)


def test_near_duplicates_differ_only_in_case_spacing_or_punctuation(tmp_path):
    rows = [_pc("What is 2+3?", "5"), _pc("what is  2+3", "5."), _pc("What is 2*3?", "6"), _pc("What is 2+3?", "5")]
    d = check_file(write_jsonl(tmp_path / "d.jsonl", rows)).duplicates
    assert d == {"exact": [[1, 4]], "near": [[1, 2, 4]]}


@pytest.mark.integration  # a timing check on a 100k-row file: out of the quick loop
def test_duplicate_check_is_fast_on_100k_rows(tmp_path):
    import time

    rows = arithmetic_rows(100_000)
    f = write_jsonl(tmp_path / "big.jsonl", rows)
    t = time.perf_counter()
    rep = check_file(f)
    assert time.perf_counter() - t < 10 and rep.n_examples == 100_000 and rep.duplicates["exact"]
    assert not any("1000" in w for w in rep.warnings)


def test_text_only_file_warns_that_there_is_no_assistant_reply(tmp_path):
    rep = check_file(write_jsonl(tmp_path / "d.jsonl", [{"text": "a"}, {"text": "b"}]))
    assert rep.ok and any("no example has an assistant reply" in w for w in rep.warnings)


def test_single_label_and_balanced_labels(tmp_path):
    one = check_file(write_jsonl(tmp_path / "a.jsonl", [{"text": "x", "label": "a"}, {"text": "y", "label": "a"}]))
    assert any("nothing to classify" in w for w in one.warnings)
    rows = [{"text": f"t{i}", "label": "ab"[i % 2]} for i in range(10)]
    even = check_file(write_jsonl(tmp_path / "b.jsonl", rows))
    assert even.label_balance == {"a": 5, "b": 5} and not any("imbalance" in w for w in even.warnings)


def test_missing_file_is_a_failed_report_not_a_crash(tmp_path):
    rep = check_file(tmp_path / "nope.jsonl")
    assert not rep.ok and rep.errors[0]["code"] == "file_not_found" and "FAILED" in rep.render()


def test_tokenizer_without_chat_template_is_reported(tmp_path):
    tok = tiny_tokenizer()
    tok.chat_template = None
    rep = check_file(write_jsonl(tmp_path / "d.jsonl", [_pc("a", "b")]), tokenizer=tok)
    assert [e["code"] for e in rep.errors] == ["template"]


def test_render_is_plain_readable_text(tmp_path):
    rows = [_pc("Show all users", "SELECT * FROM users;")] * 2 + [{"prompt": "x"}]
    text = check_file(write_jsonl(tmp_path / "d.jsonl", rows), tokenizer=tiny_tokenizer()).render()
    lines = text.splitlines()
    assert lines[0].endswith("d.jsonl") and "examples: 3 (2 valid)" in lines[1]
    assert "tokens per example" in text and "exact: lines 1, 2" in text
    assert "d.jsonl:3: unknown_format" in text and lines[-1] == "FAILED: 1 error(s)"
    assert "[bold" not in text and "[/" not in text


@pytest.mark.parametrize("n,warned", [(999, True), (1000, False)])
def test_fewer_than_1000_examples_is_warned(n, warned, tmp_path):
    rep = check_file(write_jsonl(tmp_path / "d.jsonl", [_pc(f"p{i}", "c") for i in range(n)]))
    assert any("< 1000 examples" in w for w in rep.warnings) == warned


def test_the_token_histogram_counts_every_example_and_marks_truncation():
    from tuneforge.data.validate import histogram

    h = histogram([1, 5, 5, 39, 40], max_seq_len=20, bins=4)
    assert h == {"edges": [0, 10, 20, 30, 40], "counts": [3, 0, 0, 2]}
    assert sum(c for c, lo in zip(h["counts"], h["edges"]) if lo >= 20) == 2  # the truncated ones
