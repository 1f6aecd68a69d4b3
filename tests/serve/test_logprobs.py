"""Log-probabilities through the real openai SDK equal a direct forward pass of the same model (within 1e-4):
chat `logprobs` + `top_logprobs`, `/v1/completions` `logprobs: N`, `echo` with `max_tokens: 0` (prompt
scoring, how evaluation harnesses ask), streaming, and an adapter's rows beside the base's."""

from __future__ import annotations

import math

import openai
import pytest
import torch
from openai.types.chat import ChatCompletion
from transformers import AutoModelForCausalLM
from transformers.convert_slow_tokenizer import bytes_to_unicode

from tuneforge.models.tiny import tiny_tokenizer

TOL = 1e-4


def _client(srv) -> openai.OpenAI:
    return openai.OpenAI(base_url=srv.url + "/v1", api_key="unused", max_retries=0)


@pytest.fixture(scope="module")
def reference(lively_base, adapters):
    """name -> a plain forward(ids) -> log-softmax [len, vocab] of the model as loaded by transformers/peft."""
    from peft import PeftModel

    models = {str(lively_base): AutoModelForCausalLM.from_pretrained(lively_base).eval()}
    models["alpha"] = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(lively_base),
                                                str(adapters["alpha"])).eval()

    @torch.no_grad()
    def forward(name: str, ids: list[int]) -> torch.Tensor:
        return torch.log_softmax(models[name](input_ids=torch.tensor([ids])).logits[0].float(), -1)
    return forward


def _byte_ids(tok, entries) -> list[int]:
    """The tiny tokenizer has one token per byte: an entry's `bytes` give back its token id."""
    uni = bytes_to_unicode()
    out = []
    for e in entries:
        (b,) = e.bytes
        out.append(tok.convert_tokens_to_ids(uni[b]))
    return out


@pytest.mark.parametrize("model", ["base", "alpha"])
def test_chat_logprobs_equal_a_direct_forward_pass(server, lively_base, reference, model):
    name = str(lively_base) if model == "base" else model
    tok = tiny_tokenizer()
    msgs = [{"role": "user", "content": "add 2 and 3"}]
    r = _client(server).chat.completions.create(model=name, messages=msgs, max_tokens=8, temperature=0,
                                                logprobs=True, top_logprobs=5)
    ChatCompletion.model_validate(r.model_dump())
    content = r.choices[0].logprobs.content
    assert len(content) == r.usage.completion_tokens == 8
    prompt = tok(tok.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True),
                 add_special_tokens=False)["input_ids"]
    gen = _byte_ids(tok, content)
    lp = reference(name, prompt + gen)
    for j, e in enumerate(content):
        row = lp[len(prompt) - 1 + j]
        assert abs(e.logprob - float(row[gen[j]])) < TOL
        assert gen[j] == int(row.argmax())  # greedy: the sampled token is the most likely one
        vals, ids = row.topk(5)
        assert len(e.top_logprobs) == 5
        for t, v, i in zip(e.top_logprobs, vals.tolist(), ids.tolist()):
            assert abs(t.logprob - v) < TOL and _byte_ids(tok, [t]) == [i]


def test_sampled_tokens_report_their_own_logprob_not_the_top_one(server, lively_base, reference):
    tok = tiny_tokenizer()
    msgs = [{"role": "user", "content": "abc"}]
    r = _client(server).chat.completions.create(model=str(lively_base), messages=msgs, max_tokens=12,
                                                temperature=1.5, seed=7, logprobs=True, top_logprobs=3)
    content = r.choices[0].logprobs.content
    prompt = tok(tok.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True),
                 add_special_tokens=False)["input_ids"]
    gen = _byte_ids(tok, content)
    lp = reference(str(lively_base), prompt + gen)
    below_top = 0
    for j, e in enumerate(content):
        row = lp[len(prompt) - 1 + j]
        assert abs(e.logprob - float(row[gen[j]])) < TOL
        assert abs(e.top_logprobs[0].logprob - float(row.max())) < TOL
        below_top += e.logprob < e.top_logprobs[0].logprob - TOL
    assert below_top > 0  # at temperature 1.5 some draws are not the argmax, and say so


def test_completions_logprobs_n_gives_n_alternatives(server, lively_base, reference):
    tok = tiny_tokenizer()
    prompt = tok("abc")["input_ids"]
    r = _client(server).completions.create(model=str(lively_base), prompt=prompt, max_tokens=6, temperature=0,
                                           logprobs=3)
    lpb = r.choices[0].logprobs
    assert len(lpb.tokens) == len(lpb.token_logprobs) == len(lpb.top_logprobs) == 6
    assert "".join(lpb.tokens) == r.choices[0].text or "\ufffd" in "".join(lpb.tokens)
    lp = reference(str(lively_base), prompt)
    assert abs(lpb.token_logprobs[0] - float(lp[-1].max())) < TOL  # greedy: the first token is the argmax
    assert all(1 <= len(t) <= 3 for t in lpb.top_logprobs)


def test_echo_with_max_tokens_0_scores_every_prompt_token(server, lively_base, reference):
    tok = tiny_tokenizer()
    prompt = tok("The capital of France is Paris")["input_ids"]
    r = _client(server).completions.create(model="alpha", prompt=prompt, max_tokens=0, echo=True, logprobs=2)
    # not Completion.model_validate: the first echoed token has no logprob and is null, as in OpenAI's own API
    # and vLLM (the published schema and the SDK's types say number; a made-up 0.0 would corrupt sums)
    ch = r.choices[0]
    assert ch.text == "The capital of France is Paris" and r.usage.completion_tokens == 0
    lp = reference("alpha", prompt)
    assert ch.logprobs.token_logprobs[0] is None and len(ch.logprobs.token_logprobs) == len(prompt)
    for t in range(1, len(prompt)):
        assert abs(ch.logprobs.token_logprobs[t] - float(lp[t - 1, prompt[t]])) < TOL
        assert abs(max(ch.logprobs.top_logprobs[t].values()) - float(lp[t - 1].max())) < TOL
    total = sum(ch.logprobs.token_logprobs[1:])
    assert math.isfinite(total) and total < 0


def test_streamed_logprobs_equal_the_unary_ones(server, lively_base):
    c = _client(server)
    kw = dict(model="beta", messages=[{"role": "user", "content": "hello there"}], max_tokens=10, temperature=0,
              logprobs=True, top_logprobs=2)
    full = c.chat.completions.create(**kw).choices[0].logprobs.content
    streamed = [e for ch in c.chat.completions.create(**kw, stream=True) if ch.choices and ch.choices[0].logprobs
                for e in ch.choices[0].logprobs.content or []]
    # the second request may reuse the first one's cached prompt prefix (a different summation order): 1e-4
    assert [e.token for e in streamed] == [e.token for e in full]
    assert max(abs(a.logprob - b.logprob) for a, b in zip(streamed, full)) < 1e-4
    assert len(full) == 10


def test_top_logprobs_out_of_range_or_without_logprobs_is_a_400(server, lively_base):
    c = _client(server)
    msgs = [{"role": "user", "content": "x"}]
    with pytest.raises(openai.BadRequestError) as e:
        c.chat.completions.create(model="alpha", messages=msgs, max_tokens=2, logprobs=True, top_logprobs=21)
    assert e.value.body["param"] == "top_logprobs"
    with pytest.raises(openai.BadRequestError) as e:
        c.chat.completions.create(model="alpha", messages=msgs, max_tokens=2, top_logprobs=3)
    assert e.value.body["param"] == "top_logprobs"
    with pytest.raises(openai.BadRequestError) as e:
        c.completions.create(model="alpha", prompt="x", max_tokens=0)
    assert e.value.body["param"] == "max_tokens"
