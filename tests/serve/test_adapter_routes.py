"""vLLM's runtime adapter routes on a real server: load a LoRA adapter by path, answer with it, unload it;
behind auth; bad bodies and unknown names are OpenAI error bodies."""

from __future__ import annotations

import httpx
import openai
import pytest

from tests.serve.conftest import serving


def test_load_answer_unload_behind_auth(lively_base, adapters):
    with serving(lively_base, api_keys=["k"], response_cache_size=0) as srv:
        h = {"Authorization": "Bearer k"}
        c = openai.OpenAI(base_url=srv.url + "/v1", api_key="k", max_retries=0)
        body = {"lora_name": "gamma", "lora_path": str(adapters["alpha"])}
        assert httpx.post(srv.url + "/v1/load_lora_adapter", json=body).status_code == 401
        r = httpx.post(srv.url + "/v1/load_lora_adapter", json=body, headers=h, timeout=60)
        assert r.status_code == 200 and "gamma" in r.text
        assert "gamma" in {m.id for m in c.models.list()}
        kw = dict(messages=[{"role": "user", "content": "add 2 and 3"}], max_tokens=8, temperature=0)
        with_adapter = c.chat.completions.create(model="gamma", **kw).choices[0].message.content
        base = c.chat.completions.create(model=str(lively_base), **kw).choices[0].message.content
        assert with_adapter != base
        again = httpx.post(srv.url + "/v1/load_lora_adapter", json=body, headers=h)
        assert again.status_code == 400 and again.json()["error"]["code"] == "adapter_exists"
        bad = httpx.post(srv.url + "/v1/load_lora_adapter", json={"lora_name": "x", "lora_path": "/nope"}, headers=h)
        assert bad.status_code == 400 and bad.json()["error"]["param"] == "lora_path"
        assert httpx.post(srv.url + "/v1/unload_lora_adapter", json={"lora_name": "gamma"}).status_code == 401
        r = httpx.post(srv.url + "/v1/unload_lora_adapter", json={"lora_name": "gamma"}, headers=h, timeout=60)
        assert r.status_code == 200
        assert "gamma" not in {m.id for m in c.models.list()}
        with pytest.raises(openai.NotFoundError):
            c.chat.completions.create(model="gamma", **kw)
        gone = httpx.post(srv.url + "/v1/unload_lora_adapter", json={"lora_name": "gamma"}, headers=h)
        assert gone.status_code == 404 and gone.json()["error"]["code"] == "adapter_not_found"
        # the base still answers as before
        assert c.chat.completions.create(model=str(lively_base), **kw).choices[0].message.content == base
