"""Readers and format detection: every format and file type, and errors that name file, line and code."""

import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tests.helpers import write_jsonl
from tuneforge.data.formats import detect_format
from tuneforge.data.load import load_pairs, load_samples, read_records, scan
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


def test_json_records_carry_the_line_they_start_on(tmp_path):
    f = tmp_path / "d.json"
    f.write_text(json.dumps([ROWS["prompt_completion"], ROWS["prompt_completion"], {"prompt": "x"}], indent=2))
    assert [line for line, _ in read_records(f)] == [2, 6, 10]
    with pytest.raises(DataError, match=r"d.json:10: unknown_format"):
        load_samples(f)


def test_json_file_must_hold_a_list(tmp_path):
    f = tmp_path / "d.json"
    f.write_text(json.dumps(ROWS["text"]))
    with pytest.raises(DataError) as e:
        load_samples(f)
    assert e.value.code == "data_type" and ".jsonl" in str(e.value)


def test_broken_json_names_the_line(tmp_path):
    f = tmp_path / "d.json"
    f.write_text('[\n  {"text": "a"},\n  {"text": "b"\n  {"text": "c"}\n]\n')
    with pytest.raises(DataError) as e:
        list(read_records(f))
    assert e.value.code == "invalid_json" and e.value.line == 4


def test_csv_line_numbers_count_the_header_and_multiline_cells(tmp_path):
    f = tmp_path / "d.csv"
    f.write_text('prompt,completion\n"two\nlines",a\n\nc,\n')
    assert [line for line, _ in read_records(f)] == [2, 5]
    with pytest.raises(DataError, match=r"d.csv:5: missing_field \[completion\]"):
        load_samples(f)


def test_csv_with_byte_order_mark_and_extra_columns_loads(tmp_path):
    f = tmp_path / "d.csv"
    f.write_text("\ufeffid,text,label\n1,good,pos\n2,bad,neg\n", encoding="utf-8")
    assert [(s.format, s.label) for s in load_samples(f)] == [("classification", "pos"), ("classification", "neg")]


def test_csv_row_with_too_many_cells_is_an_error(tmp_path):
    f = tmp_path / "d.csv"
    f.write_text("prompt,completion\na,b,c\n")
    with pytest.raises(DataError, match=r"d.csv:2: invalid_csv"):
        load_samples(f)


def test_parquet_rows_count_from_one_and_nested_chats_load(tmp_path):
    rows = [ROWS["chat"], {"messages": [{"role": "user", "content": "q", "name": "bob"},
                                        {"role": "assistant", "content": "a"}]}, {"messages": []}]
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "d.parquet")  # struct union: absent "name" is null
    res = scan(tmp_path / "d.parquet")
    assert res.lines == [1, 2, 3] and res.samples[0].messages == ROWS["chat"]["messages"]
    assert [(e.line, e.code) for e in res.errors] == [(3, "missing_messages_list")]


def test_scan_goes_on_past_malformed_json_lines_and_keeps_rows_aligned(tmp_path):
    f = tmp_path / "d.jsonl"
    f.write_text(json.dumps(ROWS["text"]) + "\n{oops\n" + json.dumps({"x": 1}) + "\n" + json.dumps(ROWS["text"]) + "\n")
    res = scan(f)
    assert [(e.line, e.code) for e in res.errors] == [(2, "invalid_json"), (3, "unknown_format")]
    assert res.lines == [1, 2, 3, 4] and res.records[1] is None and res.records[2] == {"x": 1}
    assert [s is not None for s in res.samples] == [True, False, False, True]
    assert res.formats == {"text": 2} and [ln for ln, _ in res.valid] == [1, 4]


def test_scan_reports_file_level_errors_instead_of_raising(tmp_path):
    res = scan(tmp_path / "nope.csv")
    assert [e.code for e in res.errors] == ["file_not_found"] and not res.records


@pytest.mark.parametrize("name,content", [("e.jsonl", "\n\n  \n"), ("e.csv", "prompt,completion\n"),
                                          ("e.json", "[]"), ("e.csv", "")])
def test_files_without_examples_are_empty_file(name, content, tmp_path):
    (tmp_path / name).write_text(content)
    with pytest.raises(DataError) as e:
        load_samples(tmp_path / name)
    assert e.value.code == "empty_file" and name in str(e.value)


def test_non_utf8_line_names_the_line(tmp_path):
    f = tmp_path / "d.jsonl"
    f.write_bytes(json.dumps(ROWS["text"]).encode() + b"\n" + b'{"text": "caf\xe9"}\n')
    with pytest.raises(DataError, match=r"d.jsonl:2: encoding"):
        load_samples(f)


def test_forced_format_applies_to_every_row(tmp_path):
    f = write_jsonl(tmp_path / "d.jsonl", [ROWS["classification"]])
    assert load_samples(f, fmt="text")[0].text == "great film"
    with pytest.raises(DataError, match="unknown_format"):
        load_samples(f, fmt="tsv")


def test_load_pairs_keeps_the_raw_record_next_to_each_sample(tmp_path):
    f = write_jsonl(tmp_path / "d.jsonl", [ROWS["alpaca"]])
    [(s, rec)] = load_pairs(f)
    assert rec == ROWS["alpaca"] and s.reference == "hello"
