"""A classification run (trained on {"text", "label"} rows) served by `tuneforge serve RUN` answers chat requests
only with its labels, the one `eval` predicts, and reports the label's probability among the labels as logprobs."""

from __future__ import annotations

import math
import random

import openai
import pytest

from tests.helpers import write_jsonl
from tests.serve.conftest import serving
from tuneforge.eval.classify import predict
from tuneforge.eval.harness import load_for_inference

LABELS = ["even", "odd", "unsure"]


@pytest.fixture(scope="module")
def cls_run(lively_base, tmp_path_factory):
    from tuneforge.config import TrainConfig
    from tuneforge.train.recipe import train

    d = tmp_path_factory.mktemp("cls")
    r = random.Random(0)
    rows = [{"text": f"is {k} even or odd", "label": LABELS[k % 3]} for k in (r.randint(0, 999) for _ in range(30))]
    data = write_jsonl(d / "train.jsonl", rows)
    return train(TrainConfig(base=str(lively_base), data=str(data), output=str(d / "parity"), max_steps=2,
                             learning_rate=1e-3, seed=0), progress=False)


@pytest.fixture(scope="module")
def client(cls_run):
    with serving(cls_run, response_cache_size=0) as srv:
        yield openai.OpenAI(base_url=srv.url + "/v1", api_key="unused", max_retries=0)


PROMPTS = [f"is {k} even or odd" for k in (3, 10, 77, 512, 999)] + ["tell me a story", "¿qué?"]


def test_every_answer_is_a_label_and_the_one_eval_predicts(client, cls_run):
    expected, _ = predict(load_for_inference(str(cls_run)), PROMPTS, LABELS)
    for p, want in zip(PROMPTS, expected):
        r = client.chat.completions.create(model="parity", messages=[{"role": "user", "content": p}],
                                           temperature=1.0, logprobs=True, top_logprobs=3)
        ch = r.choices[0]
        assert ch.message.content in LABELS and ch.finish_reason == "stop"
        assert ch.message.content == want.label
        entry = ch.logprobs.content[0]
        assert entry.token == want.label
        assert math.exp(entry.logprob) == pytest.approx(want.probabilities[want.label], abs=1e-4)
        tops = {t.token: math.exp(t.logprob) for t in entry.top_logprobs}
        assert set(tops) == set(LABELS) and sum(tops.values()) == pytest.approx(1.0, abs=1e-5)
        assert all(tops[k] == pytest.approx(v, abs=1e-4) for k, v in want.probabilities.items())


def test_streamed_and_n_answers_are_labels_too(client):
    msgs = [{"role": "user", "content": "is 8 even or odd"}]
    text = "".join(c.choices[0].delta.content or "" for c in client.chat.completions.create(
        model="parity", messages=msgs, stream=True) if c.choices)
    assert text in LABELS
    r = client.chat.completions.create(model="parity", messages=msgs, n=2)
    assert [c.message.content for c in r.choices] == [text, text]


def test_free_text_routes_stay_free_and_tools_are_refused(client):
    # /v1/completions is raw prompt scoring/continuation (evaluation harnesses): not constrained
    r = client.completions.create(model="parity", prompt="is 8", max_tokens=3, temperature=0)
    assert r.choices[0].finish_reason in ("stop", "length")
    with pytest.raises(openai.BadRequestError) as e:
        client.chat.completions.create(model="parity", messages=[{"role": "user", "content": "x"}], tools=[
            {"type": "function", "function": {"name": "f"}}])
    assert e.value.body["param"] == "tools"
