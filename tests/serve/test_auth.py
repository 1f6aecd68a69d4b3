"""API keys: every route but /health needs `Authorization: Bearer KEY`, checked on the ASGI path the router
uses, so path variants (`//v1/models`, dot segments, percent-encoding, case) cannot get around it."""

from __future__ import annotations

import http.client
import json

import openai
import pytest

from tests.serve.conftest import chat, serving

KEYS = ("key-one", "key-two")


@pytest.fixture(scope="module")
def secured(lively_base):
    with serving(lively_base, api_keys=KEYS, response_cache_size=0) as srv:
        yield srv


def raw(srv, method: str, path: str, *, key: str | None = None, body: bytes | None = None):
    """An HTTP request with the path sent exactly as written (no client-side normalisation)."""
    conn = http.client.HTTPConnection(srv.host, srv.port, timeout=30)
    headers = {"Content-Type": "application/json"}
    if key is not None:
        headers["Authorization"] = f"Bearer {key}"
    conn.request(method, path, body=body, headers=headers)
    resp = conn.getresponse()
    data = resp.read()
    conn.close()
    return resp.status, data


def test_each_configured_key_works_and_health_stays_open(secured, lively_base):
    for key in KEYS:
        r = chat(secured, str(lively_base), "hi", max_tokens=2, api_key=key)
        assert r.choices[0].message.content is not None
    assert raw(secured, "GET", "/health")[0] == 200


def test_missing_or_wrong_key_is_401_with_an_openai_error(secured, lively_base):
    with pytest.raises(openai.AuthenticationError) as e:
        chat(secured, str(lively_base), "hi", max_tokens=2, api_key="key-on")
    assert e.value.body["code"] == "invalid_api_key"
    status, body = raw(secured, "GET", "/v1/models")
    assert status == 401 and json.loads(body)["error"]["type"] == "authentication_error"
    status, _ = raw(secured, "POST", "/v1/chat/completions", key="", body=b"{}")
    assert status == 401
    assert raw(secured, "GET", "/metrics")[0] == 401


@pytest.mark.parametrize("path", ["//v1/models", "/v1/../v1/models", "/v1/./models", "/v1/%6Dodels",
                                  "/%761/models", "/V1/models", "/health/../v1/models", "/v1/models/",
                                  "/health/%2e%2e/v1/models", "/v1//models", "/v1/models?x=/health"])
def test_path_variants_do_not_bypass_auth(secured, path):
    status, body = raw(secured, "GET", path)
    assert status == 401, (path, status, body)
    status, _ = raw(secured, "GET", path, key=KEYS[0])
    assert status != 401


def test_post_variants_without_a_key_generate_nothing(secured, lively_base):
    before = secured.app.state.engine.stats()["finished"]
    body = json.dumps({"model": str(lively_base), "messages": [{"role": "user", "content": "hi"}],
                       "max_tokens": 2}).encode()
    for path in ("//v1/chat/completions", "/v1/%63hat/completions", "/v1/chat/../chat/completions"):
        assert raw(secured, "POST", path, body=body)[0] == 401
    assert secured.app.state.engine.stats()["finished"] == before
