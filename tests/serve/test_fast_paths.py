"""The engine's fast paths give the answers of the plain path: a batch of one adapter runs its merged copy, a
second adapter joining mid-batch switches to peft's mixed path without changing anyone's answer, and a shared
prompt prefix is computed once per adapter, reused, and forgotten when that adapter's weights change."""

from __future__ import annotations

import time

import pytest

from tuneforge.serve.engine_api import SamplingParams

SYSTEM = "You answer in one short line, like a careful SQL assistant would. "


def make_engine(lively_base, adapters, **kw):
    from tuneforge.serve.server import build_engine

    eng = build_engine(str(lively_base), lora_modules=[f"{k}={v}" for k, v in adapters.items()], device="cpu", **kw)
    eng.start()
    return eng


@pytest.fixture(scope="module")
def fast(lively_base, adapters):
    eng = make_engine(lively_base, adapters)
    yield eng
    eng.shutdown()


@pytest.fixture(scope="module")
def plain(lively_base, adapters):
    """No merged copies, no prefix cache: every batch through peft's per-row path, every prompt computed."""
    eng = make_engine(lively_base, adapters, prefix_caching=False, merged_copies=0)
    yield eng
    eng.shutdown()


def ids(engine, text: str, system: str | None = SYSTEM) -> list[int]:
    tok = engine.models()[0].tokenizer
    msgs = ([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": text}]
    return tok(tok.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True),
               add_special_tokens=False)["input_ids"]


def gen(engine, model: str, prompt: list[int], n: int):
    return engine.submit(model, prompt, SamplingParams(max_tokens=n, temperature=0, ignore_eos=True))


def test_a_batch_of_one_adapter_runs_its_merged_copy_with_the_same_answers(fast, plain):
    group = fast.groups[0]
    assert set(group.merged) == {group.names["alpha"], group.names["beta"]}  # built at start, not mid-request
    before = dict(fast.stats()["forward_paths"])
    p = ids(fast, "list the users")
    got = gen(fast, "alpha", p, 8).wait(60)
    paths = fast.stats()["forward_paths"]
    assert paths.get("merged", 0) > before.get("merged", 0)
    assert paths.get("mixed", 0) == before.get("mixed", 0)  # nothing went through peft's per-row loop
    assert got == gen(plain, "alpha", p, 8).wait(60)
    assert plain.stats()["forward_paths"].get("merged", 0) == 0 and plain.groups[0].merged == {}


def test_a_second_adapter_joining_mid_batch_keeps_both_answers(fast, plain):
    pa, pb = ids(fast, "count the orders"), ids(fast, "show the products")
    want = {"a": gen(plain, "alpha", pa, 24).wait(60), "b": gen(plain, "beta", pb, 6).wait(60)}
    before = dict(fast.stats()["forward_paths"])
    first = gen(fast, "alpha", pa, 24)
    while len(first.tokens_out) < 6:  # alpha is decoding alone, on its merged copy
        time.sleep(0.005)
    second = gen(fast, "beta", pb, 6)
    assert {"a": first.wait(60), "b": second.wait(60)} == want
    paths = fast.stats()["forward_paths"]
    assert paths["merged"] > before.get("merged", 0) and paths["mixed"] > before.get("mixed", 0)


def test_a_shared_prefix_is_computed_once_per_adapter_and_answers_do_not_change(fast, plain):
    cache = fast.groups[0].prefix_cache
    cache.clear()
    qs = ["who bought the most", "list cities by users", "average price please", "count orders"]  # distinct 1st bytes
    prompts = [ids(fast, q) for q in qs]
    want = [gen(plain, m, p, 6).wait(60) for m in ("alpha", "beta") for p in prompts]
    built0, hits0 = cache.stats["built"], cache.stats["hits"]
    got = [gen(fast, m, p, 6).wait(60) for m in ("alpha", "beta") for p in prompts]
    assert got == want
    assert cache.stats["built"] - built0 == 2  # the system prompt + role header: once for alpha, once for beta
    assert cache.stats["hits"] - hits0 == 6  # every prompt after each adapter's first
    adapters = {a for a, _ in cache.entries}
    assert adapters == {fast.groups[0].names["alpha"], fast.groups[0].names["beta"]}
    burst = [gen(fast, "alpha", p, 6) for p in prompts]  # prefilled together, all from the cached prefix
    assert [h.wait(60) for h in burst] == want[:4]


def test_reloading_an_adapter_forgets_only_its_cached_prefixes_and_merged_copy(fast):
    group = fast.groups[0]
    alpha, beta = group.names["alpha"], group.names["beta"]
    for q in ("one", "two"):
        gen(fast, "alpha", ids(fast, q), 2).wait(60)
        gen(fast, "beta", ids(fast, q), 2).wait(60)
    assert {a for a, _ in group.prefix_cache.entries} == {alpha, beta}
    with fast._model_lock:
        group.invalidate(alpha)
    assert {a for a, _ in group.prefix_cache.entries} == {beta}
    assert alpha not in group.merged and beta in group.merged
    assert gen(fast, "alpha", ids(fast, "one"), 2).wait(60)  # rebuilt on demand
    assert alpha in group.merged


def test_a_burst_with_a_shared_prefix_matches_one_by_one_answers_on_the_base(fast, plain, lively_base):
    base = str(lively_base)
    prompts = [ids(fast, f"question number {i}", system="Be brief. " * 4) for i in range(6)]
    want = [gen(plain, base, p, 5).wait(60) for p in prompts]
    hs = [gen(fast, base, p, 5) for p in prompts]
    assert [h.wait(60) for h in hs] == want
    assert fast.stats()["forward_paths"].get("base", 0) > 0
