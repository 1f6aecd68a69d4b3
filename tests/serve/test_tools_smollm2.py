"""Slow: function calling on the real SmolLM2-135M-Instruct (its template has no tool support: the documented
`<tool_call>` fallback): forced calls validate against the function's schema, `auto` answers either way in
OpenAI's shape, and the tool result comes back through a second turn."""

from __future__ import annotations

import json

import jsonschema
import openai
import pytest

from tests.serve.conftest import serving

pytestmark = pytest.mark.slow

WEATHER = {"type": "function", "function": {
    "name": "get_weather", "description": "Get the current weather in a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string", "maxLength": 40},
                                                    "unit": {"enum": ["celsius", "fahrenheit"]}},
                   "required": ["city", "unit"], "additionalProperties": False}}}
ASK = [{"role": "user", "content": "What is the weather like in Paris today?"}]


def test_smollm2_forced_and_auto_tool_calls_and_a_second_turn():
    with serving("smollm2-135m-instruct", response_cache_size=0) as srv:
        c = openai.OpenAI(base_url=srv.url + "/v1", api_key="x", max_retries=0, timeout=300)
        m = "smollm2-135m-instruct"
        r = c.chat.completions.create(model=m, messages=ASK, tools=[WEATHER], max_tokens=80, temperature=0,
                                      tool_choice={"type": "function", "function": {"name": "get_weather"}})
        ch = r.choices[0]
        assert ch.finish_reason == "tool_calls", ch.message
        call = ch.message.tool_calls[0]
        args = json.loads(call.function.arguments)
        jsonschema.validate(args, WEATHER["function"]["parameters"])
        assert "paris" in args["city"].lower()
        auto = c.chat.completions.create(model=m, messages=ASK, tools=[WEATHER], max_tokens=80, temperature=0)
        a = auto.choices[0]
        assert (a.finish_reason == "tool_calls" and a.message.tool_calls) or \
            (a.message.tool_calls is None and isinstance(a.message.content, str))
        convo = ASK + [ch.message.model_dump(exclude_none=True),
                       {"role": "tool", "tool_call_id": call.id, "content": '{"temperature": 21, "sky": "clear"}'}]
        second = c.chat.completions.create(model=m, messages=convo, tools=[WEATHER], tool_choice="none",
                                           max_tokens=40, temperature=0)
        assert second.choices[0].message.content and second.choices[0].message.tool_calls is None
        print("auto:", a.finish_reason, a.message.tool_calls or a.message.content)
        print("second:", second.choices[0].message.content)
