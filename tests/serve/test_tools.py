"""Function calling on /v1/chat/completions through the real openai SDK: `tools` + `tool_choice`, answers in
`message.tool_calls` (forced choices constrained by the grammar so the arguments validate), streamed tool-call
deltas, a two-turn conversation with a `tool` message, and OpenAI-shaped 400s for bad tool specs."""

from __future__ import annotations

import json

import jsonschema
import openai
import pytest
from transformers import AutoTokenizer

from tests.serve.conftest import serving
from tuneforge.data.tools import apply_template, format_call, parse_tool_calls

WEATHER = {"type": "function", "function": {
    "name": "get_weather", "description": "Current weather in a city",
    "parameters": {"type": "object", "properties": {"city": {"enum": ["Paris", "Rome", "Oslo"]},
                                                    "unit": {"enum": ["c", "f"]}},
                   "required": ["city", "unit"], "additionalProperties": False}}}
TIME = {"type": "function", "function": {
    "name": "get_time", "parameters": {"type": "object", "properties": {"utc": {"type": "boolean"}},
                                       "required": ["utc"], "additionalProperties": False}}}
TOOLS = [WEATHER, TIME]
SCHEMAS = {t["function"]["name"]: t["function"]["parameters"] for t in TOOLS}
ASK = [{"role": "user", "content": "What is the weather in Paris?"}]


@pytest.fixture(scope="module")
def srv(lively_base):
    with serving(lively_base, engine_kw={"served_model_name": "base"}, response_cache_size=0) as s:
        yield s


@pytest.fixture(scope="module")
def client(srv):
    return openai.OpenAI(base_url=srv.url + "/v1", api_key="unused", max_retries=0)


def _check_calls(msg, names):
    assert msg.tool_calls, msg
    for call in msg.tool_calls:
        assert call.type == "function" and call.id.startswith("call_")
        assert call.function.name in names
        jsonschema.validate(json.loads(call.function.arguments), SCHEMAS[call.function.name])


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_required_tool_choice_answers_calls_whose_arguments_validate(client, seed):
    r = client.chat.completions.create(model="base", messages=ASK, tools=TOOLS, tool_choice="required",
                                       parallel_tool_calls=False, temperature=1.0, seed=seed, max_tokens=120)
    ch = r.choices[0]
    assert ch.finish_reason == "tool_calls"
    assert ch.message.content is None and len(ch.message.tool_calls) == 1
    _check_calls(ch.message, {"get_weather", "get_time"})


def test_named_tool_choice_calls_that_function(client):
    r = client.chat.completions.create(
        model="base", messages=ASK, tools=TOOLS, max_tokens=120, temperature=0,
        tool_choice={"type": "function", "function": {"name": "get_time"}})
    ch = r.choices[0]
    assert ch.finish_reason == "tool_calls"
    _check_calls(ch.message, {"get_time"})
    assert len(ch.message.tool_calls) == 1


def test_streamed_tool_calls_equal_the_unary_answer(client):
    kw = dict(model="base", messages=ASK, tools=TOOLS, max_tokens=120, temperature=0, parallel_tool_calls=False,
              tool_choice={"type": "function", "function": {"name": "get_weather"}})
    unary = client.chat.completions.create(**kw).choices[0].message.tool_calls[0]
    calls, finish, content = {}, None, ""
    for chunk in client.chat.completions.create(stream=True, **kw):
        for ch in chunk.choices:
            content += ch.delta.content or ""
            for d in ch.delta.tool_calls or []:
                got = calls.setdefault(d.index, {"id": None, "name": "", "arguments": ""})
                got["id"] = d.id or got["id"]
                got["name"] += (d.function.name or "") if d.function else ""
                got["arguments"] += (d.function.arguments or "") if d.function else ""
            finish = ch.finish_reason or finish
    assert finish == "tool_calls" and content == ""
    assert list(calls) == [0] and calls[0]["id"].startswith("call_")
    assert (calls[0]["name"], json.loads(calls[0]["arguments"])) == \
        (unary.function.name, json.loads(unary.function.arguments))


def test_auto_and_none_let_the_model_answer_in_text(client):
    # a random model never writes a `<tool_call>` block: auto leaves its text as content, finish stop/length
    for choice in ("auto", "none"):
        r = client.chat.completions.create(model="base", messages=ASK, tools=TOOLS, tool_choice=choice,
                                           max_tokens=12, temperature=0)
        ch = r.choices[0]
        assert ch.message.tool_calls is None and ch.finish_reason in ("stop", "length")
        assert isinstance(ch.message.content, str)


def test_two_turn_tool_conversation_is_rendered_through_the_template(client, lively_base):
    first = client.chat.completions.create(model="base", messages=ASK, tools=[TIME], tool_choice="required",
                                           parallel_tool_calls=False, max_tokens=120, temperature=0)
    msg = first.choices[0].message
    call = msg.tool_calls[0]
    convo = ASK + [msg.model_dump(exclude_none=True),
                   {"role": "tool", "tool_call_id": call.id, "content": '{"temperature": 21}'}]
    second = client.chat.completions.create(model="base", messages=convo, tools=[TIME], max_tokens=8,
                                            temperature=0)
    assert second.choices[0].finish_reason in ("stop", "length")
    # (one short tool: the byte-level tiny model has a 1,024-token context)
    # the prompt the server rendered: the tools in the system turn, the call in the assistant turn, the result
    tok = AutoTokenizer.from_pretrained(lively_base)
    plain = [{"role": m["role"], "content": m.get("content"), **{k: m[k] for k in ("tool_calls", "tool_call_id")
                                                                  if k in m}} for m in convo]
    text = apply_template(tok, plain, [TIME], add_generation_prompt=True)
    assert format_call(call.function.name, call.function.arguments) in text
    assert '<tool_response>\n{"temperature": 21}\n</tool_response>' in text and '"get_time"' in text
    assert second.usage.prompt_tokens == len(tok(text, add_special_tokens=False)["input_ids"])


@pytest.mark.parametrize("kw, param", [
    (dict(tools={"type": "function"}), "tools"),
    (dict(tools=[{"type": "retrieval"}]), "tools[0].type"),
    (dict(tools=[{"type": "function", "function": {"name": "has space"}}]), "tools[0].function.name"),
    (dict(tools=[WEATHER, WEATHER]), "tools[1].function.name"),
    (dict(tools=[{"type": "function", "function": {"name": "f", "parameters": {"type": "array"}}}]),
     "tools[0].function.parameters"),
    (dict(tools=TOOLS, tool_choice={"type": "function", "function": {"name": "nope"}}),
     "tool_choice.function.name"),
    (dict(tools=TOOLS, tool_choice="sometimes"), "tool_choice"),
    (dict(tool_choice="required"), "tool_choice"),
    (dict(tools=[{"type": "function", "function": {"name": "f", "parameters": {
        "type": "object", "properties": {"a": {"type": "string", "pattern": "(?=a)b"}}}}}],
        tool_choice="required"), "tools"),
    (dict(tools=TOOLS, tool_choice="required", response_format={"type": "json_object"}), "response_format"),
    (dict(functions=[{"name": "f"}]), "functions"),
])
def test_bad_tool_specs_are_openai_shaped_400s(client, kw, param):
    with pytest.raises(openai.BadRequestError) as e:
        client.chat.completions.create(model="base", messages=ASK, max_tokens=4, **kw)
    err = e.value.body
    assert e.value.status_code == 400 and err["param"] == param and err["type"] == "invalid_request_error", err


def test_a_tool_message_needs_its_tool_call_id(client):
    convo = ASK + [{"role": "assistant", "tool_calls": [{"id": "call_1", "type": "function", "function": {
        "name": "get_time", "arguments": '{"utc": true}'}}]}, {"role": "tool", "content": "12:00"}]
    with pytest.raises(openai.BadRequestError) as e:
        client.chat.completions.create(model="base", messages=convo, tools=TOOLS, max_tokens=4)
    assert e.value.body["param"] == "messages[2].tool_call_id"
    convo[1]["tool_calls"][0]["function"]["arguments"] = "{not json"
    convo[2]["tool_call_id"] = "call_1"
    with pytest.raises(openai.BadRequestError) as e:
        client.chat.completions.create(model="base", messages=convo, tools=TOOLS, max_tokens=4)
    assert e.value.body["param"] == "messages[1].tool_calls[0].function.arguments"


def test_parse_tool_calls_reads_blocks_lists_and_bare_objects_and_keeps_bad_ones_as_text():
    one = format_call("get_time", '{"utc": true}')
    assert parse_tool_calls("Let me check.\n" + one) == ("Let me check.", [("get_time", '{"utc": true}')])
    assert parse_tool_calls(one + "\n" + format_call("f", {}))[1] == [("get_time", '{"utc": true}'), ("f", "{}")]
    assert parse_tool_calls('<tool_call>[{"name": "a", "arguments": {"x": 1}}, {"name": "b", "arguments": {}}]'
                            '</tool_call>')[1] == [("a", '{"x": 1}'), ("b", "{}")]
    assert parse_tool_calls('{"name": "a", "parameters": {"x": 1}}') == (None, [("a", '{"x": 1}')])
    bad = "sure <tool_call>\n{\"name\": \"a\", \"argum"
    assert parse_tool_calls(bad) == (bad, [])
    assert parse_tool_calls("just text") == ("just text", [])


def test_a_run_trained_on_tool_rows_passes_data_check_and_serves_tool_calls(lively_base, tmp_path):
    from tests.helpers import write_jsonl
    from tuneforge.config import TrainConfig
    from tuneforge.data.validate import check_file
    from tuneforge.train.recipe import train

    rows = []
    for i, city in enumerate(["Paris", "Rome", "Oslo"] * 4):
        call = {"id": f"call_{i}", "type": "function",
                "function": {"name": "get_weather", "arguments": json.dumps({"city": city, "unit": "c"})}}
        rows.append({"tools": [WEATHER], "messages": [
            {"role": "user", "content": f"weather in {city}?"}, {"role": "assistant", "tool_calls": [call]},
            {"role": "tool", "tool_call_id": f"call_{i}", "content": "sunny"},
            {"role": "assistant", "content": f"It is sunny in {city}."}]})
    data = write_jsonl(tmp_path / "tools.jsonl", rows)
    rep = check_file(data, tokenizer=AutoTokenizer.from_pretrained(lively_base), max_seq_len=1024)
    assert rep.ok and rep.n_valid == 12 and rep.n_truncated == 0, rep.render()
    run = train(TrainConfig(base=str(lively_base), data=str(data), output=str(tmp_path / "weather"), max_steps=2,
                            learning_rate=1e-3, max_seq_len=1024), progress=False)
    with serving(run, response_cache_size=0) as s:
        c = openai.OpenAI(base_url=s.url + "/v1", api_key="unused", max_retries=0)
        r = c.chat.completions.create(model="weather", messages=ASK, tools=[WEATHER], max_tokens=80,
                                      tool_choice={"type": "function", "function": {"name": "get_weather"}})
        assert r.choices[0].finish_reason == "tool_calls"
        _check_calls(r.choices[0].message, {"get_weather"})
