"""Preference rows (OpenAI's DPO shape and TRL's prompt/chosen/rejected): parsing, file:line errors, `data check`
lengths and duplicates, splits that keep every pair of a prompt on one side, and tokenization with the loss on the
answers only."""

from __future__ import annotations

import json

import pytest

from tests.conftest import write_jsonl
from tuneforge.data.formats import Preference, detect_format, to_sample
from tuneforge.data.load import load_samples, read_records
from tuneforge.data.split import split_file, split_records
from tuneforge.data.tokenize import IGNORE, encode_preference
from tuneforge.data.validate import check_file
from tuneforge.errors import DataError
from tuneforge.models.tiny import tiny_tokenizer


def openai_row(q: str, good: str, bad: str, system: str | None = None) -> dict:
    msgs = ([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": q}]
    return {"input": {"messages": msgs}, "preferred_output": [{"role": "assistant", "content": good}],
            "non_preferred_output": [{"role": "assistant", "content": bad}]}


def parse(rec: dict, where: str = "f.jsonl:3"):
    return to_sample(rec, detect_format(rec, where), where)


def test_openai_and_trl_shapes_give_the_same_pair():
    a = parse(openai_row("2+2?", "4", "5"))
    b = parse({"prompt": "2+2?", "chosen": "4", "rejected": "5"})
    c = parse({"prompt": [{"role": "user", "content": "2+2?"}], "chosen": [{"role": "assistant", "content": "4"}],
               "rejected": [{"role": "assistant", "content": "5"}]})
    d = parse({"chosen": [{"role": "user", "content": "2+2?"}, {"role": "assistant", "content": "4"}],
               "rejected": [{"role": "user", "content": "2+2?"}, {"role": "assistant", "content": "5"}]})
    for p in (a, b, c, d):
        assert isinstance(p, Preference) and p.format == "preference"
        assert (p.prompt, p.chosen, p.rejected) == ([{"role": "user", "content": "2+2?"}],
                                                    [{"role": "assistant", "content": "4"}],
                                                    [{"role": "assistant", "content": "5"}])
        assert p.messages == p.prompt + p.chosen and p.prompt_messages == p.prompt and p.reference == "4"


@pytest.mark.parametrize("rec, field, code", [
    ({"input": {"messages": [{"role": "user", "content": "q"}]},
      "preferred_output": [{"role": "assistant", "content": "a"}]}, "non_preferred_output", "missing_field"),
    ({"prompt": "q", "rejected": "b"}, "chosen", "missing_field"),
    ({"prompt": "q", "chosen": "same answer", "rejected": " same answer "}, "rejected", "identical_answers"),
    ({"prompt": "q", "chosen": "", "rejected": "b"}, "chosen", "missing_content"),
    ({"prompt": "q", "chosen": [{"role": "assistant", "content": "  "}], "rejected": "b"}, "chosen[0].content",
     "missing_content"),
    ({"prompt": "q", "chosen": [{"role": "user", "content": "a"}], "rejected": "b"}, "chosen[0].role",
     "unrecognized_role"),
    ({"prompt": [], "chosen": "a", "rejected": "b"}, "prompt", "data_type"),
    ({"input": "q", "preferred_output": "a", "non_preferred_output": "b"}, "input", "missing_field"),
])
def test_bad_rows_name_file_line_field_and_code(rec, field, code):
    with pytest.raises(DataError) as e:
        parse(rec, "prefs.jsonl:7")
    assert (e.value.path, e.value.line, e.value.field, e.value.code) == ("prefs.jsonl", 7, field, code)


def test_data_check_reports_every_bad_row_lengths_and_repeated_prompts(tmp_path):
    rows = [openai_row(f"question {i}", f"good answer {i}", "bad") for i in range(6)]
    rows.append(openai_row("Question 0!", "another good one", "another bad one"))  # same prompt, other pair
    rows.append(openai_row("question 1", "good answer 1", "bad"))  # exact duplicate of row 2
    rows.append({"prompt": "q", "chosen": "x"})  # line 9: missing side
    rows.append({"prompt": "q", "chosen": "x", "rejected": "x"})  # line 10: identical sides
    path = write_jsonl(tmp_path / "prefs.jsonl", rows)
    rep = check_file(path, tokenizer=tiny_tokenizer())
    assert [(e["line"], e["code"], e["field"]) for e in rep.errors] == [
        (9, "missing_field", "rejected"), (10, "identical_answers", "rejected")]
    assert rep.format == "preference" and rep.n_valid == 8
    assert rep.duplicates["exact"] == [[2, 8]]
    assert [1, 7] in rep.duplicates["near"]
    assert any("several preference pairs" in w for w in rep.warnings)
    assert rep.answer_tokens["rejected"]["max"] < rep.answer_tokens["chosen"]["max"]
    text = rep.render()
    assert "answer tokens: chosen mean" in text and "prefs.jsonl:9: missing_field [rejected]" in text


def test_split_keeps_every_pair_of_a_prompt_and_its_near_duplicates_on_one_side(tmp_path):
    rows = []
    for i in range(40):
        for k in range(3):  # three pairs per prompt, the prompt spelled differently each time
            q = f"question {i}" if k == 0 else (f"Question {i}?" if k == 1 else f"QUESTION  {i}")
            rows.append(openai_row(q, f"good {i}.{k}", f"bad {i}.{k}"))
    idx = split_records(rows, test=0.2, val=0.1, seed=3)
    side = {}
    for name, ids in idx.items():
        for i in ids:
            assert side.setdefault(i // 3, name) == name
    assert len(idx["test"]) == 24 and len(idx["val"]) == 12
    path = write_jsonl(tmp_path / "prefs.jsonl", rows)
    written = split_file(path, tmp_path / "out", test=0.2, val=0.1, seed=3)
    back = [r for _, r in read_records(written["test"][0])]
    assert back == [rows[i] for i in idx["test"]]  # written as given: both answers travel with the row


def test_loss_mask_covers_each_answer_only_and_the_prompt_is_shared():
    tok = tiny_tokenizer()
    pair = parse({"prompt": [{"role": "system", "content": "be terse"}, {"role": "user", "content": "hi"},
                             {"role": "assistant", "content": "hello"}, {"role": "user", "content": "2+2?"}],
                  "chosen": "four", "rejected": "five, I think"})
    e = encode_preference(pair, tok)
    sup = lambda x: tok.decode([t for t, lab in zip(x.input_ids, x.labels) if lab != IGNORE])  # noqa: E731
    assert sup(e.chosen) == "four<|im_end|>" and sup(e.rejected) == "five, I think<|im_end|>"
    assert e.chosen.input_ids[:e.prompt_len] == e.rejected.input_ids[:e.prompt_len] == e.prompt_ids
    assert tok.decode(e.prompt_ids) == tok.apply_chat_template(pair.prompt, tokenize=False,
                                                               add_generation_prompt=True)
    short = encode_preference(pair, tok, max_seq_len=e.prompt_len + 2)
    assert short.truncated and short.supervised and short.chosen.n_supervised == 2
    assert not encode_preference(pair, tok, max_seq_len=e.prompt_len).supervised


def test_training_loader_reads_preference_files(tmp_path):
    path = write_jsonl(tmp_path / "p.jsonl", [openai_row("a", "b", "c"), {"prompt": "d", "chosen": "e",
                                                                          "rejected": "f"}])
    got = load_samples(path)
    assert [type(s) for s in got] == [Preference, Preference] and got[1].where.endswith("p.jsonl:2")
    assert json.loads(path.read_text().splitlines()[0])["preferred_output"][0]["content"] == "b"
