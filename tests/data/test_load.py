"""Readers and format detection: every format and file type, and errors that name file, line and code."""

import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tests.conftest import write_jsonl
from tuneforge.data.formats import detect_format
from tuneforge.data.load import load_samples, scan
from tuneforge.errors import DataError

ROWS = {
    "prompt_completion": {"prompt": "Translate to SQL: Show all users", "completion": "SELECT * FROM users;"},
    "chat": {"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]},
    "alpaca": {"instruction": "Translate", "input": "bonjour", "output": "hello"},
    "classification": {"text": "great film", "label": "pos"},
    "text": {"text": "Once upon a time"},
}


@pytest.mark.parametrize("fmt", list(ROWS))
def test_each_format_is_detected_and_converted(fmt, tmp_path):
    f = write_jsonl(tmp_path / "d.jsonl", [ROWS[fmt]])
    s = load_samples(f)[0]
    assert detect_format(ROWS[fmt]) == fmt and s.format == fmt and s.where == f"{f}:1"
    if fmt == "text":
        assert s.text == "Once upon a time" and s.messages is None
    else:
        assert s.messages[-1]["role"] == "assistant"
    if fmt == "alpaca":
        assert s.messages[0]["content"] == "Translate\n\nbonjour"
    if fmt == "classification":
        assert s.label == "pos" and s.reference == "pos"


def test_csv_parquet_and_json_files_load_the_same_samples(tmp_path):
    rows = [ROWS["prompt_completion"], {"prompt": "Count users", "completion": "SELECT COUNT(*) FROM users;"}]
    (tmp_path / "d.csv").write_text("prompt,completion\n" + "".join(f'"{r["prompt"]}","{r["completion"]}"\n'
                                                                    for r in rows))
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "d.parquet")
    (tmp_path / "d.json").write_text(json.dumps(rows))
    want = [s.messages for s in load_samples(write_jsonl(tmp_path / "d.jsonl", rows))]
    for ext in ("csv", "parquet", "json"):
        assert [s.messages for s in load_samples(tmp_path / f"d.{ext}")] == want


def test_malformed_jsonl_line_names_file_and_line(tmp_path):
    f = tmp_path / "d.jsonl"
    f.write_text(json.dumps(ROWS["text"]) + "\n\n{oops\n")
    with pytest.raises(DataError, match=r"d.jsonl:3: invalid_json"):
        load_samples(f)


def test_csv_missing_cell_names_the_line_and_field(tmp_path):
    f = tmp_path / "d.csv"
    f.write_text("prompt,completion\na,b\nc,\n")
    with pytest.raises(DataError, match=r"d.csv:3: missing_field \[completion\]"):
        load_samples(f)


@pytest.mark.parametrize("row,code", [
    ([1, 2], "data_type"),
    ({"messages": "hi"}, "missing_messages_list"),
    ({"messages": [{"role": "user"}]}, "message_missing_key"),
    ({"messages": [{"role": "user", "content": "a", "mood": "x"}]}, "message_unrecognized_key"),
    ({"messages": [{"role": "robot", "content": "a"}]}, "unrecognized_role"),
    ({"messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": ""}]}, "missing_content"),
    ({"messages": [{"role": "user", "content": "a"}]}, "example_missing_assistant_message"),
    ({"question": "a", "answer": "b"}, "unknown_format"),
])
def test_openai_data_check_codes(row, code, tmp_path):
    f = write_jsonl(tmp_path / "d.jsonl", [ROWS["chat"], row])
    with pytest.raises(DataError) as e:
        load_samples(f)
    assert e.value.code == code and e.value.line == 2


def test_mixed_formats_in_one_file_are_refused_for_training(tmp_path):
    f = write_jsonl(tmp_path / "d.jsonl", [ROWS["chat"], ROWS["prompt_completion"]])
    with pytest.raises(DataError, match="inconsistent_format"):
        load_samples(f)


def test_scan_collects_every_error_not_just_the_first(tmp_path):
    f = write_jsonl(tmp_path / "d.jsonl", [ROWS["chat"], {"messages": []}, ROWS["chat"], {"prompt": "x"}])
    res = scan(f)
    assert [e.line for e in res.errors] == [2, 4] and sum(s is not None for s in res.samples) == 2


@pytest.mark.parametrize("name,content,code", [("e.jsonl", "", "empty_file"), ("d.txt", "x", "file_type")])
def test_empty_or_unsupported_files_are_errors(name, content, code, tmp_path):
    (tmp_path / name).write_text(content)
    with pytest.raises(DataError) as e:
        load_samples(tmp_path / name)
    assert e.value.code == code


def test_missing_file_is_an_error(tmp_path):
    with pytest.raises(DataError, match="file_not_found"):
        load_samples(tmp_path / "nope.jsonl")
