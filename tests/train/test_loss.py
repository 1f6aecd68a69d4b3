"""The fast loss (output layer at supervised positions only) equals transformers' own loss, and
gradient accumulation normalised by supervised tokens equals one larger batch."""

import torch

from tuneforge.data.formats import Sample
from tuneforge.data.tokenize import IGNORE, encode
from tuneforge.models.tiny import tiny_model, tiny_tokenizer
from tuneforge.train import loss as L
from tuneforge.train.packing import pack


def _encoded(tok, n=8):
    return [encode(Sample(messages=[{"role": "user", "content": f"question {i} " * (i + 1)},
                                    {"role": "assistant", "content": f"answer {i * 7}" * (1 + i % 3)}]), tok)
            for i in range(n)]


def test_fast_loss_matches_transformers_loss():
    tok = tiny_tokenizer()
    model = tiny_model(tok).eval()
    e = _encoded(tok, 1)[0]
    with torch.no_grad():
        s, n, _ = L.loss_sum(model, pack([e]))
        ref = model(input_ids=torch.tensor([e.input_ids]), labels=torch.tensor([e.labels])).loss
    torch.testing.assert_close(s / n, ref, rtol=1e-5, atol=1e-5)


def test_chunked_output_layer_matches_unchunked(monkeypatch):
    tok = tiny_tokenizer()
    model = tiny_model(tok)
    b = pack(_encoded(tok))
    s_full, _, _ = L.loss_sum(model, b)
    g_full = torch.autograd.grad(s_full, model.model.embed_tokens.weight)[0]
    monkeypatch.setattr(L, "CHUNK", 7)
    s_chunk, _, _ = L.loss_sum(model, b)
    g_chunk = torch.autograd.grad(s_chunk, model.model.embed_tokens.weight)[0]
    torch.testing.assert_close(s_full, s_chunk, rtol=1e-5, atol=1e-4)
    torch.testing.assert_close(g_full, g_chunk, rtol=1e-4, atol=1e-5)  # fp32 sums in another order


def _grads(model, batches):
    model.zero_grad()
    n_sup = sum(int((b["targets"] != IGNORE).sum()) for b in batches)
    for b in batches:
        s, _, _ = L.loss_sum(model, b)
        (s / n_sup).backward()
    return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


def test_gradient_accumulation_equals_the_larger_batch():
    tok = tiny_tokenizer()
    model = tiny_model(tok)
    enc = _encoded(tok)
    one = _grads(model, [pack(enc)])
    four = _grads(model, [pack(enc[i:i + 2]) for i in range(0, 8, 2)])
    for n in one:
        torch.testing.assert_close(one[n], four[n], rtol=1e-4, atol=1e-6)
