"""The continuous-batching engine without HTTP: rows that join a running batch mid-decode, or leave it early,
get exactly the tokens they get alone; rows for different adapters share decode steps."""

from __future__ import annotations

import importlib.util
import time

import pytest

from tuneforge.serve.engine_api import SamplingParams


@pytest.fixture(scope="module")
def engine(lively_base, adapters):
    from tuneforge.serve.server import build_engine

    eng = build_engine(str(lively_base), lora_modules=[f"{k}={v}" for k, v in adapters.items()], device="cpu")
    steps: list[int] = []
    eng.on_step = steps.append
    eng.steps = steps
    eng.start()
    yield eng
    eng.shutdown()


def ids(engine, text: str) -> list[int]:
    tok = engine.models()[0].tokenizer
    return tok(tok.apply_chat_template([{"role": "user", "content": text}], tokenize=False,
                                       add_generation_prompt=True), add_special_tokens=False)["input_ids"]


def alone(engine, model: str, prompt: list[int], n: int) -> list[int]:
    return engine.submit(model, prompt, SamplingParams(max_tokens=n, temperature=0, ignore_eos=True)).wait(60)


def test_rows_joining_and_leaving_mid_decode_match_their_answers_alone(engine, lively_base):
    base = str(lively_base)
    long_p, short_p, mid_p = ids(engine, "a long running request " * 3), ids(engine, "hi"), ids(engine, "add 7 and 8")
    want = {"long": alone(engine, base, long_p, 40), "short": alone(engine, "alpha", short_p, 5),
            "mid": alone(engine, "beta", mid_p, 12)}
    engine.steps.clear()
    first = engine.submit(base, long_p, SamplingParams(max_tokens=40, temperature=0, ignore_eos=True))
    while len(first.tokens_out) < 8:  # join only once the first row is decoding
        time.sleep(0.005)
    short = engine.submit("alpha", short_p, SamplingParams(max_tokens=5, temperature=0, ignore_eos=True))
    mid = engine.submit("beta", mid_p, SamplingParams(max_tokens=12, temperature=0, ignore_eos=True))
    got = {"long": first.wait(60), "short": short.wait(60), "mid": mid.wait(60)}
    assert got == want
    assert max(engine.steps) == 3  # base, alpha and beta rows decoded in the same steps
    assert engine.steps[-1] == 1  # the others left; the long row finished alone
    deadline = time.monotonic() + 10  # the row leaves the batch just after its requester is told it finished
    while engine.stats()["running"] and time.monotonic() < deadline:
        time.sleep(0.01)
    assert engine.stats()["running"] == 0


def test_a_burst_larger_than_the_batch_waits_then_runs(engine, lively_base):
    p = ids(engine, "burst")
    ref = alone(engine, "beta", p, 6)
    hs = [engine.submit("beta", p, SamplingParams(max_tokens=6, temperature=0, ignore_eos=True))
          for _ in range(engine.max_num_seqs + 5)]
    assert all(h.wait(120) == ref for h in hs)
    assert all(h.finish_reason == "length" for h in hs)


@pytest.mark.skipif(importlib.util.find_spec("vllm") is not None, reason="vLLM is installed here")
def test_engine_vllm_without_vllm_is_a_clear_error(lively_base):
    from tuneforge.errors import TuneforgeError
    from tuneforge.serve.server import build_engine

    with pytest.raises(TuneforgeError, match="vLLM is not installed"):
        build_engine(str(lively_base), engine="vllm")


def test_an_adapter_added_while_serving_is_listed_and_answers_at_once(lively_base, adapters):
    import openai

    from tests.serve.conftest import chat, serving
    from tuneforge.errors import TuneforgeError

    with serving(lively_base, lora_modules=[f"alpha={adapters['alpha']}"]) as srv:
        before = chat(srv, "alpha", "hi", max_tokens=6, temperature=0).choices[0].message.content
        engine = srv.app.state.engine
        with pytest.raises(openai.NotFoundError):
            chat(srv, "ft:tiny:new", "hi", max_tokens=6)
        sm = engine.add_adapter("ft:tiny:new", str(adapters["beta"]))
        assert sm.parent == str(lively_base)
        ids = {m.id for m in openai.OpenAI(base_url=srv.url + "/v1", api_key="x").models.list()}
        assert "ft:tiny:new" in ids
        new = chat(srv, "ft:tiny:new", "hi", max_tokens=6, temperature=0).choices[0].message.content
        assert new != before and chat(srv, "alpha", "hi", max_tokens=6, temperature=0).choices[0].message.content \
            == before
        with pytest.raises(TuneforgeError, match="already served"):
            engine.add_adapter("alpha", str(adapters["beta"]))
