"""Training rows in OpenAI's tool-calling fine-tuning shape (`tools` on the row, assistant `tool_calls`, `tool`
messages): accepted by the format checks, rendered by the same `data.tools` path the server uses, loss on the
assistant's calls and answers only."""

from __future__ import annotations

import json

import pytest

from tuneforge.data.formats import detect_format, to_sample
from tuneforge.data.tokenize import IGNORE, encode, render_prompt
from tuneforge.data.tools import apply_template, format_call, supports_tools
from tuneforge.errors import DataError
from tuneforge.models.tiny import tiny_tokenizer

TOOL = {"type": "function", "function": {"name": "get_time", "description": "the time",
                                         "parameters": {"type": "object", "properties": {"utc": {"type": "boolean"}}}}}
ROW = {"tools": [TOOL], "messages": [
    {"role": "user", "content": "What time is it?"},
    {"role": "assistant", "tool_calls": [{"id": "call_1", "type": "function",
                                          "function": {"name": "get_time", "arguments": '{"utc": true}'}}]},
    {"role": "tool", "tool_call_id": "call_1", "content": "12:00"},
    {"role": "assistant", "content": "It is noon."},
]}


def _supervised_text(tok, enc) -> str:
    return tok.decode([t for t, lab in zip(enc.input_ids, enc.labels) if lab != IGNORE])


def test_a_tool_row_keeps_its_tools_and_calls_and_supervises_only_the_assistant():
    tok = tiny_tokenizer()
    assert not supports_tools(tok)  # the fallback format
    sample = to_sample(ROW, detect_format(ROW), "rows.jsonl:1")
    assert sample.tools == [TOOL] and sample.messages[1]["tool_calls"][0]["function"]["name"] == "get_time"
    enc = encode(sample, tok)
    text = tok.decode(enc.input_ids)
    call = format_call("get_time", '{"utc": true}')
    assert '"name": "get_time"' in text.split("<|im_end|>")[0]  # the spec in the system turn
    assert call in text and "<tool_response>\n12:00\n</tool_response>" in text
    supervised = _supervised_text(tok, enc)
    assert call in supervised and "It is noon." in supervised
    assert "12:00" not in supervised and "What time" not in supervised and "get_time\", \"desc" not in supervised


def test_training_and_serving_render_the_same_prompt():
    tok = tiny_tokenizer()
    sample = to_sample(ROW, "chat", "rows.jsonl:1")
    served = apply_template(tok, ROW["messages"][:3], [TOOL], add_generation_prompt=True)
    assert render_prompt(sample, tok) == served
    assert tok.decode(encode(sample, tok).input_ids).startswith(served)


@pytest.mark.parametrize("change, field", [
    (lambda r: r.update(tools=[{"type": "function", "function": {"name": "bad name"}}]), "tools[0].function.name"),
    (lambda r: r["messages"][1]["tool_calls"][0]["function"].update(arguments="{oops"),
     "messages[1].tool_calls[0].function.arguments"),
])
def test_malformed_tool_rows_name_the_field(change, field):
    row = json.loads(json.dumps(ROW))
    change(row)
    with pytest.raises(DataError) as e:
        to_sample(row, "chat", "rows.jsonl:7")
    assert e.value.field == field and e.value.line == 7
