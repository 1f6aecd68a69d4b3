"""The real openai SDK (sync and async, streaming and not) against `tuneforge serve` on loopback; every response
validates against the SDK's own pydantic types."""

from __future__ import annotations

import asyncio

import openai
from openai.types import Completion, Model
from openai.types.chat import ChatCompletion, ChatCompletionChunk


def _client(srv, **kw) -> openai.OpenAI:
    return openai.OpenAI(base_url=srv.url + "/v1", api_key="unused", max_retries=0, **kw)


def test_models_lists_the_base_and_each_adapter_with_its_parent(server, lively_base):
    models = {m.id: m for m in _client(server).models.list()}
    assert set(models) == {str(lively_base), "alpha", "beta"}
    assert models["alpha"].parent == str(lively_base) and models[str(lively_base)].parent is None
    for m in models.values():
        Model.model_validate(m.model_dump())


def test_sync_chat_stream_equals_the_non_streamed_answer(server, lively_base):
    c = _client(server)
    kw = dict(model="alpha", messages=[{"role": "user", "content": "add 2 and 3"}], max_tokens=10, temperature=0)
    full = c.chat.completions.create(**kw)
    ChatCompletion.model_validate(full.model_dump())
    assert full.usage.completion_tokens == 10 and full.choices[0].finish_reason == "length"
    chunks = list(c.chat.completions.create(**kw, stream=True, stream_options={"include_usage": True}))
    for ch in chunks:
        ChatCompletionChunk.model_validate(ch.model_dump())
    text = "".join(ch.choices[0].delta.content or "" for ch in chunks if ch.choices)
    assert text == full.choices[0].message.content and text
    assert chunks[-1].usage.completion_tokens == 10 and chunks[-2].choices[0].finish_reason == "length"


def test_async_clients_in_a_burst_get_the_same_answers_as_one_at_a_time(server, lively_base):
    prompts = ["hi", "a much longer prompt that needs left padding in the batch", "add 1 and 2", "x"]
    models = ["alpha", "beta", str(lively_base)]
    kw = dict(max_tokens=8, temperature=0)
    c = _client(server)
    alone = {(m, p): c.chat.completions.create(model=m, messages=[{"role": "user", "content": p}], **kw)
             .choices[0].message.content for m in models for p in prompts}

    async def burst():
        ac = openai.AsyncOpenAI(base_url=server.url + "/v1", api_key="unused", max_retries=0)
        keys = list(alone) * 2
        res = await asyncio.gather(*(ac.chat.completions.create(
            model=m, messages=[{"role": "user", "content": p}], **kw) for m, p in keys))
        return keys, res

    keys, res = asyncio.run(burst())
    for k, r in zip(keys, res):
        ChatCompletion.model_validate(r.model_dump())
        assert r.choices[0].message.content == alone[k], k
    # the adapters really differ from each other and from the base
    assert len({alone[(m, prompts[0])] for m in models}) == 3


def test_completions_endpoint_sync_and_async_stream(server):
    c = _client(server)
    r = c.completions.create(model="beta", prompt="SELECT", max_tokens=6, temperature=0)
    Completion.model_validate(r.model_dump())
    assert r.usage.completion_tokens == 6 and r.choices[0].text

    async def stream():
        ac = openai.AsyncOpenAI(base_url=server.url + "/v1", api_key="unused", max_retries=0)
        chunks = [ch async for ch in await ac.completions.create(model="beta", prompt="SELECT", max_tokens=6,
                                                                 temperature=0, stream=True)]
        # OpenAI's stream (like ours) has finish_reason null until the last chunk; the SDK type wants it set
        Completion.model_validate(chunks[-1].model_dump())
        assert chunks[-1].choices[0].finish_reason == "length"
        return "".join(ch.choices[0].text for ch in chunks)

    assert asyncio.run(stream()) == r.choices[0].text
