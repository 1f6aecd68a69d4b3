"""Structured outputs through the real openai SDK: `response_format` json_schema / json_object (and vLLM's
`guided_json`) are enforced while decoding, per row of the continuous batch, on a tiny random model that has
learned nothing — so every valid answer is the grammar's doing. Unsupported schema features are a 400."""

from __future__ import annotations

import asyncio
import json
from typing import Literal

import jsonschema
import openai
import pytest
from pydantic import BaseModel, Field

SCHEMAS = [
    {"type": "object", "properties": {"name": {"type": "string", "maxLength": 6},
                                      "age": {"type": "integer", "minimum": 0, "maximum": 120}},
     "required": ["name", "age"], "additionalProperties": False},
    {"type": "object", "properties": {"ok": {"type": "boolean"}, "kind": {"enum": ["cat", "dog", "bird"]}},
     "required": ["ok", "kind"], "additionalProperties": False},
    {"type": "object", "properties": {"tags": {"type": "array", "items": {"type": "string", "maxLength": 3},
                                               "minItems": 1, "maxItems": 3}},
     "required": ["tags"], "additionalProperties": False},
    {"type": "object", "properties": {"score": {"type": "number", "minimum": 0, "maximum": 1},
                                      "label": {"type": ["string", "null"], "maxLength": 4}},
     "required": ["score", "label"], "additionalProperties": False},
]


class Pet(BaseModel):
    name: str = Field(max_length=6)
    kind: Literal["cat", "dog"]
    age: int = Field(ge=0, le=30)


def _client(srv) -> openai.OpenAI:
    return openai.OpenAI(base_url=srv.url + "/v1", api_key="unused", max_retries=0, timeout=120)


def _fmt(schema: dict, name: str = "answer") -> dict:
    return {"type": "json_schema", "json_schema": {"name": name, "schema": schema, "strict": True}}


def test_parse_with_a_pydantic_model_returns_a_parsed_object(server, lively_base):
    r = _client(server).chat.completions.parse(
        model="alpha", messages=[{"role": "user", "content": "name a pet"}], response_format=Pet,
        max_tokens=200, temperature=1.0, seed=3)
    msg = r.choices[0].message
    assert r.choices[0].finish_reason == "stop"
    assert isinstance(msg.parsed, Pet) and msg.parsed.kind in ("cat", "dog") and 0 <= msg.parsed.age <= 30
    # without the grammar the same random model does not answer JSON at all
    free = _client(server).chat.completions.create(model="alpha", messages=[{"role": "user", "content": "name a pet"}],
                                                   max_tokens=40, temperature=1.0, seed=3)
    with pytest.raises(ValueError):
        Pet.model_validate_json(free.choices[0].message.content)


def test_every_answer_of_a_varied_batch_validates_beside_free_rows(server, lively_base):
    """16 concurrent requests: four schemas x two temperatures x two models, plus free-text rows in the same
    continuous batch; every schema answer validates and the free rows are unconstrained text."""

    async def run():
        ac = openai.AsyncOpenAI(base_url=server.url + "/v1", api_key="unused", max_retries=0, timeout=300)
        jobs = []
        for i, schema in enumerate(SCHEMAS):
            for t in (0.0, 1.2):
                for model in ("alpha", str(lively_base)):
                    jobs.append((schema, ac.chat.completions.create(
                        model=model, messages=[{"role": "user", "content": f"item {i}"}], max_tokens=200,
                        temperature=t, seed=i, response_format=_fmt(schema))))
        for i in range(4):
            jobs.append((None, ac.chat.completions.create(
                model="beta", messages=[{"role": "user", "content": f"free {i}"}], max_tokens=30, temperature=1.0,
                seed=i)))
        res = await asyncio.gather(*(j for _, j in jobs))
        return [(s, r) for (s, _), r in zip(jobs, res)]

    answers = asyncio.run(run())
    free_json = 0
    for schema, r in answers:
        text = r.choices[0].message.content
        if schema is None:
            try:
                json.loads(text)
                free_json += 1
            except ValueError:
                pass
            continue
        assert r.choices[0].finish_reason == "stop", text
        jsonschema.validate(json.loads(text), schema)
    assert free_json == 0


def test_json_object_and_vllm_guided_json_use_the_same_path(server, lively_base):
    c = _client(server)
    msgs = [{"role": "user", "content": "hi"}]
    r = c.chat.completions.create(model="alpha", messages=msgs, max_tokens=120, temperature=0.0,
                                  response_format={"type": "json_object"})
    if r.choices[0].finish_reason == "stop":
        assert isinstance(json.loads(r.choices[0].message.content), dict)
    else:  # a budget running out mid-object is "length", never a silent free answer
        assert r.choices[0].message.content.startswith("{")
    r = c.chat.completions.create(model="alpha", messages=msgs, max_tokens=120, temperature=0.0,
                                  extra_body={"guided_json": SCHEMAS[1]})
    jsonschema.validate(json.loads(r.choices[0].message.content), SCHEMAS[1])


@pytest.mark.parametrize("schema, named", [
    ({"type": "object", "if": {"type": "object"}, "then": {}}, "if"),
    ({"type": "object", "properties": {"a": {"type": "string", "pattern": "(?<=x)a"}}}, "look"),
])
def test_an_unsupported_schema_feature_is_a_400_naming_it(server, lively_base, schema, named):
    with pytest.raises(openai.BadRequestError) as e:
        _client(server).chat.completions.create(model="alpha", messages=[{"role": "user", "content": "hi"}],
                                                max_tokens=5, response_format=_fmt(schema))
    assert e.value.body["param"] == "response_format.json_schema.schema" and named in e.value.body["message"]
    assert e.value.body["code"] == "unsupported_schema"
