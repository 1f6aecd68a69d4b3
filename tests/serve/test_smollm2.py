"""Slow: the real SmolLM2-135M-Instruct behind the server — greedy answers equal `tuneforge generate`'s, alone
and in a concurrent burst (left padding and rows joining must not change a greedy answer), and they stop at the
end-of-turn token the chat template taught."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import openai
import pytest

from tests.serve.conftest import serving

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[2]


def test_smollm2_answers_equal_generate_alone_and_in_a_burst():
    from tuneforge.eval.harness import generate, load_for_inference

    prompts = [json.loads(line)["prompt"] for line in (ROOT / "examples/sql/test.jsonl").read_text().splitlines()[:4]]
    want, _ = generate(load_for_inference("smollm2-135m-instruct", device="cpu"), prompts, max_new_tokens=24,
                       batch_size=1)
    with serving("smollm2-135m-instruct", response_cache_size=0) as srv:
        async def burst():
            c = openai.AsyncOpenAI(base_url=srv.url + "/v1", api_key="x", max_retries=0)
            return await asyncio.gather(*(c.chat.completions.create(
                model="smollm2-135m-instruct", messages=[{"role": "user", "content": p}], max_tokens=24,
                temperature=0) for p in prompts))

        res = asyncio.run(burst())
    got = [r.choices[0].message.content.strip() for r in res]
    assert got == want
    for r in res:  # "stop" exactly when the model ended its turn before the limit
        assert (r.choices[0].finish_reason == "stop") == (r.usage.completion_tokens < 24)
