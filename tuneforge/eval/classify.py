"""Constrained prediction for classification runs: score every label's log-likelihood given the prompt.

A run trained on `{"text", "label"}` rows records its label set (run.json "labels"). `eval`, `generate` and the
server answer such runs with `predict`: never free text, always one of the labels, with a probability for each.

How a label is scored: the prompt and the label are rendered exactly as training rendered them (`data.tokenize.
encode`: the saved chat template, the answer closed by the end-of-turn token), and the label's score is the sum of
the log-probabilities of its supervised tokens, *the end-of-turn token included*. So "even" and "even more" are told
apart: "even" wins only if the model would stop after it. A softmax over the label scores gives probabilities
that sum to 1 (the model's belief restricted to the label set).

Cost: one forward over each prompt (prompts batched, left-padded), then the label continuations of all prompts
in one batched forward on a copy of the prompts' KV cache — the prompt is never recomputed per label. Soft-prompt
(prompt-tuning) models rebuild their virtual tokens on every forward, so they score full prompt+label rows instead
(`score_rows`, also the reference the cached path is tested against).
"""

from __future__ import annotations

import inspect
import math
import time
from dataclasses import dataclass

import torch

from tuneforge.data.formats import Sample
from tuneforge.data.tokenize import IGNORE, encode
from tuneforge.errors import TuneforgeError

MODES = ("constrained", "free")


@dataclass
class Prediction:
    label: str
    probabilities: dict[str, float]  # every label, in label-set order; sums to 1


@dataclass
class _Pair:
    """One (prompt, label) pair as token ids: the prompt, then the label's supervised tokens."""

    prompt: list[int]
    answer: list[int]


def _pairs(messages: list[dict], labels: list[str], tokenizer) -> list[_Pair]:
    """Token ids of the prompt and of each label's answer (label + end-of-turn), as training encoded them."""
    out = []
    for lab in labels:
        enc = encode(Sample(messages=[*messages, {"role": "assistant", "content": lab}]), tokenizer,
                     max_seq_len=1 << 30)
        sup = [i for i, t in enumerate(enc.labels) if t != IGNORE]
        if not sup:
            raise TuneforgeError(f"label {lab!r}: the chat template gives it no tokens to score")
        out.append(_Pair(enc.input_ids[:sup[0]], enc.input_ids[sup[0]:sup[-1] + 1]))
    return out


def label_token_pairs(messages: list[dict], labels: list[str], tokenizer) -> list[tuple[list[int], list[int]]]:
    """(prompt ids, answer ids) per label, as training encoded them: the server scores labels through its engine
    with these, so a served classification run answers exactly as `eval` predicts."""
    return [(q.prompt, q.answer) for q in _pairs(messages, check_labels(labels), tokenizer)]


def probabilities(scores: list[float]) -> list[float]:
    """The softmax over label log-likelihoods: the model's belief restricted to the label set."""
    return _softmax(scores)


def check_labels(labels: list[str]) -> list[str]:
    labels = [str(x) for x in labels]
    if len(labels) < 2:
        raise TuneforgeError(f"constrained prediction needs at least 2 labels, got {labels}")
    if len(set(labels)) != len(labels):
        raise TuneforgeError(f"label set has repeats: {labels}")
    return labels


def _uses_soft_prompt(model) -> bool:
    cfg = getattr(model, "active_peft_config", None)
    return bool(getattr(cfg, "is_prompt_learning", False))


def _device(model):
    return next(model.parameters()).device


@torch.no_grad()
def score_rows(model, pairs: list[_Pair], pad_id: int) -> list[float]:
    """Sum of log p(answer tokens | prompt) per pair, each pair as its own full row (right-padded)."""
    rows = [p.prompt + p.answer for p in pairs]
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, r in enumerate(rows):
        ids[i, :len(r)] = torch.tensor(r)
        mask[i, :len(r)] = 1
    dev = _device(model)
    logits = model(input_ids=ids.to(dev), attention_mask=mask.to(dev), use_cache=False).logits[:, -width:]
    logp = torch.log_softmax(logits.float(), dim=-1)
    out = []
    for i, p in enumerate(pairs):
        pos = torch.arange(len(p.prompt) - 1, len(p.prompt) + len(p.answer) - 1)
        out.append(float(logp[i, pos, torch.tensor(p.answer)].sum()))
    return out


@torch.no_grad()
def _score_cached(model, prompts: list[list[int]], answers: list[list[list[int]]], pad_id: int) -> list[list[float]]:
    """prompts[i]: token ids; answers[i][k]: label k's answer ids after prompt i. One prompt forward per batch,
    then every (prompt, label) continuation in one forward on the repeated KV cache."""
    dev = _device(model)
    n, k = len(prompts), len(answers[0])
    plen = max(len(p) for p in prompts)
    ids = torch.full((n, plen), pad_id, dtype=torch.long)
    mask = torch.zeros((n, plen), dtype=torch.long)
    for i, p in enumerate(prompts):  # left padding: every prompt ends at the same column
        ids[i, plen - len(p):] = torch.tensor(p)
        mask[i, plen - len(p):] = 1
    pos = (mask.cumsum(-1) - 1).clamp(min=0)
    out = model(input_ids=ids.to(dev), attention_mask=mask.to(dev), position_ids=pos.to(dev), use_cache=True)
    first = torch.log_softmax(out.logits[:, -1].float(), dim=-1)  # (n, V): the answers' first tokens
    scores = [[float(first[i, answers[i][j][0]]) for j in range(k)] for i in range(n)]
    rest = max(len(a) for row in answers for a in row) - 1
    if rest == 0:  # every answer is a single token (no end-of-turn token in this template)
        return scores
    new_api = "cache" in inspect.signature(model.forward).parameters  # transformers >= 5.2x renamed the argument
    cache = out.cache if new_api else out.past_key_values
    cache.batch_repeat_interleave(k)  # row i*k + j: prompt i, label j
    cont = torch.full((n * k, rest), pad_id, dtype=torch.long)
    cmask = torch.zeros((n * k, rest), dtype=torch.long)
    for i in range(n):
        for j in range(k):
            a = answers[i][j][:-1]  # the tokens that predict answer[1:]
            cont[i * k + j, :len(a)] = torch.tensor(a, dtype=torch.long)
            cmask[i * k + j, :len(a)] = 1
    full_mask = torch.cat([mask.repeat_interleave(k, dim=0), cmask], dim=1)
    cpos = (mask.sum(-1, keepdim=True).repeat_interleave(k, dim=0) + torch.arange(rest)).clamp(min=0)
    logits = model(input_ids=cont.to(dev), attention_mask=full_mask.to(dev), position_ids=cpos.to(dev),
                   use_cache=True, **{"cache" if new_api else "past_key_values": cache}).logits
    logp = torch.log_softmax(logits.float(), dim=-1)
    for i in range(n):
        for j in range(k):
            nxt = answers[i][j][1:]
            if nxt:
                r = i * k + j
                scores[i][j] += float(logp[r, torch.arange(len(nxt)), torch.tensor(nxt)].sum())
    return scores


def _softmax(xs: list[float]) -> list[float]:
    m = max(xs)
    e = [math.exp(x - m) for x in xs]
    s = sum(e)
    return [v / s for v in e]


def as_messages(prompt) -> list[dict]:
    """A Sample (its prompt turns), a message list, or a plain string (one user turn)."""
    if isinstance(prompt, Sample):
        if prompt.messages is None:
            raise TuneforgeError(f"{prompt.where}: plain-text examples have no prompt to classify")
        return prompt.prompt_messages
    if isinstance(prompt, str):
        return [{"role": "user", "content": prompt}]
    return list(prompt)


def label_log_likelihoods(model, tokenizer, prompts: list, labels: list[str], *, batch_size: int = 16,
                          progress=None) -> tuple[list[list[float]], list[float]]:
    """log p(label + end-of-turn | prompt) for every prompt and label, and per-prompt latency in seconds."""
    labels = check_labels(labels)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    soft = _uses_soft_prompt(model)
    scores: list[list[float]] = []
    lat: list[float] = []
    for s in range(0, len(prompts), batch_size):
        chunk = [_pairs(as_messages(p), labels, tokenizer) for p in prompts[s:s + batch_size]]
        t0 = time.perf_counter()
        shared = all(all(q.prompt == pairs[0].prompt for q in pairs) for pairs in chunk)
        part = None
        if not soft and shared:  # else: no prompt cache to reuse (soft prompts), or labels re-tokenize the prompt
            try:
                part = _score_cached(model, [pairs[0].prompt for pairs in chunk],
                                     [[q.answer for q in pairs] for pairs in chunk], pad)
            except (AttributeError, NotImplementedError, TypeError):  # a cache type that cannot be repeated
                part = None
        if part is None:
            flat = score_rows(model, [q for pairs in chunk for q in pairs], pad)
            part = [flat[i * len(labels):(i + 1) * len(labels)] for i in range(len(chunk))]
        dt = (time.perf_counter() - t0) / len(chunk)
        scores += part
        lat += [dt] * len(chunk)
        if progress:
            progress(len(chunk))
    return scores, lat


def predict(loaded, prompts: list, labels: list[str], *, batch_size: int = 16,
            progress=None) -> tuple[list[Prediction], list[float]]:
    """The most likely label for each prompt with the probability of every label, and latencies.

    Ties go to the label listed first. `loaded` is an `eval.harness.Loaded` (model + tokenizer)."""
    was = loaded.model.training
    loaded.model.eval()
    try:
        scores, lat = label_log_likelihoods(loaded.model, loaded.tokenizer, prompts, labels,
                                            batch_size=batch_size, progress=progress)
    finally:
        loaded.model.train(was)
    out = []
    for row in scores:
        probs = _softmax(row)
        best = max(range(len(labels)), key=lambda j: (probs[j], -j))
        out.append(Prediction(labels[best], dict(zip(labels, probs))))
    return out, lat
