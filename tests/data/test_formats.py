"""Format detection and conversion: every format, each of OpenAI's data-check codes, and the dedup keys."""

import pytest

from tuneforge.data.formats import detect_format, exact_key, near_dup_text, near_key, to_sample
from tuneforge.errors import DataError

CHAT = {"messages": [{"role": "system", "content": "be terse"}, {"role": "user", "content": "hi"},
                     {"role": "assistant", "content": "hello"}]}


def _sample(rec, where="d.jsonl:7"):
    return to_sample(rec, detect_format(rec, where), where)


def _code(rec, fmt=None):
    with pytest.raises(DataError) as e:
        to_sample(rec, fmt or detect_format(rec, "d.jsonl:7"), "d.jsonl:7")
    return e.value


@pytest.mark.parametrize("rec,fmt", [
    ({"prompt": "p", "completion": "c"}, "prompt_completion"),
    (CHAT, "chat"),
    ({"instruction": "i", "input": "x", "output": "o"}, "alpaca"),
    ({"instruction": "i", "output": "o"}, "alpaca"),
    ({"text": "t", "label": "pos"}, "classification"),
    ({"text": "t"}, "text"),
    ({"text": "t", "id": 3}, "text"),  # metadata columns are ignored
])
def test_each_format_is_detected_by_its_keys(rec, fmt):
    assert detect_format(rec) == fmt


def test_unknown_shape_names_the_keys_seen():
    with pytest.raises(DataError) as e:
        detect_format({"question": "q", "answer": "a"}, "d.jsonl:4")
    assert e.value.code == "unknown_format" and e.value.line == 4 and "['answer', 'question']" in str(e.value)


def test_prompt_completion_becomes_a_user_then_assistant_chat():
    s = _sample({"prompt": "Show all users", "completion": "SELECT * FROM users;"})
    assert s.messages == [{"role": "user", "content": "Show all users"},
                          {"role": "assistant", "content": "SELECT * FROM users;"}]
    assert s.format == "prompt_completion" and s.where == "d.jsonl:7" and s.label is None


def test_alpaca_joins_instruction_and_input_with_a_blank_line():
    s = _sample({"instruction": "Translate", "input": "bonjour", "output": "hello"})
    assert s.messages[0]["content"] == "Translate\n\nbonjour" and s.reference == "hello"
    assert _sample({"instruction": "Say hi", "input": "", "output": "hi"}).messages[0]["content"] == "Say hi"
    assert _sample({"instruction": "Say hi", "input": None, "output": "hi"}).messages[0]["content"] == "Say hi"


def test_classification_answer_is_the_label_and_numeric_labels_become_strings():
    s = _sample({"text": "great film", "label": 1})
    assert s.label == "1" and s.reference == "1" and s.messages[0] == {"role": "user", "content": "great film"}


def test_text_is_a_plain_text_sample():
    s = _sample({"text": "Once upon a time"})
    assert s.text == "Once upon a time" and s.messages is None and s.reference is None


def test_chat_keeps_roles_and_content():
    s = _sample(CHAT)
    assert s.messages == CHAT["messages"] and s.prompt_messages == CHAT["messages"][:2]


@pytest.mark.parametrize("rec,code,field", [
    ([{"role": "user"}], "data_type", None),
    ({"messages": [{"role": "user", "content": "a"}, "hi"]}, "data_type", "messages[1]"),
    ({"messages": "hi"}, "missing_messages_list", "messages"),
    ({"messages": []}, "missing_messages_list", "messages"),
    ({"messages": None}, "missing_messages_list", "messages"),
    ({"messages": [{"content": "a"}]}, "message_missing_key", "messages[0].role"),
    ({"messages": [{"role": "user"}]}, "message_missing_key", "messages[0].content"),
    ({"messages": [{"role": "user", "content": "a", "mood": "x"}]}, "message_unrecognized_key", "messages[0]"),
    ({"messages": [{"role": "robot", "content": "a"}]}, "unrecognized_role", "messages[0].role"),
    ({"messages": [{"role": ["user"], "content": "a"}]}, "unrecognized_role", "messages[0].role"),
    ({"messages": [{"role": "user", "content": ""}]}, "missing_content", "messages[0].content"),
    ({"messages": [{"role": "user", "content": "  "}]}, "missing_content", "messages[0].content"),
    ({"messages": [{"role": "user", "content": None}]}, "missing_content", "messages[0].content"),
    ({"messages": [{"role": "user", "content": [{"type": "text", "text": "a"}]}]}, "missing_content",
     "messages[0].content"),
    ({"messages": [{"role": "system", "content": "s"}, {"role": "user", "content": "a"}]},
     "example_missing_assistant_message", "messages"),
])
def test_openai_data_check_codes(rec, code, field):
    e = _code(rec, "chat")
    assert (e.code, e.field, e.path, e.line) == (code, field, "d.jsonl", 7)
    assert str(e).startswith(f"d.jsonl:7: {code}")


def test_assistant_tool_call_may_have_no_content():
    rec = {"messages": [{"role": "user", "content": "weather?"},
                        {"role": "assistant", "content": None, "tool_calls": [{"id": "1", "type": "function",
                                                                                  "function": {"name": "weather"}}]},
                        {"role": "tool", "content": "sunny", "tool_call_id": "1"},
                        {"role": "assistant", "content": "It is sunny.", "weight": 1}]}
    assert _sample(rec).reference == "It is sunny."


@pytest.mark.parametrize("rec,field", [
    ({"prompt": "p", "completion": None}, "completion"),
    ({"prompt": "", "completion": "c"}, "prompt"),
    ({"prompt": "p", "completion": ["c"]}, "completion"),
    ({"prompt": 5, "completion": "c"}, "prompt"),
    ({"instruction": "  ", "output": "o"}, "instruction"),
    ({"instruction": "i", "output": float("nan")}, "output"),
    ({"text": "t", "label": None}, "label"),
    ({"text": {"a": 1}}, "text"),
])
def test_missing_empty_or_non_string_fields_are_missing_field(rec, field):
    e = _code(rec)
    assert (e.code, e.field, e.line) == ("missing_field", field, 7)


def test_a_forced_format_that_does_not_fit_is_an_error():
    assert _code({"prompt": "p", "completion": "c"}, "chat").code == "missing_messages_list"
    assert _code({"prompt": "p", "completion": "c"}, "tsv").code == "unknown_format"


def test_near_key_folds_case_spacing_and_soft_punctuation_but_not_operators():
    a = _sample({"prompt": "Show all users!", "completion": "SELECT * FROM users;"})
    b = _sample({"prompt": "show   ALL users", "completion": "select * from users"})
    assert exact_key(a) != exact_key(b) and near_key(a) == near_key(b)
    assert near_dup_text("2+3") != near_dup_text("2*3") and near_dup_text("a < 5") != near_dup_text("a > 5")


def test_exact_key_ignores_surrounding_whitespace_but_not_roles():
    a = _sample({"prompt": "p ", "completion": "c"})
    assert exact_key(a) == exact_key(_sample({"prompt": "p", "completion": "\nc"}))
    assert exact_key(_sample({"text": "p"})) != exact_key(a)
