"""Limits and bad input, each answered with an OpenAI-shaped error (and the server keeps serving after it):
a full queue (429 + Retry-After), an oversize body (413), bad JSON / missing or bad field (400), a context
overflow (400 naming the param), an unknown model (404)."""

from __future__ import annotations

import asyncio
import http.client
import json

import openai
import pytest

from tests.serve.conftest import chat, serving


@pytest.fixture(scope="module")
def small(lively_base):
    """One row in the batch, one waiting slot, 4 KiB bodies."""
    with serving(lively_base, engine_kw={"max_num_seqs": 1, "max_queue": 1}, max_body_bytes=4096,
                 response_cache_size=0) as srv:
        yield srv


def post(srv, path: str, body: bytes, headers: dict | None = None, chunked: bool = False):
    conn = http.client.HTTPConnection(srv.host, srv.port, timeout=60)
    conn.request("POST", path, body=iter([body[i:i + 1000] for i in range(0, len(body), 1000)]) if chunked
                 else body, headers={"Content-Type": "application/json", **(headers or {})},
                 encode_chunked=chunked)
    resp = conn.getresponse()
    data = resp.read()
    conn.close()
    return resp.status, json.loads(data), resp


def still_serving(srv, model) -> None:
    assert chat(srv, model, "still there?", max_tokens=2, temperature=0).choices[0].finish_reason


def test_full_queue_is_429_with_retry_after_then_recovers(small, lively_base):
    async def burst():
        ac = openai.AsyncOpenAI(base_url=small.url + "/v1", api_key="x", max_retries=0)
        return await asyncio.gather(*(ac.chat.completions.with_raw_response.create(
            model=str(lively_base), messages=[{"role": "user", "content": f"q{i}"}], max_tokens=150,
            extra_body={"ignore_eos": True}) for i in range(6)), return_exceptions=True)

    res = asyncio.run(burst())
    limited = [r for r in res if isinstance(r, openai.RateLimitError)]
    ok = [r for r in res if not isinstance(r, Exception)]
    assert limited and ok, res
    assert all(int(r.response.headers["retry-after"]) >= 1 for r in limited)
    assert limited[0].body["type"] == "rate_limit_error"
    assert all(r.parse().usage.completion_tokens == 150 for r in ok)
    still_serving(small, str(lively_base))


def test_oversize_body_is_413_by_length_and_while_streaming_in(small, lively_base):
    big = json.dumps({"model": str(lively_base), "messages": [{"role": "user", "content": "x" * 10_000}]}).encode()
    status, body, _ = post(small, "/v1/chat/completions", big)
    assert status == 413 and body["error"]["code"] == "request_too_large"
    status, body, _ = post(small, "/v1/chat/completions", big, chunked=True)  # no Content-Length to trust
    assert status == 413 and body["error"]["code"] == "request_too_large"
    still_serving(small, str(lively_base))


@pytest.mark.parametrize("body, param", [
    (b'{"model": "m", "messages": [', None),
    (b'[1, 2]', None),
    (b'{"messages": [{"role": "user", "content": "hi"}]}', "model"),
    (b'{"model": "BASE"}', "messages"),
    (b'{"model": "BASE", "messages": [{"role": "user", "content": "hi"}], "temperature": 7}', "temperature"),
    (b'{"model": "BASE", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 0}', "max_tokens"),
    (b'{"model": "BASE", "messages": [{"content": "hi"}]}', "messages.0.role"),
])
def test_bad_json_and_bad_fields_are_400_naming_the_param(small, lively_base, body, param):
    status, err, _ = post(small, "/v1/chat/completions", body.replace(b"BASE", str(lively_base).encode()))
    assert status == 400 and err["error"]["type"] == "invalid_request_error"
    assert err["error"]["param"] == param and err["error"]["message"]


def test_context_overflow_is_400_naming_max_tokens_or_the_prompt(small, lively_base):
    with pytest.raises(openai.BadRequestError) as e:
        chat(small, str(lively_base), "hello", max_tokens=1020)
    assert e.value.body["param"] == "max_tokens" and e.value.body["code"] == "context_length_exceeded"
    with pytest.raises(openai.BadRequestError) as e:
        chat(small, str(lively_base), "hello", max_completion_tokens=5000)
    assert e.value.body["param"] == "max_completion_tokens"
    with pytest.raises(openai.BadRequestError) as e:
        chat(small, str(lively_base), "y" * 1100, max_tokens=1)
    assert e.value.body["param"] == "messages"
    still_serving(small, str(lively_base))


def test_unknown_model_and_unknown_route_are_404(small, lively_base):
    with pytest.raises(openai.NotFoundError) as e:
        chat(small, "no-such-model", "hi")
    assert e.value.body["code"] == "model_not_found" and e.value.body["param"] == "model"
    conn = http.client.HTTPConnection(small.host, small.port, timeout=30)
    conn.request("GET", "/v1/nothing")
    r = conn.getresponse()
    assert r.status == 404 and json.loads(r.read())["error"]["type"] == "not_found_error"
    still_serving(small, str(lively_base))


def test_fields_we_cannot_honour_are_400_not_ignored(small, lively_base):
    tool = {"type": "function", "function": {"parameters": {"type": "object", "properties": {}}}}  # no name
    with pytest.raises(openai.BadRequestError) as e:
        chat(small, str(lively_base), "hi", tools=[tool])
    assert e.value.body["param"].startswith("tools")
    with pytest.raises(openai.BadRequestError) as e:
        chat(small, str(lively_base), "hi", response_format={"type": "json_schema", "json_schema": {
            "name": "x", "schema": {"type": "object", "if": {"type": "object"}, "then": {}}}})
    assert e.value.body["param"] == "response_format.json_schema.schema" and "if" in e.value.body["message"]
    c = openai.OpenAI(base_url=small.url + "/v1", api_key="unused", max_retries=0)
    with pytest.raises(openai.BadRequestError) as e:
        c.completions.create(model=str(lively_base), prompt="a", suffix="b", max_tokens=2)
    assert e.value.body["param"] == "suffix"


def test_unknown_harmless_fields_and_the_newer_max_completion_tokens_are_accepted(small, lively_base):
    r = chat(small, str(lively_base), "hi", max_completion_tokens=3, temperature=0, user="u1",
             extra_body={"frequency_penalty": 0, "logit_bias": {}, "store": False, "some_new_field": {"a": 1}})
    assert r.usage.completion_tokens <= 3 and r.choices[0].finish_reason in ("stop", "length")
