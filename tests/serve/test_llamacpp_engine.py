"""`--engine llama.cpp`: a GGUF export served through llama.cpp's batch API behind the same auth, limits, metrics
and request log as the built-in engine; concurrent rows get the answers they get alone."""

from __future__ import annotations

import asyncio
import importlib.util

import httpx
import openai
import pytest

pytestmark = [pytest.mark.integration,
              pytest.mark.skipif(importlib.util.find_spec("llama_cpp") is None,
                                 reason="llama-cpp-python is not installed (pip install 'tuneforge[llamacpp]')")]


def tokenizer_with_a_merge():
    """The tiny byte tokenizer plus one BPE merge: llama.cpp refuses a BPE vocab without merges."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    from tuneforge.models.tiny import CHATML_TEMPLATE, SPECIALS

    vocab = {ch: i for i, ch in enumerate(sorted(pre_tokenizers.ByteLevel.alphabet()))}
    vocab["\u0120t"] = len(vocab)  # " t"
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[("\u0120", "t")]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    tok.decoder = decoders.ByteLevel()
    tok.add_special_tokens(SPECIALS)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<|im_start|>", eos_token="<|im_end|>",
                                   pad_token="<|im_end|>", unk_token=None)
    fast.chat_template = CHATML_TEMPLATE
    return fast


@pytest.fixture(scope="module")
def gguf_dir(tmp_path_factory):
    """A lively tiny model written as an f16 GGUF by our exporter, its tokenizer beside it."""
    from tuneforge.export.gguf import write_gguf
    from tuneforge.models.tiny import tiny_model

    out = tmp_path_factory.mktemp("gguf")
    tok = tokenizer_with_a_merge()
    write_gguf(tiny_model(tok, weight_scale=5.0), tok, out / "model-f16.gguf", "f16")
    tok.save_pretrained(out)
    return out


def test_llamacpp_engine_serves_behind_auth_limits_metrics_and_the_request_log(gguf_dir, tmp_path):
    from tuneforge.monitor.attach import MonitorSettings, attach_monitoring
    from tuneforge.serve.app import OPEN_PATHS, create_app
    from tuneforge.serve.server import BackgroundServer, build_engine

    engine = build_engine(str(gguf_dir), engine="llama.cpp", served_model_name="tiny", max_num_seqs=4)
    app = create_app(engine, api_keys=["sk-test"], open_paths=OPEN_PATHS, response_cache_size=0,
                     max_body_bytes=4096)
    db = f"sqlite:///{tmp_path / 'log.db'}"
    attach_monitoring(app, MonitorSettings(db=db))
    prompts = [f"question {i}: add {i} and {i + 1}" for i in range(6)]
    with BackgroundServer(app) as srv:
        url = srv.url + "/v1"
        with pytest.raises(openai.AuthenticationError):
            openai.OpenAI(base_url=url, api_key="wrong", max_retries=0).chat.completions.create(
                model="tiny", messages=[{"role": "user", "content": "x"}])
        c = openai.OpenAI(base_url=url, api_key="sk-test", max_retries=0)
        kw = dict(model="tiny", max_tokens=10, temperature=0, extra_body={"ignore_eos": True})
        alone = [c.chat.completions.create(messages=[{"role": "user", "content": p}], **kw).choices[0].message.content
                 for p in prompts]
        assert all(alone) and len(set(alone)) > 1

        async def together():
            ac = openai.AsyncOpenAI(base_url=url, api_key="sk-test", max_retries=0)
            rs = await asyncio.gather(*(ac.chat.completions.create(messages=[{"role": "user", "content": p}], **kw)
                                        for p in prompts))
            await ac.close()
            return [r.choices[0].message.content for r in rs]

        assert asyncio.run(together()) == alone  # 6 rows on 4 sequence slots: batched, then queued
        big = httpx.post(url + "/chat/completions", headers={"Authorization": "Bearer sk-test"},
                         json={"model": "tiny", "messages": [{"role": "user", "content": "x" * 8000}]})
        assert big.status_code == 413
        m = httpx.get(srv.url + "/metrics", headers={"Authorization": "Bearer sk-test"}).text
        assert 'tuneforge_requests_total{endpoint="chat.completions",model="tiny",status="200"} 12.0' in m
        assert engine.stats()["steps"] > 0 and engine.stats()["running"] == 0
    import sqlalchemy as sa

    with sa.create_engine(db).connect() as conn:
        assert conn.execute(sa.text("select count(*) from request_log where model='tiny'")).scalar() == 12


def test_llamacpp_engine_refuses_lora_modules_with_a_clear_message(gguf_dir, lively_base):
    from tuneforge.errors import TuneforgeError
    from tuneforge.serve.server import build_engine

    with pytest.raises(TuneforgeError, match="LoRA per context"):
        build_engine(str(gguf_dir), engine="llama.cpp", lora_modules=[f"a={lively_base}"])


def test_a_run_without_a_gguf_export_names_the_export_command(tmp_path):
    from tuneforge.errors import TuneforgeError
    from tuneforge.serve.llamacpp_engine import resolve_target

    with pytest.raises(TuneforgeError, match="llama.cpp serves a run with a GGUF export"):
        resolve_target(str(tmp_path / "missing"))


def test_a_shared_prompt_prefix_is_computed_once_and_answers_do_not_change(gguf_dir):
    from tuneforge.serve.engine_api import SamplingParams
    from tuneforge.serve.llamacpp_engine import PREFIX_MIN_TOKENS
    from tuneforge.serve.server import build_engine

    system = "You add numbers."
    answers = {}
    for caching in (False, True):
        engine = build_engine(str(gguf_dir), engine="llama.cpp", served_model_name="tiny", max_num_seqs=4,
                              prefix_caching=caching)
        engine.start()
        try:
            tok = engine.models()[0].tokenizer
            ids = [tok.apply_chat_template([{"role": "system", "content": system},
                                            {"role": "user", "content": f"question {i}: add {i} and {i + 1}"}],
                                           add_generation_prompt=True, tokenize=True, return_dict=True)["input_ids"]
                   for i in range(6)]
            sp = SamplingParams(max_tokens=8, temperature=0, ignore_eos=True)
            first = engine.submit("tiny", ids[0], sp).wait()  # alone: its prompt is kept when it finishes
            rest = [h.wait() for h in [engine.submit("tiny", i, sp) for i in ids[1:]]]  # together
            answers[caching] = [first, *rest]
            stats = engine.stats()
        finally:
            engine.shutdown()
        if caching:
            # the byte-level tokenizer: the template's header, the system prompt and "question " are shared
            assert stats["prefix_hits"] == 5 and stats["prefix_hit_tokens"] >= 5 * max(len(system), PREFIX_MIN_TOKENS)
        else:
            assert "prefix_hits" not in stats
    assert answers[True] == answers[False] and len(set(map(tuple, answers[True]))) > 1


def test_logprobs_come_back_as_the_builtin_engine_reports_them(gguf_dir):
    from tuneforge.serve.engine_api import SamplingParams
    from tuneforge.serve.server import build_engine

    engine = build_engine(str(gguf_dir), engine="llama.cpp", served_model_name="tiny", max_num_seqs=2)
    engine.start()
    try:
        ids = engine.models()[0].tokenizer("question 3: add 3 and 4")["input_ids"]
        h = engine.submit("tiny", ids, SamplingParams(max_tokens=5, temperature=0, ignore_eos=True, logprobs=3))
        toks = h.wait()
    finally:
        engine.shutdown()
    assert len(h.logprobs_out) == len(toks) == 5
    for t, (lp, top) in zip(toks, h.logprobs_out):
        assert len(top) == 3 and top[0][0] == t and lp == top[0][1] <= 0  # greedy: the drawn token is the top one
        assert [x[1] for x in top] == sorted((x[1] for x in top), reverse=True)
