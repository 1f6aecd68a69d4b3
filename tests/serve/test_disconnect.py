"""A client that goes away stops its generation: streaming (connection closed mid-stream) and not (timeout)."""

from __future__ import annotations

import time

import httpx
import pytest


def wait_for(cond, timeout: float = 30.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return True
        time.sleep(0.05)
    return False


def _body(model: str, stream: bool) -> dict:
    return {"model": model, "messages": [{"role": "user", "content": "tell me everything"}], "max_tokens": 980,
            "ignore_eos": True, "stream": stream}


def test_closing_a_stream_stops_its_generation(server, lively_base):
    engine = server.app.state.engine
    before = engine.stats()
    with httpx.Client(timeout=30) as client:
        with client.stream("POST", server.url + "/v1/chat/completions", json=_body(str(lively_base), True)) as r:
            assert r.status_code == 200
            lines = r.iter_lines()
            got = [next(lines) for _ in range(6)]  # role chunk + a few tokens, then hang up
            assert any('"content"' in g for g in got)
    assert wait_for(lambda: engine.stats()["cancelled"] > before["cancelled"] and engine.stats()["running"] == 0)
    generated = engine.stats()["generated_tokens"] - before["generated_tokens"]
    assert generated < 980, generated  # stopped early
    assert b"tuneforge_cancelled_total" in httpx.get(server.url + "/metrics").content


def test_a_client_timing_out_on_a_plain_request_stops_its_generation(server, lively_base):
    engine = server.app.state.engine
    before = engine.stats()
    with pytest.raises(httpx.ReadTimeout):
        httpx.post(server.url + "/v1/chat/completions", json=_body(str(lively_base), False), timeout=0.5)
    assert wait_for(lambda: engine.stats()["cancelled"] > before["cancelled"] and engine.stats()["running"] == 0)
    assert engine.stats()["generated_tokens"] - before["generated_tokens"] < 980
