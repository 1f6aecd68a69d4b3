"""Sampling parameters end to end: n, stop, seed, the response cache for deterministic requests, and /metrics."""

from __future__ import annotations

import httpx
import openai
import pytest

from tests.serve.conftest import chat, serving


def test_stop_sequence_cuts_the_answer_before_it(server, lively_base):
    full = chat(server, str(lively_base), "add 1 and 2", max_tokens=12, temperature=0).choices[0].message.content
    stop = full[4:6]
    r = chat(server, str(lively_base), "add 1 and 2", max_tokens=12, temperature=0, stop=[stop, "never-seen"])
    assert r.choices[0].message.content == full[:full.find(stop)]
    assert r.choices[0].finish_reason == "stop"
    s = openai.OpenAI(base_url=server.url + "/v1", api_key="x").chat.completions.create(
        model=str(lively_base), messages=[{"role": "user", "content": "add 1 and 2"}], max_tokens=12,
        temperature=0, stop=stop, stream=True)
    chunks = list(s)
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == full[:full.find(stop)]
    assert chunks[-1].choices[0].finish_reason == "stop"


def test_seeded_sampling_is_reproducible_and_n_gives_distinct_choices(server):
    kw = dict(max_tokens=12, temperature=1.0, top_p=0.9, seed=7, n=3)
    a = chat(server, "alpha", "write something", **kw)
    b = chat(server, "alpha", "write something", **kw)
    texts = [c.message.content for c in a.choices]
    assert [c.index for c in a.choices] == [0, 1, 2]
    assert texts == [c.message.content for c in b.choices]
    assert len(set(texts)) > 1
    assert 0 < a.usage.completion_tokens <= 36


def test_deterministic_requests_are_answered_from_the_cache(lively_base):
    with serving(lively_base, response_cache_size=8) as srv:
        first = chat(srv, str(lively_base), "cache me", max_tokens=8, temperature=0)
        again = chat(srv, str(lively_base), "cache me", max_tokens=8, temperature=0)
        sampled = chat(srv, str(lively_base), "cache me", max_tokens=8, temperature=0.7, seed=1)
        assert again.choices[0].message.content == first.choices[0].message.content
        assert again.usage == first.usage and again.id != first.id
        assert sampled.choices[0].message.content  # sampling never reads the cache
        engine_tokens = srv.app.state.engine.stats()["generated_tokens"]
        assert engine_tokens == first.usage.completion_tokens + sampled.usage.completion_tokens
        metrics = httpx.get(srv.url + "/metrics").text
        assert "tuneforge_cache_hits_total 1.0" in metrics and "tuneforge_cache_misses_total 1.0" in metrics


def test_metrics_cover_requests_latency_tokens_batches_and_errors(server, lively_base):
    chat(server, "beta", "measure me", max_tokens=5, temperature=0)
    with pytest.raises(openai.NotFoundError):
        chat(server, "nope", "x")
    m = httpx.get(server.url + "/metrics").text
    for needle in ('tuneforge_requests_total{endpoint="chat.completions",model="beta",status="200"}',
                   'tuneforge_requests_total{endpoint="chat.completions",model="nope",status="404"}',
                   'tuneforge_errors_total{type="not_found_error"}',
                   'tuneforge_queue_time_seconds_count{model="beta"}',
                   'tuneforge_time_to_first_token_seconds_count{model="beta"}',
                   'tuneforge_time_per_output_token_seconds_count{model="beta"}',
                   'tuneforge_prompt_tokens_total{model="beta"}',
                   'tuneforge_completion_tokens_total{model="beta"}',
                   "tuneforge_batch_size_count", "tuneforge_running_sequences", "tuneforge_waiting_requests"):
        assert needle in m, needle
    line = next(x for x in m.splitlines() if x.startswith('tuneforge_completion_tokens_total{model="beta"}'))
    assert float(line.split()[-1]) >= 5


def test_request_hooks_get_a_record_per_request_and_lifespan_hooks_run(lively_base):
    records, events = [], []

    async def flush():
        events.append(("shutdown", len(records)))

    with serving(lively_base, on_request_done=[records.append], on_startup=[lambda: events.append("startup")],
                 on_shutdown=[flush]) as srv:
        assert events == ["startup"]
        r = chat(srv, str(lively_base), "log me", max_tokens=4, temperature=0)
        with pytest.raises(openai.BadRequestError):
            chat(srv, str(lively_base), "log me", max_tokens=4, temperature=9)
    ok, bad = records
    assert events == ["startup", ("shutdown", 2)]
    assert ok.id == r.id and ok.status == 200 and ok.completions == [r.choices[0].message.content]
    assert ok.prompt_tokens == r.usage.prompt_tokens and ok.latency_s > 0 and ok.ttft_s is not None
    assert bad.status == 400 and "temperature" in bad.error and bad.model == str(lively_base)
