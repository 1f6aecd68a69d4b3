"""Slow: structured outputs and logprobs on the real SmolLM2-135M-Instruct (49,152-token vocabulary) behind the
server: `chat.completions.parse` with a pydantic model returns a parsed object, and logprobs come back."""

from __future__ import annotations

from typing import Literal

import openai
import pytest
from pydantic import BaseModel, Field

from tests.serve.conftest import serving

pytestmark = pytest.mark.slow


class City(BaseModel):
    name: str = Field(max_length=40)
    country: str = Field(max_length=40)
    size: Literal["small", "medium", "large"]


def test_smollm2_parse_returns_a_parsed_object_with_logprobs():
    with serving("smollm2-135m-instruct", response_cache_size=0) as srv:
        c = openai.OpenAI(base_url=srv.url + "/v1", api_key="x", max_retries=0, timeout=300)
        r = c.chat.completions.parse(
            model="smollm2-135m-instruct", response_format=City, max_tokens=120, temperature=0, logprobs=True,
            messages=[{"role": "user", "content": "Describe Paris as JSON with name, country and size."}])
        ch = r.choices[0]
        assert ch.finish_reason == "stop" and isinstance(ch.message.parsed, City), ch.message.content
        assert ch.logprobs.content and all(e.logprob <= 0 for e in ch.logprobs.content)
        assert "".join(e.token for e in ch.logprobs.content).startswith("{")
