"""Packing keeps attention inside each example: logits match the example run alone."""

import torch

from tuneforge.data.formats import Sample
from tuneforge.data.tokenize import encode
from tuneforge.models.tiny import tiny_model, tiny_tokenizer
from tuneforge.train.loss import loss_sum
from tuneforge.train.packing import collate, pack, pad


def _examples(tok):
    texts = [("hi", "hello there"), ("what is 2+2?", "4"), ("name a colour", "blue, or perhaps green")]
    return [encode(Sample(messages=[{"role": "user", "content": q}, {"role": "assistant", "content": a}]), tok)
            for q, a in texts]


def test_packed_logits_equal_each_example_alone():
    tok = tiny_tokenizer()
    model = tiny_model(tok).eval()
    exs = _examples(tok)
    b = pack(exs)
    with torch.no_grad():
        packed = model(input_ids=b["input_ids"], position_ids=b["position_ids"], use_cache=False).logits[0]
        start = 0
        for e in exs:
            alone = model(input_ids=torch.tensor([e.input_ids])).logits[0]
            n = len(e.input_ids)
            torch.testing.assert_close(packed[start:start + n], alone, rtol=1e-4, atol=1e-5)
            start += n


def test_packed_and_padded_batches_give_the_same_loss():
    tok = tiny_tokenizer()
    model = tiny_model(tok).eval()
    exs = _examples(tok)
    with torch.no_grad():
        s1, n1, t1 = loss_sum(model, pack(exs))
        s2, n2, t2 = loss_sum(model, pad(exs, tok.pad_token_id))
    assert n1 == n2 and t1 == t2 == sum(len(e.input_ids) for e in exs)
    torch.testing.assert_close(s1, s2, rtol=1e-4, atol=1e-4)


def test_targets_never_cross_example_boundaries():
    tok = tiny_tokenizer()
    exs = _examples(tok)
    b = collate(exs, packing=True, pad_id=tok.pad_token_id)
    ends = torch.tensor([len(e.input_ids) for e in exs]).cumsum(0) - 1
    assert (b["targets"][0, ends] == -100).all()


def test_per_example_attention_for_packed_rows_matches_the_block_mask_and_falls_back_for_generation():
    from tuneforge.train.packing import restore_attention, use_packed_attention

    tok = tiny_tokenizer()
    model = tiny_model(tok).eval()
    b = pack(_examples(tok))
    kw = dict(input_ids=b["input_ids"], position_ids=b["position_ids"], use_cache=False)
    with torch.no_grad():
        masked = model(**kw).logits
        gen_ref = model.generate(input_ids=b["input_ids"][:, :6], max_new_tokens=4, do_sample=False)
        assert use_packed_attention(model)
        split = model(**kw).logits
        gen = model.generate(input_ids=b["input_ids"][:, :6], max_new_tokens=4, do_sample=False)
    torch.testing.assert_close(split, masked, rtol=1e-4, atol=1e-5)
    assert torch.equal(gen, gen_ref)
    restore_attention(model)
    assert model.config._attn_implementation == "sdpa"
