"""RL rows (OpenAI's reinforcement format): messages = the prompt, every key = the grader's item."""

import json

import pytest

from tuneforge.data.formats import REINFORCEMENT, to_sample
from tuneforge.data.load import load_samples, scan
from tuneforge.data.validate import check_file
from tuneforge.errors import DataError


def write(tmp_path, rows):
    p = tmp_path / "rl.jsonl"
    p.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return p


def test_rl_row_keeps_prompt_and_item():
    rec = {"messages": [{"role": "system", "content": "s"}, {"role": "user", "content": "2+2?"}], "answer": "4",
           "tags": {"k": [1]}}
    s = to_sample(rec, REINFORCEMENT, "f.jsonl:3")
    assert s.prompt_messages == rec["messages"] and s.reference is None
    assert s.extra["item"]["answer"] == "4" and s.extra["item"]["tags"] == {"k": [1]}


@pytest.mark.parametrize("rec,field,code", [
    ({"messages": [], "answer": "4"}, "messages", "missing_messages_list"),
    ({"answer": "4"}, "messages", "missing_messages_list"),
    ({"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]},
     "messages[1].role", "invalid_prompt"),
    ({"messages": [{"role": "system", "content": "q"}]}, "messages", "invalid_prompt"),
    ({"messages": [{"role": "usr", "content": "q"}]}, "messages[0].role", "unrecognized_role"),
    ({"messages": [{"role": "user", "content": ""}]}, "messages[0].content", "missing_content"),
])
def test_rl_row_errors_name_line_and_field(rec, field, code):
    with pytest.raises(DataError) as e:
        to_sample(rec, REINFORCEMENT, "f.jsonl:7")
    assert (e.value.line, e.value.field, e.value.code) == (7, field, code)


def test_data_check_detects_rl_file_and_reports_errors_by_line(tmp_path):
    p = write(tmp_path, [{"messages": [{"role": "user", "content": "2+2?"}], "answer": "4"},
                         {"messages": [{"role": "user", "content": "3+3?"}], "answer": "6"},
                         {"messages": [{"role": "user", "content": ""}], "answer": "0"}])
    rep = check_file(p)
    assert rep.format == REINFORCEMENT and rep.n_valid == 2
    assert [(e["line"], e["code"]) for e in rep.errors] == [(3, "missing_content")]
    assert any("item keys a grader can read: answer" in w for w in rep.warnings)
    assert len(load_samples(write(tmp_path, [{"messages": [{"role": "user", "content": "q"}], "a": 1}]),
                            REINFORCEMENT)) == 1


def test_chat_file_with_one_missing_answer_stays_chat(tmp_path):
    """Only a file with no answer at all is RL prompts: one bad SFT row is still the SFT error."""
    rows = [{"messages": [{"role": "user", "content": f"q{i}"}, {"role": "assistant", "content": "a"}]}
            for i in range(3)] + [{"messages": [{"role": "user", "content": "hi"}]}]
    res = scan(write(tmp_path, rows))
    assert res.main_format == "chat" and [e.code for e in res.errors] == ["example_missing_assistant_message"]
